"""Local endpoint benchmark: `scones serve` as the container serves (one request per predict_fn call), with
our opt-in batching, and AWS's own inference toolkit under TorchServe, in one run, against direct predict.

    .venv/bin/python benchmarks/endpoint.py [--model DIR|model.tar.gz] [--seconds 5] [--clients 8]
        [--default 2x1] [--batching 2x1b4] [--layouts 2x1,2x1b4,...] [--toolkit-python PATH]

Measured in one run, on the same machine, model and client load (N concurrent keep-alive HTTP clients
posting real 32x32 test PNGs to POST /invocations, the container contract every server here speaks):
  1. a survey of `scones serve` layouts (a subprocess, as the local stack runs it): inference
     threads x torch threads, and our opt-in dynamic batching (max batch size, max batch delay);
  2. the HTTP stack's own floor: the default and batching layouts serving the tiny stub model
     (scones/testing.py), so model compute and server overhead can be told apart;
  3. rounds alternating, so drifting load hits all alike: the limit (the model's handlers called
     directly in this process, one request per predict_fn call and batched); scones serve as the
     container serves (the default: no batching); scones serve with our opt-in batching; the real
     SageMaker PyTorch inference toolkit (sagemaker-pytorch-inference 2.0.25 under TorchServe
     0.12.0, harness/toolkit_endpoint.py) as the image runs it (one worker per CPU, torch's default
     threads) and with one torch thread per worker (OMP_NUM_THREADS=1, as our workers); and the
     default with data capture at 100% (to a moto S3 server on 127.0.0.1).
The toolkit runs from the venv tests/parity/conftest.py builds (<state dir>/parity/toolkit-venv-*;
run the parity suite once, or pass --toolkit-python). Every server row shows p50/p99/mean latency
beside N/X = clients / throughput: in a closed loop Little's law makes the mean latency exactly
N/X, so latency falls only as throughput rises, i.e. as CPU per request (server + clients, on the
same cores) falls. The model-compute floor is N / the best direct throughput. srv CPU of the toolkit
is its whole process group (Java frontend + Python workers). The load average is printed, since
others may share the machine.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, for direct predict (the server sets its own)

from scones import settings  # noqa: E402
from scones.harness.endpoint import EndpointServer, free_port  # noqa: E402
from scones.harness.serving.capture import CaptureConfig  # noqa: E402
from scones.harness.toolkit_endpoint import ToolkitEndpoint  # noqa: E402

ENDPOINT = "bench-endpoint"


def load_images(count: int = 200) -> list[bytes]:
    files = sorted((settings.data_dir() / "test").glob("*/*.png"))[:count]
    if not files:
        sys.exit(f"no test PNGs under {settings.data_dir() / 'test'}")
    return [path.read_bytes() for path in files]


def build_untrained_model(out_dir: Path) -> Path:
    """The product's network and handlers (local_model/inference.py + network.py) with untrained
    weights: the same compute per request as the trained model, without waiting for training."""
    import io
    import tarfile

    import torch

    from scones.local_model import network

    root = Path(__file__).resolve().parent.parent / "local_model"
    weights = io.BytesIO()
    torch.save({"architecture": network.DEFAULT_ARCHITECTURE, "state_dict": network.build_model().state_dict(),
                "classes": list(network.CLASSES)}, weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out_dir / "model.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("model.pth")
        info.size = len(weights.getvalue())
        archive.addfile(info, io.BytesIO(weights.getvalue()))
        for name in ("inference.py", "network.py"):
            archive.add(root / name, arcname=f"code/{name}")
    return out_dir / "model.tar.gz"


def resolve_model(explicit: str | None, stub: bool, untrained: bool = False) -> Path:
    if explicit:
        return Path(explicit)
    if untrained:
        return build_untrained_model(settings.state_dir() / "bench" / "untrained-model")
    if stub:
        from scones.testing import build_stub_model

        return build_stub_model(settings.state_dir() / "bench" / "stub-model")
    from scones.harness.models import ensure_model

    return ensure_model()


# --- the limit: direct predict ------------------------------------------------------------------

def direct_predict(model_path: Path, images: list[bytes], seconds: float, workers: int, torch_threads: int,
                   batch: int = 1) -> dict:
    """Requests per second (and CPU ms per request) through the handlers in this process: `workers` threads,
    each serving `batch` requests per call of LoadedModel.invoke_batch (one predict_fn call), as a server would."""
    import tempfile

    import torch

    from scones.harness.serving.handlers import load_model, unpack_model

    torch.set_num_threads(torch_threads)
    source = model_path if model_path.suffix == ".gz" else model_path / "model.tar.gz"
    requests = [(body, "image/png", "application/json") for body in images]
    with tempfile.TemporaryDirectory(prefix="bench-model-") as model_dir:
        model = load_model(unpack_model(source, model_dir))
        for start in range(0, 20 * batch, batch):
            model.invoke_batch(requests[start % len(requests):][:batch])
        counts = [0] * workers
        deadline = time.perf_counter() + seconds

        def work(index: int):
            n = 0
            while time.perf_counter() < deadline:
                start = (n * batch) % len(requests)
                model.invoke_batch((requests[start:] + requests)[:batch])
                n += 1
            counts[index] = n * batch

        started, cpu_started = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return {"throughput": sum(counts) / elapsed, "cpu_ms": 1000 * cpu / sum(counts)}


# --- the server under load ----------------------------------------------------------------------

def cpu_seconds(pid: int, group: bool = False) -> float:
    """utime + stime of the process, or of every live process of its process group."""
    total = 0
    for stat in ([Path(f"/proc/{pid}/stat")] if not group else Path("/proc").glob("[0-9]*/stat")):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if not group or int(fields[2]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def load_server(url: str, pid: int, images: list[bytes], seconds: float, clients: int, group: bool = False,
                path: str = "/invocations") -> dict:
    """CLIENTS keep-alive clients in a closed loop on PATH (the container's route by default) for SECONDS."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_gate = threading.Barrier(clients + 1)

    def client(index: int, deadline_holder: list):
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        n = index
        for body in images[:5]:  # warm the connection and the server
            connection.request("POST", path, body=body, headers={"Content-Type": "image/png"})
            connection.getresponse().read()
        start_gate.wait()
        while time.perf_counter() < deadline_holder[0]:
            body = images[n % len(images)]
            n += clients
            began = time.perf_counter()
            connection.request("POST", path, body=body, headers={"Content-Type": "image/png"})
            reply = connection.getresponse()
            reply.read()
            latencies[index].append(time.perf_counter() - began)
            if reply.status != 200:
                errors[index] += 1
        connection.close()

    deadline_holder = [float("inf")]
    threads = [threading.Thread(target=client, args=(index, deadline_holder)) for index in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started, cpu_started, client_cpu_started = time.perf_counter(), cpu_seconds(pid, group), time.process_time()
    deadline_holder[0] = started + seconds
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid, group) - cpu_started
    client_cpu = time.process_time() - client_cpu_started
    samples = sorted(latency for per_client in latencies for latency in per_client)
    return {
        "throughput": len(samples) / elapsed,
        "p50_ms": 1000 * samples[len(samples) // 2],
        "p99_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_ms": 1000 * statistics.fmean(samples),
        "requests": len(samples),
        "cpu_ms": 1000 * cpu / len(samples),
        "client_cpu_ms": 1000 * client_cpu / len(samples),
        "little_ms": 1000 * clients * elapsed / len(samples),  # Little's law: clients / throughput
        "errors": sum(errors),
    }


def rss_mib(pid: int, group: bool = False) -> float:
    """Resident memory of the process, or of every live process of its process group."""
    total = 0
    for status in ([Path(f"/proc/{pid}/status")] if not group else Path("/proc").glob("[0-9]*/status")):
        try:
            text = status.read_text()
            if group and int(Path(status.parent, "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def parse_layout(layout: str) -> dict:
    """'2x1', '2x1b4', '1x2b8d2' or '1x1b8/h11' -> EndpointServer options.

    INFERENCE_THREADS x TORCH_THREADS, then b<max batch size> and d<max batch delay ms> (our opt-in
    batching; none: one request per predict_fn call, as the container), then /h11 for pure-Python
    HTTP and asyncio.
    """
    match = re.fullmatch(r"(\d+)x(\d+)(?:b(\d+))?(?:d([\d.]+))?(?:/(h11|httptools))?", layout)
    if not match:
        raise SystemExit(f"layout {layout!r} is not INFERENCExTORCH[bBATCH][dDELAY_MS][/h11|/httptools]")
    inference_threads, torch_threads, batch, delay, http = match.groups()
    options = {"inference_threads": int(inference_threads), "torch_threads": int(torch_threads),
               "http": http or "auto", "loop": "asyncio" if http == "h11" else "auto"}
    if batch is not None:
        options["max_batch_size"] = int(batch)
    if delay is not None:
        options["max_batch_delay_ms"] = float(delay)
    return options


def run_server(model: Path, images, seconds, clients, layout: dict, capture=None, env=None) -> dict:
    server = EndpointServer(model, endpoint_name=ENDPOINT, mode="subprocess", capture=capture, env=env or {}, **layout,
                            log_path=settings.state_dir() / "bench" / "endpoint.log")
    with server:
        rss_loaded = rss_mib(server.pid)
        before = server.inference_status()
        result = load_server(server.url, server.pid, images, seconds, clients)
        after = server.inference_status()
        batches = after.get("batches", 0) - before.get("batches", 0)  # warm-up requests included on both sides
        result["mean_batch"] = (after.get("requests", 0) - before.get("requests", 0)) / batches if batches else float("nan")
        result["rss_loaded_mib"] = rss_loaded
        result["rss_after_mib"] = rss_mib(server.pid)
        if capture is not None:
            result["capture"] = server.capture_status()
    return result


def run_toolkit(python: Path, model: Path, images, seconds, clients, env: dict) -> dict:
    """The real toolkit under TorchServe (its own work folder each time), measured as the servers are."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-toolkit-", dir=settings.state_dir() / "bench") as work:
        with ToolkitEndpoint(python=python, model=model, work_dir=work, env=env) as toolkit:
            group = toolkit._process.pid
            rss_loaded = rss_mib(group, group=True)
            result = load_server(toolkit.url, group, images, seconds, clients, group=True)
            result["mean_batch"] = 1.0  # the toolkit calls predict_fn once per request
            result["rss_loaded_mib"] = rss_loaded
            result["rss_after_mib"] = rss_mib(group, group=True)
            result["workers"] = len(toolkit.workers())
    return result


def find_toolkit_python(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    built = sorted((settings.state_dir() / "parity").glob("toolkit-venv-*/.complete"), key=lambda path: path.stat().st_mtime)
    if not built:
        sys.exit(f"no toolkit venv under {settings.state_dir() / 'parity'}: run `pytest tests/parity/test_serving_parity.py` "
                 f"once (it builds one) or pass --toolkit-python")
    return built[-1].parent / "bin" / "python"


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's S3 in its own process, so it takes no GIL from the load-generating clients."""
    import boto3

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench")
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.create_bucket(Bucket="bench-capture")
            return process, url
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)


def row(label: str, result: dict) -> str:
    return (f"{label:44} {result['throughput']:8.1f} {result['p50_ms']:7.2f} {result['p99_ms']:7.2f} "
            f"{result['mean_ms']:7.2f} {result['little_ms']:7.2f} {result['mean_batch']:6.1f} {result['cpu_ms']:7.2f} "
            f"{result['client_cpu_ms']:7.2f} {result['errors']:6d} {result['rss_after_mib']:6.0f}")


HEADER = (f"{'configuration':44} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>7} {'N/X ms':>7} {'batch':>6} "
          f"{'srv CPU':>7} {'cli CPU':>7} {'errors':>6} {'RSS MiB':>6}")
DIRECT_LAYOUTS = ((1, 1, 1), (2, 1, 1), (2, 1, 4), (1, 2, 8))   # workers, torch threads, requests per predict_fn


TOOLKIT_CONFIGS = (("as the image runs it", {}), ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model dir or model.tar.gz (default: scones.harness.models.ensure_model())")
    parser.add_argument("--stub", action="store_true", help="use the tiny stand-in model instead of the trained one")
    parser.add_argument("--untrained", action="store_true",
                        help="the product's network and handlers with untrained weights (no training wait)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per configuration")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="rounds to take the median of")
    parser.add_argument("--default", dest="default_layout", default="2x1",
                        help="scones serve as the container serves: 2x1 is what harness/endpoint.py starts "
                             "(2 inference threads x 1 torch thread, one request per predict_fn call)")
    parser.add_argument("--batching", default="2x1b4", help="scones serve with our opt-in batching (--max-batch-size)")
    parser.add_argument("--layouts", default="2x1,1x2,2x1b2,2x1b4,2x1b8,1x2b8d2",
                        help="server layouts INFERENCE_THREADSxTORCH_THREADS[bMAX_BATCH][dMAX_DELAY_MS][/h11|/httptools] "
                             "to survey (0 inference threads = on the event loop; no b/d = no batching); '' for none")
    parser.add_argument("--toolkit-python", help="python of a venv with sagemaker-pytorch-inference and torchserve "
                                                 "(default: the one tests/parity built under the state dir)")
    parser.add_argument("--no-stub-floor", action="store_true",
                        help="skip the HTTP-stack floor (the same layouts serving the tiny stub model)")
    args = parser.parse_args()

    (settings.state_dir() / "bench").mkdir(parents=True, exist_ok=True)
    toolkit_python = find_toolkit_python(args.toolkit_python)
    model = resolve_model(args.model, args.stub, args.untrained)
    images = load_images()
    load_before = os.getloadavg()
    print(f"model {model}; {len(images)} test PNGs; {args.clients} clients on POST /invocations; {args.seconds:g} s per "
          f"run; {os.cpu_count()} CPUs; toolkit {toolkit_python}; load average before {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f}")
    print("columns: N/X = clients / throughput (Little's law: the mean latency a closed loop of N clients gets at "
          "that throughput); batch = mean requests per predict_fn call; srv/cli CPU = CPU ms per request of the "
          "server (the toolkit: its whole process group) and of the client threads (in this process, on the same "
          "cores)", flush=True)

    # 1. Which server layout: each once.
    survey = []
    for layout in filter(None, args.layouts.split(",")):
        result = run_server(model, images, args.seconds, args.clients, parse_layout(layout))
        survey.append((layout, result))
        print(row(f"server {layout} (survey)", result), flush=True)
    default, batching = parse_layout(args.default_layout), parse_layout(args.batching)

    # 2. The HTTP stack's own floor: the same layouts serving a model that costs almost nothing.
    stub_rows = []
    if not args.stub and not args.no_stub_floor:
        from scones.testing import build_stub_model

        stub_model = build_stub_model(settings.state_dir() / "bench" / "stub-model")
        for layout in dict.fromkeys((args.default_layout, args.batching)):
            result = run_server(stub_model, images, args.seconds, args.clients, parse_layout(layout))
            stub_rows.append((layout, result))
            print(row(f"stub model, server {layout}", result), flush=True)

    # 3. The limit, scones serve (default, opt-in batching, capture) and the toolkit, alternating.
    s3_process, s3_url = start_s3()
    capture_env = {"AWS_ENDPOINT_URL_S3": s3_url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    rounds = []
    try:
        for _ in range(args.repeats):
            directs = {layout: direct_predict(model, images, args.seconds, *layout) for layout in DIRECT_LAYOUTS}
            measured = {
                "default": run_server(model, images, args.seconds, args.clients, default),
                "batching": run_server(model, images, args.seconds, args.clients, batching),
                **{f"toolkit {name}": run_toolkit(toolkit_python, model, images, args.seconds, args.clients, env)
                   for name, env in TOOLKIT_CONFIGS},
                "capture": run_server(model, images, args.seconds, args.clients, default,
                                      capture=CaptureConfig("s3://bench-capture/capture"), env=capture_env),
            }
            unbatched = max((r for (_, _, batch), r in directs.items() if batch == 1), key=lambda r: r["throughput"])
            limit = max(directs.values(), key=lambda r: r["throughput"])
            rounds.append({"directs": directs, "unbatched": unbatched, "limit": limit, **measured})
            print("  round: " + "; ".join(f"{name} {result['throughput']:.1f} req/s p50 {result['p50_ms']:.1f} ms"
                                           for name, result in measured.items()), flush=True)
    finally:
        s3_process.terminate()
        s3_process.wait(10)

    median = statistics.median
    load_after = os.getloadavg()
    labels = {"default": f"scones serve {args.default_layout} (as the container)",
              "batching": f"scones serve {args.batching} (opt-in batching)",
              **{f"toolkit {name}": f"toolkit+TorchServe, {name}" for name, _ in TOOLKIT_CONFIGS},
              "capture": f"scones serve {args.default_layout}, capture 100%"}
    print()
    print(HEADER)
    for layout, result in survey:
        print(row(f"server {layout} (survey)", result))
    for layout, result in stub_rows:
        print(row(f"stub model, server {layout}", result))
    for index, round_ in enumerate(rounds, 1):
        for (workers, threads, batch), result in round_["directs"].items():
            print(f"{f'round {index}: direct {workers}x{threads}, {batch} per predict':44} {result['throughput']:8.1f} "
                  f"{'':7} {'':7} {'':7} {1000 * args.clients / result['throughput']:7.2f} {batch:6d} "
                  f"{result['cpu_ms']:7.2f}")
        for key, label in labels.items():
            print(row(f"round {index}: {label}"[:44], round_[key]))

    print()
    print(f"medians over {len(rounds)} rounds, {args.clients} clients, POST /invocations, same model and images:")
    for key, label in labels.items():
        figures = {name: median([r[key][name] for r in rounds])
                   for name in ("throughput", "p50_ms", "p99_ms", "little_ms", "cpu_ms", "rss_after_mib")}
        print(f"  {label:48} {figures['throughput']:7.1f} req/s  p50 {figures['p50_ms']:6.2f} ms  p99 "
              f"{figures['p99_ms']:6.2f} ms  N/X {figures['little_ms']:6.2f} ms  server CPU {figures['cpu_ms']:5.2f} "
              f"ms/req  RSS {figures['rss_after_mib']:5.0f} MiB")
    workers = rounds[-1][f"toolkit {TOOLKIT_CONFIGS[0][0]}"]["workers"]
    print(f"  (the toolkit ran {workers} TorchServe workers: one per CPU, as in the image)")
    floor = median([1000 * args.clients / r["limit"]["throughput"] for r in rounds])
    ratio = median([r["default"]["throughput"] / r["unbatched"]["throughput"] for r in rounds])
    versus = {name: median([r[key]["throughput"] / r[f"toolkit {TOOLKIT_CONFIGS[0][0]}"]["throughput"] for r in rounds])
              for key, name in (("default", "default"), ("batching", "opt-in batching"))}
    print(f"  vs the toolkit as the image runs it: default {versus['default']:.2f}x, opt-in batching "
          f"{versus['opt-in batching']:.2f}x its throughput; default = {ratio:.0%} of the best unbatched direct layout")
    print(f"  floors: model compute alone, {args.clients} requests in flight at the best direct throughput "
          f"= {floor:.2f} ms (no HTTP, no clients)" + "".join(
              f"; HTTP stack with the stub model, {layout}: p50 {result['p50_ms']:.2f} ms (N/X {result['little_ms']:.2f})"
              for layout, result in stub_rows))
    capture_cost = median([1 - r["capture"]["throughput"] / r["default"]["throughput"] for r in rounds])
    capture_cpu = median([r["capture"]["cpu_ms"] / r["default"]["cpu_ms"] - 1 for r in rounds])
    last = rounds[-1]["capture"]["capture"]
    print(f"  capture 100% vs off (default layout): costs {capture_cost:.1%} throughput, {capture_cpu:+.1%} CPU per request; "
          f"last run sampled {last['sampled']}, dropped {last['dropped']}, failed puts {last['failed_puts']}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f} (others share these {os.cpu_count()} cores; the clients run on them too)")


if __name__ == "__main__":
    main()
