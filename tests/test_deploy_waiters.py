"""Polling paths that moto cannot show (it reports final states at once), driven with botocore Stubber."""
from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber

from scones.deploy import sagemaker as sm
from scones.deploy.waiting import WaitFailed, WaitTimedOut, poll_until
from scones.deploy.workflow import ensure_function

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
ENDPOINT_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/sct-classifier"


def client(service: str):
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="AKIAAAAAAAAAAAAAAAAA", aws_secret_access_key="x" * 40)


def endpoint(status: str, config: str = "cfg-a", reason: str | None = None) -> dict:
    response = {"EndpointName": "sct-classifier", "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": config,
                "EndpointStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW}
    if reason:
        response["FailureReason"] = reason
    return response


def training(status: str, secondary: str, reason: str | None = None) -> dict:
    response = {
        "TrainingJobName": "job", "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/job",
        "TrainingJobStatus": status, "SecondaryStatus": secondary,
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/training-output/job/output/model.tar.gz"},
        "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {"VolumeSizeInGB": 30},
        "StoppingCondition": {}, "CreationTime": NOW,
    }
    if reason:
        response["FailureReason"] = reason
    return response


def not_found(stubber: Stubber, method: str) -> None:
    stubber.add_client_error(method, service_error_code="ValidationException", service_message="Could not find endpoint \"sct-classifier\".")


def test_endpoint_creating_then_in_service():
    sagemaker = client("sagemaker")
    sleeps, messages = [], []
    with Stubber(sagemaker) as stubber:
        not_found(stubber, "describe_endpoint")
        stubber.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
        for status in ("Creating", "Creating", "InService"):
            stubber.add_response("describe_endpoint", endpoint(status), {"EndpointName": "sct-classifier"})
        result, action = sm.ensure_endpoint(sagemaker, name="sct-classifier", config_name="cfg-a", progress=messages.append, sleep=sleeps.append)
        stubber.assert_no_pending_responses()
    assert action == "created" and result["EndpointStatus"] == "InService"
    assert len(sleeps) == 2
    assert messages == ["endpoint sct-classifier: created, waiting for InService (takes minutes on AWS)",
                        "endpoint sct-classifier: Creating", "endpoint sct-classifier: InService"]


def test_endpoint_creating_then_failed_shows_the_reason():
    sagemaker = client("sagemaker")
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_endpoint", endpoint("Creating"))
        stubber.add_response("describe_endpoint", endpoint("Failed", reason=reason))
        with pytest.raises(WaitFailed) as failure:
            sm.wait_endpoint(sagemaker, "sct-classifier", sleep=lambda _: None)
    assert str(failure.value) == f"endpoint sct-classifier is Failed: {reason}"


def test_endpoint_wait_times_out_naming_the_state():
    sagemaker = client("sagemaker")
    ticks = iter(range(0, 10_000, 100))
    with Stubber(sagemaker) as stubber:
        for _ in range(4):
            stubber.add_response("describe_endpoint", endpoint("Creating"))
        with pytest.raises(WaitTimedOut, match=r"endpoint sct-classifier still Creating after 300 s"):
            poll_until(lambda: sagemaker.describe_endpoint(EndpointName="sct-classifier"), what="endpoint sct-classifier",
                       state_of=lambda e: e["EndpointStatus"], done={"InService"}, failed={"Failed"},
                       timeout_s=300, sleep=lambda _: None, clock=lambda: next(ticks))


def test_endpoint_on_another_config_is_updated_and_awaited():
    sagemaker = client("sagemaker")
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_endpoint", endpoint("InService", config="cfg-old"))
        stubber.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, {"EndpointName": "sct-classifier", "EndpointConfigName": "cfg-new"})
        stubber.add_response("describe_endpoint", endpoint("Updating", config="cfg-old"))
        stubber.add_response("describe_endpoint", endpoint("InService", config="cfg-new"))
        result, action = sm.ensure_endpoint(sagemaker, name="sct-classifier", config_name="cfg-new", sleep=lambda _: None)
        stubber.assert_no_pending_responses()
    assert action == "updated" and result["EndpointConfigName"] == "cfg-new"


def test_failed_endpoint_is_deleted_and_created_again():
    sagemaker = client("sagemaker")
    messages = []
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_endpoint", endpoint("Failed", reason="capacity"))
        stubber.add_response("delete_endpoint", {}, {"EndpointName": "sct-classifier"})
        stubber.add_response("describe_endpoint", endpoint("Deleting"))
        not_found(stubber, "describe_endpoint")
        stubber.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
        stubber.add_response("describe_endpoint", endpoint("InService"))
        _, action = sm.ensure_endpoint(sagemaker, name="sct-classifier", config_name="cfg-a", progress=messages.append, sleep=lambda _: None)
        stubber.assert_no_pending_responses()
    assert action == "created"
    assert "Failed (capacity)" in messages[0]


def test_training_in_progress_then_failed_shows_the_reason():
    sagemaker = client("sagemaker")
    messages = []
    reason = "AlgorithmError: ExecuteUserScriptError: Command \"/opt/conda/bin/python3.11 train.py\" exited with 1"
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_training_job", training("InProgress", "Starting"), {"TrainingJobName": "job"})
        stubber.add_response("describe_training_job", training("InProgress", "Training"))
        stubber.add_response("describe_training_job", training("Failed", "Failed", reason))
        with pytest.raises(WaitFailed) as failure:
            sm.wait_training_job(sagemaker, "job", progress=messages.append, sleep=lambda _: None)
    assert str(failure.value) == f"training job job is Failed: {reason}"
    assert messages[:2] == ["training job job: InProgress (Starting)", "training job job: InProgress (Training)"]


def test_training_in_progress_then_completed():
    sagemaker = client("sagemaker")
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_training_job", training("InProgress", "Downloading"))
        stubber.add_response("describe_training_job", training("Completed", "Completed"))
        job = sm.wait_training_job(sagemaker, "job", sleep=lambda _: None)
    assert job["ModelArtifacts"]["S3ModelArtifacts"].endswith("model.tar.gz")


class Spec:
    name, handler, environment, runtime, timeout, memory, description = "f", "m.lambda_handler", (), "python3.12", 30, 256, "d"


def function_config(state: str, update: str, reason: str | None = None) -> dict:
    config = {"FunctionName": "sct-f", "FunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:sct-f", "State": state, "LastUpdateStatus": update}
    if reason:
        config["StateReason"] = reason
    return config


def test_lambda_pending_then_active_after_role_propagates():
    lambda_client = client("lambda")
    sleeps = []
    with Stubber(lambda_client) as stubber:
        stubber.add_client_error("get_function", service_error_code="ResourceNotFoundException", http_status_code=404)
        stubber.add_client_error("create_function", service_error_code="InvalidParameterValueException",
                                 service_message="The role defined for the function cannot be assumed by Lambda.", http_status_code=400)
        stubber.add_response("create_function", function_config("Pending", "InProgress"))
        stubber.add_response("get_function_configuration", function_config("Pending", "InProgress"))
        stubber.add_response("get_function_configuration", function_config("Active", "Successful"))
        arn, action = ensure_function(lambda_client, name="sct-f", spec=Spec, zip_bytes=b"zip", role_arn="arn:aws:iam::123456789012:role/r",
                                      environment={}, sleep=sleeps.append)
        stubber.assert_no_pending_responses()
    assert action == "created" and arn.endswith(":function:sct-f")
    assert len(sleeps) == 2  # one for the role, one while Pending


def test_lambda_failed_state_shows_the_reason():
    lambda_client = client("lambda")
    with Stubber(lambda_client) as stubber:
        stubber.add_client_error("get_function", service_error_code="ResourceNotFoundException", http_status_code=404)
        stubber.add_response("create_function", function_config("Pending", "InProgress"))
        stubber.add_response("get_function_configuration", function_config("Failed", "Failed", reason="Bad zip"))
        with pytest.raises(WaitFailed, match="Lambda function sct-f is Failed: Bad zip"):
            ensure_function(lambda_client, name="sct-f", spec=Spec, zip_bytes=b"zip", role_arn="arn:aws:iam::123456789012:role/r",
                            environment={}, sleep=lambda _: None)


def test_long_waits_report_a_heartbeat():
    ticks = iter(range(0, 1000, 30))
    messages = []
    states = iter(["Creating"] * 5 + ["InService"])
    poll_until(lambda: next(states), what="endpoint e", state_of=lambda s: s, done={"InService"},
               progress=messages.append, sleep=lambda _: None, clock=lambda: next(ticks), heartbeat_s=60)
    assert messages == ["endpoint e: Creating", "endpoint e: Creating (1m30s so far)", "endpoint e: Creating (2m30s so far)", "endpoint e: InService"]


def test_state_machine_creation_waits_for_a_fresh_role():
    from scones.deploy.workflow import ensure_state_machine

    sfn = client("stepfunctions")
    sleeps = []
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:sct-workflow"
    with Stubber(sfn) as stubber:
        stubber.add_response("list_state_machines", {"stateMachines": []})
        stubber.add_client_error("create_state_machine", service_error_code="AccessDeniedException", http_status_code=400,
                                 service_message="Neither the global service principal states.amazonaws.com, nor the regional one is authorized to assume the provided role.")
        stubber.add_response("create_state_machine", {"stateMachineArn": arn, "creationDate": NOW})
        result = ensure_state_machine(sfn, name="sct-workflow", definition="{}", role_arn="arn:aws:iam::123456789012:role/r", sleep=sleeps.append)
    assert result == (arn, "created") and len(sleeps) == 1


def test_training_job_creation_waits_for_a_fresh_role_but_not_for_other_errors():
    sagemaker = client("sagemaker")
    plan = sm.TrainingPlan(bucket="b", region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/r", image="img", hyperparameters={})
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:training-job/job"
    with Stubber(sagemaker) as stubber:
        stubber.add_client_error("create_training_job", service_error_code="ValidationException", http_status_code=400,
                                 service_message="Could not assume role arn:aws:iam::123456789012:role/r. Please ensure that the role exists and allows principal 'sagemaker.amazonaws.com' to assume the role.")
        stubber.add_response("create_training_job", {"TrainingJobArn": arn})
        assert sm.start_training_job(sagemaker, plan, job_name="job", submit_directory="s3://b/s.tar.gz", sleep=lambda _: None) == arn
        stubber.add_client_error("create_training_job", service_error_code="ResourceLimitExceeded", http_status_code=400,
                                 service_message="The account-level service limit 'ml.m5.xlarge for training job usage' is 0 Instances")
        with pytest.raises(Exception, match="ml.m5.xlarge for training job usage"):
            sm.start_training_job(sagemaker, plan, job_name="job", submit_directory="s3://b/s.tar.gz", sleep=lambda _: None)


def test_role_propagation_gives_up_at_the_deadline():
    from botocore.exceptions import ClientError

    from scones.deploy.waiting import DeployError, retry_while_role_propagates

    ticks = iter(range(0, 1000, 50))

    def refuse():
        raise ClientError({"Error": {"Code": "InvalidParameterValueException", "Message": "The role defined for the function cannot be assumed by Lambda."}}, "CreateFunction")

    with pytest.raises(DeployError, match="creating f: the role is still refused after 90 s"):
        retry_while_role_propagates(refuse, what="creating f", sleep=lambda _: None, clock=lambda: next(ticks))
