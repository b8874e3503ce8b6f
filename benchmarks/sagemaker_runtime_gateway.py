"""What routing sagemaker-runtime through LocalStack's gateway costs, against calling the endpoint directly.

    .venv/bin/python benchmarks/sagemaker_runtime_gateway.py [--executions 40] [--rounds 2] [--keep-up]

Since issue 11 our Lambdas carry no endpoint URL: their default sagemaker-runtime client goes to
LocalStack (AWS_ENDPOINT_URL), which forwards InvokeEndpoint to the endpoint server
(harness/lambda_executor/sagemaker_runtime.py). Same stack, same run, alternating in rounds:
- "gateway": classifyImage as deployed (no endpoint variable);
- "direct": classifyImage with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME set to the endpoint server,
  as the local deploy did before.
For each: the warm workflow (service-reported startDate -> stopDate, p50/p95), the classify state
alone, and a host client's InvokeEndpoint through the gateway vs straight to the server.
Figures are printed, never asserted. Uses $SCONES_STATE_DIR / ports / $SCONES_MODEL_DIR like `scones up`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from scones import settings
from scones.harness import stack  # noqa: E402
from scones.harness.executions import percentile, run_executions  # noqa: E402
from scones.harness.targets import load_target  # noqa: E402

CLASSIFY = "classifyImage"


def ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5) * 1000:6.1f} ms  p95 {percentile(values, 0.95) * 1000:6.1f} ms  (n={len(values)})"


def set_classify_environment(target, variables: dict[str, str]) -> None:
    client = target.client("lambda")
    arn = target.function_arns[CLASSIFY]
    client.update_function_configuration(FunctionName=arn, Environment={"Variables": variables})
    client.get_waiter("function_updated_v2").wait(FunctionName=arn, WaiterConfig={"Delay": 0.2})


def time_workflow(target, key: str, n: int) -> tuple[list[float], list[float]]:
    run_executions(target, [key] * 3)  # warm the environments the new configuration starts
    results = run_executions(target, [key] * n, poll_interval=0.002)
    failed = [result for result in results if result.status != "SUCCEEDED" and result.error != "ThresholdConfidenceNotMet"]
    if failed:
        raise SystemExit(f"an execution failed: {failed[0].error}: {failed[0].cause}")
    return ([result.duration for result in results],
            [result.state_durations[CLASSIFY] for result in results])


def time_invokes(url: str, endpoint_name: str, body: bytes, n: int) -> list[float]:
    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        client.invoke_endpoint(EndpointName=endpoint_name, ContentType="image/png", Body=body)["Body"].read()
        durations.append(time.perf_counter() - started)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=40, help="timed executions per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="gateway/direct alternations")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args()

    config = stack.StackConfig.from_environment(upload_data=True)
    was_up = stack.status(config.state_dir)["up"]
    record = stack.up(config, progress=lambda message: None)
    try:
        target = load_target("local", config.state_dir)
        configured = target.client("lambda").get_function_configuration(
            FunctionName=target.function_arns[CLASSIFY])["Environment"]["Variables"]
        data = settings.data_dir()
        image = sorted((data / "test" / "bicycle").glob("*.png"))[0]
        key = f"test/bicycle/{image.name}"
        variants = {"gateway": dict(configured),
                    "direct": {**configured, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": record["endpoint"]["url"]}}
        figures = {name: {"workflow": [], "classify": []} for name in variants}
        for _ in range(args.rounds):
            for name, variables in variants.items():
                set_classify_environment(target, variables)
                workflow, classify = time_workflow(target, key, args.executions)
                figures[name]["workflow"] += workflow
                figures[name]["classify"] += classify
        set_classify_environment(target, configured)
        body = image.read_bytes()
        urls = {"gateway": record["localstack"]["url"], "direct": record["endpoint"]["url"]}
        for url in urls.values():
            time_invokes(url, target.endpoint_name, body, 5)   # warm up
        host = {name: time_invokes(url, target.endpoint_name, body, args.executions) for name, url in urls.items()}
    finally:
        if not (was_up or args.keep_up):
            stack.down(config.state_dir, progress=lambda message: None)

    print(f"{args.rounds} rounds x {args.executions} warm sequential executions per variant, key {key}")
    for name in variants:
        print(f"  {name:8s} workflow  {ms(figures[name]['workflow'])}")
        print(f"  {name:8s} classify  {ms(figures[name]['classify'])}")
    for name, durations in host.items():
        print(f"  {name:8s} host InvokeEndpoint  {ms(durations)}")
    print(json.dumps({name: {part: round(percentile(values, 0.5) * 1000, 2) for part, values in parts.items()}
                      for name, parts in figures.items()}))


if __name__ == "__main__":
    main()
