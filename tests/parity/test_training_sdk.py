"""deploy/sagemaker.py against the SageMaker Python SDK itself (sagemaker 2.x, which the PyTorch
training image also installs), run in the toolkit venv: the training job the SDK's PyTorch estimator
creates, and the image registries it knows."""
from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest
from moto.server import ThreadedMotoServer

from scones.deploy import sagemaker as sm
from scones.harness.endpoint import free_port

pytestmark = pytest.mark.parity

REGION = "eu-west-1"
BUCKET = "scones-parity"
ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"
JOB = "scones-parity-1"
# The documented forms as `scones train -H` / `scones deploy -H` parse them.
FORMS = ("label_smoothing=0.05", "batch_size=64", "channels_last=false", "widths=[32, 64, 128]", "arch=resnet",
         "blocks=1,1,1", "label-smoothing=0.1", "flip_tta=True")

ESTIMATOR = """
import json, sys
import boto3
from sagemaker.pytorch import PyTorch
from sagemaker.session import Session

region, bucket, role, job, source_dir, hyperparameters = sys.argv[1:7]
boto_session = boto3.Session(region_name=region)
session = Session(boto_session=boto_session, default_bucket=bucket)
estimator = PyTorch(entry_point="train.py", source_dir=source_dir, role=role, framework_version="2.5.1",
                    py_version="py311", instance_type="ml.m5.xlarge", instance_count=1,
                    hyperparameters=json.loads(hyperparameters), sagemaker_session=session,
                    output_path=f"s3://{bucket}/training-output", code_location=f"s3://{bucket}/source",
                    disable_profiler=True, debugger_hook_config=False)
estimator.fit({"train": f"s3://{bucket}/train/", "test": f"s3://{bucket}/test/"}, wait=False, job_name=job, logs=False)
print(json.dumps(session.sagemaker_client.describe_training_job(TrainingJobName=job), default=str))
"""

REGISTRIES = """
import json
import importlib.resources
from sagemaker import image_uris

config = json.loads((importlib.resources.files("sagemaker") / "image_uri_config" / "pytorch.json").read_text())
uris = {}
for scope in ("training", "inference"):
    for region in config[scope]["versions"]["2.5.1"]["registries"]:
        uris[f"{scope} {region}"] = image_uris.retrieve("pytorch", region=region, version="2.5.1", py_version="py311",
                                                        instance_type="ml.m5.xlarge", image_scope=scope)
print(json.dumps(uris))
"""


@pytest.fixture
def moto_aws(monkeypatch, tmp_path):
    """A moto server for the SDK to create its job in (and S3 for its source upload); the SDK's
    telemetry is opted out (SDK defaults config), so nothing tries the internet."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config)}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield s3
    server.stop()


def test_the_deploy_creates_the_training_job_the_sdk_creates(moto_aws, run_in_toolkit_venv):
    """sagemaker.pytorch.PyTorch(...).fit() with the same hyperparameters: the HyperParameters map
    (json.dumps of every value, the five script-mode keys) and the training image equal
    deploy/sagemaker.py's request; the source tarball holds the same source files as ours."""
    user = {key: sm.hyperparameter_value(value) for key, _, value in (form.partition("=") for form in FORMS)}
    job = json.loads(run_in_toolkit_venv(ESTIMATOR, REGION, BUCKET, ROLE, JOB, str(sm.SOURCE_DIR), json.dumps(user)))
    submit_directory = json.loads(job["HyperParameters"]["sagemaker_submit_directory"])

    plan = sm.TrainingPlan(bucket=BUCKET, region=REGION, role_arn=ROLE, image=sm.training_image(REGION), hyperparameters=user)
    ours = sm.training_job_request(plan, JOB, submit_directory)
    assert ours["HyperParameters"] == job["HyperParameters"]
    assert job["HyperParameters"]["widths"] == "[32, 64, 128]" and job["HyperParameters"]["arch"] == '"resnet"'
    assert ours["AlgorithmSpecification"]["TrainingImage"] == job["AlgorithmSpecification"]["TrainingImage"]
    assert [c["ChannelName"] for c in ours["InputDataConfig"]] == [c["ChannelName"] for c in job["InputDataConfig"]]

    bucket, _, key = submit_directory.removeprefix("s3://").partition("/")
    uploaded = moto_aws.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(uploaded)) as sdk_archive, tarfile.open(fileobj=io.BytesIO(sm.source_tarball())) as ours_archive:
        sdk_sources = {m.name: sdk_archive.extractfile(m).read() for m in sdk_archive if m.isfile() and m.name.endswith(".py")}
        our_sources = {m.name: ours_archive.extractfile(m).read() for m in ours_archive if m.isfile()}
    assert our_sources == sdk_sources


def test_the_image_table_covers_every_region_the_sdk_knows(run_in_toolkit_venv):
    """Every region of the SDK's image_uri_config/pytorch.json for 2.5.1, training and inference,
    resolves in deploy/sagemaker.py to the URI sagemaker.image_uris.retrieve gives, and we know no
    region the SDK does not."""
    sdk = json.loads(run_in_toolkit_venv(REGISTRIES))
    ours = {}
    for entry in sdk:
        scope, region = entry.split()
        ours[entry] = (sm.training_image if scope == "training" else sm.inference_image)(region)
    assert ours == sdk
    assert {entry.split()[1] for entry in sdk} == sm.DLC_DEFAULT_REGIONS | set(sm.DLC_REGISTRIES)
