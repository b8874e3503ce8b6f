"""deploy/sagemaker.py: the image table, the SDK-shaped training request, and train.py running from the source tarball."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from deploy import sagemaker as sm
from deploy.waiting import DeployError
from local_model.serving_handlers import extract_tar


def test_image_uris_come_from_the_table():
    assert sm.training_image("us-east-1") == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
    assert sm.inference_image("af-south-1") == "626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch-inference:2.5.1-cpu-py311"
    assert sm.inference_image("cn-north-1").startswith("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/")
    assert sm.image_repository(sm.training_image("eu-west-1")) == "763104351884:pytorch-training"
    with pytest.raises(DeployError, match="no PyTorch container registry known for region 'mars-1'"):
        sm.training_image("mars-1")


def test_hyperparameters_are_json_encoded_like_the_sdk():
    hyper = sm.sdk_hyperparameters(job_name="j", region="eu-west-1", submit_directory="s3://b/source/x/sourcedir.tar.gz",
                                   user={"epochs": 3, "augment": True, "widths": "16,32"})
    assert hyper == {
        "epochs": "3", "augment": "true", "widths": '"16,32"',
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/source/x/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"j"',
        "sagemaker_region": '"eu-west-1"',
    }


def test_endpoint_config_captures_everything_and_names_follow_content():
    request = sm.endpoint_config_request(prefix="p", model_name="p-model-1", capture_s3_uri="s3://b/data_capture")
    assert request["DataCaptureConfig"]["InitialSamplingPercentage"] == 100
    assert request["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    again = sm.endpoint_config_request(prefix="p", model_name="p-model-1", capture_s3_uri="s3://b/data_capture")
    other = sm.endpoint_config_request(prefix="p", model_name="p-model-2", capture_s3_uri="s3://b/data_capture")
    assert request["EndpointConfigName"] == again["EndpointConfigName"] != other["EndpointConfigName"]


def test_source_tarball_is_deterministic_and_holds_the_training_code():
    first, second = sm.source_tarball(), sm.source_tarball()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        names = archive.getnames()
    assert {"train.py", "inference.py", "network.py"} <= set(names)
    assert all("/" not in name for name in names)


@pytest.mark.slow
def test_train_py_runs_unchanged_from_the_source_tarball_in_script_mode(tmp_path):
    """What the SageMaker PyTorch container does: unpack sourcedir.tar.gz, run `python train.py --hp value` with SM_* set."""
    code = tmp_path / "code"
    code.mkdir()
    with tarfile.open(fileobj=io.BytesIO(sm.source_tarball())) as archive:
        extract_tar(archive, code)
    rng = np.random.default_rng(0)
    for channel in ("train", "test"):
        for label in ("bicycle", "motorcycle"):
            folder = tmp_path / "input" / channel / label
            folder.mkdir(parents=True)
            for index in range(4):
                pixels = rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)
                pixels[..., 3] = 255
                Image.fromarray(pixels, "RGBA").save(folder / f"{label}_{index}.png")
    environment = {
        **os.environ,
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_CHANNEL_TRAIN": str(tmp_path / "input" / "train"),
        "SM_CHANNEL_TEST": str(tmp_path / "input" / "test"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
        "SM_NUM_GPUS": "0",
        "PYTHONPATH": "",
    }
    hyper = {"epochs": 1, "batch-size": 4, "widths": "8", "blocks": "1", "num-threads": 1}
    arguments = [item for key, value in hyper.items() for item in (f"--{key}", str(value))]
    result = subprocess.run([sys.executable, "train.py", *arguments], cwd=code, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model" / "code" / "inference.py").exists()
    assert json.loads((tmp_path / "output" / "baseline.json").read_text())["classes"] == ["bicycle", "motorcycle"]
