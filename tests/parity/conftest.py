"""The parity suite: AWS's own SageMaker toolkits (the code inside the PyTorch containers, from
PyPI at the versions in toolkit-requirements.txt) run what this project builds, and the results
are compared with ours.

`toolkit_venv` builds that venv once per requirements (cached under the state dir, keyed by the
files' bytes and this Python; a file lock lets parallel sessions share one build). It does not
install torch/torchvision: a .pth file appends this project's site-packages to the venv's sys.path,
so the toolkits' own pins win and torch comes from .venv (a ~5 GB install saved).
$SCONES_PARITY_REQUIREMENTS names more requirement files (os.pathsep-separated) for the same venv:
`make parity-torch25` adds torch25-requirements.txt, so the suite runs under the container's torch
2.5.1 / torchvision 0.20.1.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from scones.harness import models


from scones import settings
REQUIREMENTS = Path(__file__).with_name("toolkit-requirements.txt")
EXTRA_REQUIREMENTS = "SCONES_PARITY_REQUIREMENTS"
COMPLETE = ".complete"


def requirement_files() -> list[Path]:
    extra = os.environ.get(EXTRA_REQUIREMENTS, "")
    return [REQUIREMENTS, *(Path(name).resolve() for name in extra.split(os.pathsep) if name)]


def _venv_key(files: list[Path]) -> str:
    digest = hashlib.sha256(b"\0".join(path.read_bytes() for path in files))
    digest.update(f"{sys.version_info[:2]}\0{sysconfig.get_paths()['purelib']}".encode())
    return digest.hexdigest()[:12]


def _say(request, message: str) -> None:
    """Progress on the terminal even while pytest captures output (a first build takes about a minute)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        sys.stderr.write(f"[parity] {message}\n")
        sys.stderr.flush()


def build_toolkit_venv(folder: Path, requirements: list[Path], say=print) -> None:
    if folder.exists():  # a build that was interrupted
        shutil.rmtree(folder)
    started = time.monotonic()
    say(f"building the toolkit venv {folder} from {', '.join(path.name for path in requirements)} "
        "(first use; cached afterwards)")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    process = subprocess.Popen(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
         *(item for path in requirements for item in ("-r", str(path)))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        tail = (tail + [line])[-40:]
        if line.startswith(("Collecting", "Successfully", "ERROR")):
            say("  " + line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"pip install of {[str(path) for path in requirements]} failed in {folder}:\n{''.join(tail)}")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # A plain path line is appended after the venv's own site-packages: its packages win.
    (site / "zz-scones-project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (folder / COMPLETE).write_text("".join(path.read_text() for path in requirements))
    say(f"toolkit venv ready in {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="session")
def toolkit_venv(request) -> Path:
    """A venv holding AWS's SageMaker toolkits (toolkit-requirements.txt) that also sees this project's torch."""
    requirements = requirement_files()
    folder = settings.state_dir() / "parity" / f"toolkit-venv-{_venv_key(requirements)}"
    if not (folder / COMPLETE).is_file():
        with models.file_lock(folder.with_suffix(".lock")):
            if not (folder / COMPLETE).is_file():
                build_toolkit_venv(folder, requirements, say=lambda message: _say(request, message))
    return folder


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
