"""Cost of durable data capture (harness/serving/capture.py's disk spool), and of re-seeding S3 at `scones up`.

    .venv/bin/python benchmarks/capture_spool.py throughput [--model DIR] [--seconds 5] [--clients 8] [--repeats 3]
    .venv/bin/python benchmarks/capture_spool.py record-cost [--records 5000] [--repeats 5]
    .venv/bin/python benchmarks/capture_spool.py restore [--model DIR] [--records 1000] [--per-file 10]

throughput: the endpoint (`scones serve` as a subprocess, as the local stack runs it) under N
closed-loop keep-alive clients, in rounds that alternate capture off / capture on with the
in-memory writer from before the spool (git show BEFORE:harness/serving/capture.py, put in place of
today's writer with a sitecustomize in the server's process) / capture on with today's spooled
writer, all at 100% sampling to a moto S3 server on 127.0.0.1. Target (issue 12): the spool
costs <= 5% throughput against the memory writer.

record-cost: the same two writers in this process, no server, no network: per record, the time
submit() takes on the request path and the CPU capture uses in all. On a shared machine this is
steadier than the server rounds above.

restore: a stack of its own (state dir under .scones/, free ports) whose spool archive holds
RECORDS captured records in files of PER-FILE records, as the endpoint leaves them; LocalStack
starts empty, as after a crash, and `scones up` puts them back. Prints up's time, the restore
step's own time (it runs beside the Lambda deploy), and what `scones monitor` then counts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scones import settings  # noqa: E402
from scones.harness.endpoint import EndpointServer, free_port  # noqa: E402
from scones.harness.serving.capture import CaptureConfig, CapturedInvocation, CaptureWriter  # noqa: E402
from endpoint import load_images, load_server, start_s3  # noqa: E402  (benchmarks/endpoint.py, beside this script)

BEFORE = "da9a27b"   # the last commit with the in-memory capture writer
ENDPOINT = "bench-capture"


def resolve_model(explicit: str | None) -> Path:
    from scones.harness.models import ensure_model

    return Path(explicit) if explicit else Path(ensure_model())


SITECUSTOMIZE = '''
import importlib.util, sys
sys.path.insert(0, {root!r})
import scones.harness.serving.capture as today
spec = importlib.util.spec_from_file_location("capture_in_memory", {old!r})
old = sys.modules["capture_in_memory"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)


class InMemoryWriter(old.CaptureWriter):
    def __init__(self, *args, spool_dir=None, **options):  # today's server passes a spool; the old writer has none
        super().__init__(*args, **options)


today.CaptureWriter = InMemoryWriter
'''


def in_memory_writer_env(work: Path) -> dict[str, str]:
    old_source = subprocess.run(["git", "show", f"{BEFORE}:harness/serving/capture.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    (work / "capture_in_memory.py").write_text(old_source)
    (work / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(ROOT), old=str(work / "capture_in_memory.py")))
    return {"PYTHONPATH": str(work)}


def run(model: Path, images, seconds: float, clients: int, capture: CaptureConfig | None, env: dict,
        spool: Path | None) -> dict:
    server = EndpointServer(model, endpoint_name=ENDPOINT, mode="subprocess", capture=capture, env=env,
                            capture_spool=spool, log_path=settings.state_dir() / "bench" / "capture-spool.log")
    with server:
        result = load_server(server.url, server.pid, images, seconds, clients,
                             path=f"/endpoints/{ENDPOINT}/invocations")
        if capture is not None:
            result["capture"] = server.capture_status()
    return result


def throughput(args) -> None:
    model = resolve_model(args.model)
    images = load_images()
    (settings.state_dir() / "bench").mkdir(parents=True, exist_ok=True)
    s3_process, s3_url = start_s3()
    work = Path(tempfile.mkdtemp(prefix="bench-capture-spool-"))
    s3_env = {"AWS_ENDPOINT_URL_S3": s3_url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
              "AWS_DEFAULT_REGION": "us-east-1"}
    capture = CaptureConfig("s3://bench-capture/capture")
    configs = {
        "capture off": (None, {}, None),
        "capture on, in memory (before)": (capture, {**s3_env, **in_memory_writer_env(work)}, None),
        "capture on, disk spool (today)": (capture, s3_env, work / "spool"),
    }
    rounds = []
    try:
        print(f"model {model}, {args.clients} clients, {args.seconds:g} s per run; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for index in range(args.repeats):
            round_ = {}
            for label, (config, env, spool) in configs.items():
                if spool is not None:
                    shutil.rmtree(spool, ignore_errors=True)
                round_[label] = result = run(model, images, args.seconds, args.clients, config, env, spool)
                if config is not None and ("spooled_records" in result["capture"]) != (spool is not None):
                    sys.exit(f"{label}: the server did not run the capture writer it should (status {result['capture']})")
                extra = ""
                if "capture" in result:
                    status = result["capture"]
                    extra = (f"  sampled {status['sampled']}, in S3 {status['written_records']}, dropped "
                             f"{status['dropped']}, writer CPU {status['writer_cpu_s']:.2f} s")
                print(f"round {index}: {label:32} {result['throughput']:7.1f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms  server CPU {result['cpu_ms']:.2f} ms/req  errors "
                      f"{result['errors']}{extra}", flush=True)
            rounds.append(round_)
    finally:
        s3_process.kill()
        shutil.rmtree(work, ignore_errors=True)
    labels = list(configs)

    def cost(label: str, against: str) -> float:
        return statistics.median(1 - r[label]["throughput"] / r[against]["throughput"] for r in rounds)

    print(f"median over {len(rounds)} rounds (load average now {os.getloadavg()[0]:.1f}):")
    for label in labels:
        print(f"  {label:32} {statistics.median(r[label]['throughput'] for r in rounds):7.1f} req/s")
    print(f"  disk spool vs in memory: {-cost(labels[2], labels[1]):+.1%} throughput (target: a cost <= 5%)")
    print(f"  in memory vs capture off: {-cost(labels[1], labels[0]):+.1%};  disk spool vs capture off: "
          f"{-cost(labels[2], labels[0]):+.1%}")


def old_capture_module(work: Path):
    import importlib.util

    in_memory_writer_env(work)
    spec = importlib.util.spec_from_file_location("capture_in_memory", work / "capture_in_memory.py")
    module = sys.modules["capture_in_memory"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_cost(args) -> None:
    """Per record, in this process: what submit() takes on the request path, and all the CPU capture uses
    (submit + encode + spool write + sync + upload to a no-op S3), before and today, alternating."""
    import scones.harness.serving.capture as today

    class NoS3:
        def put_object(self, **_):
            pass

    work = Path(tempfile.mkdtemp(prefix="bench-record-cost-", dir=settings.state_dir()))
    before = old_capture_module(work)
    png = load_images(1)[0]
    results: dict[str, list[tuple[float, float]]] = {"in memory (before)": [], "disk spool (today)": []}
    try:
        for index in range(args.repeats):
            for label, module in (("in memory (before)", before), ("disk spool (today)", today)):
                options = {"spool_dir": work / f"spool-{index}"} if module is today else {}
                writer = module.CaptureWriter(module.CaptureConfig("s3://b/p"), "ep", s3_client_factory=NoS3,
                                              **options).start()
                writer.wait_started()
                began, cpu_began = time.perf_counter(), time.process_time()
                for _ in range(args.records):
                    writer.submit(module.CapturedInvocation(datetime.now(timezone.utc),
                                                            "0d7a5f2e-3c1b-4f5e-9a8b-1c2d3e4f5a6b", png, "image/png",
                                                            b"[0.97, 0.03]", "application/json"))
                request_path = (time.perf_counter() - began) / args.records
                writer.close(60)
                results[label].append((request_path, (time.process_time() - cpu_began) / args.records))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.records} records of a {len(png)}-byte PNG, median of {args.repeats} (load average "
          f"{os.getloadavg()[0]:.1f}):")
    for label, samples in results.items():
        print(f"  {label:20} submit {1e6 * statistics.median(s[0] for s in samples):6.1f} us on the request path, "
              f"{1e6 * statistics.median(s[1] for s in samples):6.1f} us CPU in all per record")


def write_archive(spool: Path, bucket: str, prefix: str, endpoint: str, records: int, per_file: int) -> None:
    """RECORDS records in the spool's uploaded/ archive, written by the capture writer itself."""
    class Accepting:
        def put_object(self, **_):
            pass

    writer = CaptureWriter(CaptureConfig(f"s3://{bucket}/{prefix}"), endpoint, s3_client_factory=Accepting,
                           spool_dir=spool, max_batch_records=per_file, flush_interval_s=3600)
    png = load_images(1)[0]
    moment = datetime.now(timezone.utc) - timedelta(minutes=5)
    for index in range(records):
        writer.submit(CapturedInvocation(moment + timedelta(milliseconds=index), f"{index:08d}-0000-4000-8000-000000000000",
                                         png, "image/png", b"[0.97, 0.03]", "application/json"))
    writer.start()
    if not writer.close(timeout_s=120):
        sys.exit("could not write the archive")


def restore(args) -> None:
    from scones.deploy import local as local_target

    model = resolve_model(args.model)
    shared = settings.state_dir()
    state = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=shared))   # not /tmp: Lambda sandboxes hide it
    for name in ("localstack-venv", "lambda-runtimes"):
        if (shared / name).exists():
            (state / name).symlink_to(shared / name)
    env = {**os.environ, settings.STATE_DIR: str(state), settings.DATA_DIR: str(settings.data_dir()),
           settings.LOCALSTACK_PORT: str(free_port()),
           settings.ENDPOINT_PORT: str(free_port())}
    spool = state / "capture-spool" / local_target.DEFAULT_ENDPOINT_NAME
    write_archive(spool, local_target.DEFAULT_BUCKET, local_target.CAPTURE_PREFIX, local_target.DEFAULT_ENDPOINT_NAME,
                  args.records, args.per_file)

    def scones(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", *command], env=env,
                                capture_output=True, text=True, timeout=900, cwd=ROOT)
        if result.returncode != 0:
            sys.exit(f"scones {' '.join(command)} failed:\n{result.stderr}")
        return result

    try:
        began = time.perf_counter()
        scones("up", "--model", str(model), "--prefix", "bench-restore")
        wall = time.perf_counter() - began
        record = json.loads((state / "local" / "stack.json").read_text())
        counted = json.loads(scones("monitor", "--json").stdout)["records"]
        restored = record["capture_restored"]
        print(f"load average {os.getloadavg()[0]:.1f}; {args.records} records in files of {args.per_file}")
        print(f"scones up after a crash: {wall:.1f} s wall ({record['up_seconds']:.1f} s inside up); the restore "
              f"step {restored['seconds']:.2f} s for {restored['records']} records in {restored['files']} files "
              f"(beside the Lambda deploy); scones monitor counts {counted}")
        scones("down")
        began = time.perf_counter()
        scones("up", "--model", str(model), "--prefix", "bench-restore", "--no-data")
        print(f"the same after down + up (--no-data): {time.perf_counter() - began:.1f} s wall, restore step "
              f"{json.loads((state / 'local' / 'stack.json').read_text())['capture_restored']['seconds']:.2f} s")
    finally:
        subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", "down"], env=env,
                       capture_output=True, timeout=300, cwd=ROOT)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    first = commands.add_parser("throughput")
    first.add_argument("--model", default=None)
    first.add_argument("--seconds", type=float, default=5.0)
    first.add_argument("--clients", type=int, default=8)
    first.add_argument("--repeats", type=int, default=3)
    third = commands.add_parser("record-cost")
    third.add_argument("--records", type=int, default=5000)
    third.add_argument("--repeats", type=int, default=5)
    second = commands.add_parser("restore")
    second.add_argument("--model", default=None)
    second.add_argument("--records", type=int, default=1000)
    second.add_argument("--per-file", type=int, default=10)
    args = parser.parse_args()
    {"throughput": throughput, "record-cost": record_cost, "restore": restore}[args.command](args)


if __name__ == "__main__":
    main()
