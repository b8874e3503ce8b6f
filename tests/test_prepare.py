"""The stack's first-use work in the background (harness/prepare.py): what it leaves is what `up` would have built,
a caller that needs it meanwhile waits for it instead of building it twice, and a preparation stopped midway
leaves nothing that a later call trusts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from scones import settings, testing
from scones.harness import models, prepare
from scones.harness.localstack import LocalStack
from scones.polling import poll

pytest_plugins = ["pytester"]

HYPERPARAMETERS = {**testing.TINY_HYPERPARAMETERS, "epochs": 2}


@pytest.fixture(scope="session")
def shared_state_dir():
    """The session's state dir, read before a function-scoped fixture (pytester) changes the working directory."""
    shared = settings.state_dir()
    LocalStack(shared).ensure_venv(progress=False)
    return shared


@pytest.fixture
def state_dir(tmp_path, shared_state_dir):
    """A state dir of its own whose LocalStack and Lambda runtime venvs are the shared, built ones."""
    shared = shared_state_dir
    state = tmp_path / "state"
    state.mkdir()
    for name in ("localstack-venv", "lambda-runtimes"):
        (state / name).symlink_to(shared / name)
    return state


def test_the_background_preparation_trains_the_model_that_ensure_model_then_returns(state_dir, tmp_path):
    data = testing.write_synthetic_dataset(tmp_path / "data")
    preparation = prepare.start(state_dir, data, HYPERPARAMETERS, train=True)
    try:
        _wait_for_log(preparation, state_dir, "training model")
        # The caller that needs the model meanwhile waits on the cache's lock and gets the prepared one.
        folder = models.ensure_model(data, state_dir, **HYPERPARAMETERS)
        assert preparation.wait(timeout=120) == 0, (state_dir / "prepare.log").read_text()
    finally:
        prepare.stop(preparation)
    assert (folder / "model.tar.gz").is_file()
    assert (state_dir / "prepare.log").read_text().count("training model") == 1


def test_a_preparation_stopped_midway_leaves_no_process_and_no_model(state_dir, tmp_path):
    data = testing.write_synthetic_dataset(tmp_path / "data")
    preparation = prepare.start(state_dir, data, {**HYPERPARAMETERS, "epochs": 200}, train=True)
    _wait_for_log(preparation, state_dir, "epoch 1/")
    group = [process for process in psutil.process_iter(["pid"]) if _in_group(process, preparation.pid)]
    assert psutil.Process(preparation.pid).nice() == prepare.LOWEST_PRIORITY
    prepare.stop(preparation)
    assert not [process for process in group if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
    assert not [path for path in (state_dir / "models").iterdir() if models._complete(path)]


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group
    except ProcessLookupError:
        return False


INNER_TEST = '''
import os, pathlib, pytest

@pytest.fixture
def scones_stack():   # stands in for the plugin's: this session needs a stack but starts none
    return None

def test_needs_the_stack(scones_stack):
    assert (pathlib.Path(os.environ["SCONES_STATE_DIR"]) / "prepare.log").exists()
'''


def test_a_session_with_a_test_that_needs_the_stack_starts_the_preparation_at_collection(pytester, state_dir, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv(settings.STATE_DIR, str(state_dir))
    monkeypatch.setenv(settings.MODEL_DIR, str(testing.build_stub_model(tmp_path / "model").parent))
    pytester.makepyfile(INNER_TEST)

    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)

    assert "training model" not in (state_dir / "prepare.log").read_text()   # a given model is never trained


def _wait_for_log(preparation, state_dir, text: str) -> None:
    log = state_dir / "prepare.log"
    poll(log.read_text, timeout=120, interval=0.1, until=lambda written: text in written,
         failure=lambda written: None if preparation.poll() is None else f"the preparation exited:\n{written}")


PARENT = """
import json, sys
from pathlib import Path
from scones.harness import prepare
preparation = prepare.start(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), train=True)
print(preparation.pid, flush=True)
sys.stdin.read()
"""


def test_a_preparation_ends_when_its_parent_is_killed(state_dir, tmp_path):
    """A test session killed with -9 leaves no training behind: the preparation's stdin closes with its parent."""
    data = testing.write_synthetic_dataset(tmp_path / "data")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(state_dir), str(data),
                               json.dumps({**HYPERPARAMETERS, "epochs": 200})], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        group = int(parent.stdout.readline())
        poll(lambda: "epoch 1/" in (state_dir / "prepare.log").read_text(), timeout=120, interval=0.1)
        members = [process for process in psutil.process_iter() if _in_group(process, group)]
        assert len(members) >= 2     # the preparation and its training job
    finally:
        parent.kill()
        parent.wait()
    poll(lambda: not [process for process in members if process.is_running()
                      and process.status() != psutil.STATUS_ZOMBIE], timeout=30, interval=0.1)
