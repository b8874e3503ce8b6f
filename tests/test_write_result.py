"""writeResult: a finished run's status-change event becomes results/<photo key>.json, against moto's S3.

The events in tests/events/sfn_status_*.json were recorded from LocalStack 4.14 (a rule with a
CloudWatch Logs target on source aws.states). AWS sends the same detail fields but its dates as
epoch milliseconds ("startDate": 1551225014968 in
https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html), and leaves input or output
out, with inputDetails/outputDetails {"included": false}, when the event would pass 248 KB.
"""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from scones.lambdas import clients, config
from scones.lambdas.errors import InvalidConfiguration, InvalidInput
from scones.lambdas.run_results import RunResult, result_key
from scones.lambdas.write_result import lambda_handler
from support import load_event, unique_name


@pytest.fixture
def results_bucket(fake_aws_credentials, monkeypatch):
    clients.reset()
    with mock_aws():
        s3 = boto3.client("s3")
        bucket = unique_name()
        s3.create_bucket(Bucket=bucket)
        monkeypatch.setenv(config.RESULTS_BUCKET, bucket)
        monkeypatch.delenv(config.RESULTS_PREFIX, raising=False)
        yield s3, bucket
    clients.reset()


def written(s3, bucket: str, event: dict) -> RunResult:
    photo_key = json.loads(event["detail"]["input"])["s3_key"]
    body = s3.get_object(Bucket=bucket, Key=result_key("results/", photo_key))["Body"].read()
    return RunResult.from_json(body)


def test_a_succeeded_run_writes_the_class_and_its_confidence(results_bucket, lambda_context):
    s3, bucket = results_bucket
    event = load_event("sfn_status_succeeded")

    reply = lambda_handler(event, lambda_context)

    result = written(s3, bucket, event)
    assert reply == {"written": f"s3://{bucket}/results/{result.s3_key}.json"}
    assert result.status == "SUCCEEDED" and result.error is None
    assert result.predicted_class == "motorcycle"
    assert result.confidence == max(result.inferences) >= 0.93
    assert result.s3_key.startswith("incoming/") and result.s3_bucket == "scones-local"
    assert result.execution_arn == event["detail"]["executionArn"]
    assert result.started_at.endswith("Z") and result.stopped_at > result.started_at


def test_a_below_threshold_run_writes_its_error_and_message(results_bucket, lambda_context):
    s3, bucket = results_bucket
    event = load_event("sfn_status_failed")

    lambda_handler(event, lambda_context)

    result = written(s3, bucket, event)
    assert result.status == "FAILED"
    assert result.error == "ThresholdConfidenceNotMet"
    assert result.message.startswith("max confidence 0.8145 (motorcycle) is below the threshold 0.93")
    assert json.loads(result.cause)["errorType"] == "ThresholdConfidenceNotMet"
    assert result.predicted_class is None and result.inferences is None


def test_aws_epoch_millisecond_dates_read_as_utc(results_bucket, lambda_context):
    s3, bucket = results_bucket
    event = load_event("sfn_status_failed")
    event["detail"].update(startDate=1551225014968, stopDate=1551225017576)

    lambda_handler(event, lambda_context)

    result = written(s3, bucket, event)
    assert (result.started_at, result.stopped_at) == ("2019-02-26T23:50:14.968Z", "2019-02-26T23:50:17.576Z")


def test_a_run_still_going_writes_nothing(results_bucket, lambda_context):
    s3, bucket = results_bucket

    assert lambda_handler(load_event("sfn_status_running"), lambda_context) == {"written": None}
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_payloads_left_out_of_the_event_are_read_from_the_execution(results_bucket, lambda_context, monkeypatch):
    s3, bucket = results_bucket
    event = load_event("sfn_status_succeeded")
    detail = event["detail"]
    described = {"input": detail["input"], "output": detail["output"]}
    detail.update(input=None, output=None, inputDetails={"included": False}, outputDetails={"included": False})
    states = boto3.client("stepfunctions")
    with monkeypatch.context() as patch, Stubber(states) as stub:
        patch.setattr(clients, "stepfunctions", lambda: states)
        stub.add_response("describe_execution", {
            "executionArn": detail["executionArn"], "stateMachineArn": detail["stateMachineArn"],
            "status": "SUCCEEDED", "startDate": 0, **described,
        }, {"executionArn": detail["executionArn"]})
        lambda_handler(event, lambda_context)
        stub.assert_no_pending_responses()

    assert written(s3, bucket, load_event("sfn_status_succeeded")).predicted_class == "motorcycle"


def test_an_event_of_another_kind_is_refused_by_name(results_bucket, lambda_context):
    with pytest.raises(InvalidInput, match="Step Functions Execution Status Change"):
        lambda_handler(load_event("workflow_input"), lambda_context)


def test_a_missing_results_bucket_setting_names_the_variable(results_bucket, lambda_context, monkeypatch):
    monkeypatch.delenv(config.RESULTS_BUCKET)
    with pytest.raises(InvalidConfiguration, match=config.RESULTS_BUCKET):
        lambda_handler(load_event("sfn_status_failed"), lambda_context)
