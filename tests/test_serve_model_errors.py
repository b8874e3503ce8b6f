"""`scones serve --model` on something that holds no model fails at once, naming it, and does not keep running.

Issue 26: a folder without a model logged a traceback and the server kept running, answering /ping 503
for ever. The checks run the real CLI in a subprocess, as a user runs it.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from scones.harness.endpoint import free_port
from support import CHECKOUT


def serve(model, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", "serve",
                           "--model", str(model), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=timeout, cwd=CHECKOUT)


def test_a_folder_without_a_model_fails_at_once_naming_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    result = serve(tmp_path)
    assert result.returncode == 1
    assert f"the folder {tmp_path} holds no model" in result.stderr
    assert "model.tar.gz" in result.stderr      # says what it expected
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b"not a tar archive", b""])
def test_a_model_archive_that_cannot_load_stops_the_server(tmp_path, content):
    (tmp_path / "model.tar.gz").write_bytes(content)
    result = serve(tmp_path)
    assert result.returncode == 1
    assert f"could not load the model {tmp_path}" in result.stderr
    assert "is not a readable tar.gz" in result.stderr
    assert "Traceback" not in result.stderr
