"""SageMaker for the AWS target: the training job that runs local_model/train.py unchanged, the
model, the endpoint config with data capture, and the endpoint.

The PyTorch framework container is found from a maintained table (below) so the `sagemaker`
SDK stays optional; the training job is described exactly as the SDK's PyTorch estimator
describes it (source tarball in S3, JSON-encoded hyperparameters, sagemaker_program /
sagemaker_submit_directory; tests/parity/test_training_sdk.py compares with the SDK itself), so the
container's training toolkit runs `python -- train.py --<key> <value>` with the SM_* environment,
just as `scones train` does locally (harness/models.py lays out the same job from the same
source_tarball() and sdk_hyperparameters()).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from botocore.exceptions import ClientError

from scones import local_model
from scones.contract import CLASSES, VARIANT_NAME
from scones.deploy.waiting import DeployError, Progress, poll_until, retry_while_role_propagates

# --- the maintained table -------------------------------------------------------------------
# PyTorch Deep Learning Containers: the registries of the sagemaker SDK's
# image_uri_config/pytorch.json for 2.5.1 (training and inference list the same 38 regions;
# tests/parity/test_training_sdk.py compares this table with the installed SDK, region by
# region). To move to a newer framework, change these lines and run that test.
PYTORCH_VERSION = "2.5.1"
PYTHON_VERSION = "py311"
TRAINING_REPOSITORY = "pytorch-training"
INFERENCE_REPOSITORY = "pytorch-inference"
DEFAULT_DLC_REGISTRY = "763104351884"
# Regions whose DLC registry is not the default account.
DLC_REGISTRIES = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
DLC_DEFAULT_REGIONS = {
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
    "ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3",
    "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
}
# The built-in image-classification algorithm (the original project's trainer), version 1;
# the same data as the sagemaker SDK's image_uri_config/image-classification.json.
BUILTIN_REPOSITORY = "image-classification"
BUILTIN_REGISTRIES = {
    "ap-east-1": "286214385809", "ap-northeast-1": "501404015308", "ap-northeast-2": "306986355934",
    "ap-south-1": "991648021394", "ap-southeast-1": "475088953585", "ap-southeast-2": "544295431143",
    "ca-central-1": "469771592824", "cn-north-1": "390948362332", "cn-northwest-1": "387376663083",
    "eu-central-1": "813361260812", "eu-north-1": "669576153137", "eu-west-1": "685385470294",
    "eu-west-2": "644912444149", "eu-west-3": "749696950732", "me-south-1": "249704162688",
    "sa-east-1": "855470959533", "us-east-1": "811284229777", "us-east-2": "825641698319",
    "us-gov-west-1": "226302683700", "us-west-1": "632365934929", "us-west-2": "433757028032",
}
# ---------------------------------------------------------------------------------------------

TRAINING_INSTANCE = "ml.m5.xlarge"
BUILTIN_TRAINING_INSTANCE = "ml.g4dn.xlarge"   # the built-in algorithm trains on GPU instances only
BUILTIN_HYPERPARAMETERS = {
    "num_layers": 18, "use_pretrained_model": 1, "image_shape": "3,32,32", "num_classes": len(CLASSES),
    "epochs": 30, "learning_rate": 0.001, "mini_batch_size": 32, "augmentation_type": "crop_color_transform",
}
ENDPOINT_INSTANCE = "ml.m5.large"
SOURCE_DIR = Path(local_model.__file__).resolve().parent
ENTRY_POINT = "train.py"
SERVING_PROGRAM = "inference.py"
TRAINING_TIMEOUT_S = 2 * 3600.0
ENDPOINT_TIMEOUT_S = 30 * 60.0
TRAINING_DONE = {"Completed"}
TRAINING_FAILED = {"Failed", "Stopped"}
ENDPOINT_FAILED = {"Failed", "OutOfService"}


def dlc_registry(region: str) -> str:
    if region in DLC_REGISTRIES:
        return DLC_REGISTRIES[region]
    if region in DLC_DEFAULT_REGIONS:
        return DEFAULT_DLC_REGISTRY
    known = sorted(DLC_DEFAULT_REGIONS | set(DLC_REGISTRIES))
    raise DeployError(
        f"no PyTorch container registry known for region {region!r} in deploy/sagemaker.py; "
        f"use one of {', '.join(known)}, or pass --training-image/--inference-image"
    )


def image_uri(region: str, repository: str, processor: str = "cpu") -> str:
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{dlc_registry(region)}.dkr.ecr.{region}.{domain}/{repository}:{PYTORCH_VERSION}-{processor}-{PYTHON_VERSION}"


def training_image(region: str) -> str:
    return image_uri(region, TRAINING_REPOSITORY)


def inference_image(region: str) -> str:
    return image_uri(region, INFERENCE_REPOSITORY)


def builtin_image(region: str) -> str:
    if region not in BUILTIN_REGISTRIES:
        raise DeployError(
            f"no image-classification algorithm registry known for region {region!r} in deploy/sagemaker.py; "
            f"use one of {', '.join(sorted(BUILTIN_REGISTRIES))}, or pass --training-image/--inference-image"
        )
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{BUILTIN_REGISTRIES[region]}.dkr.ecr.{region}.{domain}/{BUILTIN_REPOSITORY}:1"


def image_repository(uri: str) -> str:
    """'<registry account>:<repository>' of an ECR image URI (what the SageMaker role may pull)."""
    host, _, rest = uri.partition("/")
    return f"{host.split('.', 1)[0]}:{rest.split(':', 1)[0].split('@', 1)[0]}"


def source_tarball(source_dir: Path = SOURCE_DIR) -> bytes:
    """sourcedir.tar.gz: the *.py files of local_model at the archive root, as the SDK packs source_dir.

    Deterministic (sorted, fixed mtimes), so an unchanged source uploads to the same key.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(source_dir.glob("*.py")):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
        requirements = source_dir / "requirements.txt"
        if requirements.exists():
            data = requirements.read_bytes()
            info = tarfile.TarInfo("requirements.txt")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    # gzip stores a timestamp too; zero it so identical sources give identical bytes.
    raw = bytearray(buffer.getvalue())
    raw[4:8] = b"\0\0\0\0"
    return bytes(raw)


# The script-mode keys the SDK's Framework estimator adds (sagemaker.model's SCRIPT_PARAM_NAME,
# DIR_PARAM_NAME, CONTAINER_LOG_LEVEL_PARAM_NAME, JOB_NAME_PARAM_NAME, SAGEMAKER_REGION_PARAM_NAME;
# Framework._script_mode_hyperparam_update) and its default container_log_level (logging.INFO).
CONTAINER_LOG_LEVEL = 20


def hyperparameter_value(raw: str) -> object:
    """A KEY=VALUE command-line value as an SDK user would have written it: JSON when it parses
    (64, 0.05, false, [32, 64, 128]), else the string itself (resnet, 32,64,128)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def sdk_hyperparameters(*, job_name: str, region: str, submit_directory: str, user: Mapping[str, object]) -> dict[str, str]:
    """HyperParameters as the SDK's PyTorch estimator sends them (sagemaker 2.x,
    EstimatorBase._json_encode_hyperparameters): every key as written, every value json.dumps'd,
    strings included ('"resnet"'), plus the script-mode keys. The training toolkit json.loads
    each value back (environment.read_hyperparameters) before it builds the command line."""
    values: dict[str, object] = dict(user)
    values.update({
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_container_log_level": CONTAINER_LOG_LEVEL,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    })
    return {str(key): json.dumps(value) for key, value in values.items()}


@dataclass(frozen=True)
class TrainingPlan:
    bucket: str
    region: str
    role_arn: str
    image: str
    instance_type: str = TRAINING_INSTANCE
    hyperparameters: Mapping[str, object] = None  # type: ignore[assignment]


def builtin_lst(data_dir: Path, part: str) -> tuple[bytes, int]:
    """The algorithm's .lst for one channel: "index<TAB>label<TAB>class/file", paths relative to the channel.

    Generated from the staged folders (the staged train.lst/test.lst name bare files), so the
    built-in algorithm reads the very objects the PyTorch job reads. Returns (bytes, line count).
    """
    lines: list[str] = []
    for label, class_name in enumerate(CLASSES):
        for path in sorted((Path(data_dir) / part / class_name).glob("*.png")):
            lines.append(f"{len(lines)}\t{label}\t{class_name}/{path.name}")
    if not lines:
        raise DeployError(f"no images under {Path(data_dir) / part} for the built-in algorithm's .lst")
    return ("\n".join(lines) + "\n").encode(), len(lines)


def builtin_training_job_request(plan: TrainingPlan, job_name: str, num_training_samples: int) -> dict:
    """The original project's job: image-classification algorithm with image + .lst channels."""
    def channel(name: str, uri: str) -> dict:
        return {
            "ChannelName": name, "ContentType": "application/x-image", "InputMode": "File",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}},
        }

    hyperparameters = {**BUILTIN_HYPERPARAMETERS, "num_training_samples": num_training_samples, **(plan.hyperparameters or {})}
    return {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {"TrainingImage": plan.image, "TrainingInputMode": "File"},
        "RoleArn": plan.role_arn,
        "InputDataConfig": [
            channel("train", f"s3://{plan.bucket}/train/"),
            channel("validation", f"s3://{plan.bucket}/test/"),
            channel("train_lst", f"s3://{plan.bucket}/builtin/train_lst/"),
            channel("validation_lst", f"s3://{plan.bucket}/builtin/validation_lst/"),
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{plan.bucket}/training-output"},
        "ResourceConfig": {"InstanceType": plan.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(TRAINING_TIMEOUT_S)},
        # The algorithm takes plain strings, not the JSON-encoded values of script mode.
        "HyperParameters": {key: str(value) for key, value in hyperparameters.items()},
        "Tags": [{"Key": "scones:created-by", "Value": "scones deploy"}],
    }


def upload_builtin_lists(s3, bucket: str, data_dir: Path, progress: Progress | None = None) -> int:
    """Upload the generated .lst files; returns the number of training samples."""
    train, count = builtin_lst(data_dir, "train")
    validation, _ = builtin_lst(data_dir, "test")
    s3.put_object(Bucket=bucket, Key="builtin/train_lst/train.lst", Body=train)
    s3.put_object(Bucket=bucket, Key="builtin/validation_lst/validation.lst", Body=validation)
    if progress:
        progress(f"built-in algorithm .lst files uploaded to s3://{bucket}/builtin/")
    return count


def start_builtin_training_job(
    sagemaker, plan: TrainingPlan, *, job_name: str, num_training_samples: int, progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    request = builtin_training_job_request(plan, job_name, num_training_samples)
    response = retry_while_role_propagates(lambda: sagemaker.create_training_job(**request), what=f"training job {job_name}", sleep=sleep)
    if progress:
        progress(f"started built-in image-classification training job {job_name} on {plan.instance_type}")
    return response["TrainingJobArn"]


def training_job_request(plan: TrainingPlan, job_name: str, submit_directory: str) -> dict:
    channel = lambda name: {  # noqa: E731
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{plan.bucket}/{name}/", "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }
    return {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {"TrainingImage": plan.image, "TrainingInputMode": "File"},
        "RoleArn": plan.role_arn,
        "InputDataConfig": [channel("train"), channel("test")],
        "OutputDataConfig": {"S3OutputPath": f"s3://{plan.bucket}/training-output"},
        "ResourceConfig": {"InstanceType": plan.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(TRAINING_TIMEOUT_S)},
        "HyperParameters": sdk_hyperparameters(
            job_name=job_name, region=plan.region, submit_directory=submit_directory, user=plan.hyperparameters or {}
        ),
        "Tags": [{"Key": "scones:created-by", "Value": "scones deploy"}],
    }


def upload_source(s3, bucket: str, progress: Progress | None = None) -> str:
    """Upload sourcedir.tar.gz under a key named by its content hash; returns its s3:// URI."""
    data = source_tarball()
    key = f"source/{hashlib.sha256(data).hexdigest()[:16]}/sourcedir.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    if progress:
        progress(f"training source uploaded to s3://{bucket}/{key}")
    return f"s3://{bucket}/{key}"


def start_training_job(
    sagemaker, plan: TrainingPlan, *, job_name: str, submit_directory: str, progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    request = training_job_request(plan, job_name, submit_directory)
    response = retry_while_role_propagates(lambda: sagemaker.create_training_job(**request), what=f"training job {job_name}", sleep=sleep)
    if progress:
        progress(f"started training job {job_name} on {plan.instance_type}")
    return response["TrainingJobArn"]


def wait_training_job(
    sagemaker, job_name: str, *, timeout_s: float = TRAINING_TIMEOUT_S, interval_s: float = 30.0,
    progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Wait until the job is Completed; Failed/Stopped raise with SageMaker's FailureReason."""
    return poll_until(
        lambda: sagemaker.describe_training_job(TrainingJobName=job_name),
        what=f"training job {job_name}",
        state_of=lambda job: job["TrainingJobStatus"] if job["TrainingJobStatus"] in TRAINING_DONE | TRAINING_FAILED
        else f"{job['TrainingJobStatus']} ({job.get('SecondaryStatus', '?')})",
        done=TRAINING_DONE,
        failed=TRAINING_FAILED,
        reason_of=lambda job: job.get("FailureReason"),
        timeout_s=timeout_s,
        interval_s=interval_s,
        progress=progress,
        sleep=sleep,
    )


def short_digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def model_request(*, prefix: str, image: str, model_data: str, role_arn: str, trainer: str = "pytorch") -> dict:
    container: dict[str, str | dict[str, str]] = {"Image": image, "ModelDataUrl": model_data}
    if trainer == "pytorch":
        # model.tar.gz carries code/inference.py. Only what the inference toolkit reads (sagemaker_inference/
        # parameters.py): the SDK's SAGEMAKER_SUBMIT_DIRECTORY, _CONTAINER_LOG_LEVEL and _REGION are read by
        # nothing in sagemaker-pytorch-inference 2.0.25 (tests/parity/test_serving_parity.py checks).
        container["Environment"] = {"SAGEMAKER_PROGRAM": SERVING_PROGRAM}
    # Models are immutable: a different image/artifact/role is a new model with a new name.
    name = f"{prefix}-model-{short_digest([container, role_arn])}"
    return {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": role_arn}


def data_capture_config(capture_s3_uri: str) -> dict:
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": capture_s3_uri,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }


def endpoint_config_request(*, prefix: str, model_name: str, capture_s3_uri: str, instance_type: str = ENDPOINT_INSTANCE) -> dict:
    variants = [{
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InitialInstanceCount": 1,
        "InstanceType": instance_type,
        "InitialVariantWeight": 1.0,
    }]
    capture = data_capture_config(capture_s3_uri)
    name = f"{prefix}-config-{short_digest([variants, capture])}"
    return {"EndpointConfigName": name, "ProductionVariants": variants, "DataCaptureConfig": capture}


def _missing(error: ClientError) -> bool:
    # SageMaker says "Could not find ..." with ValidationException for absent resources.
    return error.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound") and "not find" in error.response["Error"]["Message"].lower() \
        or error.response["Error"]["Code"] == "ResourceNotFound"


def ensure_model(sagemaker, request: dict, progress: Progress | None = None) -> tuple[str, bool]:
    """Create the model unless one with this content-derived name exists. Returns (arn, created)."""
    try:
        return sagemaker.describe_model(ModelName=request["ModelName"])["ModelArn"], False
    except ClientError as error:
        if not _missing(error):
            raise
    arn = retry_while_role_propagates(lambda: sagemaker.create_model(**request), what=f"model {request['ModelName']}")["ModelArn"]
    if progress:
        progress(f"created model {request['ModelName']}")
    return arn, True


def ensure_endpoint_config(sagemaker, request: dict, progress: Progress | None = None) -> tuple[str, bool]:
    try:
        return sagemaker.describe_endpoint_config(EndpointConfigName=request["EndpointConfigName"])["EndpointConfigArn"], False
    except ClientError as error:
        if not _missing(error):
            raise
    arn = sagemaker.create_endpoint_config(**request)["EndpointConfigArn"]
    if progress:
        progress(f"created endpoint config {request['EndpointConfigName']} (data capture 100% to {request['DataCaptureConfig']['DestinationS3Uri']})")
    return arn, True


def describe_endpoint_or_none(sagemaker, name: str) -> dict | None:
    try:
        return sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as error:
        if _missing(error):
            return None
        raise


def wait_endpoint(
    sagemaker, name: str, *, timeout_s: float = ENDPOINT_TIMEOUT_S, interval_s: float = 15.0,
    progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Wait for InService; Failed raises with SageMaker's FailureReason."""
    return poll_until(
        lambda: sagemaker.describe_endpoint(EndpointName=name),
        what=f"endpoint {name}",
        state_of=lambda endpoint: endpoint["EndpointStatus"],
        done={"InService"},
        failed=ENDPOINT_FAILED,
        reason_of=lambda endpoint: endpoint.get("FailureReason"),
        timeout_s=timeout_s,
        interval_s=interval_s,
        progress=progress,
        sleep=sleep,
    )


def ensure_endpoint(
    sagemaker, *, name: str, config_name: str, progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep, timeout_s: float = ENDPOINT_TIMEOUT_S,
) -> tuple[dict, str]:
    """Create the endpoint, switch it to config_name, or leave it; then wait for InService."""
    current = describe_endpoint_or_none(sagemaker, name)
    if current is not None and current["EndpointStatus"] == "Failed":
        if progress:
            progress(f"endpoint {name} is Failed ({current.get('FailureReason', 'no reason given')}); deleting it to create it again")
        sagemaker.delete_endpoint(EndpointName=name)
        poll_until(lambda: describe_endpoint_or_none(sagemaker, name), what=f"endpoint {name} deletion",
                   state_of=lambda e: "Deleted" if e is None else e["EndpointStatus"], done={"Deleted"},
                   timeout_s=timeout_s, interval_s=10.0, progress=progress, sleep=sleep)
        current = None
    if current is None:
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name, Tags=[{"Key": "scones:created-by", "Value": "scones deploy"}])
        action = "created"
    elif current["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
        action = "awaited"
    elif current["EndpointConfigName"] != config_name:
        sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
        action = "updated"
    else:
        action = "unchanged"
    if progress and action != "unchanged":
        progress(f"endpoint {name}: {action}, waiting for InService (takes minutes on AWS)")
    endpoint = wait_endpoint(sagemaker, name, progress=progress, sleep=sleep, timeout_s=timeout_s)
    if action == "awaited" and endpoint["EndpointConfigName"] != config_name:
        sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
        endpoint = wait_endpoint(sagemaker, name, progress=progress, sleep=sleep, timeout_s=timeout_s)
        action = "updated"
    return endpoint, action


def delete_quietly(call: Callable[[], object]) -> bool:
    """Run a delete call; a resource already gone counts as deleted. Returns whether it existed."""
    try:
        call()
        return True
    except ClientError as error:
        if _missing(error):
            return False
        raise
