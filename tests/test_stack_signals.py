"""Signals during a real `scones up`: SIGINT, SIGTERM or SIGHUP stops what that `up` started (no process, no
port, no record; exit status 128 + the signal, 130 for Ctrl-C as the README says), and a kill -9, which `up`
cannot see, leaves nothing that the next `up` and `down` do not find (issue 26).

Issue 12: SIGTERM during `scones up` left the endpoint server and LocalStack running with no stack
record; `scones down` then stopped only LocalStack and the next `up` failed on the endpoint's port.
Each test runs `scones up` as a user does, in its own state directory and on free ports, and
signals it at a moment read from its own progress lines or LocalStack's pidfile.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scones import settings
from scones.deploy import local as local_target
from scones.deploy.record import local_record_path
from scones.harness import stack
from scones.harness.endpoint import free_port
from scones.harness.localstack import LocalStack
from scones.testing import build_stub_model
from support import poll

pytestmark = pytest.mark.e2e
SCONES = Path(sys.executable).with_name("scones")


@pytest.fixture(scope="module")
def shared_venvs():
    """LocalStack's venv and the Lambda runtimes of the default state dir (built once, as `scones up` does)."""
    default = LocalStack()
    default.ensure_venv(progress=False)
    return default.venv_dir, default.runtimes_dir


def _as_from_a_terminal() -> None:
    for number in (signal.SIGHUP, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)


class Up:
    """`scones up` in a subprocess, its stderr collected line by line as it comes."""

    def __init__(self, state_dir: Path, model_dir: Path, ports: tuple[int, int] | None = None, sagemaker: str = "api"):
        self.state_dir = state_dir
        self.localstack_port, self.endpoint_port = ports or (free_port(), free_port())
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        # api (the default): the control plane's endpoint host; route: the endpoint server `up` starts itself
        self.env.update({settings.STATE_DIR: str(state_dir), settings.LOCALSTACK_PORT: str(self.localstack_port),
                         settings.ENDPOINT_PORT: str(self.endpoint_port), local_target.SAGEMAKER_MODE: sagemaker})
        # As from a terminal: a test run under nohup (or in the background) must not hand its ignored
        # SIGHUP or SIGINT to `up`.
        self.process = subprocess.Popen([str(SCONES), "up", "--model", str(model_dir), "--no-data"], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=_as_from_a_terminal)
        self.lines: list[str] = []
        self.processes: list[int] = []   # what this `up` had started when it was signalled
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def localstack_pid(self) -> int | None:
        try:
            pid = json.loads((self.state_dir / "localstack" / "localstack.pid").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None
        return pid if stack.pid_alive(pid) else None

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code


@pytest.fixture
def start_up(tmp_path, shared_venvs):
    venv, runtimes = shared_venvs
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "localstack-venv").symlink_to(venv, target_is_directory=True)
    (state_dir / "lambda-runtimes").symlink_to(runtimes, target_is_directory=True)
    model_dir = build_stub_model(tmp_path / "model").parent
    started: list[Up] = []

    def start(ports: tuple[int, int] | None = None, sagemaker: str = "api") -> Up:
        up = Up(state_dir, model_dir, ports, sagemaker)
        started.append(up)
        return up

    yield start
    for up in started:   # a failed test must not leave its stack behind either
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait(10)
        stack.down(state_dir, progress=lambda message: None)
        LocalStack(state_dir, up.localstack_port).stop()
        for pid in up.processes:
            stack.terminate(pid, 10)


def assert_nothing_left(up: Up, code: int, signum: int, processes: list[int]) -> None:
    stderr = "\n".join(up.lines)
    assert code == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}; stopped what it had started" in stderr
    assert "Traceback" not in stderr
    left = [pid for pid in processes if stack.pid_alive(pid)]
    assert not left, f"processes left running: {left}\n{stderr}"
    assert not stack.port_open(up.localstack_port) and not stack.port_open(up.endpoint_port), stderr
    assert not local_record_path(up.state_dir).exists()
    assert not (up.state_dir / "localstack" / "localstack.pid").exists()
    assert not (up.state_dir / "local" / "processes.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_localstack_starts_stops_it_and_the_endpoint(start_up, signum):
    """SIGINT is Ctrl-C: exit status 130, as the README says (it was 1, click's "Aborted!"). Route mode: `up`
    starts an endpoint server of its own."""
    up = start_up(sagemaker="route")
    localstack_pid = poll(up.localstack_pid, 120, 0.05, "LocalStack's pidfile from `scones up`")
    assert up.said("endpoint: starting")      # the endpoint server is started first, so both now run
    processes = up.processes = stack.process_tree([up.process.pid])
    assert localstack_pid in processes and len(processes) >= 3   # up, the endpoint server, LocalStack
    up.process.send_signal(signum)
    assert_nothing_left(up, up.finish(), signum, processes)


def test_sigterm_while_the_endpoint_starts_stops_it(start_up):
    up = start_up(sagemaker="route")
    poll(lambda: up.said("endpoint: starting"), 120, 0.02, "`scones up` to start the endpoint server")
    processes = up.processes = stack.process_tree([up.process.pid])
    assert len(processes) >= 2, up.lines  # up and the endpoint server
    up.process.send_signal(signal.SIGTERM)
    assert_nothing_left(up, up.finish(), signal.SIGTERM, processes)
    assert not up.said("localstack: ready")



def test_sigterm_while_the_workflow_deploys_stops_both(start_up):
    """Signalled while the deploy threads talk to LocalStack: they finish their call, then both parts stop."""
    up = start_up()
    poll(lambda: up.said("creating Lambda function"), 120, 0.02, "`scones up` to deploy the Lambdas")
    processes = up.processes = stack.process_tree([up.process.pid])
    up.process.send_signal(signal.SIGTERM)
    assert_nothing_left(up, up.finish(), signal.SIGTERM, processes)


def scones(up: Up, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCONES), *args], env=up.env, capture_output=True, text=True, timeout=300)


def assert_nothing_of_the_stack_left(up: Up, processes: list[int], said: str) -> None:
    left = [pid for pid in processes if stack.pid_alive(pid)]
    assert not left, f"processes left running: {left}\n{said}"
    assert not stack.port_open(up.localstack_port) and not stack.port_open(up.endpoint_port), said
    assert stack.processes.find_marked(up.state_dir) == {}, said
    assert not local_record_path(up.state_dir).exists(), said
    assert not (up.state_dir / "local" / "processes.json").exists(), said


# Issue 26's four moments, each known by the progress line `up` prints on reaching it.
KILL_POINTS = {
    "endpoint start": "endpoint: starting",
    "LocalStack ready": "localstack: ready",
    "Lambda create": "creating Lambda function",
    "monitor deploy": "monitor baseline:",
}


@pytest.mark.parametrize("moment", KILL_POINTS)
def test_kill_9_of_up_then_up_and_down_leave_nothing(start_up, moment):
    """`up` cannot clean up after a kill -9: the next `up` must adopt or replace what it left (it failed with
    "port 8080 is already in use"), `status` must show it meanwhile, and `down` must stop all of it."""
    # Route mode for the endpoint server's start (api mode has none: the control plane starts the endpoint).
    mode = "route" if moment == "endpoint start" else "api"
    killed = start_up(sagemaker=mode)
    poll(lambda: killed.said(KILL_POINTS[moment]), 180, 0.02, f"`scones up` to reach {moment}")
    orphans = killed.processes = stack.process_tree([killed.process.pid])[1:]
    killed.process.kill()
    assert killed.finish() == -signal.SIGKILL
    assert orphans, killed.lines   # the endpoint server (route) or LocalStack (api) at least

    shown = scones(killed, "status")
    assert shown.returncode == 1, shown.stdout + shown.stderr   # neither up (3: nothing recorded) nor healthy (0)

    again = start_up((killed.localstack_port, killed.endpoint_port), sagemaker=mode)
    code = again.finish(300)
    said = "\n".join(again.lines)
    assert code == 0, said
    record = json.loads(local_record_path(again.state_dir).read_text())
    running = stack.process_tree([record["localstack"]["pid"], record["endpoint"]["pid"]])
    again.processes = running
    assert scones(again, "status").returncode == 0

    stopped = scones(again, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert_nothing_of_the_stack_left(again, orphans + running, said + stopped.stderr)


def test_down_with_a_damaged_record_stops_everything(start_up):
    """A corrupt stack.json made `down` refuse and leave every process running: it now stops what it finds."""
    up = start_up()
    code = up.finish(300)
    assert code == 0, "\n".join(up.lines)
    record = json.loads(local_record_path(up.state_dir).read_text())
    running = up.processes = stack.process_tree([record["localstack"]["pid"], record["endpoint"]["pid"]])
    local_record_path(up.state_dir).write_text('{"version": 1, "localstack": {"pid": ')   # cut short mid-write
    (up.state_dir / "local" / "processes.json").write_text("\0\0\0")

    shown = scones(up, "status")
    assert shown.returncode == 1 and "INCOMPLETE" in shown.stdout and "not valid JSON" in shown.stdout, shown.stdout
    stopped = scones(up, "down")

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "not valid JSON" in stopped.stderr
    assert local_record_path(up.state_dir).with_name("stack.json.damaged").exists()
    assert_nothing_of_the_stack_left(up, running, stopped.stderr)
