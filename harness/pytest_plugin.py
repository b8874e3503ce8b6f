"""pytest plugin (entry point `pytest11: scones`): fixtures that bring the local stack up and hand tests clients and names.

Installed with the `scones` package, so any project's tests can say

    def test_bicycle(run_workflow):
        result = run_workflow("test/bicycle/bike_s_000001.png")
        assert result.status == "SUCCEEDED" and result.predicted_class == "bicycle"

`scones_stack` (session) attaches to a local stack that is already up and leaves it up, or
brings one up and takes it down at the end of the session. With SCONES_TEST_TARGET=aws (or
`--scones-target aws`) the same fixtures point at the stack that `scones deploy --target aws`
recorded, and nothing is started or stopped.

Nothing heavy is imported until a test asks for one of these fixtures.
"""
from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from scones import loopback, settings

UPLOAD_PREFIX = "pytest-uploads"
PROGRESS_PREFIX = "scones: "
REDRAW_INTERVAL_S = 5.0    # a progress bar (pip, uploads) shows its state at most this often, and its last one


class _TerminalLines(io.TextIOBase):
    """A sys.stderr for the stack's first-use work (LocalStack's venv, the Lambda runtimes, training,
    uploads): every complete line goes to `write_line`; a progress bar's redraws (lines ended by a
    carriage return) at most every REDRAW_INTERVAL_S, and its final state when it ends its line."""

    def __init__(self, write_line: Callable[[str], object]) -> None:
        super().__init__()
        self._write_line, self._pending = write_line, ""
        self._bar_started: float | None = None     # when the redraws on the current line began
        self._last_redraw = 0.0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def _emit(self, line: str) -> None:
        if line.strip():
            self._write_line(line.rstrip())

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._emit(line.rsplit("\r", 1)[-1])      # a bar's last redraw is its final state
                self._bar_started = None
            if "\r" in self._pending:
                *redraws, self._pending = self._pending.split("\r")
                redraws = [line for line in redraws if line.strip()]
                now = time.monotonic()
                self._bar_started = self._bar_started or now
                # A bar that is done within the interval shows only its final line (if it leaves one).
                if redraws and now - self._bar_started >= REDRAW_INTERVAL_S \
                        and now - self._last_redraw >= REDRAW_INTERVAL_S:
                    self._last_redraw = now
                    self._emit(redraws[-1])
        return len(text)


@contextlib.contextmanager
def _progress_to_terminal(config):
    """Yield progress(message): a line on pytest's terminal now, with or without `-s`.

    While it is open, what the stack's parts write to stderr reaches the terminal line by line
    too; otherwise pytest would hold it until the session ends and a first run (LocalStack venv,
    Lambda runtimes, training: minutes) would look like a hang.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:    # e.g. an xdist worker: its controller shows what the worker prints
        def progress(message: str) -> None:
            print(f"{PROGRESS_PREFIX}{message}", file=sys.stderr, flush=True)
        yield progress
        return
    lock = threading.Lock()     # up() reports from its deploy and upload threads at once

    def progress(message: str) -> None:
        with lock:
            reporter.ensure_newline()   # ends the line of a test file's name
            # After a test's "." the reporter may be mid-line without knowing it (ensure_newline does not).
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.write("\n")
            reporter.write_line(f"{PROGRESS_PREFIX}{message}")
            reporter.flush()

    suspended = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with suspended, contextlib.redirect_stderr(_TerminalLines(progress)):
        yield progress


def _ours(error: Exception) -> bool:
    """An error that scones raised on purpose, whose message says what is wrong (a missing data dir included)."""
    from scones.harness.cli import is_ours

    return is_ours(error) or isinstance(error, FileNotFoundError)


def pytest_addoption(parser):
    group = parser.getgroup("scones", "Scones local/AWS stack")
    group.addoption("--scones-target", choices=("local", "aws"), default=None,
                    help=f"Stack the scones fixtures use (default ${settings.TEST_TARGET} or local).")
    group.addoption("--scones-keep-stack", action="store_true", default=False,
                    help="Leave a local stack this session started running afterwards.")


def pytest_collection_finish(session):
    """Start the local stack's first-use work (LocalStack's venvs, the trained model) in the background
    when a collected test will need the stack: the tests before it overlap with that work, and
    `scones_stack` then waits only for what is left of it."""
    config = session.config
    if config.option.collectonly or not any("scones_stack" in getattr(item, "fixturenames", ())
                                            for item in session.items):
        return
    from scones.harness import prepare, stack

    try:
        if settings.test_target(config.getoption("scones_target")) != "local":
            return
        stack_config = stack.StackConfig.from_environment()
        if stack.status(stack_config.state_dir)["up"]:
            return
    except Exception as error:
        if _ours(error):
            return   # scones_stack reports it, in the tests that need the stack
        raise
    preparation = prepare.start(stack_config.state_dir, stack_config.data_dir, stack_config.hyperparameters,
                                train=stack_config.model_dir is None)
    config.add_cleanup(lambda: prepare.stop(preparation))


@pytest.fixture(scope="session")
def scones_target_name(pytestconfig) -> str:
    name = settings.test_target(pytestconfig.getoption("scones_target"))
    if name not in ("local", "aws"):
        raise pytest.UsageError(f"{settings.TEST_TARGET}={name!r}: expected 'local' or 'aws'")
    return name


@pytest.fixture(scope="session")
def scones_stack(pytestconfig, scones_target_name):
    """The deployed workflow as a scones.harness.targets.Target (clients, bucket, ARNs, endpoint name).

    Local: attaches to a running stack (and leaves it up), else starts one and stops it at the
    end of the session. AWS: reads the deploy record; starts and stops nothing.
    """
    from scones.harness.targets import load_target

    if scones_target_name == "aws":
        yield load_target("aws")
        return

    from scones.harness import stack

    loopback.exempt_loopback()   # the stack's clients and processes reach this machine directly, never via a proxy
    running = stack.status()
    if running["up"]:
        with _progress_to_terminal(pytestconfig) as progress:
            progress(f"using the local stack that is up (record {running['record_path']}); it stays up")
        target = load_target("local")
        yield target
        _remember_iam_denials(pytestconfig, target)
        return
    config = stack.StackConfig.from_environment()
    with _progress_to_terminal(pytestconfig) as progress:
        progress(f"bringing up a local stack in {config.state_dir} (LocalStack on port {config.localstack_port}, "
                 f"endpoint on {config.endpoint_port}; settings: {settings.project().source})")
        try:
            stack.up(config, progress=progress)
        except Exception as error:
            if not _ours(error):
                raise
            # Every test that needs the stack fails with this one line, not with a traceback each.
            pytest.fail(f"scones: the local stack could not come up: {error}", pytrace=False)
    target = None
    try:
        target = load_target("local", config.state_dir)
        yield target
    finally:
        if target is not None:
            _remember_iam_denials(pytestconfig, target)
        if not pytestconfig.getoption("scones_keep_stack"):
            with _progress_to_terminal(pytestconfig) as progress:
                report = stack.down(config.state_dir, progress=progress)
            if report["leftover_processes"] or report["open_ports"]:
                pytest.fail(f"the local stack left processes {report['leftover_processes']} "
                            f"and open ports {report['open_ports']}")


IAM_DENIALS = pytest.StashKey[dict]()


def _remember_iam_denials(pytestconfig, target) -> None:
    """What the local stack's IAM checks denied during the session, read before the stack goes down, for the
    terminal summary."""
    from scones.harness.iam import denials

    localstack_url = denials.localstack_url_of(target)
    if localstack_url:
        pytestconfig.stash[IAM_DENIALS] = denials.fetch(localstack_url)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The local stack's IAM denials (harness/iam/gateway.py), where a test run's reader looks last."""
    from scones.harness.iam import denials

    if IAM_DENIALS not in config.stash:
        return
    lines = denials.summary_lines(config.stash[IAM_DENIALS])
    terminalreporter.section("scones IAM", yellow=len(lines) > 1)
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def s3_client(scones_stack):
    return scones_stack.client("s3")


@pytest.fixture(scope="session")
def stepfunctions_client(scones_stack):
    return scones_stack.client("stepfunctions")


@pytest.fixture(scope="session")
def lambda_client(scones_stack):
    return scones_stack.client("lambda")


@pytest.fixture(scope="session")
def sagemaker_runtime_client(scones_stack):
    return scones_stack.client("sagemaker-runtime")


@pytest.fixture(scope="session")
def run_workflow(scones_stack, stepfunctions_client):
    """run_workflow(key_or_input, timeout=120) -> RunResult (scones.lambdas.run_results); the key is in the stack's bucket."""
    from scones.harness.executions import run_executions

    def run(key_or_input, timeout: float = 120.0):
        [result] = run_executions(scones_stack, [key_or_input], timeout=timeout, client=stepfunctions_client)
        return result

    return run


@pytest.fixture(scope="session")
def run_workflows(scones_stack, stepfunctions_client):
    """run_workflows(keys_or_inputs, concurrency=1) -> [RunResult] in input order."""
    from scones.harness.executions import run_executions

    def run(items, concurrency: int = 1, timeout: float = 120.0):
        return run_executions(scones_stack, list(items), concurrency=concurrency, timeout=timeout,
                              client=stepfunctions_client)

    return run


@pytest.fixture
def upload_image(scones_stack, s3_client):
    """upload_image(data, suffix=".png") -> key: put bytes, a file or a PIL image under a unique key.

    Every object uploaded is deleted when the test ends.
    """
    uploaded: list[str] = []

    def upload(data, suffix: str = ".png", content_type: str | None = "image/png", name: str | None = None) -> str:
        if isinstance(data, (str, Path)):
            data = Path(data).read_bytes()
        elif hasattr(data, "save"):  # a PIL image
            buffer = io.BytesIO()
            data.save(buffer, format="PNG")
            data = buffer.getvalue()
        key = f"{UPLOAD_PREFIX}/{name or 'image'}-{uuid.uuid4().hex[:12]}{suffix}"
        extra = {"ContentType": content_type} if content_type else {}
        s3_client.put_object(Bucket=scones_stack.bucket, Key=key, Body=data, **extra)
        uploaded.append(key)
        return key

    yield upload
    for key in uploaded:
        s3_client.delete_object(Bucket=scones_stack.bucket, Key=key)


# --- fault rules, time scale and workflow coverage (issue 23) --------------------------------------
# The `faults` fixture and the --scones-coverage options live in their own plugin module, loaded with this one.
pytest_plugins = ["scones.harness.pytest_faults"]
