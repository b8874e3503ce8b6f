"""Nothing captured is lost, and no execution fails, when parts of the local stack crash or restart.

On a stack of its own (own state dir, free ports, the session's trained model), driven through the
CLI as a user drives it: kill -9 of LocalStack in the middle of `scones evaluate`, kill -9 of the
endpoint, `scones down` + `scones up`, and an endpoint restarted during a burst of executions.

The ground truth for "captured" is the endpoint's own spool: a record counts as captured once it is
in the spool file, which happens before the endpoint replies (harness/serving/capture.py; the unit
tests in tests/test_capture_records.py show the write-before-reply and the recovery). LocalStack's
free edition keeps no data across restarts (persistence is a Pro feature, DESIGN.md section 4), so
after each fault `scones up` must re-seed S3 from the spool's archive and `scones monitor` must
count every record once.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

import support
from scones import settings
from scones.harness import stack
from scones.harness.endpoint import free_port
from support import CHECKOUT

pytestmark = pytest.mark.e2e

PREFIX = "scones-durable"


class OwnStack:
    def __init__(self, state_dir: Path, model_dir: str):
        self.state_dir = state_dir
        self.model_dir = model_dir
        self.env = {**os.environ, settings.STATE_DIR: str(state_dir), settings.DATA_DIR: str(settings.data_dir()),
                    settings.LOCALSTACK_PORT: str(free_port()), settings.ENDPOINT_PORT: str(free_port())}
        self.monitor_runs = 0

    def scones(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=CHECKOUT)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from scones.harness.cli import main; main()", *args]

    def background(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=CHECKOUT)

    def up(self) -> subprocess.CompletedProcess:
        result = self.scones("up", "--model", self.model_dir, "--prefix", PREFIX)
        assert result.returncode == 0, result.stderr
        return result

    def record(self) -> dict:
        return json.loads((self.state_dir / "local" / "stack.json").read_text())

    def capture_status(self) -> dict:
        with urllib.request.urlopen(f"{self.record()['endpoint']['url']}/capture/status", timeout=5) as reply:
            return json.loads(reply.read())

    def spooled_event_ids(self) -> list[str]:
        """Every record in the endpoint's spool, sent or not: what the endpoint acknowledged as captured."""
        spool = self.state_dir / "capture-spool"
        return [json.loads(line)["eventMetadata"]["eventId"]
                for path in sorted(spool.rglob("*.jsonl")) for line in path.read_text().splitlines() if line]

    def monitored_event_ids(self) -> list[str]:
        """The event ids `scones monitor` reads from S3 (its monitor.json lists every record)."""
        self.monitor_runs += 1
        out = self.state_dir / f"monitor-{self.monitor_runs}"
        result = self.scones("monitor", "--out", str(out), "--json")
        assert result.returncode == 0, result.stderr
        document = json.loads((out / "monitor.json").read_text())
        assert document["records"] == len(document["records_table"])
        return [row["event_id"] for row in document["records_table"]]

    def wait_spooled(self, at_least: int, what: str, process: subprocess.Popen) -> None:
        def reached() -> bool:
            if process.poll() is not None:
                output, errors = process.communicate()
                pytest.fail(f"{process.args[3:]} ended (status {process.returncode}) before {what}:\n{output}\n{errors}")
            return self.capture_status()["spooled_records"] >= at_least

        poll(reached, 180, what)


def poll(condition, timeout_s: float, what: str):
    """support.poll, with a refused connection read as "not yet": the stack is restarting."""
    def check():
        try:
            return condition()
        except OSError:
            return False

    support.poll(check, timeout_s, interval=0.1, what=what)


@pytest.fixture(scope="module")
def own_stack(scones_target_name, scones_stack):
    if scones_target_name != "local":
        pytest.skip("crashes and restarts of the local stack's processes")
    from scones.harness.localstack import LocalStack

    shared = settings.state_dir()
    LocalStack(shared).ensure_venv(progress=False)
    # Not under /tmp: each Lambda sandbox gets a private /tmp, which would hide function code kept there.
    state_dir = Path(tempfile.mkdtemp(prefix="test-durability-", dir=shared))
    for name in ("localstack-venv", "lambda-runtimes"):
        if (shared / name).exists():
            (state_dir / name).symlink_to(shared / name)
    own = OwnStack(state_dir, scones_stack.record["endpoint"]["model_dir"])
    try:
        own.up()
        yield own
    finally:
        stopped = own.scones("down")
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(state_dir, ignore_errors=True)


def assert_every_spooled_record_is_monitored_once(own: OwnStack, must_include: list[str]) -> list[str]:
    # The last records of a run reach S3 about a flush interval (1 s) after their replies.
    poll(lambda: own.capture_status()["pending"] == 0, 60, "the endpoint to upload what it spooled")
    monitored = own.monitored_event_ids()
    assert len(monitored) == len(set(monitored)), "a capture record reached S3 twice"
    spooled = own.spooled_event_ids()
    assert len(spooled) == len(set(spooled))
    assert set(must_include) <= set(monitored)
    assert sorted(monitored) == sorted(spooled)
    return monitored


def test_kill_9_of_localstack_during_evaluate_loses_no_capture(own_stack):
    start = own_stack.capture_status()["spooled_records"]
    evaluation = own_stack.background("evaluate", "--n", "60", "--concurrency", "4", "--seed", "1")
    own_stack.wait_spooled(start + 15, "15 records captured by the evaluation", evaluation)
    os.kill(own_stack.record()["localstack"]["pid"], signal.SIGKILL)
    _, errors = evaluation.communicate(timeout=300)
    assert evaluation.returncode != 0, "the evaluation finished before LocalStack was killed"
    assert "Traceback" not in errors
    captured = own_stack.spooled_event_ids()   # LocalStack is dead: no execution can add records now
    assert len(captured) >= start + 15

    restarted = own_stack.up()

    assert "restored:" in restarted.stdout and "capture records" in restarted.stdout
    assert_every_spooled_record_is_monitored_once(own_stack, captured)


def test_kill_9_of_the_endpoint_loses_no_capture_and_fails_no_execution(own_stack):
    earlier = set(own_stack.spooled_event_ids())
    start = own_stack.capture_status()["spooled_records"]
    evaluation = own_stack.background("evaluate", "--n", "40", "--concurrency", "4", "--seed", "2", "--json")
    own_stack.wait_spooled(start + 10, "10 records captured by the evaluation", evaluation)
    os.kill(own_stack.record()["endpoint"]["pid"], signal.SIGKILL)
    captured = own_stack.spooled_event_ids()   # the endpoint is dead: its spool holds all it acknowledged

    own_stack.up()   # starts a new endpoint on the same spool while the executions retry

    output, errors = evaluation.communicate(timeout=600)
    assert evaluation.returncode == 0, errors
    summary = json.loads(output)
    assert summary["executions"] == 40
    assert set(summary["failures_by_error"]) <= {"ThresholdConfidenceNotMet"}, summary["failures_by_error"]
    monitored = assert_every_spooled_record_is_monitored_once(own_stack, captured)
    assert len(set(monitored) - earlier) >= summary["executions"]   # each execution's inference, once at least


def test_the_endpoint_restarted_during_a_burst_fails_no_execution(own_stack):
    probe = own_stack.scones("run", "--json", *[f"test/{kind}/{name}" for kind, name in sample_keys(own_stack, 24)])
    confident = [json.loads(line)["key"] for line in probe.stdout.splitlines()
                 if json.loads(line)["status"] == "SUCCEEDED"]
    assert len(confident) >= 6, probe.stdout
    keys = [confident[index % len(confident)] for index in range(60)]
    start = own_stack.capture_status()["spooled_records"]
    burst = own_stack.background("run", "--concurrency", "8", "--json", *keys)
    own_stack.wait_spooled(start + 5, "the burst to reach the endpoint", burst)
    stack.terminate(own_stack.record()["endpoint"]["pid"])   # a clean stop (SIGTERM), then a new server
    own_stack.up()

    output, errors = burst.communicate(timeout=600)
    results = [json.loads(line) for line in output.splitlines()]
    assert len(results) == 60
    failed = [(result["key"], result["error"]) for result in results if result["status"] != "SUCCEEDED"]
    assert failed == [] and burst.returncode == 0, errors


def test_down_then_up_keeps_every_capture_record(own_stack):
    before = assert_every_spooled_record_is_monitored_once(own_stack, [])
    assert before, "the tests above captured records"
    stopped = own_stack.scones("down")
    assert stopped.returncode == 0, stopped.stderr

    restarted = own_stack.up()

    assert f"restored: {len(before)} capture records" in restarted.stdout
    assert_every_spooled_record_is_monitored_once(own_stack, before)


def sample_keys(own: OwnStack, count: int) -> list[tuple[str, str]]:
    data = Path(own.env[settings.DATA_DIR])
    files = sorted((data / "test").glob("*/*.png"))
    step = max(1, len(files) // count)
    return [(path.parent.name, path.name) for path in files[::step][:count]]
