"""`scones deploy --target local` with the local SageMaker control plane: the AWS plan's SageMaker part for real.

The plan's training job trains (two epochs of a small network, hyperparameters as the SDK serialises them), its
model.tar.gz lands in S3, CreateModel / CreateEndpointConfig (with DataCaptureConfig) / CreateEndpoint bring an
endpoint InService from it, 20 executions of the plan's state machine go through that endpoint and leave capture
records in S3, an upload under incoming/ is run by the event wiring, the scheduled drift monitor answers, and
destroy leaves none of it (every List* empty for this deploy, no process of it left).

AWS behaviour relied on (AWS's SageMaker API reference): a training job's artifact is
<S3OutputPath>/<TrainingJobName>/output/model.tar.gz (DescribeTrainingJob ModelArtifacts.S3ModelArtifacts);
ListEndpoints, ListEndpointConfigs, ListModels and ListTrainingJobs take NameContains; DeleteEndpoint removes the
endpoint, after which ListEndpoints no longer lists it
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListEndpoints.html).
"""
from __future__ import annotations

import json
import uuid

import pytest

from scones.deploy import local as local_target
from scones.harness.sagemaker import processes as sagemaker_processes
from scones.harness.stack import _sagemaker_root
from scones.polling import poll

pytestmark = pytest.mark.e2e

QUICK_TRAINING = {"epochs": "2", "widths": "[8, 16, 32]", "blocks": "[1, 1, 1]"}


def _finished(stepfunctions, arn: str) -> dict:
    return poll(lambda: stepfunctions.describe_execution(executionArn=arn), timeout=180,
                until=lambda described: described["status"] != "RUNNING", interval=0.2)


def test_a_trained_model_deployed_through_the_control_plane_runs_the_workflow_and_destroy_leaves_nothing(
        scones_stack, data_dir, tmp_path):
    localstack_url = scones_stack.record["localstack"]["url"]
    session = local_target.local_session(localstack_url)
    name = f"t{uuid.uuid4().hex[:8]}"
    config = local_target.LocalConfig(
        localstack_url=localstack_url, endpoint_url=localstack_url, data_dir=data_dir, bucket=f"{name}-data",
        prefix=name, endpoint_name=f"{name}-classifier", sagemaker="api", train=True,
        hyperparameters=QUICK_TRAINING, restore_capture=lambda s3: None)
    sagemaker, stepfunctions, s3 = session.client("sagemaker"), session.client("stepfunctions"), session.client("s3")
    try:
        deployed = local_target.deploy_local_stack(config, state_dir=tmp_path)

        [job] = sagemaker.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
        described = sagemaker.describe_training_job(TrainingJobName=job["TrainingJobName"])
        assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
        artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
        assert artifact.endswith(f"/{job['TrainingJobName']}/output/model.tar.gz")
        endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
        assert endpoint["EndpointStatus"] == "InService"
        [variant] = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])[
            "ProductionVariants"]
        model = sagemaker.describe_model(ModelName=variant["ModelName"])
        assert model["PrimaryContainer"]["ModelDataUrl"] == artifact

        keys = [f"test/{image.parent.name}/{image.name}" for class_name in ("bicycle", "motorcycle")
                for image in sorted((data_dir / "test" / class_name).glob("*.png"))[:10]]
        for wave in range(0, len(keys), 4):   # four in flight, as a team's suite runs them on a 2-core runner
            arns = [stepfunctions.start_execution(
                stateMachineArn=deployed.outputs.state_machine_arn,
                input=json.dumps({"s3_bucket": config.bucket, "s3_key": key}))["executionArn"]
                for key in keys[wave:wave + 4]]
            for arn in arns:
                done = _finished(stepfunctions, arn)
                # A two-epoch model is unsure of many images: what matters is that the endpoint classified each.
                assert done["status"] == "SUCCEEDED" or done.get("error") == "ThresholdConfidenceNotMet", (
                    done.get("error"), done.get("cause"))

        capture_prefix = f"data_capture/{config.endpoint_name}/"

        def captured() -> int:
            count = 0
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=capture_prefix):
                for item in page.get("Contents", []):
                    count += len(s3.get_object(Bucket=config.bucket, Key=item["Key"])["Body"].read().splitlines())
            return count

        assert poll(captured, timeout=60, until=lambda count: count >= len(keys), interval=0.5) >= len(keys)

        intake_key = f"incoming/{name}.png"
        s3.put_object(Bucket=config.bucket, Key=intake_key,
                      Body=(data_dir / keys[0]).read_bytes())
        result_key = f"results/{intake_key}.json"
        poll(lambda: s3.list_objects_v2(Bucket=config.bucket, Prefix=result_key).get("KeyCount", 0), timeout=120,
             interval=0.5)

        monitor = session.client("lambda").invoke(FunctionName=f"{name}-monitorDrift", Payload=b"{}")
        assert "FunctionError" not in monitor, monitor["Payload"].read()
    finally:
        deleted = local_target.destroy_local_stack(localstack_url=localstack_url, state_dir=tmp_path)

    assert deleted
    assert sagemaker.list_endpoints(NameContains=name)["Endpoints"] == []
    assert sagemaker.list_endpoint_configs(NameContains=name)["EndpointConfigs"] == []
    assert sagemaker.list_models(NameContains=name)["Models"] == []
    assert not [function for function in session.client("lambda").list_functions()["Functions"]
                if function["FunctionName"].startswith(f"{name}-")]
    assert not [entry for entry in sagemaker_processes.recorded(_sagemaker_root(scones_stack.record_path.parent.parent))
                if entry.alive and entry.name.startswith(name)]
