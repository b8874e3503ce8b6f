"""What is special about the local target: where its endpoints are, its fake account and roles, and which
resources of the one plan (deploy/planner.py) it makes.

Everything is deployed by the plan the AWS target runs too (`scones up`'s deploy phase, `scones deploy --target
local`, the compose `deploy` service: deploy_local_stack); this module only says where "AWS" is when it is
LocalStack plus our SageMaker-compatible endpoint server on this machine, and what differs (LOCAL_DIFFERENCES).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scones import contract, settings
from scones.deploy import executor, monitoring, planner, resources, scaling
from scones.deploy import record as records
from scones.deploy.record import StackOutputs
from scones.deploy.waiting import DeployError, Progress

ACCOUNT_ID = "000000000000"          # LocalStack's default account
REGION = "us-east-1"
ACCESS_KEY_ID = "test"               # LocalStack accepts any credentials; "test" maps to ACCOUNT_ID
SECRET_ACCESS_KEY = "test"
HOST = "127.0.0.1"

DEFAULT_BUCKET = "scones-local"
DEFAULT_PREFIX = planner.DEFAULT_PREFIX
DEFAULT_ENDPOINT_NAME = contract.ENDPOINT_NAME
DEFAULT_THRESHOLD = contract.THRESHOLD
DEFAULT_LOCALSTACK_PORT = 4566
DEFAULT_ENDPOINT_PORT = 8080
CAPTURE_PREFIX = contract.CAPTURE_PREFIX
# What a local stack uploads of the staged images: the workflow reads test/ (training runs from the
# host's folder); `scones up --upload-train` adds train/.
DATASET_PARTS = ("test",)

# How the local plan reaches SageMaker: "api" (CreateModel/CreateEndpointConfig/CreateEndpoint through boto3
# `sagemaker` at LocalStack's endpoint: the local SageMaker control plane), "route" (an endpoint server started
# beside LocalStack, registered with its sagemaker-runtime route: the compose stack's way), or "auto" (api when the
# control plane answers and can serve endpoints). `scones up` defaults to api (harness/stack.py sagemaker_mode),
# `scones deploy --target local` to auto, the compose deploy to route.
SAGEMAKER_MODE = settings.LOCAL_SAGEMAKER
SAGEMAKER_MODES = ("route", "api", "auto")
# Where the local plan differs from AWS's for the same configuration, by plan id (README "One plan, every
# target"); tests/test_deploy_plans.py finds exactly these.
LOCAL_DIFFERENCES = {
    "dataset": "test/ only (the workflow reads test/; training reads the host's folder); `up --upload-train` adds train/",
    "capture-restore": "local only: LocalStack keeps no S3 data across restarts, the endpoint's spool archive does",
    "training-job": "none with a given model (`scones up`): its model.tar.gz is uploaded and served (model-artifact)",
    "model-artifact": "local only: the served model.tar.gz from this machine, in the bucket for CreateModel",
    "endpoint-route": "route mode only (compose, SCONES_LOCAL_SAGEMAKER=route): an endpoint server beside LocalStack, "
                      "registered with its sagemaker-runtime route, stands in for the five below",
    "model": "route mode: none (api mode: CreateModel from the uploaded model-artifact, as on AWS)",
    "endpoint-config": "route mode: none (the endpoint server captures 100% to the same S3 prefix)",
    "endpoint": "route mode: none (the endpoint server serves it)",
    "log-group/endpoint": "route mode: none (the endpoint server logs to <state>/local/endpoint.log)",
    "autoscaling": "route mode: none (Application Auto Scaling acts on a control plane's endpoint)",
    "alarm/*": f"evaluated every {monitoring.LOCAL_ALARM_PERIOD_S} s (LocalStack evaluates once a period)",
    "baseline": "from the served model's baseline.json",
}


def localstack_url(port: int = DEFAULT_LOCALSTACK_PORT) -> str:
    return f"http://{HOST}:{port}"


def endpoint_url(port: int = DEFAULT_ENDPOINT_PORT) -> str:
    return f"http://{HOST}:{port}"


def capture_s3_uri(bucket: str = DEFAULT_BUCKET) -> str:
    return f"s3://{bucket}/{CAPTURE_PREFIX}"


def endpoint_server_environment(localstack: str, inherited: Mapping[str, str] = os.environ) -> dict[str, str | None]:
    """Environment for the endpoint server, so its capture writer puts records in LocalStack's S3.

    Only local credentials: every other AWS_* setting of the caller (a session token, a profile, endpoints)
    is unset (None), and no AWS config or credentials file is read, so nothing real can leak into a
    process that talks to local services.
    """
    local = {
        "AWS_ENDPOINT_URL_S3": localstack,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return {**{name: None for name in inherited if name.startswith("AWS_")}, **local}


class EndpointSession(boto3.Session):
    """A boto3 Session whose clients go to fixed endpoint URLs: one per service, else a default.

    `session.client("s3")` then reaches LocalStack and `session.client("sagemaker-runtime")`
    the endpoint server, without touching the process environment.
    """

    def __init__(self, *, default_endpoint_url: str | None = None,
                 service_endpoint_urls: dict[str, str] | None = None, **session_kwargs):
        super().__init__(**session_kwargs)
        self.default_endpoint_url = default_endpoint_url
        self.service_endpoint_urls = dict(service_endpoint_urls or {})

    def endpoint_url_for(self, service_name: str) -> str | None:
        return self.service_endpoint_urls.get(service_name, self.default_endpoint_url)

    def client(self, service_name, *args, **kwargs):
        if not args and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url_for(service_name)
        return super().client(service_name, *args, **kwargs)

    def resource(self, service_name, *args, **kwargs):
        if not args and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url_for(service_name)
        return super().resource(service_name, *args, **kwargs)


def local_session(localstack: str, sagemaker_runtime: str | None = None,
                  region: str = REGION) -> EndpointSession:
    services = {"sagemaker-runtime": sagemaker_runtime} if sagemaker_runtime else {}
    return EndpointSession(
        default_endpoint_url=localstack,
        service_endpoint_urls=services,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=region,
    )


# --- the local target of the one plan ----------------------------------------------------------------------

def control_plane_answers(session: boto3.Session) -> bool:
    """Whether LocalStack answers boto3 `sagemaker` (the local SageMaker control plane), not "not included"."""
    try:
        session.client("sagemaker").list_endpoints(MaxResults=1)
        return True
    except (ClientError, BotoCoreError):
        return False


def requested_sagemaker_mode(wanted: str | None = None, default: str = "route") -> str:
    """"api", "route" or "auto": what `wanted` (else SCONES_LOCAL_SAGEMAKER, else default) asks for."""
    mode = (wanted or settings.named(SAGEMAKER_MODE) or default).strip().lower()
    if mode not in SAGEMAKER_MODES:
        raise DeployError(f"{SAGEMAKER_MODE}={mode!r} is not one of {', '.join(SAGEMAKER_MODES)}")
    return mode


def sagemaker_mode(session: boto3.Session, wanted: str | None = None, default: str = "route",
                   serves_endpoints: Callable[[], bool] | None = None) -> str:
    """"api" or "route": what `wanted` (else SCONES_LOCAL_SAGEMAKER, else default) asks for, "auto" decided here:
    api when the control plane answers and (serves_endpoints, when given) can start endpoint hosts."""
    mode = requested_sagemaker_mode(wanted, default)
    if mode == "auto":
        usable = control_plane_answers(session) and (serves_endpoints is None or serves_endpoints())
        return planner.SAGEMAKER_API if usable else planner.SAGEMAKER_ROUTE
    return mode


@dataclass(frozen=True)
class LocalConfig:
    """A local stack's deploy settings; the planner's Target for it comes from target()."""
    localstack_url: str
    endpoint_url: str
    data_dir: Path
    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX
    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    threshold: float = DEFAULT_THRESHOLD
    upload_data: bool = True
    dataset_parts: tuple[str, ...] = DATASET_PARTS
    model_dir: Path | None = None            # the served model: model.tar.gz and baseline.json
    model_data: str | None = None            # s3://... in LocalStack's S3 instead
    train: bool = False                      # a training job instead of a given model (control plane only)
    hyperparameters: Mapping[str, object] = field(default_factory=dict)
    sagemaker: str = planner.SAGEMAKER_ROUTE
    register_endpoint: Callable[[str, str, str], None] | None = None   # (localstack URL, endpoint name, server URL)
    restore_capture: Callable[[Any], Any] | None = None                # (s3 client) -> report

    def target(self) -> planner.Target:
        from scones.deploy import sagemaker as sm

        model_file = None
        training = self.train and not self.model_data and self.sagemaker == planner.SAGEMAKER_API
        if self.model_dir is not None and not self.train and not self.model_data:
            packed = Path(self.model_dir) / "model.tar.gz"
            model_file = packed if packed.is_file() else None
            if self.sagemaker == planner.SAGEMAKER_API and model_file is None:
                raise DeployError(f"{self.model_dir} holds no model.tar.gz for CreateModel to serve")
        baseline = Path(self.model_dir) / "baseline.json" if self.model_dir is not None else None
        register = self.register_endpoint
        route = ((self.endpoint_url, lambda name, url: register(self.localstack_url, name, url))
                 if register is not None else None)
        return planner.Target(
            name="local", region=REGION, account_id=ACCOUNT_ID, prefix=self.prefix, bucket=self.bucket,
            endpoint_name=self.endpoint_name, threshold=self.threshold, data_dir=Path(self.data_dir),
            # a training job reads train/ and test/ from the bucket, as on AWS
            dataset_parts=("train", "test") if training else self.dataset_parts, upload_data=self.upload_data,
            sagemaker=self.sagemaker, model_data=self.model_data, model_file=model_file,
            hyperparameters=dict(self.hyperparameters), training_image=sm.training_image(REGION),
            inference_image=sm.inference_image(REGION), endpoint_route=route,
            # Application Auto Scaling acts on a control plane's endpoint; the endpoint server has none.
            autoscaling=scaling.ScalingOptions() if self.sagemaker == planner.SAGEMAKER_API else None,
            classifier_concurrency=scaling.ScalingOptions().resolved_concurrency(),
            alarm_period_s=monitoring.LOCAL_ALARM_PERIOD_S,
            baseline=baseline if baseline is not None and baseline.is_file() else None,
            restore_capture=self.restore_capture,
        )


@dataclass
class LocalDeployment:
    """What deploy_local_stack made: the stack's outputs, and the details its record keeps beside them."""
    outputs: StackOutputs
    details: dict[str, Any]
    record_path: Path


def _open_local_record(path: Path, config: LocalConfig) -> dict:
    existing = records.read_record(path)
    fresh = records.new_record(target="local", region=REGION, account_id=ACCOUNT_ID, prefix=config.prefix,
                               bucket=config.bucket, endpoint_name=config.endpoint_name)
    if existing is None:
        return fresh
    records.check_resources_listed(existing, path)
    if existing.get("prefix") != config.prefix:
        raise DeployError(f"{path} records a local deploy with prefix {existing.get('prefix')!r}, not "
                          f"{config.prefix!r}: `scones destroy --target local` first")
    return {**fresh, **existing, "outputs": fresh["outputs"]}


def deploy_local_stack(config: LocalConfig, *, state_dir: str | os.PathLike | None = None,
                       progress: Progress | None = None, sleep: Callable[[float], None] | None = None,
                       session: boto3.Session | None = None, timings: executor.Timings | None = None) -> LocalDeployment:
    """Run the local target's plan against the running LocalStack (+ endpoint server) and record it in
    <state>/local/deploy-record.json. What `scones up`, `scones deploy --target local` and compose all call.
    timings: see executor.execute."""
    session = session or local_session(config.localstack_url, config.endpoint_url)
    path = records.local_deploy_record_path(state_dir)
    record = _open_local_record(path, config)
    target = config.target()
    # LocalStack makes a function Active in about a second: poll 10x as often as AWS needs.
    run = resources.Run(session, progress=progress, save=lambda: records.save_record(path, record), sleep=sleep,
                        max_pause_s=0.1)
    made = executor.execute(planner.plan(target), run, record, max_workers=8, timings=timings)
    outputs = planner.outputs_of(target, made)
    record["outputs"] = outputs
    records.save_record(path, record)
    stack_outputs_ = StackOutputs(**outputs, endpoint_urls={"default": config.localstack_url,
                                                            "sagemaker-runtime": config.endpoint_url})
    return LocalDeployment(outputs=stack_outputs_, details=_details(record, target, made), record_path=path)


def _details(record: dict, target: planner.Target, made: executor.Outputs) -> dict[str, Any]:
    """The local stack record's event_runs, monitor, dataset and capture_restored (harness/stack.py's keys)."""
    from scones.deploy import event_runs

    bucket_events = next(iter(resources.entries(record, "bucket-events")), {})
    dataset = made.get("dataset")
    restored = (made.get("capture-restore") or {}).get("report")
    return {
        "event_runs": {"bucket": target.bucket, "notification_enabled_here": bool(bucket_events.get("enabled_here")),
                       "rules": [made_rule for made_rule in (f"{target.prefix}-run-finished", f"{target.prefix}-photo-landed")],
                       "writer_function_arn": made["function/writeResult"]["arn"],
                       "intake_prefix": event_runs.INTAKE_PREFIX, "results_prefix": event_runs.RESULTS_PREFIX},
        "monitor": resources.monitor_resources(record, target.bucket, target.endpoint_name).to_dict(),
        "dataset": dataset,
        "capture_restored": vars(restored) if restored is not None and hasattr(restored, "__dict__") else restored,
        "sagemaker": target.sagemaker,
    }


def destroy_local_stack(*, localstack_url: str, state_dir: str | os.PathLike | None = None,
                        progress: Progress | None = None, session: boto3.Session | None = None) -> list[str]:
    """Delete what the local deploy record lists, newest first, the bucket included (`scones destroy --target local`)."""
    path = records.local_deploy_record_path(state_dir)
    record = records.read_record(path)
    if record is None:
        raise DeployError(f"no local deploy record at {path}: nothing to destroy")
    records.check_resources_listed(record, path)
    session = session or local_session(localstack_url)
    run = resources.Run(session, progress=progress, save=lambda: records.save_record(path, record))
    record["outputs"] = {}
    deleted = executor.destroy(record, run)
    path.unlink()
    return deleted
