"""The CLI's one error boundary: an error no command handled is one line naming what failed and what to do,
with a non-zero exit status; `scones --debug` (or SCONES_DEBUG=1) shows the traceback instead.

Issue 12 saw raw tracebacks from `scones run` when LocalStack was dead (EndpointConnectionError) and from
`scones deploy --target aws --dry-run` when AWS could not be reached (102 lines). These tests run the
installed `scones` as a user does; nothing is mocked on the network path.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scones import settings
from scones.harness.cli import main
from scones.harness.endpoint import free_port
from scones.harness.targets import local_record_path, write_record

SCONES = Path(sys.executable).with_name("scones")
REAL_LOOKING_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP", "AWS_SECRET_ACCESS_KEY": "s" * 40}


def scones(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(("AWS_", "SCONES_")) and name.lower() not in ("https_proxy", "http_proxy")}
    return subprocess.run([str(SCONES), *args], env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def assert_one_clear_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def dead_local_stack(tmp_path) -> tuple[dict[str, str], int]:
    """A stack record as `scones up` writes it, whose LocalStack no longer listens (it was killed)."""
    port = free_port()
    write_record(local_record_path(tmp_path), {"target": "local", "outputs": {
        "region": "us-east-1", "bucket": "scones-local", "endpoint_name": "scones-classifier",
        "state_machine_arn": "arn:aws:states:us-east-1:000000000000:stateMachine:scones-workflow",
        "function_arns": {}, "capture_s3_uri": "s3://scones-local/data_capture",
        "endpoint_urls": {"default": f"http://127.0.0.1:{port}", "sagemaker-runtime": f"http://127.0.0.1:{free_port()}"},
    }})
    return {settings.STATE_DIR: str(tmp_path)}, port


def test_run_against_a_dead_localstack_says_what_failed_and_what_to_do(dead_local_stack):
    env, port = dead_local_stack
    result = scones("run", "test/bicycle/bicycle_s_000030.png", env=env)
    assert_one_clear_line(result, "scones run failed", f"could not reach http://127.0.0.1:{port}/",
                          "EndpointConnectionError", "`scones status`", "`scones up`")


@pytest.mark.parametrize("debug", [["--debug"], []])
def test_debug_shows_the_traceback(dead_local_stack, debug):
    env, _ = dead_local_stack
    result = scones(*debug, "run", "test/bicycle/bicycle_s_000030.png",
                    env={**env, **({} if debug else {"SCONES_DEBUG": "1"})})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "botocore.exceptions.EndpointConnectionError" in result.stderr


def test_run_without_a_stack_names_the_command_that_makes_one(tmp_path):
    result = scones("run", "test/bicycle/x.png", env={settings.STATE_DIR: str(tmp_path)})
    assert_one_clear_line(result, f"no local stack recorded at {local_record_path(tmp_path)}", "`scones up`")


def test_a_corrupt_stack_record_is_one_line(tmp_path):
    local_record_path(tmp_path).parent.mkdir(parents=True)
    local_record_path(tmp_path).write_text('{"target": "local", ')
    result = scones("status", env={settings.STATE_DIR: str(tmp_path)})
    assert_one_clear_line(result, "scones status failed", "is not valid JSON", "remove it")


def test_dry_run_offline_prints_the_plan_with_the_account_unknown(tmp_path):
    """An endpoint that cannot resolve (.invalid never does, RFC 2606) is AWS unreachable, as on a plane."""
    env = {settings.STATE_DIR: str(tmp_path), "AWS_ENDPOINT_URL": "https://aws.invalid", "AWS_CONFIG_FILE": os.devnull,
           **REAL_LOOKING_KEYS}
    result = scones("deploy", "--target", "aws", "--region", "eu-west-1", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "account unknown (AWS unreachable: Could not connect to the endpoint URL" in result.stdout
    assert "s3://scones-data-eu-west-1-<account>: create or reuse (not checked: AWS unreachable)" in result.stdout
    assert "5. Lambda functions scones-serializeImageData" in result.stdout

    result = scones("deploy", "--target", "aws", "--region", "eu-west-1", env=env)
    assert_one_clear_line(result, "scones deploy failed: AWS cannot be reached", "https://aws.invalid/",
                          "EndpointConnectionError", "--dry-run")


def test_deploy_through_a_dead_proxy_names_the_proxy(tmp_path):
    proxy = f"http://127.0.0.1:{free_port()}"
    env = {settings.STATE_DIR: str(tmp_path), "HTTPS_PROXY": proxy, "AWS_CONFIG_FILE": os.devnull, **REAL_LOOKING_KEYS}
    result = scones("deploy", "--target", "aws", "--region", "eu-west-1", env=env)
    assert_one_clear_line(result, "AWS cannot be reached", f"the proxy {proxy}", "HTTPS_PROXY")
    assert "account unknown" in scones("deploy", "--region", "eu-west-1", "--dry-run", env=env).stdout


def test_an_unexpected_error_is_one_line_and_debug_lets_it_through(monkeypatch, tmp_path):
    from scones.harness import stack

    def broken(state_dir=None):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(stack, "status", broken)
    result = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: scones status failed: unexpected RuntimeError: the disk is on fire "
                                     "(`scones --debug ...` shows the traceback)")
    debug = CliRunner().invoke(main, ["--debug", "status", "--state-dir", str(tmp_path)])
    assert isinstance(debug.exception, RuntimeError) and debug.exit_code == 1
