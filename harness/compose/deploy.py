"""The compose `deploy` service: deploy the workflow and the images into the compose stack, once.

The same calls `scones up` makes after its processes are up (harness/stack.py): the bucket,
the endpoint's registration with LocalStack (so the Lambdas' sagemaker-runtime calls reach the
endpoint container), scones.deploy.workflow.deploy_workflow with the local target's roles, and
upload_dataset; then it writes the local stack record, so that on the host
`scones run test/bicycle/bicycle_s_000030.png` (the host CLI finds the compose record; or evaluate,
monitor, report) works against the containers. The containers share the host's network, so
the URLs in the record are the host's too.

    python -m scones.harness.compose.deploy      # settings from the environment (docker-compose.yml)
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from datetime import datetime, timezone
from typing import Any

import click

from scones.deploy import local as local_target
from scones import settings
from scones.harness.targets import local_record_path, write_record

BUCKET = "SCONES_BUCKET"
PREFIX = "SCONES_PREFIX"
ENDPOINT_NAME = "SCONES_ENDPOINT_NAME"
THRESHOLD = "SCONES_THRESHOLD"
# The host's paths of the mounted folders, recorded so that host tools (scones monitor reads the
# model's baseline.json) find them; inside the container they are /model and /data.
MODEL_DIR_ON_HOST = "SCONES_COMPOSE_MODEL_DIR"
DATA_DIR_ON_HOST = "SCONES_COMPOSE_DATA_DIR"
MANAGED_BY = "docker compose"


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def deploy_into_stack(*, state_dir=None, data_dir=None, localstack_port: int, endpoint_port: int,
                      bucket: str, prefix: str, endpoint_name: str, threshold: float,
                      upload_data: bool = True, host_data_dir: str | None = None,
                      host_model_dir: str | None = None, progress=_progress) -> dict[str, Any]:
    """Deploy into running LocalStack + endpoint containers and write <state>/local/stack.json.

    host_data_dir / host_model_dir: the host's paths of the folders mounted at data_dir and
    /model, written into the record in place of the container's paths.
    """
    from scones.deploy.workflow import deploy_workflow, upload_dataset

    started = time.perf_counter()
    localstack_url = local_target.localstack_url(localstack_port)
    endpoint_url = local_target.endpoint_url(endpoint_port)
    data = settings.data_dir(data_dir)
    session = local_target.local_session(localstack_url, endpoint_url)
    local_target.ensure_bucket(session, bucket)
    local_target.register_endpoint(localstack_url, endpoint_name, endpoint_url)
    _report_lambda_sandbox(localstack_url, progress)
    resources = deploy_workflow(
        session,
        prefix=prefix,
        endpoint_name=endpoint_name,
        threshold=threshold,
        lambda_role_arn=local_target.LAMBDA_ROLE_ARN,
        states_role_arn=local_target.STATES_ROLE_ARN,
        progress=progress,
    )
    uploaded = upload_dataset(session, bucket, data, progress=progress) if upload_data else None
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    state = settings.state_dir(state_dir)
    record = {
        "version": 1,
        "target": "local",
        "managed_by": MANAGED_BY,     # `docker compose down` stops it, not `scones down`
        "created": now,
        "updated": now,
        "state_dir": str(state),
        "data_dir": host_data_dir or str(data),
        "prefix": prefix,
        "threshold": threshold,
        # No pids: the processes live in containers, and their pids mean nothing on the host.
        "localstack": {"pid": None, "port": localstack_port, "url": localstack_url},
        "endpoint": {"pid": None, "port": endpoint_port, "url": endpoint_url,
                     "model_dir": host_model_dir or "/model"},
        "outputs": {
            "region": local_target.REGION,
            "bucket": bucket,
            "state_machine_arn": resources.state_machine_arn,
            "function_arns": dict(resources.function_arns),
            "endpoint_name": endpoint_name,
            "capture_s3_uri": local_target.capture_s3_uri(bucket),
            "endpoint_urls": {"default": localstack_url, "sagemaker-runtime": endpoint_url},
        },
        "dataset": {"uploaded": uploaded.uploaded, "skipped": uploaded.skipped} if uploaded else None,
        "up_seconds": round(time.perf_counter() - started, 3),
    }
    write_record(local_record_path(state), record)
    return record


def _report_lambda_sandbox(localstack_url: str, progress) -> None:
    """Say what the Lambda sandbox can enforce inside the LocalStack container (usually less than on
    the host: Docker's default seccomp profile refuses the namespaces bubblewrap needs, and the
    container's cgroup file system is read-only)."""
    try:
        with urllib.request.urlopen(f"{localstack_url}/_scones/executor", timeout=5) as reply:
            described = json.loads(reply.read()).get("sandbox")
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
