"""deploy/sagemaker.py: the image table, the SDK-shaped training request, and train.py running from the source tarball."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from scones import testing
from scones.deploy import sagemaker as sm
from scones.deploy.waiting import DeployError


def test_image_uris_come_from_the_table():
    assert sm.training_image("us-east-1") == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
    assert sm.inference_image("af-south-1") == "626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch-inference:2.5.1-cpu-py311"
    assert sm.inference_image("cn-north-1").startswith("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/")
    assert sm.image_repository(sm.training_image("eu-west-1")) == "763104351884:pytorch-training"
    with pytest.raises(DeployError, match="no PyTorch container registry known for region 'mars-1'"):
        sm.training_image("mars-1")


def test_hyperparameters_are_json_encoded_like_the_sdk():
    """sagemaker 2.x: Framework._script_mode_hyperparam_update adds the script-mode keys, then
    EstimatorBase._json_encode_hyperparameters json.dumps every value, strings too.
    tests/parity/test_training_sdk.py compares with the installed SDK itself."""
    hyper = sm.sdk_hyperparameters(job_name="j", region="eu-west-1", submit_directory="s3://b/source/x/sourcedir.tar.gz",
                                   user={"epochs": 3, "augment": True, "widths": "16,32", "blocks": [1, 1],
                                         "label_smoothing": 0.05, "arch": "resnet"})
    assert hyper == {
        "epochs": "3", "augment": "true", "widths": '"16,32"', "blocks": "[1, 1]", "label_smoothing": "0.05",
        "arch": '"resnet"',
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/source/x/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"j"',
        "sagemaker_region": '"eu-west-1"',
    }


@pytest.mark.parametrize("raw, value", [
    ("64", 64), ("0.05", 0.05), ("false", False), ("[32, 64, 128]", [32, 64, 128]), ("resnet", "resnet"),
    ("32,64,128", "32,64,128"), ("True", "True"), ('"quoted"', "quoted"),
])
def test_command_line_values_become_what_an_sdk_user_writes(raw, value):
    assert sm.hyperparameter_value(raw) == value


def test_the_image_table_knows_the_regions_the_issue_found_missing():
    """The SDK's image_uri_config/pytorch.json (2.5.1) lists these; the full comparison with the
    installed SDK is tests/parity/test_training_sdk.py."""
    assert sm.training_image("mx-central-1") == "637423239942.dkr.ecr.mx-central-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
    for region in ("ap-east-2", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7"):
        assert sm.inference_image(region).endswith(f".dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.5.1-cpu-py311")


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


def test_local_training_runs_the_very_source_tarball_the_deploy_uploads(tmp_path):
    """One code path: scones.harness.training_job lays out the job with source_tarball()'s bytes, and the toolkit
    (or our port) unpacks it into /opt/ml/code before it starts train.py there."""
    from scones.harness import training_job

    data = testing.write_synthetic_dataset(tmp_path / "data", {"train": 1, "test": 1})
    base = training_job.write_training_job(tmp_path / "job", data, {}, name="job")
    assert (tmp_path / "job" / "sourcedir.tar.gz").read_bytes() == sm.source_tarball()
    hyperparameters = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
    assert json.loads(hyperparameters["sagemaker_submit_directory"]) == str(tmp_path / "job" / "sourcedir.tar.gz")
    command, _, cwd = training_job.job_command(base, name="job", toolkit=None)
    assert cwd == base / "code" and command[1:3] == ["--", "train.py"]
    with tarfile.open(fileobj=io.BytesIO(sm.source_tarball())) as archive:
        assert sorted(path.name for path in cwd.iterdir()) == sorted(archive.getnames())
