"""`pip install .` (not editable) gives one package, scones, that works from anywhere and keeps its
state in the user's project, never in site-packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support import CHECKOUT

FOLDERS = ("harness", "lambdas", "state_machine", "local_model", "deploy")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this working tree, built from a copy (setuptools leaves build/ in the tree it builds)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    for folder in ("scones", *FOLDERS):
        shutil.copytree(CHECKOUT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, timeout=300)
    return next(out.glob("scones-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv elsewhere with the wheel installed; its dependencies come from the test's own venv
    through a .pth (which adds the folder only: the editable install's finder there is not loaded)."""
    venv = tmp_path_factory.mktemp("elsewhere") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("SCONES_", "PYTHON", "VIRTUAL_ENV"))}


def test_the_wheel_holds_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = archive.namelist()
    assert tops == {"scones", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for folder in FOLDERS:
        assert f"scones/{folder}/__init__.py" in names, folder
    for data in ("scones/state_machine/definition.template.json", "scones/harness/templates/report.html",
                 "scones/harness/localstack-requirements.txt", "scones/harness/lambda_runtime/requirements.txt"):
        assert data in names, data
    packaged = {name for name in names if name.endswith(".py")}
    in_checkout = {f"scones/{path.relative_to(CHECKOUT / folder).as_posix()}" if folder == "scones"
                   else f"scones/{folder}/{path.relative_to(CHECKOUT / folder).as_posix()}"
                   for folder in ("scones", *FOLDERS) for path in (CHECKOUT / folder).rglob("*.py")
                   if "__pycache__" not in path.parts}
    assert in_checkout <= packaged, f"not packaged (pyproject.toml's packages list): {sorted(in_checkout - packaged)}"


def test_installed_scones_imports_from_anywhere_and_keeps_state_in_the_project(installed, tmp_path):
    python, scones = installed / "bin" / "python", installed / "bin" / "scones"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert not any((site / folder).exists() for folder in FOLDERS), sorted(path.name for path in site.iterdir())
    project = tmp_path / "new-project"
    project.mkdir()
    probe = subprocess.run([str(python), "-c", "import scones, scones.harness.cli, scones.deploy.aws; print(scones.__file__)"],
                           cwd=project, env=clean_environment(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(site)
    status = subprocess.run([str(scones), "status"], cwd=project, env=clean_environment(), capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in status.stderr, status.stderr
    assert f"{project.resolve() / '.scones'}" in status.stdout, status.stdout
    assert (project / ".scones").is_dir()
    assert not any(site.rglob(".scones"))
