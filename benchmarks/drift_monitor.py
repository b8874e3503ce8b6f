"""One scheduled drift-monitor run over N capture records: time and peak memory, against the limits the
function is deployed with (deploy/monitoring.py MONITOR_FUNCTION), with same-run baselines.

    .venv/bin/python benchmarks/drift_monitor.py [--records 10000] [--per-file 100] [--repeats 3] [--drifted]

A moto S3 + CloudWatch server (a process of its own on 127.0.0.1) holds the baseline and N records in
SageMaker's layout (files of PER-FILE records under VARIANT/YYYY/MM/DD/HH/): answers like the test set's,
or with --drifted one class only at 0.999 (the KS recursion's slowest case: the widest band). Each measurement runs in a
fresh Python process, so its peak resident memory (ru_maxrss) is its own, as a Lambda environment's is:
  monitorDrift      lambdas/drift_monitor.run: list the new keys, read and parse them, the drift tests,
                    PutMetricData, run summary and state (the state is reset before each repeat)
  scones monitor    harness/monitor.monitor over the same S3 prefix: read, parse, the same tests, monitor.json
                    and both plots (matplotlib): the path a person runs by hand
  tests only        the drift tests on the parsed records: lambdas/drift.check_drift (standard library, what
                    both paths run) vs the scipy implementation it replaced (chi2_contingency + ks_2samp)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BUCKET = "bench-monitor"
ENDPOINT = "bench-classifier"

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, os.environ["BENCH_ROOT"])
mode = sys.argv[1]
started = time.perf_counter()
if mode == "function":
    from datetime import datetime, timezone
    from scones.lambdas import drift_monitor
    summary = drift_monitor.run(drift_monitor.MonitorSettings.from_environment(), drift_monitor.Trigger("benchmark", None),
                                "bench", datetime.now(timezone.utc))
    records, status = summary["records"], summary["drift"]["status"]
elif mode == "scones-monitor":
    import tempfile
    from scones.harness import monitor
    summary = monitor.monitor(os.environ["CAPTURE_S3_URI"], tempfile.mkdtemp(), baseline_path=os.environ["BASELINE_FILE"])
    records, status = summary["records"], summary["drift"]["status"]
else:
    from scones.harness import monitor
    from scones.lambdas.drift import checked_baseline
    capture = monitor.read_capture(os.environ["CAPTURE_S3_URI"])
    baseline = checked_baseline(json.load(open(os.environ["BASELINE_FILE"])), "baseline")
    started = time.perf_counter()   # the tests alone, on records already parsed
    if mode == "tests-stdlib":
        from scones.lambdas.drift import check_drift
        status = check_drift(capture.records, baseline)["status"]
    else:
        import warnings
        import numpy as np
        from scipy import stats
        table = np.array([[baseline["predicted_class_counts"][c] for c in baseline["classes"]],
                          [sum(1 for r in capture.records if r.predicted_index == i) for i in range(len(baseline["classes"]))]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p_balance = stats.chi2_contingency(table, correction=True)[1]
            p_confidence = stats.ks_2samp([r.max_confidence for r in capture.records], baseline["max_confidence"]).pvalue
        status = "fail" if min(p_balance, p_confidence) < 0.01 else "pass"
    records = len(capture.records)
print(json.dumps({"seconds": time.perf_counter() - started, "records": records, "status": status,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(session, records: int, per_file: int, baseline: dict, drifted: bool) -> None:
    from test_monitor_capture import answers_for, capture_line, synthetic_test_set

    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=f"monitoring/{ENDPOINT}/baseline.json", Body=json.dumps(baseline).encode())
    answers = [[0.999, 0.001]] * records if drifted else answers_for(*synthetic_test_set(seed=21, n=records))
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for index in range(0, records, per_file):
        moment = start + timedelta(seconds=index * 3600 // records)
        key = f"data_capture/{ENDPOINT}/AllTraffic/{moment:%Y/%m/%d/%H}/{moment:%M-%S}-000-{uuid.uuid4()}.jsonl"
        lines = [capture_line(p, moment) for p in answers[index:index + per_file]]
        s3.put_object(Bucket=BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())


def measure(mode: str, env: dict) -> dict:
    reply = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=False)
    if reply.returncode:
        raise SystemExit(f"{mode} failed:\n{reply.stderr[-3000:]}")
    return json.loads(reply.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drifted", action="store_true", help="one class only, always sure of it")
    args = parser.parse_args()

    import boto3
    from test_monitor_capture import baseline_from, synthetic_test_set

    from scones.deploy.monitoring import MONITOR_FUNCTION, MonitorSettings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
        session_client = session.client
        session.client = lambda name, **kw: session_client(name, endpoint_url=url, **kw)   # noqa: E731
        baseline = baseline_from(*synthetic_test_set(seed=5))
        seeding = time.perf_counter()
        seed(session, args.records, args.per_file, baseline, args.drifted)
        print(f"seeded {args.records} records in {args.records // args.per_file} files in {time.perf_counter() - seeding:.1f} s")
        with tempfile.TemporaryDirectory() as folder:
            baseline_file = Path(folder) / "baseline.json"
            baseline_file.write_text(json.dumps(baseline))
            settings = MonitorSettings(prefix="bench", bucket=BUCKET, endpoint_name=ENDPOINT, threshold=0.93)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **credentials,
                   **settings.environment(), "AWS_ENDPOINT_URL": url, "BENCH_ROOT": str(ROOT),
                   "BASELINE_FILE": str(baseline_file), "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
            results: dict[str, list[dict]] = {mode: [] for mode in ("function", "scones-monitor", "tests-stdlib", "tests-scipy")}
            for _ in range(args.repeats):
                for mode in results:
                    if mode == "function":   # every repeat reads all records as new
                        session.client("s3").delete_object(Bucket=BUCKET, Key=f"monitoring/{ENDPOINT}/state.json")
                    results[mode].append(measure(mode, env))
    finally:
        server.terminate()
        server.wait(10)

    labels = {"function": "monitorDrift run (S3 list+read+parse, tests, metrics, state)",
              "scones-monitor": "baseline: scones monitor over the same prefix (incl. 2 plots)",
              "tests-stdlib": "drift tests only: lambdas/drift.py (standard library)",
              "tests-scipy": "baseline: the scipy implementation it replaced (import included)"}
    print(f"\n{args.records} capture records, {args.repeats} repeats, median (max); each in a fresh process")
    for mode, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        memory = [r["peak_rss_mib"] for r in runs]
        print(f"  {labels[mode]:<66} {statistics.median(seconds):7.2f} s ({max(seconds):.2f})   "
              f"peak RSS {statistics.median(memory):6.0f} MiB ({max(memory):.0f})   {runs[0]['records']} records, "
              f"drift {runs[0]['status']}")
    function_runs = results["function"]
    print(f"  deployed limits of {MONITOR_FUNCTION.name}: {MONITOR_FUNCTION.memory} MB, {MONITOR_FUNCTION.timeout} s -> "
          f"{'within' if max(r['peak_rss_mib'] for r in function_runs) < MONITOR_FUNCTION.memory and max(r['seconds'] for r in function_runs) < MONITOR_FUNCTION.timeout else 'OVER'}")


if __name__ == "__main__":
    random.seed(0)
    main()
