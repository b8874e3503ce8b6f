"""`scones up` refuses bad settings at once, before any work, naming what is wrong (issue 26).

`up --endpoint-port 4566` (LocalStack's own port) used to fail after 61 s without naming the clash;
`--endpoint-port 0` silently became 8080; a read-only state dir failed only once work was done.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scones import settings
from scones.harness import stack
from scones.harness.commands.local import up

SCONES = Path(sys.executable).with_name("scones")


def run_up(tmp_path, *args: str, env: dict | None = None):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return CliRunner().invoke(up, ["--state-dir", str(tmp_path / "state"), "--model", str(model), *args], env=env)


@pytest.mark.parametrize("args, said", [
    (["--endpoint-port", "4566", "--localstack-port", "4566"], "cannot share port 4566"),
    (["--endpoint-port", "4566"], "cannot share port 4566"),            # LocalStack's default port
    (["--localstack-port", "8080"], "cannot share port 8080"),          # the endpoint's default port
])
def test_ports_must_be_distinct(tmp_path, monkeypatch, args, said):
    for name in (settings.LOCALSTACK_PORT, settings.ENDPOINT_PORT):
        monkeypatch.delenv(name, raising=False)
    result = run_up(tmp_path, *args)
    assert result.exit_code == 1, result.output
    assert said in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state" / "local" / "stack.json").exists()


@pytest.mark.parametrize("args, option", [
    (["--endpoint-port", "0"], "--endpoint-port"), (["--localstack-port", "65536"], "--localstack-port"),
    (["--endpoint-port", "-1"], "--endpoint-port"),
])
def test_a_port_flag_out_of_range_is_a_usage_error_naming_it(tmp_path, monkeypatch, args, option):
    """Out of 1-65535 on the command line: click's usage error (exit 2) names the option, before any work."""
    for name in (settings.LOCALSTACK_PORT, settings.ENDPOINT_PORT):
        monkeypatch.delenv(name, raising=False)
    result = run_up(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "1<=x<=65535" in result.output
    assert not (tmp_path / "state" / "local").exists()


def test_a_port_from_the_environment_is_checked_too(tmp_path):
    result = run_up(tmp_path, env={settings.ENDPOINT_PORT: "99999"})
    assert result.exit_code == 1 and "$SCONES_ENDPOINT_PORT) must be a port number in 1-65535, not 99999" in result.output


def test_a_port_another_program_holds_is_named_at_once(tmp_path):
    """Not this stack's process: `up` says which port and who holds it, before it starts anything."""
    import socket

    from scones.harness.endpoint import free_port
    from scones.harness.parts import EndpointPart

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        part = EndpointPart(state_dir=tmp_path, port=port, endpoint_name="e", model_dir=tmp_path, bucket="b",
                            localstack_url=f"http://127.0.0.1:{free_port()}", capture_spool_dir=tmp_path)
        with pytest.raises(stack.StackError) as error:
            stack._refuse_a_held_port(part)
    assert f"port {port} is already in use by pid {os.getpid()}" in str(error.value)
    assert "the endpoint cannot bind it" in str(error.value) and "$SCONES_ENDPOINT_PORT" in str(error.value)


def test_a_state_dir_that_cannot_be_written_is_refused_before_any_work():
    """As an unprivileged user (root writes anywhere), as a user runs it: the whole CLI in a subprocess."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="scones-readonly-"))   # pytest's tmp_path is private to root
    try:
        top.chmod(0o755)
        state, model = top / "state", top / "model"
        (state / "local").mkdir(parents=True)
        model.mkdir()
        for folder in (state, state / "local"):
            folder.chmod(0o555)
        command = [str(SCONES), "up", "--state-dir", str(state), "--model", str(model)]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "HOME": str(top)}, cwd=top)
        assert result.returncode == 1, result.stderr
        assert f"the state dir {state} is not writable (Permission denied)" in result.stderr
        assert "Traceback" not in result.stderr
        assert list((state / "local").iterdir()) == []
    finally:
        for folder in (top / "state", top / "state" / "local"):
            if folder.exists():
                folder.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_a_state_dir_that_cannot_be_created_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_up(tmp_path, "--state-dir", str(blocker / "state"))
    assert result.exit_code == 1
    assert f"cannot create the state dir {blocker / 'state'}" in result.output
