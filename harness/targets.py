"""Where a deployed Scones workflow lives: the local stack or real AWS, read from its record.

Both records carry the same outputs (scones.deploy.record.StackOutputs), so everything
downstream (executions, evaluation, tests) treats the two targets alike. The local record's
endpoint_urls let its session reach LocalStack and the endpoint server.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session

from scones import loopback, settings
from scones.deploy import local as local_target
from scones.deploy.endpoint_guard import LocalEndpointRefused, refuse_local_endpoints
from scones.deploy.record import RecordError, StackOutputs, aws_record_path, local_record_path, read_record
from scones.errors import SconesError

TARGETS = ("local", "aws")


class TargetNotFound(SconesError, RuntimeError):
    """The record of a target is missing or incomplete."""


class TargetRefused(TargetNotFound):
    """The AWS target's record is there, but this session's calls would reach a local endpoint, not AWS."""


@dataclass
class Target:
    name: str
    session: boto3.Session
    region: str
    bucket: str
    state_machine_arn: str
    endpoint_name: str
    capture_s3_uri: str
    function_arns: dict[str, str]
    record_path: Path
    record: dict[str, Any] = field(repr=False, default_factory=dict)

    def client(self, service_name: str):
        return self.session.client(service_name, region_name=self.region)


# docker-compose.yml keeps the compose stack's state in ./.scones/compose by default: <state dir>/compose.
COMPOSE_STATE_FOLDER = "compose"


def compose_record_path(state_dir: str | os.PathLike | None = None) -> Path:
    """Where the compose stack started beside this state dir records itself (harness/compose/deploy.py)."""
    return settings.state_dir(state_dir) / COMPOSE_STATE_FOLDER / "local" / "stack.json"


def find_local_record(state_dir: str | os.PathLike | None = None) -> Path:
    """The local stack to use: this state dir's own (`scones up`), else the compose stack beside it, so that
    `scones status`, `scones run` and the pytest plugin find a compose stack without SCONES_STATE_DIR."""
    own = local_record_path(state_dir)
    if own.exists():
        return own
    compose = compose_record_path(state_dir)
    return compose if compose.exists() else own


def loopback_botocore_session() -> botocore.session.Session:
    """A botocore session whose clients never use a proxy: every client of the local target talks to this
    machine (scones.loopback says why the environment's HTTP_PROXY must not apply)."""
    session = botocore.session.get_session()
    session.set_default_client_config(loopback.CLIENT_CONFIG)
    return session


def record_path(name: str, state_dir: str | os.PathLike | None = None) -> Path:
    if name == "local":
        return find_local_record(state_dir)
    if name == "aws":
        return aws_record_path(state_dir)
    raise ValueError(f"unknown target {name!r}: expected one of {', '.join(TARGETS)}")


def load_target(name: str = "local", state_dir: str | os.PathLike | None = None) -> Target:
    path = record_path(name, state_dir)
    try:
        record = read_record(path)
        if record is None:
            hint = "scones up" if name == "local" else "scones deploy --target aws"
            raise TargetNotFound(f"no {name} stack recorded at {path}: run `{hint}` first")
        outputs = StackOutputs.from_record(record, path, name)
    except RecordError as error:
        raise TargetNotFound(str(error)) from None
    if name == "local":
        urls = dict(outputs.endpoint_urls)
        session: boto3.Session = local_target.EndpointSession(
            default_endpoint_url=urls.pop("default", None),
            service_endpoint_urls=urls,
            aws_access_key_id=local_target.ACCESS_KEY_ID,
            aws_secret_access_key=local_target.SECRET_ACCESS_KEY,
            region_name=outputs.region,
            botocore_session=loopback_botocore_session(),
        )
    else:
        session = boto3.Session(region_name=outputs.region, profile_name=record.get("profile"))
        if not settings.allows_local_aws_endpoints():
            try:
                refuse_local_endpoints(session, outputs.region, what=f"the calls of the aws target recorded at {path}")
            except LocalEndpointRefused as error:
                raise TargetRefused(f"{error} (or set {settings.ALLOW_LOCAL_AWS_ENDPOINTS}=1 to use an emulator "
                                    f"as AWS on purpose)") from None
    return Target(
        name=name,
        session=session,
        region=outputs.region,
        bucket=outputs.bucket,
        state_machine_arn=outputs.state_machine_arn,
        endpoint_name=outputs.endpoint_name,
        capture_s3_uri=outputs.capture_s3_uri,
        function_arns=dict(outputs.function_arns),
        record_path=path,
        record=record,
    )
