"""Cost of one IAM check on LocalStack's gateway (harness/iam): map the request, evaluate the role's policies.

    .venv/bin/python benchmarks/iam_check.py [--requests 20000] [--repeats 5] [--gateway 300]

Target (issue 22): <= 1 ms per checked request. Measured in-process on the very policies deploy/iam.py gives
each role, over the operations our functions call (allowed and denied ones alike):
  map only          actions.checks_for: operation + parameters -> (action, resource, condition keys)
  map + evaluate    what the gateway handler does per request, less the dictionary look-ups of the session
                    and the role's stored policies
  baseline          the same loop calling a no-op instead (the loop's and the call's own cost), same run
With --gateway N: two LocalStacks started in this run, SCONES_IAM=enforce and SCONES_IAM=off, each answering N
HeadObject calls made with an assumed role's session (deploy/iam.py's Lambda policy): the median per request
through the real gateway, with and without the check.
With --workflow N: the whole local stack brought up with `scones up --iam enforce` and `--iam off` in turn (--rounds
rounds, which goes first alternating; this run, this state dir), each timing N warm sequential workflow executions (p50 as the service
reports it, startDate -> stopDate, and as the client sees it) and `scones up` itself (the roles are made in both);
under enforce, the denials the gateway listed (expected: none). Target: warm p50 enforce within 10% of off.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent))

from scones.deploy import iam  # noqa: E402
from scones.harness.iam.actions import Where, checks_for  # noqa: E402
from scones.harness.iam.evaluate import Principal, Request, evaluate  # noqa: E402

SCOPE = iam.Scope(partition="aws", region="us-east-1", account_id="000000000000", prefix="scones", bucket="scones-bucket",
                  endpoint_name="scones-endpoint", function_names=("serializeImageData", "classifyImage", "filterInferences"),
                  image_repositories=("763104351884:pytorch-inference",))
WHERE = Where("us-east-1", "000000000000")
LAMBDA = iam.lambda_policy(SCOPE)
MONITOR = iam.monitor_policy(SCOPE, function="monitorDrift", capture_prefix="capture/", monitor_prefix="monitoring/",
                             namespace="Scones/Drift")
CALLS = [   # (policy, service, operation, parameters)
    (LAMBDA, "s3", "GetObject", {"Bucket": "scones-bucket", "Key": "test/bicycle/bike_s_000001.png"}),
    (LAMBDA, "sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "scones-endpoint"}),
    (LAMBDA, "logs", "PutLogEvents", {"logGroupName": "/aws/lambda/classifyImage", "logStreamName": "2026/12/06/x"}),
    (LAMBDA, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "results/x.json"}),   # denied
    (MONITOR, "s3", "ListObjectsV2", {"Bucket": "scones-bucket", "Prefix": "capture/scones-endpoint/"}),
    (MONITOR, "cloudwatch", "PutMetricData", {"Namespace": "Scones/Drift"}),
    (iam.states_policy(SCOPE), "lambda", "Invoke", {"FunctionName": SCOPE.function_arn("classifyImage")}),
]
WHO = Principal.assumed_role("aws", "000000000000", "scones-lambda-role", "classifyImage")


def check(policy, service, operation, params) -> bool:
    return all(evaluate(Request(c.action, c.resource, WHO, c.context), [policy]).allowed
               for c in checks_for(service, operation, params, WHERE))


def map_only(policy, service, operation, params) -> bool:
    return bool(checks_for(service, operation, params, WHERE))


def nothing(policy, service, operation, params) -> bool:
    return True


def per_request_us(function, requests: int) -> float:
    start = time.perf_counter()
    for index in range(requests):
        function(*CALLS[index % len(CALLS)])
    return (time.perf_counter() - start) / requests * 1e6


def _role_session_s3(url: str):
    import json

    import boto3

    admin = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    iam_client = admin.client("iam", endpoint_url=url)
    role = iam_client.create_role(RoleName="bench-lambda-role", AssumeRolePolicyDocument=json.dumps(
        iam.trust_policy(iam.TRUSTED_SERVICE["lambda"])))["Role"]["Arn"]
    iam_client.put_role_policy(RoleName="bench-lambda-role", PolicyName=iam.POLICY_NAME, PolicyDocument=json.dumps(LAMBDA))
    admin.client("s3", endpoint_url=url).create_bucket(Bucket=SCOPE.bucket)
    admin.client("s3", endpoint_url=url).put_object(Bucket=SCOPE.bucket, Key="k", Body=b"x")
    credentials = admin.client("sts", endpoint_url=url).assume_role(RoleArn=role, RoleSessionName="classifyImage")["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"], region_name="us-east-1").client("s3", endpoint_url=url)


def gateway_medians(requests: int) -> dict[str, float]:
    """Both LocalStacks run at once and the calls alternate, so load on the machine hits both alike."""
    import contextlib
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from scones.harness.iam.names import MODE_ENV
    from support import running_localstack

    with contextlib.ExitStack() as stack:
        clients = {}
        for mode in ("enforce", "off"):
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            clients[mode] = _role_session_s3(stack.enter_context(running_localstack(home, {MODE_ENV: mode})).url)
        timings: dict[str, list[float]] = {mode: [] for mode in clients}
        for _ in range(requests):
            for mode, s3 in clients.items():
                start = time.perf_counter()
                s3.head_object(Bucket=SCOPE.bucket, Key="k")
                timings[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(values[requests // 10:]) * 1e3 for mode, values in timings.items()}


def workflow_rounds(executions: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """{mode: {"service_p50": [...], "client_p50": [...], "up_s": [...], "denials": [...]}} over the rounds."""
    import subprocess

    from scones import settings
    from scones.harness.executions import percentile, run_executions
    from scones.harness.iam import denials
    from scones.harness.targets import load_target

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from e2e import pick_key

    def cli(*args: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", *args], check=True,
                       cwd=ROOT, env=os.environ, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    figures: dict[str, dict[str, list[float]]] = {
        mode: {"service_p50": [], "client_p50": [], "up_s": [], "denials": []} for mode in ("enforce", "off")}
    cli("down")
    for round_index in range(rounds):
        # alternate which mode goes first, so a drift in the machine's load favours neither
        for mode in ("enforce", "off") if round_index % 2 == 0 else ("off", "enforce"):
            found = figures[mode]
            found["up_s"].append(cli("up", "--iam", mode))
            target = load_target("local", settings.state_dir())
            sfn = target.client("stepfunctions")
            key, expected_error = pick_key(target, settings.data_dir())
            run_executions(target, [key] * 5, client=sfn, poll_interval=0.002)
            results = run_executions(target, [key] * executions, client=sfn, poll_interval=0.002)
            failed = [r for r in results if r.error != expected_error]
            if failed:
                raise SystemExit(f"--iam {mode}: {len(failed)} executions failed, e.g. {failed[0].error}: "
                                 f"{failed[0].error_message}")
            found["service_p50"].append(percentile([r.duration for r in results], 0.5) * 1e3)
            found["client_p50"].append(percentile([r.wall_duration for r in results], 0.5) * 1e3)
            listing = denials.fetch(target.session.default_endpoint_url) or {"denials": []}
            found["denials"].append(len(listing["denials"]))
            cli("down")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gateway", type=int, default=0, metavar="N", help="also time N HeadObject calls through LocalStack")
    parser.add_argument("--workflow", type=int, default=0, metavar="N",
                        help="also time N warm workflow executions on `scones up --iam enforce` and `--iam off`")
    parser.add_argument("--rounds", type=int, default=3, help="--workflow: rounds of enforce then off (default 3)")
    args = parser.parse_args()
    for function in (check, map_only, nothing):       # warm the caches (compiled wildcards)
        per_request_us(function, 1000)
    rows = {"map + evaluate": check, "map only": map_only, "baseline (no-op)": nothing}
    print(f"{args.requests} requests x {args.repeats} repeats over {len(CALLS)} calls; median microseconds per request")
    results = {}
    for name, function in rows.items():
        results[name] = statistics.median(per_request_us(function, args.requests) for _ in range(args.repeats))
        print(f"  {name:18s} {results[name]:8.2f} us")
    cost = results["map + evaluate"] - results["baseline (no-op)"]
    print(f"cost per checked request: {cost:.2f} us (target <= 1000 us): {'met' if cost <= 1000 else 'NOT met'}")
    if args.gateway:
        medians = gateway_medians(args.gateway)
        print(f"through LocalStack's gateway, HeadObject with a role session, two stacks alternating, "
              f"median of {args.gateway} each (first 10% dropped):")
        print(f"  SCONES_IAM=enforce {medians['enforce']:.2f} ms   SCONES_IAM=off {medians['off']:.2f} ms   "
              f"difference {medians['enforce'] - medians['off']:+.2f} ms")
    if args.workflow:
        rounds = workflow_rounds(args.workflow, args.rounds)
        print(f"warm workflow, {args.workflow} sequential executions per round, {args.rounds} rounds per mode (ms):")
        for mode, found in rounds.items():
            print(f"  --iam {mode:7s} service p50 {' / '.join(f'{v:.1f}' for v in found['service_p50'])}   "
                  f"client p50 {' / '.join(f'{v:.1f}' for v in found['client_p50'])}   "
                  f"scones up {' / '.join(f'{v:.1f} s' for v in found['up_s'])}   denials {found['denials']}")
        enforce, off = (statistics.median(rounds[m]["service_p50"]) for m in ("enforce", "off"))
        print(f"service p50 enforce {enforce:.1f} ms vs off {off:.1f} ms: {(enforce / off - 1) * 100:+.1f}% "
              f"(target within 10%: {'met' if enforce <= off * 1.1 else 'NOT met'})")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
