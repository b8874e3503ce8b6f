"""`make test`: the whole suite as two pytest processes at once, the parity suite beside the rest.

Why: the main suite is one process that, once its first-use work is built, mostly waits on one stack at a
time, so one of a 2-core machine's cores idles through most of its run; the parity suite (tests/parity:
AWS's toolkits, venvs, LocalStacks and training jobs of its own, nothing shared but the locked venvs)
fills that core. It runs at the lowest priority, as the background first-use work does, so the main
suite keeps the CPU it asks for. Its output goes to <state>/parity-tests.log and is shown at the end
(its summary when it passed, all of it when it failed). Options are passed to both pytest processes
(`-x`, `-k EXPR`, `--durations=0`); to run chosen test files, call pytest itself.

Ctrl-C reaches both processes (one process group); each tears down its fixtures, and this waits for both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from scones import settings

ROOT = Path(__file__).resolve().parent.parent
PARITY = "tests/parity"
LOWEST_PRIORITY = 19
SUMMARY_LINES = 12
NO_TESTS_COLLECTED = 5   # pytest.ExitCode.NO_TESTS_COLLECTED: `-k` may select nothing in one of the two


def _wait(process: subprocess.Popen) -> int:
    """The exit status, waiting through Ctrl-C: the child got the same SIGINT and is tearing down."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    log_path = settings.state_dir() / "parity-tests.log"
    with log_path.open("w") as log:
        parity = subprocess.Popen([*pytest, PARITY, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: os.nice(LOWEST_PRIORITY))
    rest = subprocess.Popen([*pytest, f"--ignore={PARITY}", *argv], cwd=ROOT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # after both started: they keep Python's own SIGINT handling
    rest_status = _wait(rest)
    if parity.poll() is None:
        print(f"--- waiting for {PARITY} (running beside the rest; output in {log_path})", flush=True)
    parity_status = _wait(parity)
    lines = log_path.read_text(errors="replace").splitlines()
    failed = parity_status not in (0, NO_TESTS_COLLECTED)
    shown = lines if failed else lines[-SUMMARY_LINES:]
    print(f"--- {PARITY}, run beside the rest ({'failed' if failed else 'passed'}; "
          f"whole output in {log_path}):")
    print("\n".join(shown), flush=True)
    ran = [status for status in (rest_status, parity_status) if status != NO_TESTS_COLLECTED]
    return next((status for status in ran if status), 0) if ran else NO_TESTS_COLLECTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
