"""`make test` (tests/run_suites.py): the parity suite runs beside the rest, and the exit status is the whole
suite's (pytest's exit codes: https://docs.pytest.org/en/stable/reference/exit-codes.html)."""
from __future__ import annotations

import os
import subprocess
import sys

import run_suites

from scones import settings
from support import CHECKOUT


def test_the_status_is_the_first_failure_and_a_suite_with_nothing_selected_does_not_count():
    collected_none = run_suites.NO_TESTS_COLLECTED
    assert run_suites.combined_status(0, 0) == 0
    assert run_suites.combined_status(0, collected_none) == 0
    assert run_suites.combined_status(1, 0) == 1
    assert run_suites.combined_status(collected_none, 1) == 1
    assert run_suites.combined_status(2, 1) == 2
    assert run_suites.combined_status(collected_none, collected_none) == collected_none


def test_both_suites_run_and_the_parity_summary_is_shown(tmp_path):
    env = {**os.environ, settings.STATE_DIR: str(tmp_path)}   # not this session's parity log
    done = subprocess.run([sys.executable, str(CHECKOUT / "tests" / "run_suites.py"), "-q", "-k", "test_contract"],
                          cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--- tests/parity, run beside the rest (passed; whole output in" in done.stdout
    assert "deselected" in (tmp_path / "parity-tests.log").read_text()   # the parity process ran, selecting none
    assert " passed" in done.stdout.split("--- tests/parity")[0]         # the rest ran test_contract
