"""The Step Functions time scale (harness/lambda_executor/sfn_time_scale.py) on a LocalStack of its own.

A Wait state and a Retry on a Fail-free Pass/Task path, with LocalStack started with SCONES_TIME_SCALE;
the history's timestamps show AWS's intervals. Retry waits IntervalSeconds * BackoffRate^(n-1) before
the nth retry and a Wait state its Seconds (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html,
https://docs.aws.amazon.com/step-functions/latest/dg/state-wait.html). The switches: with
SCONES_SFN_TIME_SCALE_PATCH=0 and SCONES_FAULTS_PATCH=0 neither is installed.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest

from scones import settings
from support import poll, running_localstack

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/scones-test-role"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# A task that always fails with States.Runtime-free error: a Lambda invoke of a function that does not exist
# answers ResourceNotFoundException, which Step Functions reports as Lambda.ResourceNotFoundException.
DEFINITION = {"StartAt": "pause", "States": {
    "pause": {"Type": "Wait", "Seconds": 20, "Next": "call"},
    "call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
             "Parameters": {"FunctionName": "scones-no-such-function", "Payload": {}},
             "Retry": [{"ErrorEquals": ["Lambda.ResourceNotFoundException"], "IntervalSeconds": 2,
                        "BackoffRate": 2, "MaxAttempts": 3}],
             "End": True}}}


def _get(url: str) -> dict:
    with OPENER.open(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    with running_localstack(tmp_path_factory.mktemp("localstack"), {settings.TIME_SCALE: "0.01"}) as instance:
        yield instance


def _run(localstack, definition: dict) -> tuple[dict, list[dict], float]:
    sfn = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1").client("stepfunctions", endpoint_url=localstack.url)
    machine = sfn.create_state_machine(name=f"scale-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition),
                                       roleArn=ROLE)["stateMachineArn"]
    started = time.monotonic()
    execution = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]

    def finished() -> dict | None:
        described = sfn.describe_execution(executionArn=execution)
        return described if described["status"] != "RUNNING" else None

    described = poll(finished, timeout=60, interval=0.05, what="the execution to finish")
    wall = time.monotonic() - started
    return described, sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"], wall


def test_waits_and_retries_are_scaled_and_the_history_keeps_aws_intervals(scaled):
    # Applied in the background at start: give it its few seconds.
    def applied() -> dict | None:
        state = _get(f"{scaled.url}/_scones/time-scale")
        return state if state["active"] else None

    state = poll(applied, timeout=60, interval=0.2, what="the time scale patch to be applied")
    assert state["active"] and state["scale"] == 0.01, state

    described, events, wall = _run(scaled, DEFINITION)

    assert described["status"] == "FAILED" and described["error"] == "Lambda.ResourceNotFoundException"
    stamps = {event["type"]: event["timestamp"] for event in events}
    assert 20 <= (stamps["WaitStateExited"] - stamps["WaitStateEntered"]).total_seconds() < 21.5
    failures = [event for event in events if event["type"] == "TaskFailed"]
    scheduled = [event for event in events if event["type"] == "TaskScheduled"]
    assert len(failures) == 4 and len(scheduled) == 4        # the first attempt and 3 retries
    gaps = [(after["timestamp"] - failure["timestamp"]).total_seconds() for failure, after in zip(failures, scheduled[1:])]
    assert [round(gap) for gap in gaps] == [2, 4, 8], gaps
    assert wall < 34, wall    # unscaled: 20 s of Wait and 14 s of Retry


def test_the_scale_is_set_at_run_time_and_refused_out_of_range(scaled):
    def put(body: bytes) -> dict:
        request = urllib.request.Request(f"{scaled.url}/_scones/time-scale", data=body, method="PUT")
        with OPENER.open(request, timeout=10) as response:
            return json.loads(response.read())

    assert put(b'{"scale": 0.5}')["scale"] == 0.5
    with pytest.raises(urllib.error.HTTPError) as refused:
        put(b'{"scale": 0}')
    assert refused.value.code == 400 and b"between" in refused.value.read()
    assert put(b'{"scale": 0.01}')["scale"] == 0.01


def test_switched_off_neither_is_installed(tmp_path):
    switches = {"SCONES_SFN_TIME_SCALE_PATCH": "0", "SCONES_FAULTS_PATCH": "0", "SCONES_TIME_SCALE": "0.01"}
    with running_localstack(tmp_path, switches) as off:
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(f"{off.url}/_scones/faults")
        assert missing.value.code == 404
        request = urllib.request.Request(f"{off.url}/_scones/time-scale", data=b'{"scale": 0.01}', method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            OPENER.open(request, timeout=10)
        assert refused.value.code == 400 and b"SCONES_SFN_TIME_SCALE_PATCH=0" in refused.value.read()
