"""The parity suite's venvs (AWS's SageMaker toolkits; sagemaker-core), each built once per requirements and
cached under the state dir, keyed by the files' bytes and this Python; a file lock lets parallel sessions (and
the background build that conftest.py starts at collection) share one build.

`python tests/parity/venvs.py` builds both at the lowest priority: what conftest.py runs in the background
(harness/prepare.start_background) while the tests before the parity suite run.
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

from scones import settings
from scones.harness.models import file_lock
from scones.harness.prepare import end_with_parent

REQUIREMENTS = Path(__file__).with_name("toolkit-requirements.txt")
CORE_REQUIREMENTS = Path(__file__).with_name("sagemaker-core-requirements.txt")
EXTRA_REQUIREMENTS = "SCONES_PARITY_REQUIREMENTS"
COMPLETE = ".complete"


def requirement_files() -> list[Path]:
    extra = os.environ.get(EXTRA_REQUIREMENTS, "")
    return [REQUIREMENTS, *(Path(name).resolve() for name in extra.split(os.pathsep) if name)]


def _venv_key(files: list[Path]) -> str:
    digest = hashlib.sha256(b"\0".join(path.read_bytes() for path in files))
    digest.update(f"{sys.version_info[:2]}\0{sysconfig.get_paths()['purelib']}".encode())
    return digest.hexdigest()[:12]


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


def toolkit_venv(say=print) -> Path:
    """A venv holding AWS's SageMaker toolkits (toolkit-requirements.txt) that also sees this project's torch."""
    requirements = requirement_files()
    folder = settings.state_dir() / "parity" / f"toolkit-venv-{_venv_key(requirements)}"
    if not (folder / COMPLETE).is_file():
        with file_lock(folder.with_suffix(".lock")):
            if not (folder / COMPLETE).is_file():
                build_toolkit_venv(folder, requirements, say=say)
    return folder


def sagemaker_core_python() -> str:
    """A venv with sagemaker-core (sagemaker-core-requirements.txt)."""
    key = hashlib.sha256(CORE_REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    folder = settings.state_dir() / "parity" / f"sagemaker-core-venv-{key}"
    python = folder / "bin" / "python"
    with file_lock(folder.with_suffix(".lock")):
        if not (folder / COMPLETE).is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "-r", str(CORE_REQUIREMENTS)], check=True)
            (folder / COMPLETE).write_text(CORE_REQUIREMENTS.read_text())
    return str(python)


if __name__ == "__main__":
    end_with_parent()
    toolkit_venv()
    sagemaker_core_python()
