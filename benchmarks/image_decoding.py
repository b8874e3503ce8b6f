"""What a decompression bomb costs the model's input_fn, with the pixel budget and without it.

    .venv/bin/python benchmarks/image_decoding.py [--size 12000] [--repeat 3]

The bomb is issue 12's: a ~17.5 KB 1-bit PNG declaring SIZE x SIZE pixels (tests/test_model_inference.py
builds it). Each run is a fresh process (the same probe the test runs), so the peak RSS growth is the
decode's alone: Linux's VmHWM, reset just before the call. "without" lifts local_model/inference.py's
budget and Pillow's own guard, which is what the endpoint did before issue 12. A normal 32x32 PNG and
its 16-bit twin are timed too, in this process, for scale.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=12000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

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
