"""`scones deploy --target aws` and `scones destroy`: the five steps, the refusals, the record.

Steps, each idempotent and recorded as soon as it is done (deploy/record.py):
  1. bucket   S3 bucket created or reused (owner checked), staged dataset uploaded (unchanged objects skipped)
  2. roles    SageMaker, Lambda and Step Functions roles, least privilege (deploy/iam.py)
  3. model    SageMaker training job running local_model/train.py, or --model-data
  4. endpoint model + endpoint config with 100% data capture + endpoint, waited to InService, and its
              target-tracking autoscaling (deploy/scaling.py)
  5. workflow the three Lambdas and the state machine (deploy/workflow.py, shared with local), and the
              event-driven runs: incoming/ photos start it, results/ receive each run's result (deploy/event_runs.py),
              classifyImage's reserved concurrency, and the scheduled drift monitor with its alarms (deploy/monitoring.py)
"""
from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from scones import contract, settings
from scones.deploy import aws_operations, event_runs, monitoring, scaling
from scones.deploy import iam as iam_roles
from scones.deploy import record as records
from scones.deploy import sagemaker as sm
from scones.deploy.endpoint_guard import is_local_endpoint
from scones.deploy.waiting import DeployError, Progress
from scones.deploy.workflow import (
    WorkflowResources,
    dataset_files,
    deploy_workflow,
    destroy_workflow,
    function_name,
    state_machine_name,
    upload_dataset,
)

DEFAULT_PREFIX = "scones"
DEFAULT_THRESHOLD = contract.THRESHOLD
FUNCTION_SHORT_NAMES = ("serializeImageData", "classifyImage", "filterInferences")
TRAINERS = ("pytorch", "builtin")
# Credentials the local stack, moto and the AWS docs use; a deploy with them would go nowhere real.
FAKE_SECRETS = {"test", "testing", "foobar", "foobarkey", "foobarsecret", "fake", "mock", "dummy", "localstack", "secret"}
ACCESS_KEY_PATTERN = re.compile(r"(AKIA|ASIA)[A-Z2-7]{16}")
STEPS = ("bucket", "roles", "model", "endpoint", "workflow")
# Every service a deploy or destroy calls; each one's endpoint is checked before the first call.
SERVICES = ("sts", "s3", "iam", "sagemaker", "lambda", "stepfunctions", "logs", "events",
            "application-autoscaling", "cloudwatch", "sns")
# botocore's errors for an endpoint it could not reach or that did not answer (DNS, refused, proxy, TLS, timeouts).
UNREACHABLE_ERRORS = (BotocoreConnectionError, HTTPClientError)
# A plan is a preview: offline it should say so within seconds, not after the default retries and timeouts.
PLAN_PROBE_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2})
UNKNOWN_ACCOUNT = "<account>"


class Refusal(DeployError):
    """The deploy will not start: the message says what to fix."""


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
    local = {service: url for service in SERVICES
             if is_local_endpoint(url := session.client(service, region_name=region).meta.endpoint_url)}
    if local:
        where = ", ".join(f"{service} -> {url}" for service, url in local.items())
        profile = session.profile_name or "default"
        raise Refusal(
            f"this session's AWS calls would go to a local endpoint ({where}), not to AWS: it comes from "
            f"AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> or from endpoint_url in profile {profile!r} (or its "
            f"services section) of the AWS config file; unset it, or set AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true, "
            f"to deploy to AWS"
        )


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


def bucket_state(s3, bucket: str, account_id: str) -> str:
    """'ours' (exists, this account owns it), 'absent', or a Refusal for someone else's bucket."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id)
        return "ours"
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.response.get("Error", {}).get("Code")
        if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
            return "absent"
        if status == 403 or code in ("403", "AccessDenied", "Forbidden"):
            raise Refusal(
                f"bucket {bucket} belongs to another account (or account {account_id} may not read it); "
                f"choose another name with --bucket"
            ) from error
        raise


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


# --- step 1: bucket -----------------------------------------------------------------------------

def ensure_bucket(s3, bucket: str, region: str, account_id: str, progress: Progress | None = None) -> bool:
    """Create the bucket unless this account already owns it. Returns whether it was created now."""
    if bucket_state(s3, bucket, account_id) == "ours":
        if progress:
            progress(f"bucket {bucket}: reused")
        return False
    arguments: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**arguments)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code == "BucketAlreadyOwnedByYou":
            return False
        if code == "BucketAlreadyExists":
            raise Refusal(f"bucket {bucket} belongs to another account; choose another name with --bucket") from error
        raise
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True},
    )
    if progress:
        progress(f"bucket {bucket}: created")
    return True


# --- the plan and the deploy ---------------------------------------------------------------------

def _scope(context: Context, options: DeployOptions) -> iam_roles.Scope:
    training_image = options.resolved_training_image(context.region)
    inference_image = options.resolved_inference_image(context.region)
    repositories = tuple(sorted({sm.image_repository(training_image), sm.image_repository(inference_image)}))
    return iam_roles.Scope(
        partition=context.partition,
        region=context.region,
        account_id=context.account_id,
        prefix=options.prefix,
        bucket=context.bucket,
        endpoint_name=options.resolved_endpoint_name(),
        function_names=tuple(function_name(options.prefix, short) for short in FUNCTION_SHORT_NAMES),
        image_repositories=repositories,
    )


def _open_record(path: Path, context: Context, options: DeployOptions) -> dict:
    existing = records.read_record(path)
    record = records.new_record(
        region=context.region, account_id=context.account_id, prefix=options.prefix,
        bucket=context.bucket, endpoint_name=options.resolved_endpoint_name(),
    )
    if existing is None:
        return record
    for key, wanted in (("region", context.region), ("account_id", context.account_id), ("prefix", options.prefix)):
        if existing.get(key) != wanted:
            raise Refusal(
                f"{path} records a deploy with {key} {existing.get(key)!r}, not {wanted!r}: "
                f"run `scones destroy` for it first, or use another state directory"
            )
    recorded_bucket = existing["resources"]["bucket"]["name"]
    if recorded_bucket != context.bucket:
        raise Refusal(f"{path} records bucket {recorded_bucket}, not {context.bucket}: pass --bucket {recorded_bucket} or destroy first")
    record["resources"].update(existing.get("resources") or {})
    record["steps_done"] = list(existing.get("steps_done") or [])
    if existing.get("outputs"):
        record["outputs"].update(existing["outputs"])
    record["outputs"]["endpoint_name"] = options.resolved_endpoint_name()
    return record


def plan(options: DeployOptions, session: boto3.Session | None = None) -> list[str]:
    """What a deploy would do, in words; creates nothing (reads STS, S3 and the record).

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
    if options.trainer not in TRAINERS:
        raise Refusal(f"unknown trainer {options.trainer!r}: expected one of {', '.join(TRAINERS)}")
    options.scaling.check()
    path = records.aws_record_path(options.state_dir)
    existing = records.read_record(path)
    if unreachable:
        bucket_action = "create or reuse (not checked: AWS unreachable)"
    else:
        state = bucket_state(session.client("s3", region_name=context.region, config=PLAN_PROBE_CONFIG),
                             context.bucket, context.account_id)
        bucket_action = "reuse" if state == "ours" else "create"
    data = settings.data_dir(options.data_dir)
    files = dataset_files(data)
    names = iam_roles.role_names(options.prefix)
    endpoint = options.resolved_endpoint_name()
    account = (f"account unknown (AWS unreachable: {unreachable[0]}; the plan below is not checked against AWS)"
               if unreachable else f"account {context.account_id}")
    lines = [
        f"{account}, region {context.region}, prefix {options.prefix}",
        f"record {path}" + (f" (resuming; steps done: {', '.join(existing.get('steps_done') or []) or 'none'})" if existing else " (new)"),
        f"1. bucket s3://{context.bucket}: {bucket_action}; upload {len(files)} objects from {data} (unchanged ones skipped)",
        f"2. IAM roles {names['sagemaker']}, {names['lambda']}, {names['states']} (inline policies scoped to this deploy)",
    ]
    recorded_job = ((existing or {}).get("resources") or {}).get("training_job")
    if options.model_data:
        lines.append(f"3. model artifact {options.model_data} (no training)")
    elif recorded_job and recorded_job.get("status") not in sm.TRAINING_FAILED and recorded_job.get("trainer", "pytorch") == options.trainer:
        lines.append(f"3. reuse training job {recorded_job['name']} ({recorded_job.get('status')})")
    else:
        image = options.resolved_training_image(context.region)
        what = f"running local_model/{sm.ENTRY_POINT}" if options.trainer == "pytorch" else "image + .lst channels"
        lines.append(f"3. training job ({options.trainer}) on {options.resolved_training_instance()} with {image}, {what}")
    lines += [
        f"4. model + endpoint config (data capture 100% to s3://{context.bucket}/data_capture) + endpoint {endpoint} "
        f"on {options.endpoint_instance} with {options.resolved_inference_image(context.region)}",
        f"5. Lambda functions {', '.join(function_name(options.prefix, s) for s in FUNCTION_SHORT_NAMES)} "
        f"(ENDPOINT_NAME={endpoint}, THRESHOLD={options.threshold}); state machine {state_machine_name(options.prefix)}",
        *event_runs.plan_lines(options.prefix, context.bucket, state_machine_name(options.prefix)),
        *aws_operations.plan_lines(options, context.bucket),
    ]
    return lines


def deploy(
    options: DeployOptions,
    *,
    session: boto3.Session | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Run the five steps (resuming from the record) and return the final record."""
    if options.trainer not in TRAINERS:
        raise Refusal(f"unknown trainer {options.trainer!r}: expected one of {', '.join(TRAINERS)}")
    if options.model_data and not options.model_data.startswith("s3://"):
        raise Refusal(f"--model-data must be an s3:// URI of a model.tar.gz, not {options.model_data!r}")
    options.scaling.check()
    session = session or make_session(options)
    context = settle_context(session, options)
    say = progress or (lambda message: None)
    path = records.aws_record_path(options.state_dir)
    record = _open_record(path, context, options)
    record["profile"] = options.profile
    record["threshold"] = options.threshold
    resources = record["resources"]
    scope = _scope(context, options)

    def save(step: str | None = None) -> None:
        if step:
            records.mark_step(record, step)
        records.save_record(path, record)

    s3 = session.client("s3", region_name=context.region)
    sagemaker = session.client("sagemaker", region_name=context.region)

    say("step 1/5: bucket and dataset")
    created = ensure_bucket(s3, context.bucket, context.region, context.account_id, progress)
    resources["bucket"]["created"] = bool(resources["bucket"].get("created")) or created
    save()
    summary = upload_dataset(session, context.bucket, settings.data_dir(options.data_dir), progress=progress)
    say(f"dataset: {summary.uploaded} uploaded, {summary.skipped} already there")
    save("bucket")

    say("step 2/5: IAM roles")

    def record_role(kind: str, name: str) -> None:
        # Recorded just before CreateRole, so an interrupted step is still destroyable.
        resources["roles"][kind] = {"name": name, "arn": None}
        save()

    resources["roles"] = iam_roles.ensure_roles(session.client("iam", region_name=context.region), scope, progress, on_create=record_role)
    save("roles")

    say("step 3/5: model")
    model_data = _ensure_model_data(sagemaker, s3, context, options, record, save, progress, sleep)
    resources["model_data"] = model_data
    save("model")

    say("step 4/5: endpoint with data capture")
    _ensure_endpoint(sagemaker, context, options, record, save, progress, sleep)
    aws_operations.ensure_autoscaling(session, context, options, record, save, progress)
    save("endpoint")

    say("step 5/5: Lambda functions and state machine")
    resources["functions"] = {short: scope.function_arn(function_name(options.prefix, short)) for short in FUNCTION_SHORT_NAMES}
    resources["state_machine_arn"] = resources.get("state_machine_arn") or (
        f"arn:{context.partition}:states:{context.region}:{context.account_id}:stateMachine:{state_machine_name(options.prefix)}"
    )
    resources["log_groups"] = [f"/aws/lambda/{function_name(options.prefix, s)}" for s in FUNCTION_SHORT_NAMES] + [
        f"/aws/sagemaker/Endpoints/{options.resolved_endpoint_name()}"
    ]
    save()
    workflow = deploy_workflow(
        session,
        prefix=options.prefix,
        endpoint_name=options.resolved_endpoint_name(),
        threshold=options.threshold,
        lambda_role_arn=resources["roles"]["lambda"]["arn"],
        states_role_arn=resources["roles"]["states"]["arn"],
        extra_lambda_env=None,
        progress=progress,
        sleep=sleep,
    )
    resources["functions"] = dict(workflow.function_arns)
    resources["state_machine_arn"] = workflow.state_machine_arn
    record["outputs"].update({
        "region": context.region,
        "bucket": context.bucket,
        "state_machine_arn": workflow.state_machine_arn,
        "function_arns": dict(workflow.function_arns),
        "endpoint_name": options.resolved_endpoint_name(),
        "capture_s3_uri": f"s3://{context.bucket}/data_capture",
    })
    _ensure_event_runs(session, context, options, record, scope, save, progress, sleep)
    aws_operations.ensure_classifier_concurrency(session, context, options, record, save, progress)
    aws_operations.ensure_monitor(session, context, options, record, scope, save, progress, sleep)
    save("workflow")
    say(f"deployed: state machine {workflow.state_machine_arn}; record {path}")
    return record


def _ensure_event_runs(session, context: Context, options: DeployOptions, record: dict, scope: iam_roles.Scope,
                       save, progress, sleep) -> None:
    """The two rules, the writer function and its role, EventBridge's role, the bucket's notifications."""
    resources = record["resources"]
    names = event_runs.EventRunsNames(options.prefix)
    machine_arn = resources["state_machine_arn"]
    policies = {
        "events": (names.events_role, "events.amazonaws.com", iam_roles.events_role_policy(scope, machine_arn)),
        "results": (names.writer_role, "lambda.amazonaws.com", iam_roles.results_writer_policy(
            scope, state_machine_name=state_machine_name(options.prefix), function=names.writer_function,
            results_prefix=event_runs.RESULTS_PREFIX)),
    }
    iam = session.client("iam", region_name=context.region)
    for kind, (name, service, policy) in policies.items():
        def record_role(kind=kind, name=name) -> None:   # before CreateRole, so a killed deploy still destroys it
            resources["roles"][kind] = {"name": name, "arn": None}
            save()
        arn, _ = iam_roles.ensure_role(iam, name=name, trust=iam_roles.trust_policy(service), policy=policy,
                                       tags={"scones:prefix": options.prefix}, progress=progress, before_create=record_role)
        resources["roles"][kind] = {"name": name, "arn": arn}
    log_group = f"/aws/lambda/{names.writer_function}"
    if log_group not in resources["log_groups"]:
        resources["log_groups"].append(log_group)
    save()

    def remember(made: event_runs.EventRunsResources) -> None:
        resources["event_runs"] = made.to_dict()
        save()

    made = event_runs.deploy_event_runs(
        session, prefix=options.prefix, bucket=context.bucket, state_machine_arn=machine_arn,
        events_role_arn=resources["roles"]["events"]["arn"], writer_role_arn=resources["roles"]["results"]["arn"],
        previous=event_runs.EventRunsResources.from_dict(resources.get("event_runs")),
        progress=progress, sleep=sleep, on_change=remember,
    )
    record["outputs"].update({"intake_s3_uri": f"s3://{context.bucket}/{made.intake_prefix}",
                              "results_s3_uri": f"s3://{context.bucket}/{made.results_prefix}"})


def _ensure_model_data(sagemaker, s3, context: Context, options: DeployOptions, record: dict, save, progress, sleep) -> str:
    resources = record["resources"]
    if options.model_data:
        return options.model_data
    job = resources.get("training_job")
    if job and job.get("trainer", "pytorch") != options.trainer:
        if progress:
            progress(f"training job {job['name']} used the {job.get('trainer', 'pytorch')} trainer; starting a {options.trainer} one")
        job = None
    if job and job.get("status") == "Completed" and job.get("model_data"):
        if progress:
            progress(f"training job {job['name']}: Completed earlier, reusing {job['model_data']}")
        return job["model_data"]
    if job:
        status = sagemaker.describe_training_job(TrainingJobName=job["name"])["TrainingJobStatus"]
        if status in sm.TRAINING_FAILED:
            if progress:
                progress(f"training job {job['name']} is {status}; starting a new one")
            job = None
    if not job:
        job_name = f"{options.prefix}-{options.trainer}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"[:63]
        training_plan = sm.TrainingPlan(
            bucket=context.bucket, region=context.region, role_arn=resources["roles"]["sagemaker"]["arn"],
            image=options.resolved_training_image(context.region),
            instance_type=options.resolved_training_instance(), hyperparameters=dict(options.hyperparameters),
        )
        if options.trainer == "builtin":
            samples = sm.upload_builtin_lists(s3, context.bucket, settings.data_dir(options.data_dir), progress)
            arn = sm.start_builtin_training_job(sagemaker, training_plan, job_name=job_name, num_training_samples=samples, progress=progress, sleep=sleep)
        else:
            submit_directory = sm.upload_source(s3, context.bucket, progress)
            resources["source_s3_uri"] = submit_directory
            arn = sm.start_training_job(sagemaker, training_plan, job_name=job_name, submit_directory=submit_directory, progress=progress, sleep=sleep)
        job = {"name": job_name, "arn": arn, "status": "InProgress", "model_data": None, "trainer": options.trainer}
        resources["training_job"] = job
        save()  # recorded before waiting: an interrupted deploy resumes this job, never starts a second
    described = sm.wait_training_job(sagemaker, job["name"], timeout_s=options.training_timeout_s, progress=progress, sleep=sleep)
    job.update(status=described["TrainingJobStatus"], model_data=described["ModelArtifacts"]["S3ModelArtifacts"])
    resources["training_job"] = job
    save()
    return job["model_data"]


def _remember(items: list[dict], name: str, arn: str | None) -> None:
    for item in items:
        if item["name"] == name:
            item["arn"] = arn or item.get("arn")
            return
    items.append({"name": name, "arn": arn})


def _ensure_endpoint(sagemaker, context: Context, options: DeployOptions, record: dict, save, progress, sleep) -> None:
    resources = record["resources"]
    model = sm.model_request(
        prefix=options.prefix,
        image=options.resolved_inference_image(context.region),
        model_data=resources["model_data"], role_arn=resources["roles"]["sagemaker"]["arn"], trainer=options.trainer,
    )
    _remember(resources["models"], model["ModelName"], None)
    save()
    model_arn, _ = sm.ensure_model(sagemaker, model, progress)
    _remember(resources["models"], model["ModelName"], model_arn)
    save()
    config = sm.endpoint_config_request(
        prefix=options.prefix, model_name=model["ModelName"],
        capture_s3_uri=record["outputs"]["capture_s3_uri"], instance_type=options.endpoint_instance,
    )
    _remember(resources["endpoint_configs"], config["EndpointConfigName"], None)
    save()
    config_arn, _ = sm.ensure_endpoint_config(sagemaker, config, progress)
    _remember(resources["endpoint_configs"], config["EndpointConfigName"], config_arn)
    save()
    name = options.resolved_endpoint_name()
    if sm.describe_endpoint_or_none(sagemaker, name) is None:
        # Recorded before creation, so a deploy killed while the endpoint is Creating still destroys it.
        resources["endpoint"] = {"name": name, "arn": None, "config": config["EndpointConfigName"]}
        save()
    endpoint, action = sm.ensure_endpoint(
        sagemaker, name=name, config_name=config["EndpointConfigName"], progress=progress, sleep=sleep,
        timeout_s=options.endpoint_timeout_s,
    )
    resources["endpoint"] = {"name": name, "arn": endpoint["EndpointArn"], "config": config["EndpointConfigName"]}
    if progress:
        progress(f"endpoint {name}: {action}, InService")


# --- destroy ----------------------------------------------------------------------------------------

def destroy(
    *,
    state_dir: str | os.PathLike | None = None,
    delete_bucket: bool = False,
    session: boto3.Session | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Delete exactly what the record lists; returns what was deleted. The bucket only with delete_bucket."""
    path = records.aws_record_path(state_dir)
    record = records.read_record(path)
    if record is None:
        raise DeployError(f"no deploy record at {path}: nothing to destroy")
    session = session or boto3.Session(region_name=record["region"], profile_name=record.get("profile"))
    check_credentials(session)
    region = record["region"]
    check_endpoints(session, region)
    account_id = caller_account(session, region)
    if account_id != record["account_id"]:
        raise Refusal(f"these credentials are for account {account_id}, but {path} records account {record['account_id']}")
    say = progress or (lambda message: None)
    deleted: list[str] = []
    resources = record["resources"]

    def note(what: str) -> None:
        deleted.append(what)
        say(f"deleted {what}")
        records.save_record(path, record)

    deleted += aws_operations.destroy(session, record, say)
    records.save_record(path, record)
    if resources.get("event_runs"):   # first: no photo may start a run of a workflow being deleted
        deleted += event_runs.destroy_event_runs(
            session, event_runs.EventRunsResources.from_dict(resources["event_runs"]), record["prefix"], progress=say)
        resources["event_runs"] = None
        records.save_record(path, record)
    destroy_workflow(session, WorkflowResources(dict(resources.get("functions") or {}), resources.get("state_machine_arn")))
    for arn in (resources.get("functions") or {}).values():
        deleted.append(f"Lambda function {arn}")
    if resources.get("state_machine_arn"):
        deleted.append(f"state machine {resources['state_machine_arn']}")
    resources["functions"], resources["state_machine_arn"] = {}, None
    record["outputs"] = {}
    records.save_record(path, record)

    sagemaker = session.client("sagemaker", region_name=region)
    endpoint = resources.get("endpoint")
    if endpoint:
        sm.delete_quietly(lambda: sagemaker.delete_endpoint(EndpointName=endpoint["name"]))
        resources["endpoint"] = None
        note(f"endpoint {endpoint['name']}")
    while resources.get("endpoint_configs"):
        config = resources["endpoint_configs"][0]
        sm.delete_quietly(functools.partial(sagemaker.delete_endpoint_config, EndpointConfigName=config["name"]))
        resources["endpoint_configs"].pop(0)
        note(f"endpoint config {config['name']}")
    while resources.get("models"):
        model = resources["models"][0]
        sm.delete_quietly(functools.partial(sagemaker.delete_model, ModelName=model["name"]))
        resources["models"].pop(0)
        note(f"model {model['name']}")

    iam = session.client("iam", region_name=region)
    for kind in list(resources.get("roles") or {}):
        role = resources["roles"].pop(kind)
        iam_roles.delete_role(iam, role["name"])
        note(f"IAM role {role['name']}")

    logs = session.client("logs", region_name=region)
    while resources.get("log_groups"):
        group = resources["log_groups"].pop(0)
        try:
            logs.delete_log_group(logGroupName=group)
            note(f"log group {group}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            records.save_record(path, record)

    bucket = resources["bucket"]
    if delete_bucket:
        if not bucket.get("created"):
            raise Refusal(f"bucket {bucket['name']} existed before the deploy; it was left alone (delete it yourself if you mean to)")
        _delete_bucket(session.client("s3", region_name=region), bucket["name"])
        deleted.append(f"bucket {bucket['name']}")
        say(f"deleted bucket {bucket['name']} and its objects")
        path.unlink()
    else:
        # Keep a record of the bucket alone, so a later `scones destroy --delete-bucket` can still remove it.
        record["steps_done"] = []
        records.save_record(path, record)
        say(f"kept bucket {bucket['name']} (pass --delete-bucket to remove it)")
    return deleted


def _delete_bucket(s3, bucket: str) -> None:
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for start in range(0, len(objects), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects[start:start + 1000], "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchBucket":
            raise
