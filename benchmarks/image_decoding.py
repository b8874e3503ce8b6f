"""What a decompression bomb costs the model's input_fn, with the pixel budget and without it.

    .venv/bin/python benchmarks/image_decoding.py [--size 12000] [--repeat 3]

The bomb is issue 12's: a ~17.5 KB 1-bit PNG declaring SIZE x SIZE pixels (tests/test_model_inference.py
builds it). Each run is a fresh process (the same probe the test runs), so the peak RSS growth is the
decode's alone: Linux's VmHWM, reset just before the call. "without" lifts local_model/inference.py's
budget and Pillow's own guard, which is what the endpoint did before issue 12. A normal 32x32 PNG and
its 16-bit twin are timed too, in this process, for scale.

    .venv/bin/python benchmarks/image_decoding.py --burst [--side 7000] [--images 32] [--clients 16] [--mode RGB]

The burst (issue 26): an endpoint server (harness/serving/server.py, a subprocess, 2 inference threads as
`scones up` runs it, an untrained model of the product's network) gets COUNT worst-case images, SIDE x SIDE
PNGs of one colour (7000x7000 RGB: 143 KB, 49 MP, under the 50 MP budget), from CLIENTS concurrent clients.
Its RSS is printed idle (after 20 normal requests), at its peak during the burst (VmHWM, reset before), right
after the burst, and after 20 more normal requests; in one run for four servers: the handlers as before
issue 26 (every image decoded whole, bounds lifted in a copy of local_model/inference.py) and as now
(REDUCED_SIDE, BIG_IMAGE_PIXELS), each with glibc's default malloc and with the endpoint's fixed mmap
threshold (EndpointSettings.release_memory). Target: RSS after the burst within 200 MiB of idle.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_model_inference import BOMB_PROBE, encode, photo, png_bomb, sixteen_bit  # noqa: E402

LIFT_BUDGET = "inference.MAX_IMAGE_PIXELS = 10**12\ninference.Image.MAX_IMAGE_PIXELS = None\n"


def probe(bomb: Path, small: Path, lift_budget: bool) -> dict:
    code = BOMB_PROBE.replace("from local_model import inference\n",
                              "from local_model import inference\n" + (LIFT_BUDGET if lift_budget else ""))
    result = subprocess.run([sys.executable, "-c", code, str(bomb), str(small)], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    return json.loads(result.stdout)


# --- the burst: an endpoint server's memory ---------------------------------------------------------------

# The bounds issue 26 added, lifted: what the handlers did before (decode whole, no turns).
UNBOUNDED = {"REDUCED_SIDE = 8 * network.IMAGE_SIZE": "REDUCED_SIDE = 10**9",
             "BIG_IMAGE_PIXELS = 4_000_000": "BIG_IMAGE_PIXELS = 10**12"}
SERVER = """
import sys
from scones.harness.serving.server import EndpointSettings, serve
serve(EndpointSettings(model=sys.argv[1], endpoint_name="bench", inference_threads=2,
                       release_memory=sys.argv[3] == "on"), port=int(sys.argv[2]), log_level="warning")
"""
COLOR_TYPES = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}   # PNG colour type, bytes per pixel


def flat_png(side: int, mode: str) -> bytes:
    """A side x side 8-bit PNG of one colour, written row by row with zlib (no image in memory)."""
    color_type, channels = COLOR_TYPES[mode]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([90, 140, 200, 255][:channels]) * side
    stream = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def model_dirs(folder: Path) -> dict[str, Path]:
    """The product's network with untrained weights, unpacked twice: handlers as now, and with the bounds lifted."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from endpoint import build_untrained_model

    archive = build_untrained_model(folder / "archive")
    dirs = {}
    for name in ("bounded", "unbounded"):
        target = folder / name
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)
        dirs[name] = target
    code = dirs["unbounded"] / "code" / "inference.py"
    text = code.read_text()
    for old, new in UNBOUNDED.items():
        if old not in text:
            sys.exit(f"{old!r} is no longer in local_model/inference.py: update UNBOUNDED in {__file__}")
        text = text.replace(old, new)
    code.write_text(text)
    return dirs


def proc_status(pid: int, field: str) -> float:
    """A /proc/PID/status field in MiB (VmRSS now, VmHWM the peak since the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def post(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "image/png"})
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


def wait_ready(port: int, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the endpoint server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"the endpoint server was not ready after {timeout_s:.0f} s")


def burst(model_dir: Path, release_memory: bool, big: bytes, normal: bytes, images: int, clients: int) -> dict:
    from scones.harness.endpoint import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(model_dir), str(port),
                                "on" if release_memory else "off"], cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        wait_ready(port, process)
        statuses = [post(port, normal) for _ in range(20)]
        idle = proc_status(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")   # VmHWM from here
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            statuses += list(pool.map(lambda _: post(port, big), range(images)))
        seconds = time.perf_counter() - started
        peak, after = proc_status(process.pid, "VmHWM"), proc_status(process.pid, "VmRSS")
        statuses += [post(port, normal) for _ in range(20)]
        settled = proc_status(process.pid, "VmRSS")
        return {"idle": idle, "peak": peak, "after": after, "settled": settled, "seconds": seconds,
                "errors": sum(status != 200 for status in statuses)}
    finally:
        process.terminate()
        process.wait(60)


def run_burst(args) -> None:
    big = flat_png(args.side, args.mode)
    normal_body = encode(photo((32, 32)), "PNG")
    from scones.local_model import inference

    print(f"worst case: {len(big):,} bytes, a {args.side}x{args.side} {args.mode} PNG "
          f"({args.side * args.side / 1e6:.0f} MP; budget {inference.MAX_IMAGE_PIXELS / 1e6:.0f} MP); "
          f"{args.images} of them from {args.clients} clients; load average {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"{'handlers':<30} {'malloc':<16} {'idle':>6} {'peak':>13} {'after burst':>13} {'after +20':>13} "
          f"{'burst s':>8} {'errors':>6}")
    folder = Path(tempfile.mkdtemp(prefix="scones-burst-"))
    try:
        dirs = model_dirs(folder)
        for handlers, label in (("unbounded", "before (decode whole)"), ("bounded", "now (reduced, in turns)")):
            for release, malloc in ((False, "glibc default"), (True, "fixed mmap 1 MiB")):
                r = burst(dirs[handlers], release, big, normal_body, args.images, args.clients)
                print(f"{label:<30} {malloc:<16} {r['idle']:6.0f} {r['peak']:6.0f} ({r['peak'] - r['idle']:+5.0f}) "
                      f"{r['after']:6.0f} ({r['after'] - r['idle']:+5.0f}) {r['settled']:6.0f} "
                      f"({r['settled'] - r['idle']:+5.0f}) {r['seconds']:8.1f} {r['errors']:6d}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("RSS in MiB (change from idle); target: after the burst within 200 MiB of idle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=12000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--burst", action="store_true", help="the endpoint burst benchmark (issue 26) instead")
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--mode", choices=sorted(COLOR_TYPES), default="RGB")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    if args.burst:
        run_burst(args)
        return

    from scones.local_model import inference

    with tempfile.TemporaryDirectory() as folder:
        bomb, small = Path(folder) / "bomb.png", Path(folder) / "small.png"
        bomb.write_bytes(png_bomb(args.size, args.size))
        small.write_bytes(encode(photo((64, 48)), "PNG"))
        print(f"bomb: {bomb.stat().st_size:,} bytes declaring {args.size}x{args.size} pixels")
        for lift in (False, True):
            runs = [probe(bomb, small, lift) for _ in range(args.repeat)]
            label = "without the budget" if lift else "with the budget   "
            outcome = runs[0]["error"] or "decoded"
            print(f"{label}  median {statistics.median(r['seconds'] for r in runs) * 1000:9.1f} ms  "
                  f"peak RSS +{max(r['peak_growth_bytes'] for r in runs) / 2**20:6.1f} MiB  ({outcome[:60]})")

    gray = photo((32, 32), "L")
    for label, data in (("32x32 8-bit PNG ", encode(gray, "PNG")),
                        ("32x32 16-bit PNG", encode(inference.Image.fromarray(sixteen_bit(inference.np.asarray(gray))), "PNG"))):
        started = time.perf_counter()
        for _ in range(200):
            inference.decode_image(data)
        print(f"{label}  {(time.perf_counter() - started) / 200 * 1e6:7.0f} us per decode")


if __name__ == "__main__":
    main()
