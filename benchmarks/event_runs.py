"""Event-driven runs on the local stack: photo landing -> result written, with a same-run baseline.

    .venv/bin/python benchmarks/event_runs.py [--photos 30] [--poll-interval 0.01]

Needs the local stack up (`scones up`); attaches to it and leaves it up. For each of N test photos,
one at a time (warm, sequential):
- event-driven: PutObject under the intake prefix -> results/<key>.json readable (S3 notification,
  EventBridge rule, Step Functions, status-change rule, writeResult);
- baseline, same photo, same run: a direct StartExecution of it (stored outside the intake prefix,
  so no rule starts a second run) -> the execution SUCCEEDED/FAILED as describe_execution reports it
  (the workflow alone), and -> its result written (the workflow plus the result-writing leg).
Each wait polls S3 or describe_execution every --poll-interval seconds. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scones import settings  # noqa: E402
from scones.harness.executions import percentile  # noqa: E402
from scones.harness.targets import load_target  # noqa: E402
from scones.lambdas.config import CLASSES  # noqa: E402
from scones.lambdas.run_results import result_key  # noqa: E402

DEADLINE_S = 60.0


def wait(condition, interval: float, what: str) -> None:
    """Until condition() is true, polled every `interval`; raises at the deadline."""
    deadline = time.perf_counter() + DEADLINE_S
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no {what} after {DEADLINE_S:.0f} s")
        time.sleep(interval)


def result_written(s3, bucket: str, key: str):
    def exists() -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return True
        except s3.exceptions.ClientError:
            return False
    return exists


def line(label: str, values: list[float]) -> str:
    return (f"{label:<46} p50 {percentile(values, 0.5) * 1000:6.0f} ms   p95 {percentile(values, 0.95) * 1000:6.0f} ms"
            f"   mean {statistics.fmean(values) * 1000:6.0f} ms   n={len(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    args = parser.parse_args()

    target = load_target("local")
    outputs = target.record["outputs"]
    if not outputs.get("intake_s3_uri"):
        sys.exit("this local stack has no event-driven runs: bring it up again with `scones up`")
    bucket = target.bucket
    intake = outputs["intake_s3_uri"].removeprefix(f"s3://{bucket}/")
    results = outputs["results_s3_uri"].removeprefix(f"s3://{bucket}/")
    s3, sfn = target.client("s3"), target.client("stepfunctions")
    data = settings.data_dir()
    photos = [path for index in range(args.photos)
              for path in [sorted((data / "test" / CLASSES[index % 2]).glob("*.png"))[index // 2]]]
    run = uuid.uuid4().hex[:8]
    landed, workflow_only, started_to_result = [], [], []
    written: list[str] = []

    for index, path in enumerate(photos):
        body = path.read_bytes()
        # event-driven
        key = f"{intake}bench-{run}/{index:03d}-{path.name}"
        started = time.perf_counter()   # the PutObject counts, as StartExecution does below
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png")
        wait(result_written(s3, bucket, result_key(results, key)), args.poll_interval, f"result of {key}")
        landed.append(time.perf_counter() - started)
        written += [key, result_key(results, key)]
        # baseline: the same photo started by hand
        direct = f"bench-{run}/direct/{index:03d}-{path.name}"
        s3.put_object(Bucket=bucket, Key=direct, Body=body, ContentType="image/png")
        started = time.perf_counter()
        arn = sfn.start_execution(stateMachineArn=target.state_machine_arn,
                                  input=json.dumps({"s3_bucket": bucket, "s3_key": direct}))["executionArn"]
        wait(lambda arn=arn: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", args.poll_interval,
             f"end of {arn}")
        workflow_only.append(time.perf_counter() - started)
        wait(result_written(s3, bucket, result_key(results, direct)), args.poll_interval, f"result of {direct}")
        started_to_result.append(time.perf_counter() - started)
        written += [direct, result_key(results, direct)]

    for key in written:
        s3.delete_object(Bucket=bucket, Key=key)
    print(f"local stack {outputs['intake_s3_uri']} -> {outputs['results_s3_uri']}, {len(photos)} photos, "
          f"sequential, polled every {args.poll_interval * 1000:.0f} ms")
    print(line("photo landing -> result written (event-driven)", landed))
    print(line("baseline: StartExecution -> result written", started_to_result))
    print(line("baseline: StartExecution -> execution ended", workflow_only))
    print(f"event-driven overhead over a direct start (p50): "
          f"{(percentile(landed, 0.5) - percentile(started_to_result, 0.5)) * 1000:.0f} ms; "
          f"result-writing leg (p50): {(percentile(started_to_result, 0.5) - percentile(workflow_only, 0.5)) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
