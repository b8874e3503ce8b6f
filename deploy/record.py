"""Stack records: what a deploy made, the one interface between deploying and everything else.

Every target writes one JSON record, version RECORD_VERSION, whose "outputs" are a StackOutputs:
the local stack (`scones up`, <state>/local/stack.json), the compose stack (the same file under
<state>/compose) and AWS (`scones deploy`, <state>/aws/deploy-record.json, written after every
step: a re-run resumes from it and `scones destroy` deletes exactly what it lists).
scones.harness.targets.load_target reads any of them the same way. Writes are atomic (temp file,
fsync, os.replace), so a kill mid-write never leaves half a record.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scones import contract, settings
from scones.errors import SconesError

RECORD_VERSION = 1
MANAGED_BY_COMPOSE = "docker compose"   # a local record's "managed_by": `docker compose down` stops it, not `scones down`


class RecordError(SconesError, ValueError):
    """A stack record is unreadable, of another version, or lacks outputs; the message names the file."""


@dataclass(frozen=True)
class StackOutputs:
    """Where a deployed workflow lives, the same on every target."""
    region: str
    bucket: str
    state_machine_arn: str
    function_arns: Mapping[str, str]
    endpoint_name: str
    capture_s3_uri: str
    endpoint_urls: Mapping[str, str] = field(default_factory=dict)   # local targets: "default"/service -> URL
    # Event-driven runs (deploy/event_runs.py): photos in, results out; the drift monitor's alarm topic.
    intake_s3_uri: str | None = None
    results_s3_uri: str | None = None
    monitor_topic_arn: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], path: Path, target: str) -> StackOutputs:
        outputs = record.get("outputs") or {}
        missing = [key for key in OUTPUT_KEYS if key not in outputs]
        if missing:
            raise RecordError(f"{path} lacks outputs {', '.join(missing)}: deploy the {target} target again")
        return cls(region=outputs["region"], bucket=outputs["bucket"], state_machine_arn=outputs["state_machine_arn"],
                   function_arns=outputs["function_arns"], endpoint_name=outputs["endpoint_name"],
                   capture_s3_uri=outputs["capture_s3_uri"], endpoint_urls=dict(outputs.get("endpoint_urls") or {}),
                   intake_s3_uri=outputs.get("intake_s3_uri"), results_s3_uri=outputs.get("results_s3_uri"),
                   monitor_topic_arn=outputs.get("monitor_topic_arn"))

    def as_dict(self) -> dict[str, Any]:
        values = {key: getattr(self, key) for key in OUTPUT_KEYS}
        values["function_arns"] = dict(self.function_arns)
        if self.endpoint_urls:
            values["endpoint_urls"] = dict(self.endpoint_urls)
        values.update({key: getattr(self, key) for key in OPTIONAL_OUTPUT_KEYS if getattr(self, key) is not None})
        return values


OUTPUT_KEYS = tuple(item.name for item in fields(StackOutputs) if item.default is MISSING and item.default_factory is MISSING)
OPTIONAL_OUTPUT_KEYS = tuple(item.name for item in fields(StackOutputs) if item.default is None)


def aws_record_path(state_dir: str | os.PathLike | None = None) -> Path:
    return settings.state_dir(state_dir) / "aws" / "deploy-record.json"


def local_deploy_record_path(state_dir: str | os.PathLike | None = None) -> Path:
    """What the plan made on the local stack (`scones up`, `scones deploy --target local`, compose), beside its stack.json."""
    return settings.state_dir(state_dir) / "local" / "deploy-record.json"


def local_record_path(state_dir: str | os.PathLike | None = None) -> Path:
    """Where `scones up` (and, under <state>/compose, the compose stack) records a local stack."""
    return settings.state_dir(state_dir) / "local" / "stack.json"


def local_stack_record(*, outputs: StackOutputs, created: str, state_dir: Path, data_dir: str, prefix: str,
                       threshold: float, localstack: dict[str, Any], endpoint: dict[str, Any],
                       managed_by: str | None = None, **details: Any) -> dict[str, Any]:
    """The record of a local stack, as `scones up` and the compose deploy both write it."""
    record = {
        "version": RECORD_VERSION,
        "target": "local",
        "created": created,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "state_dir": str(state_dir),
        "data_dir": data_dir,
        "prefix": prefix,
        "threshold": threshold,
        "localstack": localstack,
        "endpoint": endpoint,
        "outputs": outputs.as_dict(),
        **details,
    }
    if managed_by:
        record["managed_by"] = managed_by
    return record


def new_record(*, region: str, account_id: str, prefix: str, bucket: str, endpoint_name: str,
               target: str = "aws") -> dict:
    """A deploy record (deploy/executor.py): "resources" lists what was made, oldest first, each
    {"kind", "name", "id", ...what deleting it needs}; "outputs" become a StackOutputs once the workflow exists."""
    return {
        "version": RECORD_VERSION,
        "target": target,
        "region": region,
        "account_id": account_id,
        "prefix": prefix,
        "steps_done": [],
        "resources": [],
        "outputs": {
            "region": region,
            "bucket": bucket,
            "state_machine_arn": None,
            "function_arns": {},
            "endpoint_name": endpoint_name,
            "capture_s3_uri": f"s3://{bucket}/{contract.CAPTURE_PREFIX}",
        },
    }


def check_resources_listed(record: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse a deploy record from before resources were a list (one entry per resource, in the order made)."""
    if not isinstance(record.get("resources"), list):
        raise RecordError(f"deploy record {path} lists its resources by kind, as scones did before deploys became "
                          f"one plan; destroy it with the scones that wrote it, or remove it and delete its "
                          f"resources by hand")


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record at path (None: there is none), checked to be JSON of this version."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise RecordError(f"stack record {path} is not valid JSON ({error}); remove it and deploy again") from error
    if not isinstance(record, dict):
        raise RecordError(f"stack record {path} holds {type(record).__name__}, not a record; fix or remove it")
    if record.get("version", RECORD_VERSION) != RECORD_VERSION:   # records from before the field were version 1
        raise RecordError(f"stack record {path} has version {record.get('version')!r}, expected {RECORD_VERSION}")
    return record


def write_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write atomically and durably: a reader never sees half a record, even after a kill or a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write the AWS deploy record, stamped with when."""
    record["updated_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_record(path, record)


def mark_step(record: dict, step: str) -> None:
    if step not in record["steps_done"]:
        record["steps_done"].append(step)
