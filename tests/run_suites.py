"""`make test`: the whole suite as two lines of pytest runs at once, the parity suite beside the rest.

Why: the main suite is one process that, once its first-use work is built, mostly waits on one stack at a
time, so one of a 2-core machine's cores idles through most of its run; the parity suite (tests/parity:
AWS's toolkits, venvs, LocalStacks and training jobs of its own, nothing shared but the locked venvs)
fills that core. It runs at the lowest priority, as the background first-use work does, so the main
suite keeps the CPU it asks for. Its output goes to <state>/parity-tests.log and is shown at the end
(its summary when it passed, all of it when it failed). The parity suite ends minutes before the rest, so that
process then runs AFTER_PARITY, test files that need nothing the rest builds (their data, models and moto servers
are their own, under tmp_path) and no tight timing, in a third pytest run (<state>/after-parity-tests.log, shown
the same way); the rest leaves them out. Options are passed to every pytest run (`-x`, `-k EXPR`,
`--durations=0`); to run chosen test files, call pytest itself.

Ctrl-C reaches every pytest process (one process group); each tears down its fixtures, and the files after the
parity suite do not start.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scones import settings

ROOT = Path(__file__).resolve().parent.parent
PARITY = "tests/parity"
# CPU-bound, self-contained files (about 105 s of the rest's 800 s on a 2-core machine, pytest --durations=0).
AFTER_PARITY = ("tests/test_model_train.py", "tests/test_deploy_aws.py", "tests/test_model_inference.py")
LOWEST_PRIORITY = 19
SUMMARY_LINES = 12
NO_TESTS_COLLECTED = pytest.ExitCode.NO_TESTS_COLLECTED   # `-k` may select nothing in any of the runs


def combined_status(*statuses: int) -> int:
    """The first failure's status; 0 when every process that ran tests passed; NO_TESTS_COLLECTED when none ran any."""
    ran = [status for status in statuses if status != NO_TESTS_COLLECTED]
    return next((status for status in ran if status), 0) if ran else NO_TESTS_COLLECTED


def _lowest_priority_with_ctrl_c() -> None:
    """In the child before it runs pytest: the lowest priority, and SIGINT handled by Python even when this process
    ignores it by then (a Python started with SIGINT ignored leaves it ignored)."""
    os.nice(LOWEST_PRIORITY)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str]) -> int:
    run_pytest = [sys.executable, "-m", "pytest"]
    side_runs = [(PARITY, [PARITY], settings.state_dir() / "parity-tests.log"),
                 (f"after {PARITY}: {' '.join(AFTER_PARITY)}", list(AFTER_PARITY),
                  settings.state_dir() / "after-parity-tests.log")]
    side_statuses: list[int] = []

    def run_beside() -> None:
        for _, paths, log_path in side_runs:
            with log_path.open("w") as log:
                status = subprocess.run([*run_pytest, *paths, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=_lowest_priority_with_ctrl_c).returncode
            side_statuses.append(status)
            if status == pytest.ExitCode.INTERRUPTED or status < 0:   # Ctrl-C or a signal: stop there
                return

    beside = threading.Thread(target=run_beside, name="beside-the-rest")
    beside.start()
    rest = subprocess.Popen([*run_pytest, f"--ignore={PARITY}", *(f"--ignore={path}" for path in AFTER_PARITY), *argv],
                            cwd=ROOT)
    # Ctrl-C now only reaches the children (they started with Python's own handling), and this waits for them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rest_status = rest.wait()
    if beside.is_alive():
        print(f"--- waiting for {PARITY} and the files run after it (beside the rest; output in "
              f"{side_runs[0][2]} and {side_runs[1][2]})", flush=True)
    beside.join()
    for (name, _, log_path), status in zip(side_runs, side_statuses):
        lines = log_path.read_text(errors="replace").splitlines()
        failed = status not in (0, NO_TESTS_COLLECTED)
        shown = lines if failed else lines[-SUMMARY_LINES:]
        print(f"--- {name}, run beside the rest ({'failed' if failed else 'passed'}; whole output in {log_path}):")
        print("\n".join(shown), flush=True)
    return combined_status(rest_status, *side_statuses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
