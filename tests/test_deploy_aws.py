"""`scones deploy --target aws` / `scones destroy` offline against moto: full deploy, re-run, resume, destroy, refusals."""
from __future__ import annotations

import json
import os
import random
import string
import sys
import threading

import boto3
import botocore.session
import pytest
from click.testing import CliRunner
from moto import mock_aws
from moto.core.model import ServiceModel

from scones.deploy import aws, endpoint_guard, resources
from scones.deploy import record as records
from scones.deploy.aws import DeployOptions, Refusal

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


def realistic_key() -> str:
    return "AKIA" + "".join(random.choices(string.ascii_uppercase + "234567", k=16))


def realistic_session(region: str | None = REGION) -> boto3.Session:
    secret = "".join(random.choices(string.ascii_letters + string.digits, k=40))
    return boto3.Session(aws_access_key_id=realistic_key(), aws_secret_access_key=secret, region_name=region)


@pytest.fixture
def staged(tmp_path):
    root = tmp_path / "data"
    for part in ("train", "test"):
        for label in ("bicycle", "motorcycle"):
            folder = root / part / label
            folder.mkdir(parents=True)
            for index in range(2):
                (folder / f"{label}_{index}.png").write_bytes(f"{part}-{label}-{index}".encode())
        (root / f"{part}.lst").write_text("0\t0\tbicycle_0.png\n")
    return root


@pytest.fixture
def moto_aws(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    with mock_aws():
        yield


@pytest.fixture
def options(tmp_path, staged):
    return DeployOptions(region=REGION, prefix="sct", data_dir=staged, state_dir=tmp_path / "state")


@pytest.fixture
def session(moto_aws):
    return realistic_session()


def training_job(record) -> dict:
    return resources.entry_with_id(record, "training-job")["job"]


def models(record) -> list[dict]:
    return resources.entries(record, "model")


def role_arn(record, purpose: str) -> str:
    return resources.role_arn(record, purpose)


def run_deploy(options, session, messages=None):
    return aws.deploy(options, session=session, progress=(messages.append if messages is not None else None), sleep=lambda _: None)


def inventory(session) -> dict:
    """Everything of ours that exists, by kind (names only), to compare before/after."""
    sagemaker = session.client("sagemaker")
    iam = session.client("iam")
    return {
        "functions": sorted(f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]),
        "state_machines": sorted(m["name"] for m in session.client("stepfunctions").list_state_machines()["stateMachines"]),
        "endpoints": sorted(e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]),
        "endpoint_configs": sorted(c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]),
        "models": sorted(m["ModelName"] for m in sagemaker.list_models()["Models"]),
        "training_jobs": sorted(j["TrainingJobName"] for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "buckets": sorted(b["Name"] for b in session.client("s3").list_buckets()["Buckets"]),
    }


def statements(session, role_name: str) -> dict:
    document = session.client("iam").get_role_policy(RoleName=role_name, PolicyName="scones-least-privilege")["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_full_deploy_configures_every_resource_then_destroy_removes_them(options, session):
    messages: list[str] = []
    record = run_deploy(options, session, messages)
    bucket = f"sct-data-{REGION}-{ACCOUNT}"
    outputs = record["outputs"]
    assert outputs["region"] == REGION and outputs["bucket"] == bucket
    assert outputs["endpoint_name"] == "sct-classifier"
    assert outputs["capture_s3_uri"] == f"s3://{bucket}/data_capture"
    assert set(outputs["function_arns"]) == {"serializeImageData", "classifyImage", "filterInferences"}
    assert record["steps_done"] == ["bucket", "roles", "model", "endpoint", "workflow"]
    assert records.read_record(records.aws_record_path(options.state_dir)) == record

    # 1. bucket and data
    s3 = session.client("s3")
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"train/bicycle/bicycle_0.png", "test/motorcycle/motorcycle_1.png", "train.lst", "test.lst"} <= keys
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True

    # 3. training job as the SDK's PyTorch estimator describes it
    sagemaker = session.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=training_job(record)["name"])
    hyper = job["HyperParameters"]
    assert json.loads(hyper["sagemaker_program"]) == "train.py"
    source = json.loads(hyper["sagemaker_submit_directory"])
    assert source.startswith(f"s3://{bucket}/source/") and source.endswith("/sourcedir.tar.gz")
    assert job["AlgorithmSpecification"]["TrainingImage"] == f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]} == {
        "train": f"s3://{bucket}/train/", "test": f"s3://{bucket}/test/"}
    assert job["RoleArn"] == role_arn(record, "sagemaker")

    # 4. model + endpoint config with data capture + endpoint
    endpoint = sagemaker.describe_endpoint(EndpointName="sct-classifier")
    assert endpoint["EndpointStatus"] == "InService"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 100
    assert capture["DestinationS3Uri"] == f"s3://{bucket}/data_capture"
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    variant = config["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "pytorch-inference" in model["PrimaryContainer"]["Image"]

    # 5. Lambdas point at the endpoint; the state machine names the three ARNs
    lambda_client = session.client("lambda")
    classify = lambda_client.get_function_configuration(FunctionName="sct-classifyImage")
    assert classify["Environment"]["Variables"]["ENDPOINT_NAME"] == "sct-classifier"
    assert classify["Role"] == role_arn(record, "lambda")
    assert lambda_client.get_function_configuration(FunctionName="sct-filterInferences")["Environment"]["Variables"]["THRESHOLD"] == "0.93"
    machine = session.client("stepfunctions").describe_state_machine(stateMachineArn=outputs["state_machine_arn"])
    assert machine["roleArn"] == role_arn(record, "states")
    definition = machine["definition"]
    for arn in outputs["function_arns"].values():
        assert arn in definition

    # 2. role policies scoped to this deploy's resources
    states = statements(session, "sct-states-role")
    invoked = set(states["InvokeWorkflowFunctions"]["Resource"])
    assert set(outputs["function_arns"].values()) <= invoked
    assert all(any(r.startswith(arn) for arn in outputs["function_arns"].values()) for r in invoked)
    lambda_statements = statements(session, "sct-lambda-role")
    assert lambda_statements["InvokeEndpoint"]["Resource"] == endpoint["EndpointArn"]
    assert lambda_statements["ReadImages"]["Resource"] == f"arn:aws:s3:::{bucket}/*"
    assert all("/aws/lambda/sct-" in r for r in lambda_statements["OwnLogs"]["Resource"])
    sagemaker_statements = statements(session, "sct-sagemaker-role")
    assert sagemaker_statements["BucketObjects"]["Resource"] == f"arn:aws:s3:::{bucket}/*"
    assert "*" not in json.dumps(sagemaker_statements["FrameworkImages"]["Resource"])
    trust = session.client("iam").get_role(RoleName="sct-lambda-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"]["Service"] == "lambda.amazonaws.com"

    # destroy: everything listed goes, the bucket stays without --delete-bucket
    session.client("logs").create_log_group(logGroupName="/aws/lambda/sct-classifyImage")
    deleted = aws.destroy(state_dir=options.state_dir, session=session)
    assert len(deleted) >= 3 + 1 + 1 + 1 + 1 + 3
    left = inventory(session)
    assert left["functions"] == [] and left["state_machines"] == [] and left["endpoints"] == []
    assert left["endpoint_configs"] == [] and left["models"] == [] and left["roles"] == []
    assert left["buckets"] == [bucket]
    assert session.client("logs").describe_log_groups()["logGroups"] == []
    remaining = records.read_record(records.aws_record_path(options.state_dir))
    assert remaining["outputs"] == {} and [(e["kind"], e["name"]) for e in remaining["resources"]] == [("bucket", bucket)]

    aws.destroy(state_dir=options.state_dir, session=session, delete_bucket=True)
    assert inventory(session)["buckets"] == []
    assert not records.aws_record_path(options.state_dir).exists()


def test_destroy_leaves_resources_it_did_not_create(options, session):
    session.client("iam").create_role(RoleName="someone-elses-role", AssumeRolePolicyDocument="{}")
    session.client("s3").create_bucket(Bucket="someone-elses-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    run_deploy(options, session)
    aws.destroy(state_dir=options.state_dir, session=session, delete_bucket=True)
    left = inventory(session)
    assert left["roles"] == ["someone-elses-role"] and left["buckets"] == ["someone-elses-bucket"]


def test_redeploy_changes_nothing_and_duplicates_nothing(options, session):
    first = run_deploy(options, session)
    before = inventory(session)
    messages: list[str] = []
    second = run_deploy(options, session, messages)
    assert inventory(session) == before
    assert second["outputs"] == first["outputs"]
    assert training_job(second) == training_job(first)
    assert len(before["training_jobs"]) == 1 and len(before["models"]) == 1 and len(before["endpoint_configs"]) == 1
    assert "dataset: 0 uploaded, 10 already there" in messages
    assert any("Completed earlier, reusing" in m for m in messages)
    assert all(not m.startswith(("created", "started")) for m in messages), messages
    role_messages = [m for m in messages if m.startswith("IAM role")]
    assert {f"IAM role sct-{k}-role: unchanged" for k in ("sagemaker", "lambda", "states")} <= set(role_messages)
    assert all(m.endswith(": unchanged") for m in role_messages), role_messages
    assert "endpoint sct-classifier: unchanged, InService" in messages
    assert all(m.endswith("unchanged") for m in messages if m.startswith(("Lambda function", "state machine")))


def test_interrupted_after_training_resumes_without_second_job(options, session, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("operator pressed ^C while the endpoint was being created")

    monkeypatch.setattr(resources.Endpoint, "ensure", crash)
    with pytest.raises(KeyboardInterrupt):
        run_deploy(options, session)
    interrupted = records.read_record(records.aws_record_path(options.state_dir))
    assert interrupted["steps_done"] == ["bucket", "roles", "model"]
    job = training_job(interrupted)
    assert job["status"] == "Completed"

    monkeypatch.undo()
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    record = run_deploy(options, session)
    assert training_job(record)["name"] == job["name"]
    assert inventory(session)["training_jobs"] == [job["name"]]
    assert record["steps_done"] == ["bucket", "roles", "model", "endpoint", "workflow"]


def test_interrupted_while_training_waits_for_the_recorded_job(options, session, monkeypatch):
    from scones.deploy import sagemaker as sm

    real_wait = sm.wait_training_job

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sm, "wait_training_job", crash)
    with pytest.raises(KeyboardInterrupt):
        run_deploy(options, session)
    job = training_job(records.read_record(records.aws_record_path(options.state_dir)))
    assert job["status"] == "InProgress"

    waited = []
    monkeypatch.setattr(sm, "wait_training_job", lambda client, name, **kw: waited.append(name) or real_wait(client, name, **kw))
    monkeypatch.setattr(sm, "start_training_job", lambda *a, **k: pytest.fail("a second training job was started"))
    record = run_deploy(options, session)
    assert waited == [job["name"]]
    assert training_job(record)["status"] == "Completed"


def test_model_data_skips_training(options, session):
    options.model_data = "s3://elsewhere/model.tar.gz"
    record = run_deploy(options, session)
    assert inventory(session)["training_jobs"] == []
    model = session.client("sagemaker").describe_model(ModelName=models(record)[0]["name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://elsewhere/model.tar.gz"


def test_changed_model_data_creates_new_model_and_destroy_removes_both(options, session):
    options.model_data = "s3://elsewhere/a/model.tar.gz"
    run_deploy(options, session)
    options.model_data = "s3://elsewhere/b/model.tar.gz"
    # moto does not implement UpdateEndpoint; the switch itself is covered with Stubber in test_deploy_waiters.
    session.client("sagemaker").delete_endpoint(EndpointName="sct-classifier")
    record = run_deploy(options, session)
    assert len(models(record)) == 2 and len(resources.entries(record, "endpoint-config")) == 2
    aws.destroy(state_dir=options.state_dir, session=session)
    assert inventory(session)["models"] == [] and inventory(session)["endpoint_configs"] == []


def test_dry_run_plans_and_creates_nothing(options, session):
    lines = aws.plan(options, session=session)
    text = "\n".join(lines)
    assert f"account {ACCOUNT}, region {REGION}" in text
    assert f"bucket s3://sct-data-{REGION}-{ACCOUNT}: create" in text and "upload 10 objects" in text
    assert "training job (pytorch)" in text and "sct-classifier" in text and "sct-workflow" in text
    assert inventory(session) == {key: [] for key in inventory(session)}
    assert not records.aws_record_path(options.state_dir).exists()


# --- refusals ---------------------------------------------------------------------------------

def test_refuses_without_credentials(options, moto_aws, monkeypatch):
    session = boto3.Session(region_name=REGION)
    monkeypatch.setattr(session, "get_credentials", lambda: None)
    with pytest.raises(Refusal, match="no AWS credentials"):
        aws.deploy(options, session=session)


@pytest.mark.parametrize("access_key, secret", [
    ("test", "test"),
    ("testing", "testing"),
    ("FOOBARKEY", "FOOBARSECRET"),
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AKIAABCDEFGHIJKLMNOP", "test"),
])
def test_refuses_local_fake_credentials(options, moto_aws, access_key, secret):
    session = boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret, region_name=REGION)
    with pytest.raises(Refusal, match="fake credentials"):
        aws.deploy(options, session=session)


def test_refuses_endpoint_overrides(options, session, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    with pytest.raises(Refusal, match=r"local endpoint \(sts -> http://127.0.0.1:4566.*AWS_ENDPOINT_URL"):
        aws.deploy(options, session=session)


def test_refuses_a_service_endpoint_override_to_localstack(options, session, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "https://localhost.localstack.cloud:4566")
    with pytest.raises(Refusal, match=r"sagemaker -> https://localhost.localstack.cloud:4566") as refused:
        aws.deploy(options, session=session)
    assert "sts ->" not in str(refused.value)   # only the service that really goes there


def aws_config(tmp_path, monkeypatch, text: str) -> None:
    """An AWS config file (and no credentials file) for botocore to read, as `aws configure` writes it."""
    path = tmp_path / "aws-config"
    path.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # moto's fake AWS_ACCESS_KEY_ID stays set: a profile named explicitly takes its keys from the file.
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)


def profile_with_real_looking_key(name: str, extra: str = "") -> str:
    return (f"[profile {name}]\nregion = {REGION}\naws_access_key_id = {realistic_key()}\n"
            f"aws_secret_access_key = {'s' * 40}\n{extra}")


def test_refuses_a_profile_whose_endpoint_url_is_local(options, tmp_path, moto_aws, monkeypatch):
    """Issue 12: a profile with `endpoint_url = http://127.0.0.1:4566` and an AKIA-shaped fake key planned a
    deploy for account 000000000000. botocore sends every client of that profile there (the "configured
    endpoints" of the AWS SDKs: https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html)."""
    from scones.harness.cli import main

    aws_config(tmp_path, monkeypatch, profile_with_real_looking_key("emulator", "endpoint_url = http://127.0.0.1:4566\n"))
    options.profile = "emulator"
    with pytest.raises(Refusal, match=r"sts -> http://127.0.0.1:4566.*profile 'emulator'"):
        aws.plan(options)
    with pytest.raises(Refusal, match="local endpoint"):
        aws.deploy(options)
    assert records.read_record(records.aws_record_path(options.state_dir)) is None

    result = CliRunner().invoke(main, ["deploy", "--target", "aws", "--profile", "emulator", "--dry-run",
                                       "--data", str(options.data_dir), "--state-dir", str(options.state_dir)])
    assert result.exit_code == 1 and "refused: this session's AWS calls would go to a local endpoint" in result.output
    assert "Traceback" not in result.output


def test_refuses_a_local_endpoint_in_the_profiles_services_section(options, tmp_path, moto_aws, monkeypatch):
    aws_config(tmp_path, monkeypatch, profile_with_real_looking_key("team", "services = emulated\n")
               + "[services emulated]\ns3 =\n  endpoint_url = http://localhost:4566\n")
    options.profile = "team"
    with pytest.raises(Refusal, match=r"\(s3 -> http://localhost:4566\)"):
        aws.plan(options)


def test_configured_endpoints_that_botocore_is_told_to_ignore_are_not_refused(options, tmp_path, moto_aws, monkeypatch):
    """AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true makes botocore ignore them: the guard judges what botocore does."""
    aws_config(tmp_path, monkeypatch, profile_with_real_looking_key("emulator", "endpoint_url = http://127.0.0.1:4566\n"))
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    options.profile = "emulator"
    assert aws.plan(options)[0].startswith(f"account {ACCOUNT}, region {REGION}")


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:4566", True), ("http://localhost:4566", True), ("https://localhost.localstack.cloud:4566", True),
    ("http://[::1]:4566", True), ("http://0.0.0.0:4566", True), ("http://10.0.0.7:4566", True),
    ("http://host.docker.internal:4566", True), ("http://s3.localhost:4566", True), ("http://localstack:4566", True),
    ("https://sts.eu-west-1.amazonaws.com", False), ("https://s3.cn-north-1.amazonaws.com.cn", False),
    ("https://vpce-0a1b-xyz.sts.eu-west-1.vpce.amazonaws.com", False), ("https://sagemaker.us-east-1.api.aws", False),
])
def test_is_local_endpoint(url, local):
    assert endpoint_guard.is_local_endpoint(url) is local


def test_dry_run_with_aws_unreachable_plans_with_the_account_unknown(options, monkeypatch):
    """No moto here: botocore really fails to resolve the host (.invalid never resolves, RFC 2606)."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://aws.invalid")
    lines = aws.plan(options, session=realistic_session())
    assert lines[0].startswith("account unknown (AWS unreachable: Could not connect to the endpoint URL")
    assert f"s3://sct-data-{REGION}-<account>: create or reuse (not checked: AWS unreachable)" in lines[2]
    assert any("Lambda function sct-serializeImageData" in line for line in lines)


def test_refuses_without_region(options, moto_aws, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    options.region = None
    with pytest.raises(Refusal, match="no AWS region"):
        aws.deploy(options, session=realistic_session(region=None))


def test_refuses_bucket_owned_by_another_account(options, session, monkeypatch):
    from botocore.stub import Stubber

    s3 = session.client("s3", region_name=REGION)
    stubber = Stubber(s3)
    stubber.add_client_error("head_bucket", service_error_code="403", service_message="Forbidden", http_status_code=403,
                             expected_params={"Bucket": "taken", "ExpectedBucketOwner": ACCOUNT})
    real_client = session.client
    monkeypatch.setattr(session, "client", lambda name, **kw: s3 if name == "s3" else real_client(name, **kw))
    options.bucket = "taken"
    with stubber, pytest.raises(Refusal, match="bucket taken belongs to another account"):
        aws.deploy(options, session=session)
    assert not records.aws_record_path(options.state_dir).exists()


def test_refuses_bucket_name_taken_globally(options, session, monkeypatch):
    from botocore.stub import Stubber

    s3 = session.client("s3", region_name=REGION)
    stubber = Stubber(s3)
    stubber.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    stubber.add_client_error("create_bucket", service_error_code="BucketAlreadyExists", http_status_code=409)
    with stubber, pytest.raises(Refusal, match="belongs to another account"):
        aws.ensure_bucket(s3, "taken", REGION, ACCOUNT)


def test_refuses_a_record_of_another_deploy(options, session):
    run_deploy(options, session)
    options.prefix = "other"
    with pytest.raises(Refusal, match="records a deploy with prefix 'sct'"):
        run_deploy(options, session)


def test_destroy_refuses_credentials_of_another_account(options, session, monkeypatch):
    run_deploy(options, session)
    path = records.aws_record_path(options.state_dir)
    record = records.read_record(path)
    record["account_id"] = "999999999999"
    records.save_record(path, record)
    with pytest.raises(Refusal, match="records account 999999999999"):
        aws.destroy(state_dir=options.state_dir, session=session)


def test_destroy_keeps_a_bucket_that_existed_before(options, session):
    session.client("s3").create_bucket(Bucket="pre-existing", CreateBucketConfiguration={"LocationConstraint": REGION})
    options.bucket = "pre-existing"
    run_deploy(options, session)
    with pytest.raises(Refusal, match="existed before the deploy"):
        aws.destroy(state_dir=options.state_dir, session=session, delete_bucket=True)
    assert "pre-existing" in inventory(session)["buckets"]
    assert inventory(session)["functions"] == []


def test_record_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "aws" / "deploy-record.json"
    record = records.new_record(region=REGION, account_id=ACCOUNT, prefix="x", bucket="b", endpoint_name="e")
    records.save_record(path, record)

    def broken_dump(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(records.json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        records.save_record(path, {**record, "prefix": "y"})
    monkeypatch.undo()
    assert records.read_record(path)["prefix"] == "x"
    assert [p.name for p in path.parent.iterdir()] == ["deploy-record.json"]


def test_cli_refuses_fake_credentials_and_dry_run_prints_plan(tmp_path, staged, moto_aws, monkeypatch):
    from scones.harness.cli import main

    monkeypatch.setenv("SCONES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    result = CliRunner().invoke(main, ["deploy", "--target", "aws", "--region", REGION, "--data", str(staged)])
    assert result.exit_code == 1
    assert "refused" in result.output and "fake credentials" in result.output

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", realistic_key())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    result = CliRunner().invoke(main, ["deploy", "--region", REGION, "--data", str(staged), "--name", "cli", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "plan (dry run, nothing created)" in result.output and "cli-workflow" in result.output
    # --prefix, as `scones up` spells it; --name above is its older spelling, still accepted.
    result = CliRunner().invoke(main, ["deploy", "--region", REGION, "--data", str(staged), "--prefix", "cli", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cli-workflow" in result.output


def test_load_target_reads_the_aws_record(options, session):
    from scones.harness.targets import load_target

    record = run_deploy(options, session)
    target = load_target("aws", state_dir=options.state_dir)
    assert target.state_machine_arn == record["outputs"]["state_machine_arn"]
    assert target.function_arns == record["outputs"]["function_arns"]
    assert target.endpoint_name == "sct-classifier" and target.region == REGION
    assert target.capture_s3_uri == record["outputs"]["capture_s3_uri"]


def test_builtin_trainer_runs_the_original_algorithm_with_lst_channels(options, session):
    options.trainer = "builtin"
    record = run_deploy(options, session)
    bucket = record["outputs"]["bucket"]
    sagemaker = session.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=training_job(record)["name"])
    assert job["AlgorithmSpecification"]["TrainingImage"] == "685385470294.dkr.ecr.eu-west-1.amazonaws.com/image-classification:1"
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    assert set(channels) == {"train", "validation", "train_lst", "validation_lst"}
    assert all(c["ContentType"] == "application/x-image" for c in channels.values())
    hyper = job["HyperParameters"]
    assert hyper["num_classes"] == "2" and hyper["num_training_samples"] == "4" and hyper["image_shape"] == "3,32,32"
    lst = session.client("s3").get_object(Bucket=bucket, Key="builtin/train_lst/train.lst")["Body"].read().decode()
    assert lst.splitlines() == ["0\t0\tbicycle/bicycle_0.png", "1\t0\tbicycle/bicycle_1.png",
                                "2\t1\tmotorcycle/motorcycle_0.png", "3\t1\tmotorcycle/motorcycle_1.png"]
    model = sagemaker.describe_model(ModelName=models(record)[0]["name"])
    assert model["PrimaryContainer"]["Image"].endswith("/image-classification:1")
    assert "Environment" not in model["PrimaryContainer"] or not model["PrimaryContainer"]["Environment"]
    images = statements(session, "sct-sagemaker-role")["FrameworkImages"]["Resource"]
    assert images == ["arn:aws:ecr:eu-west-1:685385470294:repository/image-classification"]

    options.trainer = "pytorch"
    sagemaker.delete_endpoint(EndpointName="sct-classifier")  # moto lacks UpdateEndpoint (Stubber covers it)
    again = run_deploy(options, session)
    assert training_job(again)["trainer"] == "pytorch"
    assert len(inventory(session)["training_jobs"]) == 2


def test_cli_deploy_then_destroy(tmp_path, staged, moto_aws, monkeypatch):
    from scones.harness.cli import main

    monkeypatch.setenv("SCONES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", realistic_key())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y" * 40)
    runner = CliRunner()
    result = runner.invoke(main, ["deploy", "--target", "aws", "--region", REGION, "--data", str(staged), "--prefix", "cli",
                                  "--hyperparameter", "epochs=5"])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["endpoint_name"] == "cli-classifier" and outputs["bucket"] == f"cli-data-{REGION}-{ACCOUNT}"
    assert "step 5/5" in result.stderr
    session = realistic_session()
    job = session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"][0]["TrainingJobName"]
    assert session.client("sagemaker").describe_training_job(TrainingJobName=job)["HyperParameters"]["epochs"] == "5"

    result = runner.invoke(main, ["destroy", "--yes", "--delete-bucket"])
    assert result.exit_code == 0, result.output
    left = inventory(session)
    assert left.pop("training_jobs") == [job]  # SageMaker keeps training jobs; there is no DeleteTrainingJob
    assert all(not values for values in left.values()), left
    result = runner.invoke(main, ["destroy", "--yes"])
    assert result.exit_code == 1 and "nothing to destroy" in result.output


@pytest.mark.parametrize("interrupted", ["create_role", "create_function", "create_state_machine", "create_endpoint_config"])
def test_destroy_after_an_interruption_mid_step_removes_what_was_made(options, session, monkeypatch, interrupted):
    """Names are recorded before creation, so a deploy killed halfway through a step leaves nothing behind."""
    import botocore.client

    real_call = botocore.client.BaseClient._make_api_call
    calls = {"n": 0}

    def flaky(self, operation, params):
        if botocore.client.xform_name(operation) == interrupted:
            calls["n"] += 1
            if calls["n"] == 2:  # the second of its kind: the first one exists, the rest do not
                raise KeyboardInterrupt
        return real_call(self, operation, params)

    if interrupted in ("create_endpoint_config", "create_state_machine"):
        calls["n"] = 1  # there is only one of these: interrupt the first
    if interrupted == "create_endpoint_config":
        options.model_data = "s3://elsewhere/model.tar.gz"
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_deploy(options, session)
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", real_call)
    aws.destroy(state_dir=options.state_dir, session=session, delete_bucket=True)
    left = inventory(session)
    left.pop("training_jobs")
    assert all(not values for values in left.values()), left


def test_refuses_to_adopt_a_role_it_did_not_create(options, session):
    session.client("iam").create_role(RoleName="sct-lambda-role", AssumeRolePolicyDocument="{}")
    with pytest.raises(aws.DeployError, match="IAM role sct-lambda-role exists but was not created by this deploy"):
        run_deploy(options, session)
    aws.destroy(state_dir=options.state_dir, session=session, delete_bucket=True)
    assert "sct-lambda-role" in inventory(session)["roles"]


def operations_handed_out_without_http_trait(model, threads: int = 8) -> list[str]:
    """Every thread asks `model` for every operation at once; the operations some thread got botocore's for."""
    start = threading.Barrier(threads)
    missing: list[str] = []

    def ask_for_every_operation():
        start.wait()
        missing.extend(name for name in model.operation_names
                       if not hasattr(model.operation_model(name), "http_trait"))

    workers = [threading.Thread(target=ask_for_every_operation) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(set(missing))


def test_moto_answers_the_deploys_concurrent_first_calls_with_its_own_operation_models():
    """The deploy's steps run on threads, so moto is first asked for a service's operations from several threads
    at once (moto/core/model.py: ServiceModel.operation_model; conftest serialises it). With the GIL switching
    as often as it can, every thread must get moto's OperationModel, the one with `http_trait`: unserialised,
    most of these rounds hand some thread botocore's."""
    description = botocore.session.get_session().get_service_data("lambda")
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            missing = operations_handed_out_without_http_trait(ServiceModel(description, "lambda"))
            assert not missing, f"botocore's OperationModel handed out for {missing}"
    finally:
        sys.setswitchinterval(switch_interval)
