"""Helpers of the end-to-end tests (a module of its own: two conftest modules would clash by name)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from support import CHECKOUT

CLASSES = ("bicycle", "motorcycle")

# The workflow as the history shows it: three Lambda tasks (lambda:invoke integration).
TASK_OK = ["TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskSucceeded", "TaskStateExited"]
TASK_FAILED = ["TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskFailed"]
SUCCEEDED_EVENTS = ["ExecutionStarted", *TASK_OK, *TASK_OK, *TASK_OK, "ExecutionSucceeded"]


def failed_events(failing_task_index: int) -> list[str]:
    """History of an execution whose task number `failing_task_index` (0..2) raised."""
    return ["ExecutionStarted", *TASK_OK * failing_task_index, *TASK_FAILED, "ExecutionFailed"]


def png_bytes(image, tag: str | None = None) -> bytes:
    """PNG bytes of a PIL image; a tag (a PNG text chunk) makes the bytes unique without changing a pixel."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if tag is not None:
        info = PngInfo()
        info.add_text("scones-test", tag)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def capture_records(s3, capture_s3_uri: str, endpoint_name: str, since=None) -> list[dict]:
    """Every data-capture record (every line of every file) under the endpoint's capture prefix.

    `since` (an aware datetime) skips files last written before it.
    """
    bucket, _, prefix = capture_s3_uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix.rstrip('/')}/{endpoint_name}/" if prefix else f"{endpoint_name}/"
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if since is not None and item["LastModified"] < since:
                continue
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            records.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return records


def scones(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The scones CLI in a process of its own, as a user runs it, with env as its whole environment."""
    return subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=CHECKOUT)
