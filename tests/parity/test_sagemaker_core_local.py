"""sagemaker-core (the resource layer of the SageMaker Python SDK 3.x), unchanged, against the local control plane.

The resources as sagemaker-core's own documentation uses them (https://sagemaker-core.readthedocs.io:
`TrainingJob.create(...).wait()`, `Model.create`, `EndpointConfig.create`, `Endpoint.create(...)
.wait_for_status("InService")`, `Endpoint.invoke`, `delete` + `wait_for_delete`), in a venv of their own
(sagemaker-core-requirements.txt) with nothing but AWS_ENDPOINT_URL pointing at a LocalStack of its own:
the job really trains, the endpoint serves its model.tar.gz.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
import venvs
from PIL import Image

from scones import testing
from scones.deploy import sagemaker as sm
from scones.harness.sagemaker import processes
from support import running_localstack

pytestmark = pytest.mark.parity

REGION = "us-east-1"
BUCKET = "core-bucket"
ROLE = "arn:aws:iam::000000000000:role/scones-sagemaker"

USER_CODE = """
import json, sys
from sagemaker.core.resources import Endpoint, EndpointConfig, Model, TrainingJob
from sagemaker.core.shapes import (AlgorithmSpecification, Channel, ContainerDefinition, DataSource,
                                   OutputDataConfig, ProductionVariant, ResourceConfig, S3DataSource,
                                   StoppingCondition)

name, bucket, role, training_image, inference_image, hyperparameters, image_path = sys.argv[1:8]
job = TrainingJob.create(
    training_job_name=name, role_arn=role, hyper_parameters=json.loads(hyperparameters),
    algorithm_specification=AlgorithmSpecification(training_image=training_image, training_input_mode="File"),
    input_data_config=[Channel(channel_name=channel, data_source=DataSource(s3_data_source=S3DataSource(
        s3_data_type="S3Prefix", s3_uri=f"s3://{bucket}/data/{channel}"))) for channel in ("train", "test")],
    output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/jobs"),
    resource_config=ResourceConfig(instance_type="ml.m5.xlarge", instance_count=1, volume_size_in_gb=30),
    stopping_condition=StoppingCondition(max_runtime_in_seconds=3600))
job.wait(poll=1)
model = Model.create(model_name=name, execution_role_arn=role, primary_container=ContainerDefinition(
    image=inference_image, model_data_url=job.model_artifacts.s3_model_artifacts))
config = EndpointConfig.create(endpoint_config_name=name, production_variants=[ProductionVariant(
    variant_name="AllTraffic", model_name=model.model_name, initial_instance_count=1, instance_type="ml.m5.large")])
endpoint = Endpoint.create(endpoint_name=name, endpoint_config_name=config.endpoint_config_name)
endpoint.wait_for_status("InService", poll=1)
reply = endpoint.invoke(body=open(image_path, "rb").read(), content_type="image/png")
body = reply.body.read() if hasattr(reply.body, "read") else reply.body
endpoint.delete()
endpoint.wait_for_delete(poll=1)
print("RESULT " + json.dumps({"status": job.training_job_status, "artifact": job.model_artifacts.s3_model_artifacts,
                              "prediction": json.loads(body)}), flush=True)
"""


@pytest.fixture(scope="session")
def core_python() -> str:
    return venvs.sagemaker_core_python()


def test_sagemaker_core_resources_train_and_serve(core_python, tmp_path):
    with running_localstack(tmp_path / "localstack", extra_env={processes.PYTHON_ENV: sys.executable}) as localstack:
        s3 = boto3.client("s3", endpoint_url=localstack.url, region_name=REGION,
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET)
        data = testing.write_synthetic_dataset(tmp_path / "data")
        for path in data.rglob("*.png"):
            s3.upload_file(str(path), BUCKET, f"data/{path.relative_to(data)}")
        s3.put_object(Bucket=BUCKET, Key="source/sourcedir.tar.gz", Body=sm.source_tarball())
        image = tmp_path / "photo.png"
        Image.new("RGB", (32, 32), (20, 20, 200)).save(image)
        name = "core-job-1"
        hyperparameters = sm.sdk_hyperparameters(job_name=name, region=REGION, user=testing.TINY_HYPERPARAMETERS,
                                                 submit_directory=f"s3://{BUCKET}/source/sourcedir.tar.gz")
        env = {**os.environ, "AWS_ENDPOINT_URL": localstack.url, "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
        completed = subprocess.run(
            [core_python, "-c", USER_CODE, name, BUCKET, ROLE, sm.training_image(REGION), sm.inference_image(REGION),
             json.dumps(hyperparameters), str(image)], capture_output=True, text=True, env=env, timeout=900)
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
        result = json.loads(completed.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])
        assert result["status"] == "Completed"
        assert result["artifact"] == f"s3://{BUCKET}/jobs/{name}/output/model.tar.gz"
        assert len(result["prediction"]) == 2
