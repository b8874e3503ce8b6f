"""The parity suite: AWS's own SageMaker toolkits (the code inside the PyTorch containers, from
PyPI at the versions in toolkit-requirements.txt) run what this project builds, and the results
are compared with ours.

`toolkit_venv` builds that venv once per requirements (venvs.py), in the background from collection.
It does not install torch/torchvision: a .pth file appends this project's site-packages to the venv's sys.path,
so the toolkits' own pins win and torch comes from .venv (a ~5 GB install saved).
$SCONES_PARITY_REQUIREMENTS names more requirement files (os.pathsep-separated) for the same venv:
`make parity-torch25` adds torch25-requirements.txt, so the suite runs under the container's torch
2.5.1 / torchvision 0.20.1.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import venvs

from scones import settings
from scones.harness import prepare


def pytest_collection_finish(session):
    """Build the parity venvs in the background while the tests before the parity suite run (the fixtures
    below then wait on the same locks for what is left)."""
    if session.config.option.collectonly or not any(item.get_closest_marker("parity") for item in session.items):
        return
    build = prepare.start_background([sys.executable, venvs.__file__], settings.state_dir() / "parity-venvs.log")
    session.config.add_cleanup(lambda: prepare.stop(build))


def _say(request, message: str) -> None:
    """Progress on the terminal even while pytest captures output (a first build takes about a minute)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        sys.stderr.write(f"[parity] {message}\n")
        sys.stderr.flush()


@pytest.fixture(scope="session")
def toolkit_venv(request) -> Path:
    """A venv holding AWS's SageMaker toolkits (toolkit-requirements.txt) that also sees this project's torch."""
    return venvs.toolkit_venv(say=lambda message: _say(request, message))


@pytest.fixture(scope="session")
def toolkit_python(toolkit_venv) -> str:
    return str(toolkit_venv / "bin" / "python")


@pytest.fixture
def run_in_toolkit_venv(toolkit_python):
    """Run Python source in the toolkit venv; returns the last line it prints (the SDK logs to stdout too)."""
    def run(source: str, *args: str) -> str:
        env = {**os.environ, "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "PYTHONWARNINGS": "ignore"}
        completed = subprocess.run([toolkit_python, "-c", source, *args], capture_output=True, text=True,
                                   env=env, timeout=300)
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
        return completed.stdout.splitlines()[-1]
    return run


@pytest.fixture(scope="session")
def toolkit_torch(toolkit_python) -> str:
    """The torch version the toolkit venv runs: the project's, unless SCONES_PARITY_REQUIREMENTS installed another."""
    return subprocess.run([toolkit_python, "-c", "import torch; print(torch.__version__)"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def same_torch(toolkit_torch) -> bool:
    """Whether the toolkit runs the project's own torch (then artifacts must match bit for bit)."""
    import torch

    return toolkit_torch == torch.__version__
