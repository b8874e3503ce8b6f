"""The compose `deploy` service: deploy into the compose stack, once, by the one plan every target runs.

The local target's plan (deploy/planner.py via scones.deploy.local.deploy_local_stack, as `scones up` and
`scones deploy --target local` run it): the bucket, the images, the capture restored from the endpoint's spool
archive (the endpoint container spools under the shared /state), the endpoint's registration with LocalStack
(so the Lambdas' sagemaker-runtime calls reach the endpoint container), the functions and state machine, the
event-driven runs, and the drift monitor with its schedule, topic and alarms; then it writes the local stack
record, so that on the host
`scones run test/bicycle/bicycle_s_000030.png` (the host CLI finds the compose record; or evaluate,
monitor, report) works against the containers. The containers share the host's network, so
the URLs in the record are the host's too.

    python -m scones.harness.compose.deploy      # settings from the environment (docker-compose.yml)
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from scones import loopback, settings
from scones.deploy import local as local_target
from scones.deploy.record import MANAGED_BY_COMPOSE, local_record_path, local_stack_record, write_record
from scones.harness import localstack as localstack_manager

BUCKET = settings.COMPOSE_BUCKET
PREFIX = settings.COMPOSE_PREFIX
ENDPOINT_NAME = settings.COMPOSE_ENDPOINT_NAME
THRESHOLD = settings.COMPOSE_THRESHOLD
# The host's paths of the mounted folders, recorded so that host tools (scones monitor reads the
# model's baseline.json) find them; inside the container they are /model and /data.
MODEL_DIR_ON_HOST = settings.COMPOSE_MODEL_DIR
DATA_DIR_ON_HOST = settings.COMPOSE_DATA_DIR
MODEL_DIR = "/model"   # the served model's folder inside the container: model.tar.gz and baseline.json


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def deploy_into_stack(*, state_dir=None, data_dir=None, localstack_port: int, endpoint_port: int,
                      bucket: str, prefix: str, endpoint_name: str, threshold: float,
                      upload_data: bool = True, host_data_dir: str | None = None,
                      host_model_dir: str | None = None, model_dir: str = MODEL_DIR,
                      progress=_progress) -> dict[str, Any]:
    """Deploy into running LocalStack + endpoint containers and write <state>/local/stack.json.

    host_data_dir / host_model_dir: the host's paths of the folders mounted at data_dir and
    /model, written into the record in place of the container's paths.
    """
    from scones.harness.serving.capture import restore_uploaded

    started = time.perf_counter()
    localstack_url = local_target.localstack_url(localstack_port)
    endpoint_url = local_target.endpoint_url(endpoint_port)
    data = settings.data_dir(data_dir)
    state = settings.state_dir(state_dir)
    spool = state / "capture-spool" / endpoint_name
    _report_lambda_sandbox(localstack_url, progress)
    config = local_target.LocalConfig(
        localstack_url=localstack_url, endpoint_url=endpoint_url, data_dir=data, bucket=bucket, prefix=prefix,
        endpoint_name=endpoint_name, threshold=threshold, upload_data=upload_data,
        model_dir=Path(model_dir) if Path(model_dir).is_dir() else None,
        register_endpoint=localstack_manager.register_endpoint,
        restore_capture=lambda s3: restore_uploaded(spool, s3, buckets=[bucket]),
    )
    deployed = local_target.deploy_local_stack(config, state_dir=state, progress=progress)
    record = local_stack_record(
        outputs=deployed.outputs,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        state_dir=state, data_dir=host_data_dir or str(data), prefix=prefix, threshold=threshold,
        managed_by=MANAGED_BY_COMPOSE,
        # No pids: the processes live in containers, and their pids mean nothing on the host.
        localstack={"pid": None, "port": localstack_port, "url": localstack_url},
        endpoint={"pid": None, "port": endpoint_port, "url": endpoint_url, "model_dir": host_model_dir or model_dir},
        **deployed.details,
        up_seconds=round(time.perf_counter() - started, 3),
    )
    write_record(local_record_path(state), record)
    return record


def _report_lambda_sandbox(localstack_url: str, progress) -> None:
    """Say what the Lambda sandbox can enforce inside the LocalStack container (usually less than on
    the host: Docker's default seccomp profile refuses the namespaces bubblewrap needs, and the
    container's cgroup file system is read-only)."""
    try:
        described = loopback.get_json(f"{localstack_url}/_scones/executor").get("sandbox")
    except (OSError, ValueError):
        described = None
    if described:
        progress(f"lambda: {described}")
        if "NO sandbox" in described or "NOT enforced" in described:
            progress("WARNING: inside the LocalStack container, Lambda environments are less isolated than on "
                     "AWS and than with `scones up` on the host (see the line above)")


@click.command()
@click.option("--no-data", is_flag=True, help="Skip uploading the staged images.")
def main(no_data: bool) -> None:
    """Deploy the workflow into the compose stack (settings from the environment)."""
    environ = os.environ
    try:
        record = deploy_into_stack(
            localstack_port=int(environ.get(settings.LOCALSTACK_PORT) or local_target.DEFAULT_LOCALSTACK_PORT),
            endpoint_port=int(environ.get(settings.ENDPOINT_PORT) or local_target.DEFAULT_ENDPOINT_PORT),
            bucket=environ.get(BUCKET) or local_target.DEFAULT_BUCKET,
            prefix=environ.get(PREFIX) or local_target.DEFAULT_PREFIX,
            endpoint_name=environ.get(ENDPOINT_NAME) or local_target.DEFAULT_ENDPOINT_NAME,
            threshold=float(environ.get(THRESHOLD) or local_target.DEFAULT_THRESHOLD),
            upload_data=not no_data,
            host_data_dir=environ.get(DATA_DIR_ON_HOST),
            host_model_dir=environ.get(MODEL_DIR_ON_HOST),
        )
    except Exception as error:  # noqa: BLE001 - one clear line and a non-zero exit for compose
        click.echo(f"compose deploy failed: {type(error).__name__}: {error}", err=True)
        sys.exit(1)
    outputs = record["outputs"]
    click.echo(f"deployed {outputs['state_machine_arn']} in {record['up_seconds']:.1f} s; "
               f"record {local_record_path(record['state_dir'])}")


if __name__ == "__main__":
    main()
