"""run_executions against moto's Step Functions interpreter, and parsing of recorded histories."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from scones.harness.executions import (
    DurationEstimate,
    ExecutionTimeout,
    duration_estimate,
    execution_name,
    inferences_in,
    parse_execution,
    percentile,
    run_execution,
    run_executions,
    wait_for_execution,
)

EVENTS = Path(__file__).parent / "events"
ROLE = "arn:aws:iam::123456789012:role/scones-states-role"


def three_state_machine(p_bicycle: float) -> dict:
    """Pass states shaped like the real workflow, with a Choice + Fail standing in for the threshold."""
    envelope = {"statusCode": 200, "body": {"inferences": [p_bicycle, round(1 - p_bicycle, 6)]}}
    return {
        "StartAt": "serializeImageData",
        "States": {
            "serializeImageData": {"Type": "Pass", "Next": "classifyImage"},
            "classifyImage": {"Type": "Pass", "Result": envelope, "Next": "filterInferences"},
            "filterInferences": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.body.inferences[0]", "NumericGreaterThanEquals": 0.93, "Next": "done"},
                            {"Variable": "$.body.inferences[1]", "NumericGreaterThanEquals": 0.93, "Next": "done"}],
                "Default": "thresholdFailed",
            },
            "done": {"Type": "Succeed"},
            "thresholdFailed": {"Type": "Fail", "Error": "ThresholdConfidenceNotMet",
                                "Cause": "max(inferences) below THRESHOLD"},
        },
    }


@pytest.fixture
def moto_target():
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        session = boto3.Session(region_name="us-east-1")
        sfn = session.client("stepfunctions")

        def make(p_bicycle: float):
            arn = sfn.create_state_machine(name=f"scones-test-{int(p_bicycle * 1000)}", roleArn=ROLE,
                                           definition=json.dumps(three_state_machine(p_bicycle)))["stateMachineArn"]
            return SimpleNamespace(bucket="scones-test-bucket", state_machine_arn=arn,
                                   client=lambda name: session.client(name))
        yield make


def test_succeeded_execution_reports_class_confidence_and_history(moto_target):
    target = moto_target(0.02)

    [result] = run_executions(target, ["test/motorcycle/a.png"])

    assert result.status == "SUCCEEDED" and result.succeeded
    assert result.predicted_class == "motorcycle"
    assert result.confidence == pytest.approx(0.98)
    assert result.error is None and result.failed_state is None
    assert result.input == {"s3_bucket": "scones-test-bucket", "s3_key": "test/motorcycle/a.png"}
    assert result.event_types == [
        "ExecutionStarted",
        "PassStateEntered", "PassStateExited",
        "PassStateEntered", "PassStateExited",
        "ChoiceStateEntered", "ChoiceStateExited",
        "SucceedStateEntered", "SucceedStateExited",
        "ExecutionSucceeded",
    ]
    assert set(result.state_durations) == {"serializeImageData", "classifyImage", "filterInferences", "done"}
    assert all(seconds >= 0 for seconds in result.state_durations.values())
    assert result.duration is not None and result.wall_duration >= 0


def test_failed_execution_names_the_failed_state_error_and_cause(moto_target):
    target = moto_target(0.6)

    [result] = run_executions(target, [{"s3_key": "unsure.png", "image_data": ""}])

    assert result.status == "FAILED"
    assert result.error == "ThresholdConfidenceNotMet"
    assert result.cause == "max(inferences) below THRESHOLD"
    assert result.error_message == result.cause and result.cause_details is None and result.stack_trace == []
    assert result.failed_state == "thresholdFailed"
    assert result.predicted_class == "bicycle" and result.confidence == pytest.approx(0.6)
    assert result.event_types[-2:] == ["FailStateEntered", "ExecutionFailed"]
    assert result.input["image_data"] == ""


def test_concurrent_executions_keep_input_order_and_unique_names(moto_target):
    target = moto_target(0.99)
    keys = [f"test/bicycle/{n}.png" for n in range(6)]
    seen = []

    results = run_executions(target, keys, concurrency=3, progress=seen.append)

    assert [r.key for r in results] == keys
    assert len({r.execution_arn for r in results}) == len(keys)
    assert len(seen) == len(keys)
    assert all(r.predicted_class == "bicycle" for r in results)


def test_lambda_task_failure_history_is_parsed():
    """A FAILED history recorded from the local stack: filterInferences raised ThresholdConfidenceNotMet.

    The cause is a string (Step Functions API reference, TaskFailedEventDetails: "cause", String, at most
    32768 characters); for a Lambda task it holds the function's error response as the Lambda runtime
    reports it ({"errorMessage", "errorType", "requestId", "stackTrace"}).
    """
    recorded = json.loads((EVENTS / "execution_threshold_failed.json").read_text(), object_hook=_dates)

    result = parse_execution("test/bicycle/x.png", recorded["input"], recorded["description"], recorded["events"])

    assert result.status == "FAILED"
    assert result.error == "ThresholdConfidenceNotMet"
    assert result.failed_state == "filterInferences"
    assert result.error_message.startswith("max confidence 0.7286 (bicycle) is below the threshold 0.93 for ")
    assert result.cause_details["errorType"] == "ThresholdConfidenceNotMet"
    assert "raise ThresholdConfidenceNotMet" in result.stack_trace[0]
    assert result.to_dict()["error_message"] == result.error_message
    assert result.inferences is not None and result.confidence < 0.93
    assert set(result.state_durations) == {"serializeImageData", "classifyImage", "filterInferences"}
    assert "TaskFailed" in result.event_types and result.event_types[-1] == "ExecutionFailed"


@pytest.mark.parametrize("width", [100, 120, 160, 400])
def test_run_table_wraps_the_error_at_word_boundaries_and_keeps_every_number_whole(width):
    """`scones run`'s table: the error column wraps to the width instead of cutting "threshold 0...."."""
    from scones.harness.commands.local import results_table

    recorded = json.loads((EVENTS / "execution_threshold_failed.json").read_text(), object_hook=_dates)
    result = parse_execution("test/bicycle/x.png", recorded["input"], recorded["description"], recorded["events"])

    table = results_table([result], width=width)

    lines = table.splitlines()
    assert all(len(line) <= max(width, 200) for line in lines)   # 200: the other columns + the 40-char minimum
    error_start, error_end = lines[0].index("error"), lines[0].index("duration") - 2
    words = " ".join(line[error_start:error_end] for line in lines[1:]).split()
    message = f"ThresholdConfidenceNotMet in filterInferences: {result.error_message}".split()
    shown = words[:-1] if words[-1] == "..." else words
    assert shown == message[:len(shown)], "whole words of the message, in order, none cut"
    assert "0.93" in shown and "0.7286" in shown
    assert lines[1].rstrip().endswith("ms")                        # duration stays on the row's first line


def _dates(document):
    from datetime import datetime
    for key in ("timestamp", "startDate", "stopDate"):
        if isinstance(document.get(key), str):
            document[key] = datetime.fromisoformat(document[key])
    return document


def test_wait_gives_up_at_the_deadline():
    running = SimpleNamespace(describe_execution=lambda executionArn: {"status": "RUNNING",
                                                                       "executionArn": executionArn})
    with pytest.raises(ExecutionTimeout, match="still RUNNING"):
        wait_for_execution(running, "arn:aws:states:us-east-1:1:execution:m:e", timeout=0.05, poll_interval=0.01)


def test_inferences_found_in_every_envelope_shape():
    assert inferences_in({"statusCode": 200, "body": {"inferences": [0.1, 0.9]}}) == [0.1, 0.9]
    assert inferences_in(json.dumps({"body": json.dumps({"inferences": "[0.5, 0.5]"})})) == [0.5, 0.5]
    assert inferences_in({"body": {"inferences": []}}) is None
    assert inferences_in("not json") is None


def test_execution_names_are_valid_and_unique():
    names = {execution_name("test/bicycle/a weird name!.png") for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 80 and all(c.isalnum() or c in "-_" for c in n) for n in names)


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile([7.0], 0.95) == 7.0


def test_up_suggests_a_key_it_uploaded(tmp_path):
    from scones.harness.commands.local import example_key

    for name in ("motorcycle_s_000001.png", "bicycle_s_000040.png", "bicycle_s_000030.png"):
        folder = tmp_path / "test" / name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"png")
    record = {"data_dir": str(tmp_path), "dataset": {"uploaded": 3, "skipped": 0, "parts": ["test"]}}

    assert example_key(record) == "test/bicycle/bicycle_s_000030.png"
    assert example_key({**record, "dataset": None}) is None      # `up --no-data` uploaded nothing


class _DiesAfterStarts:
    """A Step Functions client whose service goes away right after its `starts`-th start_execution, as when
    LocalStack is killed mid-run: botocore then raises EndpointConnectionError for every call."""

    def __init__(self, sfn, starts: int):
        self._sfn, self._starts = sfn, starts

    def _dead(self):
        from botocore.exceptions import EndpointConnectionError

        return EndpointConnectionError(endpoint_url="http://127.0.0.1:4566/")

    def start_execution(self, **kwargs):
        if self._starts <= 0:
            raise self._dead()
        self._starts -= 1
        return self._sfn.start_execution(**kwargs)

    def describe_execution(self, **kwargs):
        if self._starts <= 0:
            raise self._dead()
        return self._sfn.describe_execution(**kwargs)

    def get_paginator(self, name):
        if self._starts <= 0:
            raise self._dead()
        return self._sfn.get_paginator(name)


def test_a_service_that_dies_mid_run_fails_only_the_executions_it_strands(moto_target):
    """Issue 26: LocalStack killed mid-run printed "unexpected KeyError: 'status'" and none of the results."""
    target = moto_target(0.99)
    client = _DiesAfterStarts(target.client("stepfunctions"), starts=2)
    keys = [f"test/bicycle/{n}.png" for n in range(4)]

    results = run_executions(target, keys, client=client)

    assert [r.key for r in results] == keys
    assert results[0].succeeded and results[0].predicted_class == "bicycle"
    stranded, never_started = results[1], results[2:]
    assert stranded.status == "UNKNOWN" and stranded.execution_arn.startswith("arn:aws:states:")
    assert all(r.status == "NOT_STARTED" and r.execution_arn == "" for r in never_started)
    for failed in results[1:]:
        assert not failed.succeeded
        assert failed.error == "EndpointConnectionError" and "127.0.0.1:4566" in failed.cause


def test_when_nothing_can_start_the_run_fails_with_the_services_error():
    """LocalStack down from the start: one error for the run (the CLI's one line), not a row per input."""
    from botocore.exceptions import EndpointConnectionError

    def refuse(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:4566/")

    target = SimpleNamespace(bucket="b", state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m")
    with pytest.raises(EndpointConnectionError):
        run_executions(target, ["a.png", "b.png"], client=SimpleNamespace(start_execution=refuse), concurrency=2)


def test_an_answer_without_a_status_is_that_executions_error_not_a_key_error():
    target = SimpleNamespace(bucket="b", state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m")
    client = SimpleNamespace(start_execution=lambda **kwargs: {"executionArn": "arn:aws:states:us-east-1:1:execution:m:e"},
                             describe_execution=lambda **kwargs: {"message": "gateway error"})

    [result] = run_executions(target, ["a.png"], client=client)

    assert result.error == "ExecutionUnreadable" and "without a status" in result.cause


def test_a_timeout_is_that_executions_result():
    running = SimpleNamespace(start_execution=lambda **kwargs: {"executionArn": "arn:aws:states:us-east-1:1:execution:m:e"},
                              describe_execution=lambda executionArn: {"status": "RUNNING", "executionArn": executionArn})
    target = SimpleNamespace(bucket="b", state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m")

    [result] = run_executions(target, ["a.png"], client=running, timeout=0.05)

    assert result.status == "RUNNING" and result.error == "ExecutionTimeout" and "still RUNNING" in result.cause


def test_run_json_prints_every_result_when_the_service_dies(moto_target, monkeypatch):
    from click.testing import CliRunner

    from scones.harness import executions, targets
    from scones.harness.commands.local import run

    target = moto_target(0.99)
    client = _DiesAfterStarts(target.client("stepfunctions"), starts=2)
    monkeypatch.setattr(targets, "load_target", lambda name, state_dir: target)
    original = executions.run_executions
    monkeypatch.setattr(executions, "run_executions", lambda deployed, inputs, **kw: original(deployed, inputs,
                                                                                              client=client, **kw))

    outcome = CliRunner().invoke(run, ["--json", "a.png", "b.png", "c.png"])

    documents = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert outcome.exit_code == 1 and "unexpected" not in outcome.output
    assert [d["key"] for d in documents] == ["a.png", "b.png", "c.png"]
    assert [d["status"] for d in documents] == ["SUCCEEDED", "UNKNOWN", "NOT_STARTED"]
    assert {d["error"] for d in documents[1:]} == {"EndpointConnectionError"}


def test_a_boolean_is_not_a_probability():
    """Issue 24: `True` passed as a number; JSON booleans are not numbers (RFC 8259, section 3)."""
    assert inferences_in({"body": {"inferences": [True, False]}}) is None
    assert inferences_in({"body": {"inferences": [1, 0]}}) == [1.0, 0.0]


def test_the_first_poll_waits_for_half_the_recent_executions_then_half_the_gap_to_their_slowest_tenth():
    estimate = DurationEstimate()
    assert estimate.schedule(0.01) == (0.0, 0.01)          # nothing seen yet: poll from 10 ms on, as before
    for seconds in (0.3, 0.2, 0.5):
        estimate.add(seconds)
    assert estimate.schedule(0.01) == (0.3, pytest.approx(0.1))
    alike = DurationEstimate()
    for _ in range(3):
        alike.add(0.3)                                       # alike: polls at least poll_interval apart
    assert alike.schedule(0.01) == (0.3, 0.01)
    for _ in range(DurationEstimate.WINDOW):
        estimate.add(60.0)                                   # slow ones (a Wait state) push the fast ones out
    assert estimate.schedule(0.01) == (DurationEstimate.MAX_FIRST_POLL_S, 0.01)


class _EndsAfter:
    """A Step Functions client whose one execution ends `seconds` after it started; counts describe calls."""

    def __init__(self, seconds: float):
        self.seconds, self.describes, self.started = seconds, 0, 0.0

    def start_execution(self, **kwargs):
        import time

        self.started = time.monotonic()
        return {"executionArn": "arn:aws:states:us-east-1:1:execution:m:e"}

    def describe_execution(self, executionArn):
        import time
        from datetime import datetime, timedelta, timezone

        self.describes += 1
        if time.monotonic() - self.started < self.seconds:
            return {"status": "RUNNING", "executionArn": executionArn}
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        return {"status": "SUCCEEDED", "executionArn": executionArn, "startDate": start,
                "stopDate": start + timedelta(seconds=self.seconds), "output": "{}"}

    def get_paginator(self, name):
        return SimpleNamespace(paginate=lambda **kwargs: [{"events": []}])


def test_an_execution_like_the_recent_ones_is_polled_once():
    """Issue 25: each describe_execution is served on the interpreter that runs the executions."""
    unpaced, paced = _EndsAfter(0.1), _EndsAfter(0.1)
    run_execution(unpaced, "arn:aws:states:us-east-1:1:stateMachine:m", "a.png", {})
    estimate = DurationEstimate()
    for _ in range(3):
        estimate.add(0.1)
    result = run_execution(paced, "arn:aws:states:us-east-1:1:stateMachine:m", "a.png", {}, estimate=estimate)
    assert result.succeeded and result.duration == pytest.approx(0.1)
    assert paced.describes == 1 < unpaced.describes
    assert len(estimate._recent) == 4   # and it learned this one


def test_runs_of_one_state_machine_share_their_estimate():
    assert duration_estimate("arn:aws:states:us-east-1:1:stateMachine:x") is duration_estimate(
        "arn:aws:states:us-east-1:1:stateMachine:x")
    assert duration_estimate("arn:aws:states:us-east-1:1:stateMachine:x") is not duration_estimate(
        "arn:aws:states:us-east-1:1:stateMachine:y")
