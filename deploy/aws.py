"""`scones deploy --target aws` and `scones destroy`: the refusals, the AWS target's configuration, the record.

What is made is deploy/planner.py's plan for the AWS target, in five steps (bucket and data; six least-privilege
roles; the model: a training job or --model-data; the endpoint with data capture and autoscaling; the workflow,
its event-driven runs and the drift monitor), run by deploy/executor.py, each resource idempotent and recorded
before it is created (deploy/record.py). `--dry-run` prints that plan; `scones destroy` walks the record back.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from scones import contract, settings
from scones.deploy import executor, monitoring, planner, resources, scaling
from scones.deploy import iam as iam_roles
from scones.deploy import record as records
from scones.deploy import sagemaker as sm
from scones.deploy.endpoint_guard import LocalEndpointRefused, refuse_local_endpoints
from scones.deploy.resources import Refusal, bucket_state, ensure_bucket  # noqa: F401 (the refusal and bucket checks' home)
from scones.deploy.waiting import DeployError, Progress

DEFAULT_PREFIX = planner.DEFAULT_PREFIX
DEFAULT_THRESHOLD = contract.THRESHOLD
TRAINERS = ("pytorch", "builtin")
# Credentials the local stack, moto and the AWS docs use; a deploy with them would go nowhere real.
FAKE_SECRETS = {"test", "testing", "foobar", "foobarkey", "foobarsecret", "fake", "mock", "dummy", "localstack", "secret"}
ACCESS_KEY_PATTERN = re.compile(r"(AKIA|ASIA)[A-Z2-7]{16}")
DATASET_PARTS = ("train", "test")   # AWS trains from the bucket: both parts go up
# Every service a deploy or destroy calls; each one's endpoint is checked before the first call.
SERVICES = ("sts", "s3", "iam", "sagemaker", "lambda", "stepfunctions", "logs", "events",
            "application-autoscaling", "cloudwatch", "sns")
# botocore's errors for an endpoint it could not reach or that did not answer (DNS, refused, proxy, TLS, timeouts).
UNREACHABLE_ERRORS = (BotocoreConnectionError, HTTPClientError)
# A plan is a preview: offline it should say so within seconds, not after the default retries and timeouts.
PLAN_PROBE_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2})
UNKNOWN_ACCOUNT = "<account>"


@dataclass
class DeployOptions:
    region: str | None = None
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    endpoint_name: str | None = None          # default f"{prefix}-classifier"
    threshold: float = DEFAULT_THRESHOLD
    model_data: str | None = None             # s3://.../model.tar.gz: skip training
    trainer: str = "pytorch"
    data_dir: str | os.PathLike | None = None
    state_dir: str | os.PathLike | None = None
    profile: str | None = None
    hyperparameters: Mapping[str, object] = field(default_factory=dict)
    training_instance: str | None = None      # default per trainer
    endpoint_instance: str = sm.ENDPOINT_INSTANCE
    training_image: str | None = None
    inference_image: str | None = None
    training_timeout_s: float = sm.TRAINING_TIMEOUT_S
    endpoint_timeout_s: float = sm.ENDPOINT_TIMEOUT_S
    scaling: scaling.ScalingOptions = field(default_factory=scaling.ScalingOptions)
    baseline: str | os.PathLike | None = None   # default: baseline.json from the training job's output
    monitor_schedule: str = monitoring.DEFAULT_SCHEDULE
    drift_alpha: float = monitoring.DEFAULT_ALPHA
    share_below_limit: float = monitoring.DEFAULT_SHARE_BELOW_LIMIT
    alarm_period_s: int = monitoring.DEFAULT_ALARM_PERIOD_S

    def resolved_endpoint_name(self) -> str:
        return self.endpoint_name or f"{self.prefix}-classifier"

    def resolved_training_image(self, region: str) -> str:
        if self.training_image:
            return self.training_image
        return sm.builtin_image(region) if self.trainer == "builtin" else sm.training_image(region)

    def resolved_inference_image(self, region: str) -> str:
        if self.inference_image:
            return self.inference_image
        return sm.builtin_image(region) if self.trainer == "builtin" else sm.inference_image(region)

    def resolved_training_instance(self) -> str:
        if self.training_instance:
            return self.training_instance
        return sm.BUILTIN_TRAINING_INSTANCE if self.trainer == "builtin" else sm.TRAINING_INSTANCE


@dataclass(frozen=True)
class Context:
    """Who and where: settled before anything is created."""

    session: boto3.Session
    region: str
    account_id: str            # UNKNOWN_ACCOUNT in a plan made while AWS could not be reached
    partition: str
    bucket: str


# --- refusals ---------------------------------------------------------------------------------

def looks_fake(access_key: str, secret_key: str) -> str | None:
    """Why these credentials look like the local fakes, or None if they look like real AWS ones."""
    if access_key.lower() in FAKE_SECRETS or (secret_key or "").lower() in FAKE_SECRETS:
        return f"access key {access_key!r} is one of the local fakes"
    if "EXAMPLE" in access_key.upper() or "EXAMPLEKEY" in (secret_key or "").upper():
        return f"access key {access_key!r} is the AWS documentation example"
    if not ACCESS_KEY_PATTERN.fullmatch(access_key):
        return f"access key {access_key!r} is not shaped like an AWS key (AKIA/ASIA + 16 characters)"
    return None


def check_endpoints(session: boto3.Session, region: str) -> None:
    """Refuse when any client of this session would reach a local endpoint instead of AWS.

    botocore itself resolves the endpoint each client will use (AWS_ENDPOINT_URL and
    AWS_ENDPOINT_URL_<SERVICE>, the profile's endpoint_url and its `services` section, and
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS), so the guard judges what the deploy would really call.
    """
    try:
        refuse_local_endpoints(session, region, SERVICES, what="this session's AWS calls")
    except LocalEndpointRefused as error:
        raise Refusal(f"{error}, to deploy to AWS") from None


def check_credentials(session: boto3.Session) -> None:
    credentials = session.get_credentials()
    if credentials is None:
        raise Refusal(
            "no AWS credentials found: set AWS_PROFILE (or --profile) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run `aws configure` / `aws sso login`"
        )
    frozen = credentials.get_frozen_credentials()
    reason = looks_fake(frozen.access_key or "", frozen.secret_key or "")
    if reason:
        raise Refusal(f"refusing to deploy to AWS with local fake credentials: {reason}")


def resolve_region(session: boto3.Session, explicit: str | None) -> str:
    region = explicit or session.region_name
    if not region:
        raise Refusal("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a region in your profile")
    return region


def caller_account(session: boto3.Session, region: str, config: Config | None = None) -> str:
    try:
        return session.client("sts", region_name=region, config=config).get_caller_identity()["Account"]
    except ClientError as error:
        raise Refusal(f"AWS rejected these credentials ({error.response['Error'].get('Message', error)})") from error


def default_bucket(prefix: str, region: str, account_id: str) -> str:
    return f"{prefix}-data-{region}-{account_id}".lower()


def settle_context(session: boto3.Session, options: DeployOptions, account: Callable[[str], str] | None = None) -> Context:
    check_credentials(session)
    region = resolve_region(session, options.region)
    if session.region_name and session.region_name != region:
        # Every client comes from the session; one region for all of them keeps the deploy in one place.
        raise Refusal(f"region {region} was asked for, but the session is for {session.region_name}: set one region")
    check_endpoints(session, region)
    account_id = (account or (lambda region_name: caller_account(session, region_name)))(region)
    bucket = options.bucket or default_bucket(options.prefix, region, account_id)
    return Context(session, region, account_id, iam_roles.partition_for(region), bucket)


def make_session(options_or_profile: DeployOptions | str | None = None, region: str | None = None) -> boto3.Session:
    profile = options_or_profile.profile if isinstance(options_or_profile, DeployOptions) else options_or_profile
    if isinstance(options_or_profile, DeployOptions):
        region = region or options_or_profile.region
    return boto3.Session(profile_name=profile, region_name=region)



# --- the plan, the deploy, the destroy: one list of resources (deploy/planner.py) run by deploy/executor.py ----------

def target_for(context: Context, options: DeployOptions) -> planner.Target:
    """The AWS target: every resource, roles made here, a training job unless --model-data."""
    return planner.Target(
        name="aws", region=context.region, account_id=context.account_id, prefix=options.prefix,
        bucket=context.bucket, endpoint_name=options.resolved_endpoint_name(), threshold=options.threshold,
        data_dir=settings.data_dir(options.data_dir), dataset_parts=DATASET_PARTS,
        sagemaker=planner.SAGEMAKER_API, model_data=options.model_data, trainer=options.trainer,
        hyperparameters=dict(options.hyperparameters), training_image=options.resolved_training_image(context.region),
        inference_image=options.resolved_inference_image(context.region),
        training_instance=options.resolved_training_instance(), endpoint_instance=options.endpoint_instance,
        training_timeout_s=options.training_timeout_s, endpoint_timeout_s=options.endpoint_timeout_s,
        autoscaling=options.scaling, classifier_concurrency=options.scaling.resolved_concurrency(),
        monitor_schedule=options.monitor_schedule, drift_alpha=options.drift_alpha,
        share_below_limit=options.share_below_limit, alarm_period_s=options.alarm_period_s,
        baseline=Path(options.baseline) if options.baseline else None,
    )


def _checked(options: DeployOptions) -> None:
    if options.trainer not in TRAINERS:
        raise Refusal(f"unknown trainer {options.trainer!r}: expected one of {', '.join(TRAINERS)}")
    if options.model_data and not options.model_data.startswith("s3://"):
        raise Refusal(f"--model-data must be an s3:// URI of a model.tar.gz, not {options.model_data!r}")
    options.scaling.check()


def _open_record(path: Path, context: Context, options: DeployOptions) -> dict:
    existing = records.read_record(path)
    record = records.new_record(target="aws", region=context.region, account_id=context.account_id,
                                prefix=options.prefix, bucket=context.bucket,
                                endpoint_name=options.resolved_endpoint_name())
    if existing is None:
        return record
    records.check_resources_listed(existing, path)
    for key, wanted in (("region", context.region), ("account_id", context.account_id), ("prefix", options.prefix)):
        if existing.get(key) != wanted:
            raise Refusal(
                f"{path} records a deploy with {key} {existing.get(key)!r}, not {wanted!r}: "
                f"run `scones destroy` for it first, or use another state directory"
            )
    recorded_bucket = next((e["name"] for e in existing["resources"] if e["kind"] == "bucket"), context.bucket)
    if recorded_bucket != context.bucket:
        raise Refusal(f"{path} records bucket {recorded_bucket}, not {context.bucket}: pass --bucket {recorded_bucket} or destroy first")
    return {**record, **existing, "outputs": {**record["outputs"], **(existing.get("outputs") or {}),
                                              "endpoint_name": options.resolved_endpoint_name()}}


def plan(options: DeployOptions, session: boto3.Session | None = None) -> list[str]:
    """What a deploy would do: three lines of where, then the very resources deploy() runs, one a line.
    Creates nothing (reads STS, S3 and the record).

    Offline (AWS unreachable) the plan is still made, from the options and the record alone,
    with the account shown as unknown and the bucket not checked.
    """
    session = session or make_session(options)
    unreachable: list[str] = []

    def account_or_unknown(region: str) -> str:
        try:
            return caller_account(session, region, PLAN_PROBE_CONFIG)
        except UNREACHABLE_ERRORS as error:
            unreachable.append(str(error))
            return UNKNOWN_ACCOUNT

    context = settle_context(session, options, account=account_or_unknown)
    _checked(options)
    path = records.aws_record_path(options.state_dir)
    existing = records.read_record(path)
    if unreachable:
        bucket_action = "create or reuse (not checked: AWS unreachable)"
    else:
        state = bucket_state(session.client("s3", region_name=context.region, config=PLAN_PROBE_CONFIG),
                             context.bucket, context.account_id)
        bucket_action = "reuse" if state == "ours" else "create"
    account = (f"account unknown (AWS unreachable: {unreachable[0]}; the plan below is not checked against AWS)"
               if unreachable else f"account {context.account_id}")
    resuming = f" (resuming; steps done: {', '.join(existing.get('steps_done') or []) or 'none'})" if existing else " (new)"
    return [
        f"{account}, region {context.region}, prefix {options.prefix}",
        f"record {path}{resuming}",
        f"bucket s3://{context.bucket}: {bucket_action}",
        *planner.describe(planner.plan(target_for(context, options))),
    ]


def deploy(
    options: DeployOptions,
    *,
    session: boto3.Session | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict:
    """Run the plan (resuming from the record) and return the final record."""
    _checked(options)
    session = session or make_session(options)
    context = settle_context(session, options)
    bucket_state(session.client("s3", region_name=context.region), context.bucket, context.account_id)  # refuse early
    path = records.aws_record_path(options.state_dir)
    record = _open_record(path, context, options)
    record["profile"] = options.profile
    record["threshold"] = options.threshold
    target = target_for(context, options)
    run = resources.Run(session, region=context.region, progress=progress, sleep=sleep,
                        save=lambda: records.save_record(path, record))
    made = executor.execute(planner.plan(target), run, record)
    record["outputs"].update(planner.outputs_of(target, made))
    records.save_record(path, record)
    run.say(f"deployed: state machine {record['outputs']['state_machine_arn']}; record {path}")
    return record


def destroy(
    *,
    state_dir: str | os.PathLike | None = None,
    delete_bucket: bool = False,
    session: boto3.Session | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Delete exactly what the record lists, newest first; returns what was deleted. The bucket only with delete_bucket."""
    path = records.aws_record_path(state_dir)
    record = records.read_record(path)
    if record is None:
        raise DeployError(f"no deploy record at {path}: nothing to destroy")
    records.check_resources_listed(record, path)
    session = session or boto3.Session(region_name=record["region"], profile_name=record.get("profile"))
    check_credentials(session)
    region = record["region"]
    check_endpoints(session, region)
    account_id = caller_account(session, region)
    if account_id != record["account_id"]:
        raise Refusal(f"these credentials are for account {account_id}, but {path} records account {record['account_id']}")
    run = resources.Run(session, region=region, progress=progress, save=lambda: records.save_record(path, record))
    record["outputs"] = {}
    deleted = executor.destroy(record, run, keep=lambda entry: entry["kind"] == "bucket" and not delete_bucket)
    if delete_bucket:
        path.unlink()
    else:
        # Keep a record of the bucket alone, so a later `scones destroy --delete-bucket` can still remove it.
        record["steps_done"] = []
        records.save_record(path, record)
        bucket = next((e["name"] for e in record["resources"] if e["kind"] == "bucket"), None)
        run.say(f"kept bucket {bucket} (pass --delete-bucket to remove it)")
    return deleted
