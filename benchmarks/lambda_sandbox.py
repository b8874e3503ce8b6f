"""What the Lambda sandbox costs, and whether idle environments give their memory back, measured in one run.

    .venv/bin/python benchmarks/lambda_sandbox.py [--starts 20] [--burst 300] [--concurrency 16]
        [--after 60] [--methods bwrap,unshare] [--skip-burst]

1. Sandbox start cost: --starts starts of `true`, then of `python -c pass`, through each way of
   building the sandbox this machine has (bubblewrap; util-linux unshare + setpriv), beside the old
   ones as the same-run baseline: a plain process ("off", what a machine without bubblewrap ran
   before) and the old bubblewrap line (uid 0, every capability).
2. Idle memory: a fresh LocalStack (our executor, today's defaults) with one function that imports
   boto3 as the workflow's do; the process tree's RSS idle, right after --burst invokes at
   --concurrency, and --after seconds later; then the same with LAMBDA_KEEPALIVE_MS=600000
   (LocalStack 4.14.0's own default: idle environments live 10 minutes) as the baseline.
Timings on a shared machine: read them beside the load average printed with them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scones import loopback  # noqa: E402
from scones.harness.lambda_executor import sandbox  # noqa: E402
from scones.harness.localstack import LocalStack  # noqa: E402
from scones.harness.processes import descendants, rss_bytes  # noqa: E402

ROLE = "arn:aws:iam::000000000000:role/scones-bench-role"
HANDLER = "import boto3\nclient = boto3.client('s3')\n\ndef handler(event, context):\n    return event\n"


def _tree(pid: int) -> tuple[float, int]:
    pids = [pid, *descendants(pid)]
    return rss_bytes(pids) / 2**20, len(pids)


def _old_bwrap(code: Path, tmp: Path, command: list[str]) -> list[str]:
    """The sandbox line before this change: bubblewrap as root, every capability kept."""
    return [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--bind", str(tmp), "/tmp", "--tmpfs", "/var",
            "--ro-bind", str(code), "/var/task", "--tmpfs", "/opt", "--chdir", "/var/task", "--", *command]


def start_costs(starts: int, methods: list[str]) -> None:
    python = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="scones-bench-sandbox-") as folder:
        base = Path(folder)
        code, tmp = base / "code", base / "tmp"
        code.mkdir()
        tmp.mkdir(mode=0o1777)
        layout = sandbox.Layout(code_dir=code, tmp_dir=tmp, scratch_dir=base / "scratch",
                                visible=(Path(sys.base_prefix).resolve(),))
        lines = {}
        for method in ["off", *(["old-bwrap"] if shutil.which("bwrap") else []), *methods]:
            def argv(command: list[str], method: str = method) -> list[str]:
                if method == "old-bwrap":
                    return _old_bwrap(code, tmp, command)
                os.environ[sandbox.SWITCH] = method
                sandbox.capabilities.cache_clear()
                return sandbox.command(command, layout, ephemeral_bytes=512 * sandbox.MiB, cgroup=None)
            for label, command in (("true", ["true"]), ("python -c pass", [python, "-c", "pass"])):
                line = argv(command)
                times = []
                for _ in range(starts):
                    started = time.perf_counter()
                    subprocess.run(line, check=True, stdout=subprocess.DEVNULL)
                    times.append((time.perf_counter() - started) * 1000)
                lines[(method, label)] = times
        os.environ.pop(sandbox.SWITCH, None)
        sandbox.capabilities.cache_clear()
    print(f"{'sandbox':<12} {'command':<16} {'p50 ms':>8} {'p90 ms':>8}")
    for (method, label), times in lines.items():
        ordered = sorted(times)
        print(f"{method:<12} {label:<16} {statistics.median(times):8.1f} {ordered[int(0.9 * (len(ordered) - 1))]:8.1f}")
    print(f"load average after: {os.getloadavg()}")


def burst(invokes: int, concurrency: int, after_s: float, keepalive_ms: str | None) -> dict:
    extra = {"LAMBDA_KEEPALIVE_MS": keepalive_ms} if keepalive_ms else {}
    with tempfile.TemporaryDirectory(prefix="scones-bench-burst-") as home:
        instance = LocalStack(port=_free_port(), home=home, extra_env=extra)
        instance.ensure_venv(progress=True)
        pid = instance.start()
        try:
            instance.wait_ready(timeout=120)
            session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
            from botocore.config import Config

            client = session.client("lambda", endpoint_url=instance.url,
                                    config=Config(max_pool_connections=concurrency, read_timeout=300,
                                                  retries={"max_attempts": 1}))
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("app.py", HANDLER)
            client.create_function(FunctionName="bench-burst", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                   Code={"ZipFile": buffer.getvalue()}, Timeout=60, MemorySize=256)
            client.get_waiter("function_active_v2").wait(FunctionName="bench-burst", WaiterConfig={"Delay": 0.2})
            idle = _tree(pid)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                errors = sum(1 for reply in pool.map(
                    lambda index: client.invoke(FunctionName="bench-burst", Payload=json.dumps({"i": index})),
                    range(invokes)) if reply.get("FunctionError"))
            burst_s = time.perf_counter() - started
            peak = _tree(pid)
            deadline = time.monotonic() + after_s
            while time.monotonic() < deadline:   # a benchmark, not a test: it samples for the stated time
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            later = _tree(pid)
            environments = loopback.get_json(f"{instance.url}/_scones/executor", timeout=10).get("environments")
        finally:
            instance.stop()
    return {"idle": idle, "after_burst": peak, "later": later, "burst_s": burst_s, "errors": errors,
            "environments": environments}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--after", type=float, default=60.0)
    parser.add_argument("--methods", default="bwrap,unshare")
    parser.add_argument("--skip-burst", action="store_true")
    args = parser.parse_args()
    methods = [method for method in args.methods.split(",") if method != "bwrap" or shutil.which("bwrap")]
    start_costs(args.starts, methods)
    if args.skip_burst:
        return
    for label, keepalive in (("today (idle reclaim 30 s)", None), ("baseline LAMBDA_KEEPALIVE_MS=600000", "600000")):
        print(f"load average before: {os.getloadavg()}")
        result = burst(args.burst, args.concurrency, args.after, keepalive)
        (idle_mb, idle_n), (peak_mb, peak_n), (later_mb, later_n) = result["idle"], result["after_burst"], result["later"]
        print(f"{label}: LocalStack tree idle {idle_mb:.0f} MiB in {idle_n} processes; after {args.burst} invokes at "
              f"{args.concurrency} concurrent ({result['burst_s']:.1f} s, {result['errors']} errors) {peak_mb:.0f} MiB "
              f"in {peak_n}; {args.after:.0f} s later {later_mb:.0f} MiB in {later_n} "
              f"({100 * (later_mb - idle_mb) / idle_mb:+.0f}% of idle); environments {result['environments']}")


if __name__ == "__main__":
    main()
