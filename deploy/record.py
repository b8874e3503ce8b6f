"""The AWS deploy record: what `scones deploy` created, written after every step.

It lives at <state>/aws/deploy-record.json. A re-run reads it to resume (a recorded training
job is waited for, never started twice); `scones destroy` deletes exactly what it lists; and
scones.harness.targets.load_target("aws") reads its "outputs" (the same keys the local stack writes).
Writes are atomic (temp file + os.replace), so an interrupted deploy never leaves half a record.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from scones import settings

RECORD_VERSION = 1
OUTPUT_KEYS = ("region", "bucket", "state_machine_arn", "function_arns", "endpoint_name", "capture_s3_uri")


def record_path(state_dir: str | os.PathLike | None = None) -> Path:
    return settings.state_dir(state_dir) / "aws" / "deploy-record.json"


def new_record(*, region: str, account_id: str, prefix: str, bucket: str, endpoint_name: str) -> dict:
    return {
        "version": RECORD_VERSION,
        "target": "aws",
        "region": region,
        "account_id": account_id,
        "prefix": prefix,
        "steps_done": [],
        "resources": {
            "bucket": {"name": bucket, "created": False},
            "roles": {},                 # kind -> {"name", "arn"}
            "training_job": None,        # {"name", "arn", "status", "model_data"}
            "source_s3_uri": None,
            "model_data": None,
            "models": [],                # [{"name", "arn"}], every model this deploy created
            "endpoint_configs": [],      # [{"name", "arn"}]
            "endpoint": None,            # {"name", "arn", "config"}
            "functions": {},             # "serializeImageData" -> ARN
            "state_machine_arn": None,
            "log_groups": [],
        },
        "outputs": {
            "region": region,
            "bucket": bucket,
            "state_machine_arn": None,
            "function_arns": {},
            "endpoint_name": endpoint_name,
            "capture_s3_uri": f"s3://{bucket}/data_capture",
        },
    }


def load_record(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"deploy record {path} is not valid JSON ({error}); fix or remove it") from error
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"deploy record {path} has version {record.get('version')!r}, expected {RECORD_VERSION}")
    return record


def save_record(path: str | os.PathLike, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record["updated_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".deploy-record-", suffix=".json")
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


def mark_step(record: dict, step: str) -> None:
    if step not in record["steps_done"]:
        record["steps_done"].append(step)
