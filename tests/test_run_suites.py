"""`make test` (tests/run_suites.py): the parity suite runs beside the rest, then the files of AFTER_PARITY do, and
the exit status is the whole suite's (pytest's exit codes: https://docs.pytest.org/en/stable/reference/exit-codes.html)."""
from __future__ import annotations

import os
import re
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


def test_every_test_runs_once_and_the_summaries_beside_the_rest_are_shown(tmp_path):
    """test_contract.py's 3 tests in the rest, one test of test_model_train.py (AFTER_PARITY) after the parity
    suite, which selects none: each where it belongs, and only there."""
    env = {**os.environ, settings.STATE_DIR: str(tmp_path)}   # not this session's logs
    selected = "test_contract or test_hyperparameters_are_passed_the_sagemaker_way"
    done = subprocess.run([sys.executable, str(CHECKOUT / "tests" / "run_suites.py"), "-q", "-k", selected],
                          cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tests/test_model_train.py" in run_suites.AFTER_PARITY
    rest, _, beside = done.stdout.partition("--- tests/parity, run beside the rest (passed; whole output in")
    assert re.search(r"^3 passed", rest, re.M), rest[-2000:]            # the rest ran test_contract's, no other
    assert "deselected" in (tmp_path / "parity-tests.log").read_text()  # the parity process selected none
    after = (tmp_path / "after-parity-tests.log").read_text()
    assert re.search(r"^1 passed", after, re.M), after[-2000:]          # then the files after it ran their one
    assert "--- after tests/parity: tests/test_model_train.py" in beside, beside
