"""deploy/workflow.py against moto: create, re-run changes nothing, updates, dataset upload, destroy."""
from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from scones.deploy.packaging import FunctionSpec, code_sha256
from scones.deploy.workflow import (
    WorkflowResources,
    deploy_workflow,
    destroy_workflow,
    upload_dataset,
)

REGION = "us-east-1"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


FAKE_FUNCTIONS = [
    FunctionSpec("serializeImageData", "serialize_image_data", (), timeout=30, memory=256, description="t"),
    FunctionSpec("classifyImage", "classify_image", ("ENDPOINT_NAME",), timeout=30, memory=256, description="t"),
    FunctionSpec("filterInferences", "filter_inferences", ("THRESHOLD",), timeout=30, memory=256, description="t"),
]


def fake_zip(spec, version: str = "1") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(spec.handler.split(".")[0] + ".py", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(info, f"def lambda_handler(event, context):\n    return {version!r}\n")
    return buffer.getvalue()


def fake_render(arns: dict[str, str]) -> str:
    order = ["serializeImageData", "classifyImage", "filterInferences"]
    states = {
        name: {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
               "Parameters": {"FunctionName": arns[name], "Payload.$": "$"}, "OutputPath": "$.Payload",
               **({"Next": order[i + 1]} if i < 2 else {"End": True})}
        for i, name in enumerate(order)
    }
    return json.dumps({"StartAt": order[0], "States": states})


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        iam = session.client("iam")
        roles = {
            kind: iam.create_role(RoleName=f"t-{kind}", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
            for kind in ("lambda", "states")
        }
        yield session, roles


def deploy(session, roles, **overrides):
    arguments = dict(
        prefix="t", endpoint_name="t-endpoint", threshold=0.93,
        lambda_role_arn=roles["lambda"], states_role_arn=roles["states"],
        extra_lambda_env=None, functions=FAKE_FUNCTIONS, build_zip=fake_zip,
        render_definition=fake_render, sleep=lambda _: None,
    )
    arguments.update(overrides)
    return deploy_workflow(session, **arguments)


def test_deploy_creates_functions_and_state_machine(aws):
    session, roles = aws
    messages: list[str] = []
    resources = deploy(session, roles, extra_lambda_env={"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:8080"}, progress=messages.append)

    assert set(resources.function_arns) == {"serializeImageData", "classifyImage", "filterInferences"}
    lambda_client = session.client("lambda")
    classify = lambda_client.get_function_configuration(FunctionName="t-classifyImage")
    assert classify["Environment"]["Variables"] == {"ENDPOINT_NAME": "t-endpoint", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:8080"}
    assert classify["Role"] == roles["lambda"]
    assert classify["Handler"] == "classify_image.lambda_handler"
    threshold = lambda_client.get_function_configuration(FunctionName="t-filterInferences")
    assert threshold["Environment"]["Variables"]["THRESHOLD"] == "0.93"

    machine = session.client("stepfunctions").describe_state_machine(stateMachineArn=resources.state_machine_arn)
    assert machine["name"] == "t-workflow"
    assert machine["roleArn"] == roles["states"]
    named = {state["Parameters"]["FunctionName"] for state in json.loads(machine["definition"])["States"].values()}
    assert named == set(resources.function_arns.values())
    assert any("created" in message for message in messages)


def test_functions_are_deployed_side_by_side(aws):
    import threading

    session, roles = aws
    # Each function's deploy waits here until all three have started: one after the other, the
    # first would wait alone and break the barrier.
    all_started = threading.Barrier(len(FAKE_FUNCTIONS), timeout=20)

    def zip_once_all_started(spec):
        all_started.wait()
        return fake_zip(spec)

    resources = deploy(session, roles, build_zip=zip_once_all_started)
    assert list(resources.function_arns) == [spec.name for spec in FAKE_FUNCTIONS]  # order kept


def test_redeploy_changes_nothing_and_duplicates_nothing(aws):
    session, roles = aws
    first = deploy(session, roles)
    messages: list[str] = []
    second = deploy(session, roles, progress=messages.append)

    assert second == first
    assert all(message.endswith("unchanged") for message in messages), messages
    assert len(session.client("lambda").list_functions()["Functions"]) == 3
    assert len(session.client("stepfunctions").list_state_machines()["stateMachines"]) == 1


def test_changed_code_environment_and_definition_are_updated(aws):
    session, roles = aws
    first = deploy(session, roles)
    changed_zip = lambda spec: fake_zip(spec, version="2")  # noqa: E731
    messages: list[str] = []
    second = deploy(session, roles, build_zip=changed_zip, threshold=0.5, progress=messages.append)

    assert second.function_arns == first.function_arns
    lambda_client = session.client("lambda")
    spec = FAKE_FUNCTIONS[2]
    config = lambda_client.get_function_configuration(FunctionName="t-filterInferences")
    assert config["CodeSha256"] == code_sha256(changed_zip(spec))
    assert config["Environment"]["Variables"]["THRESHOLD"] == "0.5"
    assert "Lambda function t-filterInferences: updated code and configuration" in messages
    assert "Lambda function t-serializeImageData: updated code" in messages


def test_state_machine_role_change_is_updated(aws):
    session, roles = aws
    deploy(session, roles)
    other = session.client("iam").create_role(RoleName="t-states-2", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    resources = deploy(session, roles, states_role_arn=other)
    assert session.client("stepfunctions").describe_state_machine(stateMachineArn=resources.state_machine_arn)["roleArn"] == other


def test_destroy_removes_what_was_deployed_and_tolerates_missing(aws):
    session, roles = aws
    resources = deploy(session, roles)
    destroy_workflow(session, resources)
    assert session.client("lambda").list_functions()["Functions"] == []
    assert session.client("stepfunctions").list_state_machines()["stateMachines"] == []
    destroy_workflow(session, resources)  # already gone: no error
    destroy_workflow(session, WorkflowResources())


@pytest.fixture
def staged(tmp_path):
    for part in ("train", "test"):
        for label in ("bicycle", "motorcycle"):
            folder = tmp_path / part / label
            folder.mkdir(parents=True)
            for index in range(3):
                (folder / f"{label}_{index}.png").write_bytes(f"{part}{label}{index}".encode())
        (tmp_path / f"{part}.lst").write_text("1\t0\tbicycle_0.png\n")
    return tmp_path


def test_upload_dataset_skips_unchanged_objects(aws, staged):
    session, _ = aws
    s3 = session.client("s3")
    s3.create_bucket(Bucket="t-data")
    first = upload_dataset(session, "t-data", staged)
    assert (first.uploaded, first.skipped) == (14, 0)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="t-data")["Contents"]}
    assert "train/bicycle/bicycle_0.png" in keys and "test.lst" in keys and len(keys) == 14
    assert s3.head_object(Bucket="t-data", Key="test/motorcycle/motorcycle_2.png")["ContentType"] == "image/png"

    (staged / "train" / "bicycle" / "bicycle_1.png").write_bytes(b"changed")
    messages: list[str] = []
    second = upload_dataset(session, "t-data", staged, progress=messages.append)
    assert (second.uploaded, second.skipped) == (1, 13)
    assert s3.get_object(Bucket="t-data", Key="train/bicycle/bicycle_1.png")["Body"].read() == b"changed"
    assert messages and "13 of 14" in messages[0]


def test_upload_dataset_can_leave_train_out(aws, staged):
    session, _ = aws
    s3 = session.client("s3")
    s3.create_bucket(Bucket="t-data")
    summary = upload_dataset(session, "t-data", staged, parts=("test",))
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="t-data")["Contents"]}
    assert (summary.uploaded, summary.skipped) == (8, 0)
    assert keys == {f"test/{label}/{label}_{i}.png" for label in ("bicycle", "motorcycle") for i in range(3)} | {
        "train.lst", "test.lst"}
    # The whole dataset afterwards uploads only what is missing: train/.
    everything = upload_dataset(session, "t-data", staged)
    assert (everything.uploaded, everything.skipped) == (6, 8)


def test_upload_dataset_refuses_unknown_parts(aws, staged):
    session, _ = aws
    with pytest.raises(ValueError, match="dataset parts must be some of"):
        upload_dataset(session, "t-data", staged, parts=("validation",))


def test_upload_dataset_names_a_folder_that_is_not_staged(aws, tmp_path):
    session, _ = aws
    with pytest.raises(Exception, match="not a staged data directory"):
        upload_dataset(session, "t-data", tmp_path)


def test_real_packaging_and_template_deploy(aws):
    packaging = pytest.importorskip("scones.deploy.packaging")
    pytest.importorskip("scones.state_machine.render")
    session, roles = aws
    resources = deploy(session, roles, functions=None, build_zip=None, render_definition=None)
    assert set(resources.function_arns) == {spec.name for spec in packaging.FUNCTIONS}
    again = deploy(session, roles, functions=None, build_zip=None, render_definition=None)
    assert again == resources
