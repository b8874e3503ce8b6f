"""`scones up` with the model ready, from nothing running to ready: api mode (the endpoint through the local
SageMaker control plane, a spare host started with LocalStack) against route mode (an endpoint server of
`up`'s own), alternated in the same run so that both see the same machine load.

    .venv/bin/python benchmarks/up_modes.py [--rounds 3] [--model DIR]

Each round brings the stack up in a fresh state dir of its own (LocalStack's venv and the Lambda runtimes
linked from the default state dir, as tests/e2e/test_durability.py does) on free ports, once per mode, and
takes it down. Prints each `up`'s own figure (its "ready in") and its wall time, then the medians, and the
load average before and after. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from scones import settings  # noqa: E402
from scones.deploy import local as local_target  # noqa: E402
from scones.harness.endpoint import free_port  # noqa: E402
from scones.harness.localstack import LocalStack  # noqa: E402

MODES = ("route", "api")
READY = re.compile(r"ready in ([0-9.]+) s")


def scones(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def one_up(mode: str, model: Path, shared: Path) -> tuple[float, float]:
    state = Path(tempfile.mkdtemp(prefix=f"bench-up-{mode}-", dir=shared))
    for name in ("localstack-venv", "lambda-runtimes"):
        (state / name).symlink_to(shared / name)
    env = {**os.environ, settings.STATE_DIR: str(state), settings.LOCALSTACK_PORT: str(free_port()),
           settings.ENDPOINT_PORT: str(free_port()), local_target.SAGEMAKER_MODE: mode}
    started = time.perf_counter()
    result = scones(env, "up", "--model", str(model))
    wall = time.perf_counter() - started
    try:
        if result.returncode != 0:
            raise SystemExit(f"{mode}: scones up failed:\n{result.stderr[-3000:]}")
        match = READY.search(result.stdout + result.stderr)
        return float(match.group(1)) if match else float("nan"), wall
    finally:
        scones(env, "down")
        subprocess.run(["rm", "-rf", str(state)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a directory with model.tar.gz (default: the cached model)")
    args = parser.parse_args()
    shared = settings.state_dir()
    LocalStack(shared).ensure_venv(progress=False)
    if args.model is None:
        from scones.harness.models import ensure_model

        args.model = Path(ensure_model(data_dir=settings.data_dir(), state_dir=shared))
    print(f"load average before: {os.getloadavg()}")
    figures: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES if round_ % 2 == 0 else reversed(MODES):
            ready, wall = one_up(mode, args.model, shared)
            figures[mode].append((ready, wall))
            print(f"round {round_ + 1} {mode:5}: ready in {ready:5.1f} s (up's own figure), {wall:5.1f} s wall")
    for mode in MODES:
        print(f"median {mode:5}: ready in {statistics.median(r for r, _ in figures[mode]):5.1f} s, "
              f"{statistics.median(w for _, w in figures[mode]):5.1f} s wall")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
