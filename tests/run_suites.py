"""`make test`: the whole suite as two pytest processes at once, the parity suite beside the rest.

Why: the main suite is one process that, once its first-use work is built, mostly waits on one stack at a
time, so one of a 2-core machine's cores idles through most of its run; the parity suite (tests/parity:
AWS's toolkits, venvs, LocalStacks and training jobs of its own, nothing shared but the locked venvs)
fills that core. It runs at the lowest priority, as the background first-use work does, so the main
suite keeps the CPU it asks for. Its output goes to <state>/parity-tests.log and is shown at the end
(its summary when it passed, all of it when it failed). Options are passed to both pytest processes
(`-x`, `-k EXPR`, `--durations=0`); to run chosen test files, call pytest itself.

Ctrl-C reaches both processes (one process group); each tears down its fixtures.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scones import settings

ROOT = Path(__file__).resolve().parent.parent
PARITY = "tests/parity"
LOWEST_PRIORITY = 19
SUMMARY_LINES = 12
NO_TESTS_COLLECTED = pytest.ExitCode.NO_TESTS_COLLECTED   # `-k` may select nothing in one of the two


def combined_status(*statuses: int) -> int:
    """The first failure's status; 0 when every process that ran tests passed; NO_TESTS_COLLECTED when none ran any."""
    ran = [status for status in statuses if status != NO_TESTS_COLLECTED]
    return next((status for status in ran if status), 0) if ran else NO_TESTS_COLLECTED


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    log_path = settings.state_dir() / "parity-tests.log"
    with log_path.open("w") as log:
        parity = subprocess.Popen([*pytest, PARITY, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: os.nice(LOWEST_PRIORITY))
    rest = subprocess.Popen([*pytest, f"--ignore={PARITY}", *argv], cwd=ROOT)
    # Ctrl-C now only reaches the children (they started with Python's own handling), and this waits for both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rest_status = rest.wait()
    if parity.poll() is None:
        print(f"--- waiting for {PARITY} (running beside the rest; output in {log_path})", flush=True)
    parity_status = parity.wait()
    lines = log_path.read_text(errors="replace").splitlines()
    failed = parity_status not in (0, NO_TESTS_COLLECTED)
    shown = lines if failed else lines[-SUMMARY_LINES:]
    print(f"--- {PARITY}, run beside the rest ({'failed' if failed else 'passed'}; "
          f"whole output in {log_path}):")
    print("\n".join(shown), flush=True)
    return combined_status(rest_status, parity_status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
