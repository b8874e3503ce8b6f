"""What the fault rules and the Step Functions time scale cost when no rule is set, with baselines in the same run.

    .venv/bin/python benchmarks/faults.py [--calls 200000] [--executions 60] [--no-workflow] [--threshold T]

`scones up` serves the cached model, or $SCONES_MODEL_DIR's.

1. Per request, inside LocalStack's own interpreter (its venv's Python): the fault handler as the
   gateway calls it, for a parsed Lambda Invoke request, with no rule set, with 10 rules that do not
   match it, and with one that matches but does not fire (`after` never reached); the baseline is an
   empty handler of the same shape. Target: <= 0.2 ms per checked request.
2. The warm workflow, N sequential executions (startDate -> stopDate as Step Functions reports
   them, p50/p95): on a stack brought up with the fault handler and the time-scale patch (no rule,
   scale 1), and on one brought up with both off (SCONES_FAULTS_PATCH=0, SCONES_SFN_TIME_SCALE_PATCH=0).
   The stack is brought up on, off, on again, so drift shows. Target: within 3% of off. "On" includes
   the Lambda environments' backoff hook (harness/lambda_runtime/backoff_time_scale.py), which the
   time-scale switch turns off too.
Figures are printed with the load average at the time (the machine is shared), never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scones import settings  # noqa: E402
from scones.harness.executions import percentile, run_executions  # noqa: E402
from scones.harness.lambda_executor.names import FAULTS_PATCH_ENV, TIME_SCALE_PATCH_ENV  # noqa: E402
from scones.harness.localstack import LocalStack  # noqa: E402
from scones.harness.targets import load_target  # noqa: E402

PER_REQUEST = r"""
import json, sys, time
from types import SimpleNamespace
from scones.harness.lambda_executor import faults_gateway
calls = int(sys.argv[1])
context = SimpleNamespace(service=SimpleNamespace(service_name="lambda"), operation=SimpleNamespace(name="Invoke"),
                          service_request={"FunctionName": "arn:aws:lambda:us-east-1:000000000000:function:scones-classifyImage",
                                           "InvocationType": "RequestResponse"})
handler = faults_gateway.FaultHandler()
def empty(chain, context, response):
    if context.service is None or context.operation is None:
        return
def per_call(function):
    started = time.perf_counter()
    for _ in range(calls):
        function(None, context, None)
    return (time.perf_counter() - started) / calls * 1e6
figures = {"baseline: empty handler": per_call(empty), "no rule": per_call(handler)}
for index in range(10):
    faults_gateway.RULES.add({"service": "s3", "operation": "GetObject", "resource": f"other-{index}/", "error": "SlowDown"})
figures["10 rules, none for Lambda Invoke"] = per_call(handler)
faults_gateway.RULES.clear()
faults_gateway.RULES.add({"service": "lambda", "operation": "Invoke", "error": "ServiceException", "after": 10**12})
figures["1 matching rule, not firing"] = per_call(handler)
print(json.dumps(figures))
"""


def per_request(calls: int) -> dict[str, float]:
    python = LocalStack(settings.state_dir()).python
    # LocalStack's venv imports scones through the link harness/localstack.py puts there.
    out = subprocess.run([str(python), "-c", PER_REQUEST, str(calls)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scones(*args: str, env: dict | None = None) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "scones"), *args], env=env or os.environ,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scones {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def workflow(executions: int, env: dict, up_args: list[str]) -> dict[str, float]:
    scones("down")
    scones("up", "--no-data", *up_args, env=env)
    target = load_target("local")
    key = "benchmarks/faults.png"
    image = sorted((settings.data_dir() / "test" / "bicycle").glob("*.png"))[0]
    client = target.client("s3")
    client.put_object(Bucket=target.bucket, Key=key, Body=image.read_bytes())
    run_executions(target, [key] * 5)          # warm every function and the endpoint
    results = run_executions(target, [key] * executions)
    durations = [result.duration for result in results if result.duration is not None]
    return {"p50_ms": percentile(durations, 0.5) * 1000, "p95_ms": percentile(durations, 0.95) * 1000,
            "n": len(durations)}


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--executions", type=int, default=60)
    parser.add_argument("--no-workflow", action="store_true", help="only the per-request figures")
    parser.add_argument("--threshold", type=float, help="scones up --threshold (e.g. for a small test model)")
    args = parser.parse_args()

    print(f"fault handler per request ({args.calls} calls, LocalStack's interpreter; {load()}):")
    for name, micros in per_request(args.calls).items():
        print(f"  {name:<36} {micros:8.2f} us")
    if args.no_workflow:
        return
    off = {**os.environ, FAULTS_PATCH_ENV: "0", TIME_SCALE_PATCH_ENV: "0"}
    on = {key: value for key, value in os.environ.items() if key not in (FAULTS_PATCH_ENV, TIME_SCALE_PATCH_ENV)}
    runs = [("patches on (no rule)", on), ("patches off", off), ("patches on again", on)]
    print(f"warm workflow, {args.executions} sequential executions (startDate -> stopDate):")
    try:
        for name, env in runs:
            figures = workflow(args.executions, env, ["--threshold", str(args.threshold)] if args.threshold else [])
            print(f"  {name:<22} p50 {figures['p50_ms']:6.1f} ms   p95 {figures['p95_ms']:6.1f} ms   (n={figures['n']}; "
                  f"{load()})")
    finally:
        scones("down")


if __name__ == "__main__":
    main()
