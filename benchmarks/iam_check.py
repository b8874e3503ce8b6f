"""Cost of one IAM check on LocalStack's gateway (harness/iam): map the request, evaluate the role's policies.

    .venv/bin/python benchmarks/iam_check.py [--requests 20000] [--repeats 5]

Target (issue 22): <= 1 ms per checked request. Measured in-process on the very policies deploy/iam.py gives
each role, over the operations our functions call (allowed and denied ones alike):
  map only          actions.checks_for: operation + parameters -> (action, resource, condition keys)
  map + evaluate    what the gateway handler does per request, less the dictionary look-ups of the session
                    and the role's stored policies
  baseline          the same loop calling a no-op instead (the loop's and the call's own cost), same run
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
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


if __name__ == "__main__":
    main()
