"""run_executions against moto's Step Functions interpreter, and parsing of recorded histories."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from scones.harness.executions import (ExecutionTimeout, execution_name, inferences_in, parse_execution,
                                percentile, run_executions, wait_for_execution)

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
