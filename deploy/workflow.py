"""The target-agnostic part of a deploy: the three Lambdas, the state machine, the dataset.

The same code creates the workflow on LocalStack (`scones up`) and on AWS (`scones deploy`):
the boto3 session passed in decides where the calls go. Every function here is
create-or-update and leaves an up-to-date resource untouched, so running it twice changes
nothing the second time.
"""
from __future__ import annotations

import enum
import hashlib
import json
import mimetypes
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import boto3
from botocore.exceptions import ClientError

from scones.deploy.packaging import RUNTIME as DEFAULT_RUNTIME
from scones.deploy.packaging import code_sha256
from scones.deploy.waiting import DeployError, Progress, poll_until, retry_while_role_propagates

DEFAULT_TIMEOUT_S = 30
DEFAULT_MEMORY_MB = 256
FUNCTION_READY_TIMEOUT_S = 300.0
DATASET_PARTS = ("train", "test")
DATASET_LISTS = ("train.lst", "test.lst")


@dataclass
class WorkflowResources:
    function_arns: dict[str, str] = field(default_factory=dict)   # "serializeImageData" -> ARN
    state_machine_arn: str | None = None

    def to_dict(self) -> dict:
        return {"function_arns": dict(self.function_arns), "state_machine_arn": self.state_machine_arn}

    @classmethod
    def from_dict(cls, data: Mapping) -> "WorkflowResources":
        return cls(dict(data.get("function_arns") or {}), data.get("state_machine_arn"))


@dataclass
class UploadSummary:
    uploaded: int
    skipped: int

    @property
    def total(self) -> int:
        return self.uploaded + self.skipped


def function_name(prefix: str, short_name: str) -> str:
    return f"{prefix}-{short_name}"


def state_machine_name(prefix: str) -> str:
    return f"{prefix}-workflow"


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _wait_function_ready(client, name: str, progress: Progress | None, sleep: Callable[[float], None]) -> dict:
    """Wait until the function is Active and its last update Successful (LocalStack and AWS both go Pending first)."""

    def state_of(config: dict) -> str:
        state = config.get("State", "Active")
        update = config.get("LastUpdateStatus", "Successful")
        if state == "Failed" or update == "Failed":
            return "Failed"
        if state == "Active" and update == "Successful":
            return "Ready"
        return f"{state}/{update}"

    return poll_until(
        lambda: client.get_function_configuration(FunctionName=name),
        what=f"Lambda function {name}",
        state_of=state_of,
        done={"Ready"},
        failed={"Failed"},
        reason_of=lambda c: c.get("LastUpdateStatusReason") or c.get("StateReason"),
        timeout_s=FUNCTION_READY_TIMEOUT_S,
        interval_s=1.0,
        progress=progress,
        sleep=sleep,
    )


def ensure_function(
    client,
    *,
    name: str,
    spec,
    zip_bytes: bytes,
    role_arn: str,
    environment: dict[str, str],
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, str]:
    """Create the function, or bring an existing one up to date. Returns (arn, what was done)."""
    wanted = {
        "Role": role_arn,
        "Handler": spec.handler,
        "Runtime": getattr(spec, "runtime", DEFAULT_RUNTIME),
        "Timeout": getattr(spec, "timeout", DEFAULT_TIMEOUT_S),
        "MemorySize": getattr(spec, "memory", DEFAULT_MEMORY_MB),
        "Description": getattr(spec, "description", ""),
        "Environment": {"Variables": environment},
    }
    try:
        current = client.get_function(FunctionName=name)["Configuration"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        current = None

    if current is None:
        if progress:
            progress(f"creating Lambda function {name}")
        created = retry_while_role_propagates(
            lambda: client.create_function(FunctionName=name, Code={"ZipFile": zip_bytes}, Publish=False, **wanted),
            what=f"creating Lambda function {name}", sleep=sleep,
        )
        _wait_function_ready(client, name, progress, sleep)
        return created["FunctionArn"], "created"

    actions = []
    if current.get("CodeSha256") != code_sha256(zip_bytes):
        if progress:
            progress(f"updating code of Lambda function {name}")
        _wait_function_ready(client, name, progress, sleep)
        client.update_function_code(FunctionName=name, ZipFile=zip_bytes)
        actions.append("code")
    current_settings = {
        "Role": current.get("Role"),
        "Handler": current.get("Handler"),
        "Runtime": current.get("Runtime"),
        "Timeout": current.get("Timeout"),
        "MemorySize": current.get("MemorySize"),
        "Description": current.get("Description", ""),
        "Environment": {"Variables": (current.get("Environment") or {}).get("Variables", {})},
    }
    if current_settings != wanted:
        if progress:
            progress(f"updating configuration of Lambda function {name}")
        _wait_function_ready(client, name, progress, sleep)
        retry_while_role_propagates(lambda: client.update_function_configuration(FunctionName=name, **wanted),
                                    what=f"updating Lambda function {name}", sleep=sleep)
        actions.append("configuration")
    if actions:
        _wait_function_ready(client, name, progress, sleep)
        return current["FunctionArn"], "updated " + " and ".join(actions)
    return current["FunctionArn"], "unchanged"


def find_state_machine_arn(client, name: str) -> str | None:
    for page in client.get_paginator("list_state_machines").paginate():
        for machine in page.get("stateMachines", []):
            if machine["name"] == name:
                return machine["stateMachineArn"]
    return None


class _LookItUp(enum.Enum):
    """ensure_state_machine's default: the caller has not looked the ARN up (None means there is none)."""

    TOKEN = enum.auto()


_LOOK_IT_UP = _LookItUp.TOKEN


def ensure_state_machine(
    client, *, name: str, definition: str, role_arn: str, progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep, existing_arn: str | None | _LookItUp = _LOOK_IT_UP,
) -> tuple[str, str]:
    """Create the state machine, or update its definition/role when they differ. Returns (arn, what was done).

    existing_arn: the machine's ARN (None: there is none) when the caller already looked it up.
    """
    arn = find_state_machine_arn(client, name) if existing_arn is _LOOK_IT_UP else existing_arn
    if arn is None:
        if progress:
            progress(f"creating state machine {name}")
        created = retry_while_role_propagates(
            lambda: client.create_state_machine(name=name, definition=definition, roleArn=role_arn, type="STANDARD"),
            what=f"creating state machine {name}", sleep=sleep,
        )
        return created["stateMachineArn"], "created"
    current = client.describe_state_machine(stateMachineArn=arn)
    if json.loads(current["definition"]) == json.loads(definition) and current["roleArn"] == role_arn:
        return arn, "unchanged"
    if progress:
        progress(f"updating state machine {name}")
    retry_while_role_propagates(
        lambda: client.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role_arn),
        what=f"updating state machine {name}", sleep=sleep,
    )
    return arn, "updated"


def deploy_workflow(
    session: boto3.Session,
    *,
    prefix: str,
    endpoint_name: str,
    threshold: float,
    lambda_role_arn: str,
    states_role_arn: str,
    extra_lambda_env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    functions: Iterable | None = None,
    build_zip: Callable[[Any], bytes] | None = None,
    render_definition: Callable[[dict[str, str]], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WorkflowResources:
    """Create or update the three Lambdas and the state machine that chains them.

    functions/build_zip/render_definition default to scones.deploy.packaging and scones.state_machine.render
    (the very artifacts every target runs); tests may pass their own (packaging.FunctionSpec
    instances: their environment_values() give each function's own variables).
    """
    if functions is None or build_zip is None:
        from scones.deploy import packaging

        functions = packaging.FUNCTIONS if functions is None else functions
        build_zip = packaging.build_zip if build_zip is None else build_zip
    if render_definition is None:
        from scones.state_machine import render

        render_definition = render.render_definition

    specs = list(functions)

    def deploy_function(spec, lambda_client) -> str:
        name = function_name(prefix, spec.name)
        arn, action = ensure_function(
            lambda_client,
            name=name,
            spec=spec,
            zip_bytes=build_zip(spec),
            role_arn=lambda_role_arn,
            environment={**spec.environment_values(endpoint_name=endpoint_name, threshold=threshold),
                         **{key: str(value) for key, value in (extra_lambda_env or {}).items()}},
            progress=progress,
            sleep=sleep,
        )
        if progress:
            progress(f"Lambda function {name}: {action}")
        return arn

    # The functions do not depend on each other: create them side by side, each waited for in its
    # own thread. Clients are made here, one per thread, because a boto3 Session is not thread-safe
    # (a client is).
    # The state machine's lookup needs no ARN, so it runs beside them too.
    clients = [session.client("lambda") for _ in specs]
    sfn = session.client("stepfunctions")
    with ThreadPoolExecutor(max_workers=len(specs) + 1, thread_name_prefix="deploy-workflow") as pool:
        looking_up = pool.submit(find_state_machine_arn, sfn, state_machine_name(prefix))
        futures = [pool.submit(deploy_function, spec, client) for spec, client in zip(specs, clients)]
        function_arns = {spec.name: future.result() for spec, future in zip(specs, futures)}
        existing_machine_arn = looking_up.result()

    definition = render_definition(function_arns)
    machine_arn, action = ensure_state_machine(
        sfn,
        name=state_machine_name(prefix),
        definition=definition,
        role_arn=states_role_arn,
        progress=progress,
        sleep=sleep,
        existing_arn=existing_machine_arn,
    )
    if progress:
        progress(f"state machine {state_machine_name(prefix)}: {action}")
    return WorkflowResources(function_arns=function_arns, state_machine_arn=machine_arn)


def destroy_workflow(session: boto3.Session, resources: WorkflowResources, progress: Progress | None = None) -> None:
    """Delete the state machine and the functions listed; ones already gone are skipped."""
    if resources.state_machine_arn:
        sfn = session.client("stepfunctions")
        try:
            sfn.delete_state_machine(stateMachineArn=resources.state_machine_arn)
            if progress:
                progress(f"deleted state machine {resources.state_machine_arn}")
        except ClientError as error:
            if _error_code(error) not in ("StateMachineDoesNotExist", "ResourceNotFound"):
                raise
    lambda_client = session.client("lambda")
    for arn in resources.function_arns.values():
        try:
            lambda_client.delete_function(FunctionName=arn)
            if progress:
                progress(f"deleted Lambda function {arn}")
        except ClientError as error:
            if _error_code(error) != "ResourceNotFoundException":
                raise


def _checked_parts(parts: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(parts)
    unknown = [part for part in chosen if part not in DATASET_PARTS]
    if unknown or not chosen:
        raise ValueError(f"dataset parts must be some of {DATASET_PARTS}, not {chosen}")
    return chosen


def dataset_files(data_dir: str | Path, parts: Iterable[str] = DATASET_PARTS) -> list[tuple[Path, str]]:
    """(local path, S3 key) for every staged image under the chosen parts (train/, test/), plus train.lst/test.lst."""
    parts = _checked_parts(parts)
    root = Path(data_dir)
    if not all((root / part).is_dir() for part in parts):
        needed = " and ".join(f"{part}/" for part in parts)
        raise DeployError(f"{root} is not a staged data directory: it needs {needed} folders (run `scones stage`)")
    files = []
    for part in parts:
        for path in sorted((root / part).rglob("*")):
            if path.is_file():
                files.append((path, path.relative_to(root).as_posix()))
    for name in DATASET_LISTS:
        if (root / name).is_file():
            files.append((root / name, name))
    return files


def _existing_etags(s3, bucket: str, prefixes: Iterable[str]) -> dict[str, str]:
    etags: dict[str, str] = {}
    for prefix in prefixes:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                etags[item["Key"]] = item["ETag"].strip('"')
    return etags


def upload_dataset(
    session: boto3.Session,
    bucket: str,
    data_dir: str | Path,
    progress: Progress | None = None,
    max_workers: int = 8,
    parts: Iterable[str] = DATASET_PARTS,
) -> UploadSummary:
    """Upload the chosen parts (default train/ and test/) and the .lst files to the bucket,
    skipping objects whose MD5 already matches.

    Objects go up with single-part PutObject, so their ETag is their MD5 and the next run can
    compare without downloading anything. AWS training reads train/ from the bucket, so AWS
    uploads both parts; the local stack trains from disk and only needs test/ (`parts=("test",)`).
    """
    parts = _checked_parts(parts)
    files = dataset_files(data_dir, parts)
    s3 = session.client("s3")
    existing = _existing_etags(s3, bucket, [f"{part}/" for part in parts] + list(DATASET_LISTS))
    to_upload = []
    for path, key in files:
        data = path.read_bytes()
        if existing.get(key) != hashlib.md5(data).hexdigest():
            to_upload.append((key, data))
    if progress:
        progress(f"dataset: {len(files) - len(to_upload)} of {len(files)} objects already in s3://{bucket}, uploading {len(to_upload)}")

    def put(item: tuple[str, bytes]) -> None:
        key, data = item
        content_type = mimetypes.guess_type(key)[0] or "text/plain"
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    if to_upload:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max_workers) as pool, tqdm(
            total=len(to_upload), desc=f"upload to s3://{bucket}", unit="obj", disable=progress is None, leave=False
        ) as bar:
            for _ in pool.map(put, to_upload):
                bar.update(1)
    return UploadSummary(uploaded=len(to_upload), skipped=len(files) - len(to_upload))
