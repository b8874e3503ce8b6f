"""The local deploy makes deploy/iam.py's roles in LocalStack's IAM, so the workflow runs under the very policies an
AWS deploy gives it and a statement missing from deploy/iam.py fails the workflow locally, naming the action, as it
would fail on AWS after a deploy (issue 22's must-show). Real LocalStack, the real plan (deploy/planner.py)."""
from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image

from scones.deploy import iam, planner
from scones.deploy import local as local_target
from scones.deploy.workflow import function_name
from scones.harness.iam.denials import fetch
from support import poll, running_localstack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    with running_localstack(tmp_path_factory.mktemp("localstack-iam-deploy")) as instance:
        yield instance


def config(localstack, tmp_path, prefix: str) -> local_target.LocalConfig:
    """A local stack of its own names; no endpoint server (the route points nowhere), no dataset."""
    return local_target.LocalConfig(
        localstack_url=localstack.url, endpoint_url="http://127.0.0.1:9", data_dir=tmp_path, prefix=prefix,
        bucket=f"{prefix}-bucket", endpoint_name=f"{prefix}-endpoint", upload_data=False,
        sagemaker=planner.SAGEMAKER_ROUTE, register_endpoint=lambda *args: None)


def deploy(localstack, tmp_path, prefix: str) -> local_target.LocalDeployment:
    return local_target.deploy_local_stack(config(localstack, tmp_path, prefix), state_dir=tmp_path / "state")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_workflow(session, deployment, key: str) -> dict:
    sfn = session.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=deployment.outputs.state_machine_arn,
                                    input=json.dumps({"s3_bucket": deployment.outputs.bucket, "s3_key": key}))
    return poll(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        sfn.describe_execution(executionArn=execution["executionArn"])), timeout=120, what="the execution to end")


def test_a_statement_removed_from_deploy_iam_fails_the_local_workflow_naming_the_action(localstack, tmp_path,
                                                                                      monkeypatch):
    """deploy/iam.py's Lambda policy without its ReadImages statement (s3:GetObject): `scones up`'s plan puts that
    policy on the functions' role in LocalStack's IAM, and the workflow fails in serializeImageData with S3's
    AccessDenied and IAM's message (IAM User Guide, troubleshoot_access-denied.html: "User: <session> is not
    authorized to perform: <action> on resource: <arn> because no identity-based policy allows the <action>
    action"). Deployed again with the statement back, every role holds the plan's document (the AWS plan's too:
    tests/test_deploy_plans.py) and the same image is read."""
    prefix = f"iam{uuid.uuid4().hex[:6]}"
    full_policy = iam.lambda_policy
    monkeypatch.setattr(iam, "lambda_policy", lambda scope: {**full_policy(scope), "Statement": [
        s for s in full_policy(scope)["Statement"] if s["Sid"] != "ReadImages"]})
    deployment = deploy(localstack, tmp_path, prefix)
    session = local_target.local_session(localstack.url)
    role = iam.role_names(prefix)["lambda"]
    serializer = session.client("lambda").get_function_configuration(
        FunctionName=function_name(prefix, "serializeImageData"))
    assert serializer["Role"] == f"arn:aws:iam::{local_target.ACCOUNT_ID}:role/{role}"
    key = "test/bicycle/one.png"
    session.client("s3").put_object(Bucket=deployment.outputs.bucket, Key=key, Body=png())

    failed = run_workflow(session, deployment, key)

    assert failed["status"] == "FAILED"
    resource = f"arn:aws:s3:::{deployment.outputs.bucket}/{key}"
    assert (f"User: arn:aws:sts::{local_target.ACCOUNT_ID}:assumed-role/{role}/"
            f"{function_name(prefix, 'serializeImageData')} is not authorized to perform: s3:GetObject on resource: "
            f'\\"{resource}\\" because no identity-based policy allows the s3:GetObject action') in failed["cause"], \
        failed["cause"]
    listing = fetch(localstack.url)
    assert any(d["action"] == "s3:GetObject" and d["role"] == role for d in listing["denials"])

    monkeypatch.setattr(iam, "lambda_policy", full_policy)
    deploy(localstack, tmp_path, prefix)
    # Every role LocalStack's IAM holds now carries exactly the document the plan (AWS's too) puts.
    planned = {resource.role: resource.policy for resource in planner.plan(config(localstack, tmp_path, prefix).target())
               if resource.kind == "role"}
    assert len(planned) == len(planner.ROLE_PURPOSES)
    for name, policy in planned.items():
        assert session.client("iam").get_role_policy(RoleName=name, PolicyName=iam.POLICY_NAME)["PolicyDocument"] == policy
    sfn = session.client("stepfunctions")
    again = sfn.start_execution(stateMachineArn=deployment.outputs.state_machine_arn,
                                input=json.dumps({"s3_bucket": deployment.outputs.bucket, "s3_key": key}))["executionArn"]
    try:
        # The image is read now: serializeImageData's task succeeds (classifyImage, next, has no endpoint here).
        poll(lambda: any(event["type"] == "TaskSucceeded"
                         for event in sfn.get_execution_history(executionArn=again)["events"]) or None,
             timeout=60, what="serializeImageData's task to succeed")
    finally:
        sfn.stop_execution(executionArn=again)
