"""The CLI's one error boundary: an error no command handled is one line naming what failed and what to do,
with a non-zero exit status; `scones --debug` (or SCONES_DEBUG=1) shows the traceback instead.

Issue 12 saw raw tracebacks from `scones run` when LocalStack was dead (EndpointConnectionError) and from
`scones deploy --target aws --dry-run` when AWS could not be reached (102 lines). These tests run the
installed `scones` as a user does; nothing is mocked on the network path.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scones import settings
from scones.deploy.record import RecordError, local_record_path, write_record
from scones.errors import SconesError
from scones.harness.cli import describe, main
from scones.harness.endpoint import free_port
from scones.harness.stack import StackError
from scones.lambdas.errors import ThresholdConfidenceNotMet
from scones.settings import SettingsError
from scones.state_machine.render import DefinitionError

pytest_plugins = ["pytester"]

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
    assert "unexpected" not in lines[0] and "--debug" not in lines[0], lines[0]   # our own errors speak for themselves
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
    assert "[workflow] function/serializeImageData: Lambda function scones-serializeImageData" in result.stdout

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


def _modules_of(package) -> tuple[list, list[Path]]:
    """The package's modules importable here, and the files of those that only import inside LocalStack's venv."""
    modules, localstack_only = [], []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            modules.append(importlib.import_module(info.name))
        except ModuleNotFoundError as error:
            if error.name != "localstack" and not (error.name or "").startswith("localstack."):
                raise
            localstack_only.append(Path(importlib.util.find_spec(info.name).origin))
    return modules, localstack_only


# Errors that become an answer, never a CLI line: the endpoint's per-request errors (they mirror the inference
# toolkit's and become HTTP statuses), the SageMaker API's errors (AWS's error shapes) and a training job's or an
# endpoint's failure (its FailureReason).
REQUEST_ERRORS = {"UnsupportedFormatError", "UnsupportedOutputError", "ApiError", "_Unservable", "JobFailed",
                  # the executor's refusal to start a function; sandbox.py also runs alone, importing nothing of scones
                  "SandboxUnavailable"}
# LocalStack's bases of the errors a service answers with (a gateway handler's AWS error shapes).
AWS_ANSWERS = {"CommonServiceException", "ServiceException"}


def test_every_error_scones_defines_is_recognised_by_the_boundary_as_ours():
    """Each exception class in harness/ and deploy/ derives from scones.errors.SconesError, so the CLI shows its
    message as it is: the package move (every module became scones.*) once made all of them "unexpected"."""
    import scones.deploy
    import scones.harness

    harness_modules, harness_localstack_only = _modules_of(scones.harness)
    deploy_modules, deploy_localstack_only = _modules_of(scones.deploy)
    defined = {(module.__name__, name): value
               for module in harness_modules + deploy_modules
               for name, value in vars(module).items()
               if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module.__name__}
    assert len(defined) >= 20
    strays = sorted(f"{module}.{name}" for (module, name), error in defined.items()
                    if name not in REQUEST_ERRORS and not issubclass(error, SconesError))
    ours = {"SconesError"} | {name for (_, name), error in defined.items() if issubclass(error, SconesError)}
    for path in harness_localstack_only + deploy_localstack_only:   # read, since they import only inside LocalStack
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                if (any(base.endswith(("Error", "Exception")) for base in bases) and not bases & ours
                        and node.name not in REQUEST_ERRORS and not bases & AWS_ANSWERS):
                    strays.append(f"{path.name}:{node.lineno} {node.name}")
    assert strays == []
    for (_, name), error in defined.items():
        if name not in REQUEST_ERRORS:
            instance = error.__new__(error)
            instance.args = ("what is wrong, and what to do",)
            assert describe(instance) == str(instance)


@pytest.mark.parametrize("error", [StackError("port 8080 is already in use"), RecordError("stack record x is not JSON"),
                                   ThresholdConfidenceNotMet("0.5 < 0.93"), DefinitionError("unknown Next 'X'"),
                                   SettingsError("SCONES_LOCALSTACK_PORT=abc is not a port")])
def test_our_errors_raised_inside_a_command_are_one_line_without_unexpected(monkeypatch, tmp_path, error):
    from scones.harness import stack

    def failing(state_dir=None):
        raise error

    monkeypatch.setattr(stack, "status", failing)
    result = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: scones status failed: {error}"


STACK_ERROR_CONFTEST = '''
import pytest

pytest_plugins = ["pytester"]

from scones.harness import stack


@pytest.fixture(autouse=True, scope="session")
def a_port_is_taken():
    def taken(*args, **kwargs):
        raise stack.StackError("port 8080 is already in use by another program: pass --endpoint-port")

    saved = stack.status, stack.up
    stack.status, stack.up = (lambda state_dir=None: {"up": False}), taken
    yield
    stack.status, stack.up = saved
'''


def test_the_pytest_plugin_shows_a_stack_error_as_one_line_per_test(pytester, monkeypatch, tmp_path):
    """A StackError while the plugin brings the stack up fails each test with its message, not a traceback."""
    for name in ("SCONES_TEST_TARGET", "CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(settings.STATE_DIR, str(tmp_path / "state"))
    pytester.makeconftest(STACK_ERROR_CONFTEST)
    pytester.makepyfile("def test_one(scones_stack):\n    pass\n\ndef test_two(scones_stack):\n    pass\n")

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    assert output.count("scones: the local stack could not come up: port 8080 is already in use") == 2
    assert "Traceback" not in output and "raise stack.StackError" not in output
