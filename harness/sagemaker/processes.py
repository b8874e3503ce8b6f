"""The record of the processes the local SageMaker control plane starts (endpoint servers, training jobs).

Each process the control plane starts is written to `<sagemaker dir>/processes/<kind>-<name>-<pid>.json`
before it can do anything, and removed when it ends, so that `scones down` can stop them even when
LocalStack itself was killed, and `scones status` can show them. The sagemaker dir is
`<LocalStack home>/sagemaker` unless $SCONES_SAGEMAKER_DIR names another (LocalStack's environment).

This module runs in both Pythons (LocalStack's and the project's), so it imports nothing but the
standard library.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from scones import settings
from scones.polling import poll_condition

SAGEMAKER_DIR_ENV = settings.SAGEMAKER_DIR
# The Python (with torch) that runs endpoint servers and training jobs; LocalStack's own has no torch.
PYTHON_ENV = settings.SAGEMAKER_PYTHON
# The local stand-ins for AWS's quotas (harness/sagemaker/control.py), passed on to LocalStack when set.
ENDPOINT_INSTANCES_ENV = settings.SAGEMAKER_ENDPOINT_INSTANCES
TRAINING_JOBS_ENV = settings.SAGEMAKER_TRAINING_JOBS
# "0": no spare endpoint host started ahead of need (harness/sagemaker/control.py); passed on to LocalStack when set.
SPARE_ENDPOINT_ENV = settings.SAGEMAKER_SPARE_ENDPOINT
SPARE_AT_START = "start"   # its value for a spare started with LocalStack, not at the first CreateModel (`scones up`)
# Where endpoint hosts keep their capture spools: <this>/<endpoint name>/<slot>, one slot per live host, kept across
# deploys of the name (a replacement finds what its predecessor spooled). Unset: <sagemaker dir>/capture-spool.
CAPTURE_SPOOL_ENV = settings.SAGEMAKER_CAPTURE_SPOOL
STOP_GRACE_S = 30.0
# harness/processes.py's marker: which part of a `scones up` stack a process is. Ours inherit LocalStack's marker
# with this part name instead, so that they are not taken for a second LocalStack.
PART_ENV = "SCONES_STACK_PART"
PART_NAME = "sagemaker"
HOST_MODULES = "scones.harness.sagemaker."   # endpoint_host and training_host


@dataclass(frozen=True)
class ProcessRecord:
    kind: str            # "endpoint" (its server), "endpoint-spare" (one started ahead, control.py) or "training-job"
    name: str            # the endpoint or training job name
    pid: int
    started: float       # time.time() at start
    log: str             # where its output goes
    command: str = HOST_MODULES   # what its command line holds (a recorded pid may have been reused since)

    @property
    def alive(self) -> bool:
        return _alive(self.pid, self.command)


def sagemaker_dir(localstack_home: str | os.PathLike) -> Path:
    """Where a LocalStack whose home is localstack_home keeps its SageMaker jobs, endpoints and process records."""
    return Path(localstack_home) / "sagemaker"


def _folder(root: str | os.PathLike) -> Path:
    return Path(root) / "processes"


def record(root: str | os.PathLike, entry: ProcessRecord) -> Path:
    """Write entry atomically (a crash leaves the old file or the new one, never half of one)."""
    folder = _folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.kind}-{entry.name}-{entry.pid}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(entry)))
    os.replace(partial, path)
    return path


def forget(root: str | os.PathLike, entry: ProcessRecord) -> None:
    (_folder(root) / f"{entry.kind}-{entry.name}-{entry.pid}.json").unlink(missing_ok=True)
    _stopping_flag(root, entry).unlink(missing_ok=True)


def _stopping_flag(root: str | os.PathLike, entry: ProcessRecord) -> Path:
    return _folder(root) / f"{entry.kind}-{entry.name}-{entry.pid}.stopping"


def stopping(root: str | os.PathLike, entry: ProcessRecord) -> bool:
    """Whether stop_all stopped it (`scones down`): its end is then no failure for the control plane to repair."""
    return _stopping_flag(root, entry).exists()


def recorded(root: str | os.PathLike) -> list[ProcessRecord]:
    """Every recorded process (alive or not: `alive` says), oldest first."""
    entries = []
    for path in sorted(_folder(root).glob("*.json")):
        try:
            entries.append(ProcessRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(entries, key=lambda entry: entry.started)


def stop_all(root: str | os.PathLike, grace_s: float = STOP_GRACE_S) -> list[ProcessRecord]:
    """SIGTERM every recorded process that still runs (each stops its children: an endpoint server flushes
    its capture), SIGKILL what is left after grace_s, and clear the records. Returns those that ran."""
    for flag in _folder(root).glob("*.stopping"):   # an earlier stop_all's, read by the control plane since
        if not flag.with_suffix(".json").exists():
            flag.unlink(missing_ok=True)
    entries = recorded(root)
    running = [entry for entry in entries if entry.alive]
    for entry in running:
        _stopping_flag(root, entry).touch()
        _signal(entry.pid, signal.SIGTERM)
    poll_condition(lambda: not any(entry.alive for entry in running), grace_s, 0.05)
    for entry in running:
        if entry.alive:
            _signal(entry.pid, signal.SIGKILL)
    for entry in entries:
        # The flag stays until the control plane (if it still runs) has seen this process end: its wait() may come
        # a moment after ours, and without the flag it would replace the host.
        (_folder(root) / f"{entry.kind}-{entry.name}-{entry.pid}.json").unlink(missing_ok=True)
    return running


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int, command: str) -> bool:
    """Running, not a zombie, and still ours."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            ours = command.encode() in cmdline.read()
    except (OSError, IndexError):
        return False
    return ours and state not in ("Z", "X")
