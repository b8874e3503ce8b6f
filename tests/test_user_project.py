"""The example user project (tests/user_project/) run as a user runs it: copied to a folder outside
the clone, `pytest` there with the installed scones plugin, settings from its [tool.scones] table.

It gets a stack of its own (free ports), its state in its own folder; only the LocalStack and Lambda
runtime venvs and the trained model are reused from the clone's state, as caches.
The copy lives under pytest's temporary folder, in /tmp: so this also shows that the Lambda sandbox's
private /tmp does not hide the runtime venvs of a state dir kept there.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scones import settings
from scones.harness.endpoint import free_port
from support import CHECKOUT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]   # a whole project's suite, on the trained model

EXAMPLE = Path(__file__).parent / "user_project"
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def caches() -> dict[str, Path]:
    """The clone's LocalStack venv, Lambda runtime venvs and trained model (built here if missing)."""
    from scones.harness.localstack import LocalStack
    from scones.harness.models import ensure_model

    localstack = LocalStack()
    localstack.ensure_venv(progress=False)
    return {"localstack-venv": localstack.venv_dir, "lambda-runtimes": localstack.runtimes_dir,
            "model": Path(ensure_model()), "data": settings.data_dir()}


def user_project(root: Path, caches: dict[str, Path]) -> Path:
    project = root / "my-delivery-routing"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".scones", "__pycache__", ".pytest_cache"))
    (project / "images").symlink_to(caches["data"], target_is_directory=True)   # its data_dir = "images"
    state = project / ".scones"
    state.mkdir()
    for name in ("localstack-venv", "lambda-runtimes"):
        (state / name).symlink_to(caches[name], target_is_directory=True)
    return project


def user_environment(caches: dict[str, Path]) -> dict[str, str]:
    """The caller's environment without any scones or pytest setting of this session, plus the caches' model
    and free ports (so that this stack and one the surrounding session may hold never collide)."""
    session_only = {*(variable for variable, _ in settings.KEYS.values()), settings.TEST_TARGET}
    env = {key: value for key, value in os.environ.items() if key not in session_only and not key.startswith("PYTEST_")}
    env.update({settings.MODEL_DIR: str(caches["model"]),
                settings.LOCALSTACK_PORT: str(free_port()), settings.ENDPOINT_PORT: str(free_port())})
    return env


def test_example_project_runs_outside_the_clone_with_its_own_state_and_progress(tmp_path_factory, caches):
    root = tmp_path_factory.mktemp("outside").resolve()
    assert not root.is_relative_to(CHECKOUT)
    project = user_project(root, caches)
    env = user_environment(caches)

    # Without -s: the progress must come through pytest's capture all the same.
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert re.search(r"\b3 passed\b", output), output[-3000:]
    progress = [line for line in run.stdout.splitlines() if line.startswith("scones: ")]
    assert any(f"bringing up a local stack in {project / '.scones'}" in line
               and f"settings: {project / 'pyproject.toml'} [tool.scones]" in line for line in progress), output[-3000:]
    assert any("localstack: ready" in line for line in progress), output[-3000:]
    assert any("endpoint: served by the SageMaker control plane" in line for line in progress), output[-3000:]
    assert any("localstack: stopping" in line for line in progress), output[-3000:]
    # Its state went into its own folder: the stack's logs, LocalStack's files, the capture spool.
    state = project / ".scones"
    assert list((state / "localstack" / "sagemaker" / "endpoints").rglob("endpoint.log")), "the endpoint host's log"
    assert (state / "localstack" / "localstack.log").is_file()
    assert (state / "capture-spool").is_dir()
    assert not (state / "local" / "stack.json").exists(), "the session's stack was taken down"
