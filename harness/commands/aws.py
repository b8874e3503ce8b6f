"""`scones deploy` and `scones destroy`: one command up, one command down, on AWS or into the running local stack.

Both targets run the one plan of deploy/planner.py; `--dry-run` prints it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from scones.deploy.aws import DEFAULT_PREFIX, DEFAULT_THRESHOLD, TRAINERS, DeployOptions, Refusal
from scones.deploy.monitoring import DEFAULT_ALPHA, DEFAULT_SCHEDULE, DEFAULT_SHARE_BELOW_LIMIT
from scones.deploy.sagemaker import BUILTIN_TRAINING_INSTANCE, ENDPOINT_INSTANCE, TRAINING_INSTANCE, hyperparameter_value
from scones.deploy.scaling import (
    CONCURRENCY_PER_INSTANCE,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MIN_INSTANCES,
    DEFAULT_TARGET_INVOCATIONS,
    ScalingOptions,
)
from scones.deploy.waiting import DeployError
from scones.harness.commands.options import endpoint_name_option, prefix_option, state_dir_option, target_option, threshold_option


def _progress(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _hyperparameters(values: tuple[str, ...]) -> dict[str, object]:
    parsed: dict[str, object] = {}
    for item in values:
        key, separator, raw = item.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--hyperparameter")
        parsed[key] = hyperparameter_value(raw)
    return parsed


def _fail(error: Exception) -> click.ClickException:
    prefix = "refused" if isinstance(error, Refusal) else "deploy failed"
    return click.ClickException(f"{prefix}: {error}")


@click.command()
@target_option(("aws", "local"), help="aws, or local: the running local stack (`scones up` starts it and runs this same plan).")
@click.option("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's).")
@click.option("--profile", help="AWS profile to use (default: the standard credential chain).")
@click.option("--bucket", help="S3 bucket for data, model artifacts and data capture (default: <prefix>-data-<region>-<account>).")
@prefix_option(DEFAULT_PREFIX, aliases=("--name",))
@endpoint_name_option(None, help="SageMaker endpoint name (default: <prefix>-classifier).")
@threshold_option(DEFAULT_THRESHOLD)
@click.option("--model-data", help="s3://.../model.tar.gz to serve instead of training one.")
@click.option("--trainer", type=click.Choice(TRAINERS), default="pytorch", show_default=True,
              help="pytorch: local_model/train.py in the PyTorch container; builtin: the original's image-classification algorithm.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Staged data directory (default: $SCONES_DATA_DIR, else data_dir in [tool.scones], else <state>/data).")
@state_dir_option()
@click.option("--hyperparameter", "-H", "hyperparameters", multiple=True, metavar="KEY=VALUE", help="Passed to train.py as --KEY VALUE.")
@click.option("--training-instance", help=f"Default {TRAINING_INSTANCE} (pytorch) or {BUILTIN_TRAINING_INSTANCE} (builtin, GPU only).")
@click.option("--endpoint-instance", default=ENDPOINT_INSTANCE, show_default=True)
@click.option("--training-image", help="Override the training image URI from deploy/sagemaker.py's tables.")
@click.option("--inference-image", help="Override the serving image URI from deploy/sagemaker.py's tables.")
@click.option("--min-instances", type=int, default=DEFAULT_MIN_INSTANCES, show_default=True, help="Autoscaling: fewest endpoint instances.")
@click.option("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES, show_default=True, help="Autoscaling: most endpoint instances.")
@click.option("--target-invocations", type=float, default=DEFAULT_TARGET_INVOCATIONS, show_default=True,
              help="Autoscaling target: SageMakerVariantInvocationsPerInstance (per instance per minute).")
@click.option("--classifier-concurrency", type=int, default=None,
              help=f"classifyImage's reserved concurrency (default {CONCURRENCY_PER_INSTANCE} x --max-instances; 0: none).")
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True),
              help="baseline.json for the drift monitor (default: the training job's, from its output.tar.gz).")
@click.option("--monitor-schedule", default=DEFAULT_SCHEDULE, show_default=True, help="EventBridge schedule of the drift monitor.")
@click.option("--drift-alpha", type=float, default=DEFAULT_ALPHA, show_default=True, help="Drift alarm: p-value below this fires it.")
@click.option("--alarm-share-below", type=float, default=DEFAULT_SHARE_BELOW_LIMIT, show_default=True,
              help="Below-threshold alarm: fires when a run's share of answers below --threshold exceeds this.")
@click.option("--dry-run", is_flag=True, help="Print the plan and create nothing.")
def deploy(target, region, profile, bucket, prefix, endpoint_name, threshold, model_data, trainer, data_dir, state_dir,
           hyperparameters, training_instance, endpoint_instance, training_image, inference_image, min_instances,
           max_instances, target_invocations, classifier_concurrency, baseline, monitor_schedule, drift_alpha,
           alarm_share_below, dry_run):
    """Deploy the workflow to real AWS: bucket + data, roles, training job, endpoint with data capture and
    autoscaling, Lambdas, state machine, event-driven runs, and the scheduled drift monitor with its alarms.

    Every step is idempotent and recorded; re-run to resume after an interruption. With --target local, into the
    running local stack: its settings come from the stack record (--model-data and --hyperparameter apply;
    SCONES_LOCAL_SAGEMAKER=route|api|auto says how SageMaker is reached, default auto).
    """
    from scones.deploy import aws

    options = DeployOptions(
        region=region, bucket=bucket, prefix=prefix, endpoint_name=endpoint_name, threshold=threshold,
        model_data=model_data, trainer=trainer, data_dir=data_dir, state_dir=state_dir, profile=profile,
        hyperparameters=_hyperparameters(hyperparameters), training_instance=training_instance,
        endpoint_instance=endpoint_instance, training_image=training_image, inference_image=inference_image,
        scaling=ScalingOptions(min_instances=min_instances, max_instances=max_instances, target_invocations=target_invocations,
                               classifier_concurrency=classifier_concurrency),
        baseline=baseline, monitor_schedule=monitor_schedule, drift_alpha=drift_alpha, share_below_limit=alarm_share_below,
    )
    if target == "local":
        _deploy_local(state_dir, model_data, _hyperparameters(hyperparameters), dry_run)
        return
    try:
        if dry_run:
            click.echo("plan (dry run, nothing created):")
            for line in aws.plan(options):
                click.echo(f"  {line}")
            return
        record = aws.deploy(options, progress=_progress)
    except DeployError as error:
        raise _fail(error) from error
    click.echo(json.dumps(record["outputs"], indent=2, sort_keys=True))


@click.command()
@target_option(("aws", "local"))
@state_dir_option()
@click.option("--delete-bucket", is_flag=True, help="Also empty and delete the bucket, if the deploy created it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def destroy(target, state_dir, delete_bucket, yes):
    """Delete exactly the resources the deploy record lists, newest first (on AWS the bucket only with
    --delete-bucket; on the local stack everything, the bucket included: `scones down` then stops its processes)."""
    from scones.deploy import aws
    from scones.deploy import record as records

    if target == "local":
        _destroy_local(state_dir, yes)
        return
    path = records.aws_record_path(state_dir)
    existing = records.read_record(path)
    if existing is None:
        raise click.ClickException(f"no deploy record at {path}: nothing to destroy")
    if not yes:
        click.confirm(f"Delete the {existing['prefix']} deployment in {existing['account_id']}/{existing['region']}"
                      f"{' including its bucket' if delete_bucket else ''}?", abort=True)
    try:
        deleted = aws.destroy(state_dir=state_dir, delete_bucket=delete_bucket, progress=_progress)
    except DeployError as error:
        raise click.ClickException(f"destroy stopped: {error}") from error
    click.echo(f"deleted {len(deleted)} resources")


# --- the local target -----------------------------------------------------------------------------------

def _local_stack(state_dir) -> tuple[dict, Path]:
    """The running local stack's record, and the state dir its deploy record lives in (compose's too)."""
    from scones.deploy.record import read_record
    from scones.harness.targets import find_local_record

    path = find_local_record(state_dir)
    record = read_record(path)
    if record is None:
        raise click.ClickException(f"no local stack recorded at {path}: `scones up` starts one (or the compose stack)")
    return record, path.parent.parent


def local_config(record: dict, *, model_data: str | None = None, hyperparameters=None, sagemaker: str = "route",
                 state_dir: Path | None = None):
    """The local target's deploy settings from a local stack's record: what `scones up` deployed with."""
    from scones.deploy import local as local_target
    from scones.harness import localstack as localstack_manager
    from scones.harness.serving.capture import restore_uploaded

    endpoint = record.get("endpoint") or {}
    bucket = record["outputs"]["bucket"]
    name = record["outputs"]["endpoint_name"]
    spool = Path(state_dir or record["state_dir"]) / "capture-spool" / name
    model_dir = endpoint.get("model_dir")
    return local_target.LocalConfig(
        localstack_url=record["localstack"]["url"], endpoint_url=endpoint["url"], data_dir=Path(record["data_dir"]),
        bucket=bucket, prefix=record.get("prefix") or local_target.DEFAULT_PREFIX, endpoint_name=name,
        threshold=float(record.get("threshold") or local_target.DEFAULT_THRESHOLD),
        dataset_parts=tuple((record.get("dataset") or {}).get("parts") or local_target.DATASET_PARTS),
        model_dir=Path(model_dir) if model_dir and Path(model_dir).is_dir() else None, model_data=model_data,
        train=bool(hyperparameters) and not model_data, hyperparameters=dict(hyperparameters or {}), sagemaker=sagemaker,
        register_endpoint=localstack_manager.register_endpoint,
        restore_capture=lambda s3: restore_uploaded(spool, s3, buckets=[bucket]),
    )


def _deploy_local(state_dir, model_data, hyperparameters, dry_run: bool) -> None:
    from scones.deploy import local as local_target
    from scones.deploy import planner
    from scones.deploy.record import local_record_path, write_record
    from scones.harness import localstack as localstack_manager

    record, stack_state = _local_stack(state_dir)
    session = local_target.local_session(record["localstack"]["url"])
    try:
        localstack = record["localstack"]["url"]
        mode = local_target.sagemaker_mode(
            session, default="auto", serves_endpoints=lambda: localstack_manager.control_plane_serves_endpoints(localstack))
        config = local_config(record, model_data=model_data, hyperparameters=hyperparameters, sagemaker=mode,
                              state_dir=stack_state)
        if dry_run:
            click.echo(f"plan for the local stack (dry run, nothing created; SageMaker: {mode}):")
            for line in planner.describe(planner.plan(config.target())):
                click.echo(f"  {line}")
            return
        deployed = local_target.deploy_local_stack(config, state_dir=stack_state, progress=_progress, session=session)
    except DeployError as error:
        raise _fail(error) from error
    record.update(outputs=deployed.outputs.as_dict(), **deployed.details)
    write_record(local_record_path(stack_state), record)
    click.echo(json.dumps(record["outputs"], indent=2, sort_keys=True))


def _destroy_local(state_dir, yes: bool) -> None:
    from scones.deploy import local as local_target

    record, stack_state = _local_stack(state_dir)
    if not yes:
        click.confirm(f"Delete everything deployed into the local stack at {record['localstack']['url']}?", abort=True)
    try:
        deleted = local_target.destroy_local_stack(localstack_url=record["localstack"]["url"], state_dir=stack_state,
                                                   progress=_progress)
    except DeployError as error:
        raise click.ClickException(f"destroy stopped: {error}") from error
    click.echo(f"deleted {len(deleted)} resources (`scones down` stops the stack's processes)")
