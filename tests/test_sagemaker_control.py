"""The local SageMaker control plane (harness/sagemaker) through a real LocalStack, with plain boto3.

Every request has the shape of AWS's API reference and every process is real: endpoints are
endpoint servers serving a model.tar.gz from LocalStack's S3, training jobs run train.py. Sources:

- botocore/data/sagemaker/*/service-2.json: the operations, their shapes and constraints (EndpointName,
  ModelName, TrainingJobName: pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}), the SecondaryStatus enum;
  waiters-2.json: endpoint_in_service, endpoint_deleted, training_job_completed_or_stopped.
- AWS's wording of its errors, as AWS answered them (quoted in public reports):
  "Could not find model data at s3://..." (CreateModel, aws-ia/ecs-blueprints#223);
  'Could not find endpoint configuration "arn:aws:sagemaker:...:endpoint-config/..."'
  (DescribeEndpointConfig, aws/amazon-sagemaker-examples#2339); "1 validation error detected: Value
  'ENTER MODEL NAME' at 'productionVariants.1.member.modelName' failed to satisfy constraint: Member
  must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*" (CreateEndpointConfig,
  aws/amazon-sagemaker-examples#2236); 'Cannot create already existing endpoint "arn:..."'.
- https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html:
  TrainingJobStatus and SecondaryStatus (InProgress: Starting, Downloading, Training, Uploading;
  Stopped: MaxRuntimeExceeded, Stopped; Completed; Failed), SecondaryStatusTransitions;
  API_StopTrainingJob.html: SIGTERM, then the job is Stopped;
  https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-output.html: the
  failure reason carries the script's error; model.tar.gz at <S3OutputPath>/<job>/output/.
- https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html: training logs in group
  /aws/sagemaker/TrainingJobs, stream <job>/algo-1-<epoch seconds>.
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import tarfile
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError, WaiterError

from scones import testing
from scones.deploy import sagemaker as sm
from scones.harness.sagemaker import processes
from scones.testing import build_stub_model
from support import poll, running_localstack

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/scones-sagemaker"
INFERENCE_IMAGE = sm.inference_image(REGION)
TRAINING_IMAGE = sm.training_image(REGION)
FAST_WAIT = {"Delay": 1, "MaxAttempts": 180}


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    home = tmp_path_factory.mktemp("localstack")
    with running_localstack(home, extra_env={processes.PYTHON_ENV: sys.executable}) as instance:
        yield instance
    assert not [entry for entry in processes.recorded(processes.sagemaker_dir(home)) if entry.alive]


def client(localstack, service: str):
    return boto3.client(service, endpoint_url=localstack.url, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def sagemaker(localstack):
    return client(localstack, "sagemaker")


@pytest.fixture(scope="module")
def s3(localstack):
    s3 = client(localstack, "s3")
    s3.create_bucket(Bucket="models")
    return s3


@pytest.fixture(scope="module")
def model_data(s3, tmp_path_factory) -> str:
    archive = build_stub_model(tmp_path_factory.mktemp("stub"))
    s3.upload_file(str(archive), "models", "stub/model.tar.gz")
    return "s3://models/stub/model.tar.gz"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_model(sagemaker, model_data: str, image: str = INFERENCE_IMAGE) -> str:
    name = unique("model")
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": image, "ModelDataUrl": model_data,
                                             "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}})
    return name


def create_config(sagemaker, model: str, capture: str | None = None) -> str:
    name = unique("config")
    extra = {"DataCaptureConfig": {"EnableCapture": True, "InitialSamplingPercentage": 100,
                                   "DestinationS3Uri": capture,
                                   "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                                   "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}} if capture else {}
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}], **extra)
    return name


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def error_of(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response


# --- validation -------------------------------------------------------------------------------------

def test_an_invalid_name_is_a_validation_exception_naming_the_pattern(sagemaker, model_data):
    """ModelName's pattern in botocore's model; the message as AWS's front end words a broken constraint."""
    reply = error_of(sagemaker.create_model, ModelName="bad_name", ExecutionRoleArn=ROLE,
                     PrimaryContainer={"Image": INFERENCE_IMAGE, "ModelDataUrl": model_data})
    assert reply["Error"]["Code"] == "ValidationException"
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert reply["Error"]["Message"].startswith(
        "1 validation error detected: Value 'bad_name' at 'modelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ")


def test_a_variant_naming_an_invalid_model_name_is_reported_at_its_path(sagemaker):
    """aws/amazon-sagemaker-examples#2236: 'productionVariants.1.member.modelName'."""
    reply = error_of(sagemaker.create_endpoint_config, EndpointConfigName=unique("config"), ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "ENTER MODEL NAME", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    assert reply["Error"]["Code"] == "ValidationException"
    assert "at 'productionVariants.1.member.modelName' failed to satisfy constraint" in reply["Error"]["Message"]


def test_a_model_whose_artifact_is_absent_is_refused(sagemaker):
    """CreateModel checks ModelDataUrl: 'Could not find model data at s3://...' (aws-ia/ecs-blueprints#223)."""
    reply = error_of(sagemaker.create_model, ModelName=unique("model"), ExecutionRoleArn=ROLE,
                     PrimaryContainer={"Image": INFERENCE_IMAGE, "ModelDataUrl": "s3://models/absent/model.tar.gz"})
    assert reply["Error"] == {"Code": "ValidationException",
                              "Message": "Could not find model data at s3://models/absent/model.tar.gz."}


def test_a_config_naming_an_unknown_model_is_refused(sagemaker):
    """CreateEndpointConfig validates its variants' models: ValidationException 'Could not find model "<arn>".'"""
    reply = error_of(sagemaker.create_endpoint_config, EndpointConfigName=unique("config"), ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "no-such-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    assert reply["Error"] == {"Code": "ValidationException", "Message":
                              'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/no-such-model".'}


def test_missing_resources_and_duplicates_are_reported_as_aws_reports_them(sagemaker, model_data):
    """DescribeEndpointConfig of an absent name (aws/amazon-sagemaker-examples#2339), a second CreateModel of
    one name, DescribeTrainingJob of an absent job ('Requested resource not found.')."""
    missing = error_of(sagemaker.describe_endpoint_config, EndpointConfigName="Absent-Config")
    assert missing["Error"]["Message"] == ('Could not find endpoint configuration '
                                           '"arn:aws:sagemaker:us-east-1:000000000000:endpoint-config/absent-config".')
    model = create_model(sagemaker, model_data)
    again = error_of(sagemaker.create_model, ModelName=model, ExecutionRoleArn=ROLE,
                     PrimaryContainer={"Image": INFERENCE_IMAGE, "ModelDataUrl": model_data})
    assert again["Error"]["Message"].startswith("Cannot create already existing model")
    job = error_of(sagemaker.describe_training_job, TrainingJobName="no-such-job")
    assert job["Error"]["Message"] == "Requested resource not found."
    assert error_of(sagemaker.describe_endpoint, EndpointName="no-such-endpoint")["Error"]["Code"] == "ValidationException"


def test_models_and_configs_are_described_listed_and_deleted(sagemaker, model_data):
    model = create_model(sagemaker, model_data)
    described = sagemaker.describe_model(ModelName=model)
    assert described["ModelArn"] == f"arn:aws:sagemaker:us-east-1:000000000000:model/{model}"
    assert described["PrimaryContainer"]["ModelDataUrl"] == model_data
    assert model in [m["ModelName"] for m in sagemaker.list_models(NameContains=model)["Models"]]
    config = create_config(sagemaker, model, capture="s3://models/capture")
    assert sagemaker.describe_endpoint_config(EndpointConfigName=config)["DataCaptureConfig"]["DestinationS3Uri"] \
        == "s3://models/capture"
    assert [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs(NameContains=config)["EndpointConfigs"]] \
        == [config]
    sagemaker.delete_endpoint_config(EndpointConfigName=config)
    sagemaker.delete_model(ModelName=model)
    assert sagemaker.list_models(NameContains=model)["Models"] == []


# --- endpoints ----------------------------------------------------------------------------------------

def test_an_endpoint_serves_captures_updates_and_deletes(localstack, sagemaker, s3, model_data):
    """CreateEndpoint -> Creating -> InService (waiter endpoint_in_service); InvokeEndpoint through the same
    gateway; capture records under DestinationS3Uri/<endpoint>/<variant>/; UpdateEndpoint to a new config,
    requests answered throughout; DeleteEndpoint, then the endpoint_deleted waiter."""
    runtime = client(localstack, "sagemaker-runtime")
    model = create_model(sagemaker, model_data)
    config = create_config(sagemaker, model, capture="s3://models/capture")
    endpoint = unique("endpoint")
    arn = sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{endpoint}"
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Creating"
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert described["DataCaptureConfig"]["CaptureStatus"] == "Started"

    reply = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=png())
    assert len(json.loads(reply["Body"].read())) == 2
    assert reply["InvokedProductionVariant"] == "AllTraffic"
    poll(lambda: s3.list_objects_v2(Bucket="models", Prefix=f"capture/{endpoint}/AllTraffic/").get("KeyCount"),
         60, what="a capture file")

    second = create_config(sagemaker, model)
    sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=second)
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Updating"
    while sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Updating":
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=png())   # never fails
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", second)
    assert "DataCaptureConfig" not in described
    runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=png())

    assert endpoint in [e["EndpointName"] for e in sagemaker.list_endpoints(StatusEquals="InService")["Endpoints"]]
    sagemaker.delete_endpoint(EndpointName=endpoint)
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    gone = error_of(runtime.invoke_endpoint, EndpointName=endpoint, ContentType="image/png", Body=png())
    assert gone["Error"]["Code"] == "ValidationError"


def test_an_endpoint_whose_artifact_went_missing_fails(sagemaker, s3, model_data):
    """The artifact deleted after CreateModel: the endpoint goes Failed with AWS's download FailureReason,
    and endpoint_in_service stops at Failed."""
    s3.copy_object(Bucket="models", Key="doomed/model.tar.gz", CopySource={"Bucket": "models", "Key": "stub/model.tar.gz"})
    model = create_model(sagemaker, "s3://models/doomed/model.tar.gz")
    s3.delete_object(Bucket="models", Key="doomed/model.tar.gz")
    endpoint = unique("endpoint")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=create_config(sagemaker, model))
    with pytest.raises(WaiterError):
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"].startswith("Failed to download model data(bucket: models, key: doomed/model.tar.gz)")
    sagemaker.delete_endpoint(EndpointName=endpoint)


def test_an_image_that_cannot_run_here_fails_naming_those_that_can(sagemaker, model_data):
    model = create_model(sagemaker, model_data, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/my-server:1")
    endpoint = unique("endpoint")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=create_config(sagemaker, model))
    described = poll(lambda: (lambda d: d if d["EndpointStatus"] != "Creating" else None)(
        sagemaker.describe_endpoint(EndpointName=endpoint)), 30, what="the endpoint to leave Creating")
    assert described["EndpointStatus"] == "Failed"
    assert "my-server:1" in described["FailureReason"] and "pytorch-inference" in described["FailureReason"]
    sagemaker.delete_endpoint(EndpointName=endpoint)


def _alive_records(localstack, kind: str) -> list:
    return [entry for entry in processes.recorded(processes.sagemaker_dir(localstack.home))
            if entry.kind == kind and entry.alive]


def test_an_endpoint_is_served_by_the_spare_host_started_ahead_and_a_new_spare_follows(localstack, sagemaker, model_data):
    """Ours, not AWS's (no timing is asserted: benchmarks/sagemaker_control.py measures it): CreateModel starts a
    spare endpoint host, recorded like every process of the control plane; CreateEndpoint hands it the endpoint
    (the endpoint's recorded process is that very pid), and once it answers, the next spare starts."""
    model = create_model(sagemaker, model_data)
    [spare] = poll(lambda: _alive_records(localstack, "endpoint-spare"), 60, what="a spare endpoint host")
    endpoint = unique("endpoint")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=create_config(sagemaker, model))
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    [serving] = [entry for entry in _alive_records(localstack, "endpoint") if entry.name == endpoint]
    assert serving.pid == spare.pid
    [following] = poll(lambda: _alive_records(localstack, "endpoint-spare"), 60, what="the next spare")
    assert following.pid != spare.pid
    sagemaker.delete_endpoint(EndpointName=endpoint)
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    poll(lambda: not serving.alive, 60, what="the endpoint's host to stop")


def test_an_endpoint_whose_host_is_killed_is_served_again_by_a_replacement(localstack, sagemaker, model_data):
    """An instance that stops answering its health checks is replaced by SageMaker, the endpoint staying InService
    ("How Your Container Should Respond to Health Check (Ping) Requests",
    https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html): here a host killed with
    -9 is replaced by one of the same config, and InvokeEndpoint answers again without any call of ours."""
    runtime = client(localstack, "sagemaker-runtime")
    model = create_model(sagemaker, model_data)
    endpoint = unique("endpoint")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=create_config(sagemaker, model))
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    [killed] = [entry for entry in _alive_records(localstack, "endpoint") if entry.name == endpoint]

    os.kill(killed.pid, signal.SIGKILL)

    def answered():
        try:
            return runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=png())
        except ClientError:
            return None

    poll(lambda: not killed.alive, 30, what="the killed host to go")
    poll(answered, 120, what="a replacement host to answer")
    [replacement] = [entry for entry in _alive_records(localstack, "endpoint") if entry.name == endpoint]
    assert replacement.pid != killed.pid
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
    sagemaker.delete_endpoint(EndpointName=endpoint)
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=endpoint, WaiterConfig=FAST_WAIT)
    poll(lambda: not replacement.alive, 60, what="the replacement to stop with its endpoint")


# --- training jobs ------------------------------------------------------------------------------------

def upload_source(s3, files: dict[str, str] | None = None) -> str:
    """A sourcedir.tar.gz as the SDK uploads it: the project's local_model/ code, or the given files."""
    if files is None:
        data = sm.source_tarball()
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, text in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                archive.addfile(info, io.BytesIO(text.encode()))
        data = buffer.getvalue()
    key = f"source/{uuid.uuid4().hex}/sourcedir.tar.gz"
    s3.put_object(Bucket="models", Key=key, Body=data)
    return f"s3://models/{key}"


def training_request(name: str, source: str, *, hyperparameters: dict, channels: dict[str, str],
                     max_runtime: int = 3600) -> dict:
    """CreateTrainingJob as the SDK's PyTorch estimator sends it (API_CreateTrainingJob.html)."""
    return {
        "TrainingJobName": name, "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": TRAINING_IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": sm.sdk_hyperparameters(job_name=name, region=REGION, submit_directory=source,
                                                  user=hyperparameters),
        "InputDataConfig": [{"ChannelName": channel, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for channel, uri in channels.items()],
        "OutputDataConfig": {"S3OutputPath": "s3://models/jobs"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }


@pytest.fixture(scope="module")
def training_data(s3, tmp_path_factory) -> dict[str, str]:
    data = testing.write_synthetic_dataset(tmp_path_factory.mktemp("data"))
    for path in data.rglob("*.png"):
        s3.upload_file(str(path), "models", f"data/{path.relative_to(data)}")
    return {"train": "s3://models/data/train", "test": "s3://models/data/test"}


def wait_for_job(sagemaker, name: str, *, fails: bool = False) -> dict:
    """The waiter training_job_completed_or_stopped (waiters-2.json: Failed is its failure state)."""
    waiter = sagemaker.get_waiter("training_job_completed_or_stopped")
    if fails:
        with pytest.raises(WaiterError, match='matched expected path: "Failed"'):
            waiter.wait(TrainingJobName=name, WaiterConfig=FAST_WAIT)
    else:
        waiter.wait(TrainingJobName=name, WaiterConfig=FAST_WAIT)
    return sagemaker.describe_training_job(TrainingJobName=name)


def test_a_training_job_really_trains_and_uploads_its_model(localstack, sagemaker, s3, training_data):
    name = unique("train")
    source = upload_source(s3)
    sagemaker.create_training_job(**training_request(name, source, hyperparameters=testing.TINY_HYPERPARAMETERS,
                                                     channels=training_data))
    job = wait_for_job(sagemaker, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed"), job.get("FailureReason")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == \
        ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://models/jobs/{name}/output/model.tar.gz"
    body = s3.get_object(Bucket="models", Key=f"jobs/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert {"model.pth", "code/inference.py"} <= set(archive.getnames())
    logs = client(localstack, "logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/algo-1-")
    stream = streams["logStreams"][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)["events"]
    assert any("epoch 1/1" in event["message"] for event in events)
    assert name in [j["TrainingJobName"] for j in sagemaker.list_training_jobs(StatusEquals="Completed")["TrainingJobSummaries"]]


def test_a_script_that_exits_1_fails_the_job_with_its_error(sagemaker, s3, training_data):
    name = unique("train")
    source = upload_source(s3, {"train.py": "import sys\nprint('starting')\nraise ValueError('no bicycles in channel')\n"})
    sagemaker.create_training_job(**training_request(name, source, hyperparameters={}, channels=training_data))
    job = wait_for_job(sagemaker, name, fails=True)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"].startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n")
    assert 'ErrorMessage "ValueError: no bicycles in channel"' in job["FailureReason"]


SLEEPER = {"train.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"}


def test_stop_training_job_stops_it(sagemaker, s3, training_data):
    name = unique("train")
    sagemaker.create_training_job(**training_request(name, upload_source(s3, SLEEPER), hyperparameters={},
                                                     channels=training_data))
    poll(lambda: sagemaker.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Training", 60,
         what="the job to train")
    sagemaker.stop_training_job(TrainingJobName=name)
    assert sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("Stopping", "Stopped")
    job = wait_for_job(sagemaker, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    again = error_of(sagemaker.stop_training_job, TrainingJobName=name)
    assert again["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_the_job(sagemaker, s3, training_data):
    name = unique("train")
    started = time.monotonic()
    sagemaker.create_training_job(**training_request(name, upload_source(s3, SLEEPER), hyperparameters={},
                                                     channels=training_data, max_runtime=3))
    job = wait_for_job(sagemaker, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert time.monotonic() - started < 120


def test_a_second_job_of_one_name_is_resource_in_use(sagemaker, s3, training_data):
    name = unique("train")
    request = training_request(name, upload_source(s3, {"train.py": "print('done')\n"}), hyperparameters={},
                               channels=training_data)
    sagemaker.create_training_job(**request)
    reply = error_of(sagemaker.create_training_job, **request)
    assert reply["Error"]["Code"] == "ResourceInUse"
    assert wait_for_job(sagemaker, name)["TrainingJobStatus"] == "Completed"
