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
import threading
from pathlib import Path

from scones.harness.localstack import LocalStack
from scones.harness.models import ensure_model
from scones.harness.processes import wait_until

LOWEST_PRIORITY = 19   # it takes only the CPU that nothing else wants, until something waits on it
STOP_TIMEOUT_S = 10.0


def start(state_dir: Path, data_dir: Path, hyperparameters: dict, *, train: bool) -> subprocess.Popen:
    """Start building LocalStack's venvs and then (if `train`) the cached model; output goes to
    <state>/prepare.log."""
    state_dir.mkdir(parents=True, exist_ok=True)
    request = {"state_dir": str(state_dir), "data_dir": str(data_dir), "hyperparameters": hyperparameters,
               "train": train}
    return start_background([sys.executable, "-m", "scones.harness.prepare", json.dumps(request)],
                            state_dir / "prepare.log")


def start_background(command: list[str], log_path: Path) -> subprocess.Popen:
    """Run `command` in a process group of its own, its output in log_path. Its stdin is a pipe from us:
    a command that calls end_with_parent() ends with its group when we end, kill -9 included."""
    with log_path.open("w") as log:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def end_with_parent() -> None:
    """In a process that start_background started: take the lowest priority, and end this process group
    when the parent's end closes our stdin."""
    os.nice(LOWEST_PRIORITY)

    def watch() -> None:
        while os.read(0, 4096):   # unbuffered: a buffered read would hold its lock at interpreter shutdown
            pass
        os.killpg(0, signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def stop(process: subprocess.Popen) -> None:
    """Stop a start_background process and its whole group (pip, a training job), if any of it still runs."""
    group = process.pid
    for number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, number)
        except ProcessLookupError:
            break
        if wait_until(lambda: _group_ended(group, process), STOP_TIMEOUT_S):
            break
    process.wait()


def _group_ended(group: int, leader: subprocess.Popen) -> bool:
    leader.poll()   # reaped: an unreaped leader would still count as a member
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


def _main(argv: list[str]) -> None:
    request = json.loads(argv[0])
    end_with_parent()
    LocalStack(request["state_dir"]).ensure_venv(progress=True)
    if request["train"]:
        ensure_model(request["data_dir"], request["state_dir"], **request["hyperparameters"])


if __name__ == "__main__":
    _main(sys.argv[1:])
