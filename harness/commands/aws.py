"""`scones deploy --target aws` and `scones destroy`: one command up, one command down."""
from __future__ import annotations

import json
import time

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
@click.option("--target", type=click.Choice(["aws"]), default="aws", show_default=True,
              help="Where to deploy (the local stack is `scones up`).")
@click.option("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's).")
@click.option("--profile", help="AWS profile to use (default: the standard credential chain).")
@click.option("--bucket", help="S3 bucket for data, model artifacts and data capture (default: <name>-data-<region>-<account>).")
@click.option("--name", "prefix", default=DEFAULT_PREFIX, show_default=True, help="Prefix of every resource name.")
@click.option("--endpoint-name", help="SageMaker endpoint name (default: <name>-classifier).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True, help="Confidence the filter step requires.")
@click.option("--model-data", help="s3://.../model.tar.gz to serve instead of training one.")
@click.option("--trainer", type=click.Choice(TRAINERS), default="pytorch", show_default=True,
              help="pytorch: local_model/train.py in the PyTorch container; builtin: the original's image-classification algorithm.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Staged data directory (default: $SCONES_DATA_DIR, else data_dir in [tool.scones], else <state>/data).")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where the deploy record lives (default: SCONES_STATE_DIR or .scones).")
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

    Every step is idempotent and recorded; re-run to resume after an interruption.
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
@click.option("--target", type=click.Choice(["aws"]), default="aws", show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where the deploy record lives.")
@click.option("--delete-bucket", is_flag=True, help="Also empty and delete the bucket, if the deploy created it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def destroy(target, state_dir, delete_bucket, yes):
    """Delete exactly the AWS resources the deploy record lists (the bucket only with --delete-bucket)."""
    from scones.deploy import aws
    from scones.deploy import record as records

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
