"""A local stack's first-use work, started early in a low-priority process of its own.

The first `up` on a machine builds LocalStack's venv and the Lambda runtimes' venvs and trains the
model: minutes of work that a test session can overlap with the tests that need none of it. The
process makes the very calls `up` makes (LocalStack.ensure_venv, models.ensure_model) under the
same file locks, so whoever needs a piece later waits on its lock for what is left instead of
starting over. Each piece is marked complete only once whole (a marker file, an atomic rename), so
stopping the process midway leaves nothing that a later call would trust.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from scones.harness.localstack import LocalStack
from scones.harness.models import ensure_model

LOWEST_PRIORITY = 19   # it takes only the CPU that nothing else wants, until something waits on it
STOP_TIMEOUT_S = 10.0


def start(state_dir: Path, data_dir: Path, hyperparameters: dict, *, train: bool) -> subprocess.Popen:
    """Start building LocalStack's venvs and then (if `train`) the cached model; output goes to
    <state>/prepare.log."""
    state_dir.mkdir(parents=True, exist_ok=True)
    request = {"state_dir": str(state_dir), "data_dir": str(data_dir), "hyperparameters": hyperparameters,
               "train": train}
    with (state_dir / "prepare.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "scones.harness.prepare", json.dumps(request)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Stop the preparation and what it started (pip, the training job), if it is still running."""
    for number in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, number)   # its group: pip and the training job included
        except ProcessLookupError:
            pass
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue


def _main(argv: list[str]) -> None:
    request = json.loads(argv[0])
    os.nice(LOWEST_PRIORITY)
    LocalStack(request["state_dir"]).ensure_venv(progress=True)
    if request["train"]:
        ensure_model(request["data_dir"], request["state_dir"], **request["hyperparameters"])


if __name__ == "__main__":
    _main(sys.argv[1:])
