"""The SageMaker Python SDK 2.x, unchanged, against the local control plane (harness/sagemaker).

A user's own SageMaker code, as AWS's documentation writes it (https://sagemaker.readthedocs.io/en/v2.257.0/
frameworks/pytorch/using_pytorch.html: `PyTorch(...).fit()`, `.deploy(...)`, `predictor.predict`;
https://sagemaker.readthedocs.io/en/v2.257.0/api/inference/model_monitor.html: DataCaptureConfig), runs in
the toolkit venv (the SDK at the version the PyTorch training image installs) with nothing but
AWS_ENDPOINT_URL pointing at a LocalStack of its own: the job really trains, the endpoint serves that
model.tar.gz, predictions come back, capture files land under the DataCaptureConfig's destination.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import boto3
import pytest
from PIL import Image

from scones import testing
from scones.deploy import sagemaker as sm
from scones.harness import localstack as localstack_manager
from scones.harness.sagemaker import processes
from support import poll, running_localstack

pytestmark = pytest.mark.parity

REGION = "us-east-1"
BUCKET = "sdk-bucket"
ROLE = "arn:aws:iam::000000000000:role/scones-sagemaker"

USER_CODE = """
import json, sys
from sagemaker.deserializers import JSONDeserializer
from sagemaker.model_monitor import DataCaptureConfig
from sagemaker.pytorch import PyTorch
from sagemaker.serializers import IdentitySerializer
from sagemaker.session import Session

source_dir, role, bucket, hyperparameters, image_path = sys.argv[1:6]
session = Session(default_bucket=bucket)
estimator = PyTorch(entry_point="train.py", source_dir=source_dir, role=role, framework_version="2.5.1",
                    py_version="py311", instance_type="ml.m5.xlarge", instance_count=1,
                    hyperparameters=json.loads(hyperparameters), sagemaker_session=session,
                    disable_profiler=True, debugger_hook_config=False)
estimator.fit({"train": f"s3://{bucket}/data/train", "test": f"s3://{bucket}/data/test"})
predictor = estimator.deploy(
    initial_instance_count=1, instance_type="ml.m5.large", entry_point="inference.py",
    serializer=IdentitySerializer("image/png"), deserializer=JSONDeserializer(),
    data_capture_config=DataCaptureConfig(enable_capture=True, sampling_percentage=100,
                                          destination_s3_uri=f"s3://{bucket}/capture"))
prediction = predictor.predict(open(image_path, "rb").read())
endpoint = predictor.endpoint_name
predictor.delete_endpoint()
print("RESULT " + json.dumps({"job": estimator.latest_training_job.name, "model_data": estimator.model_data,
                  "endpoint": endpoint, "prediction": prediction}), flush=True)
"""


def test_the_sdk_trains_deploys_with_capture_and_predicts(toolkit_python, tmp_path):
    # The SDK uploads its source tarball with ServerSideEncryption aws:kms, which LocalStack's S3 serves
    # through its KMS: the stack's SERVICES must hold kms for SDK users too (see the README).
    extra_env = {processes.PYTHON_ENV: sys.executable, "SERVICES": f"{localstack_manager.SERVICES},kms"}
    with running_localstack(tmp_path / "localstack", extra_env=extra_env) as localstack:
        s3 = boto3.client("s3", endpoint_url=localstack.url, region_name=REGION,
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET)
        data = testing.write_synthetic_dataset(tmp_path / "data")
        for path in data.rglob("*.png"):
            s3.upload_file(str(path), BUCKET, f"data/{path.relative_to(data)}")
        image = tmp_path / "photo.png"
        Image.new("RGB", (32, 32), (20, 20, 200)).save(image)
        env = {**os.environ, "AWS_ENDPOINT_URL": localstack.url, "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
               "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "PYTHONWARNINGS": "ignore"}
        completed = subprocess.run(
            [toolkit_python, "-c", USER_CODE, str(sm.SOURCE_DIR), ROLE, BUCKET,
             json.dumps(testing.TINY_HYPERPARAMETERS), str(image)],
            capture_output=True, text=True, env=env, timeout=900)
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
        # The SDK prints its own progress on stdout too.
        result = json.loads(completed.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])
        assert result["model_data"] == f"s3://{BUCKET}/{result['job']}/output/model.tar.gz"
        assert len(result["prediction"]) == 2 and abs(sum(result["prediction"]) - 1) < 1e-4
        keys = poll(lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=f"capture/{result['endpoint']}/AllTraffic/")
                    .get("Contents"), 60, what="the SDK endpoint's capture file")
        record = json.loads(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=keys[0]["Key"])["Body"].read())
                            .readline())
        assert record["captureData"]["endpointInput"]["observedContentType"] == "image/png"
