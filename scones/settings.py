"""Every setting the harness reads, and where it comes from, in one place.

Precedence everywhere: an explicit argument beats the environment, which beats the project's
config file, which beats the default.

The project is the nearest folder, from the working directory upwards, that holds a
`scones.toml` (its keys at top level) or a `pyproject.toml` with a `[tool.scones]` table; with
neither, the working directory. Relative paths in the config file are relative to the file's
folder, those in the environment to the working directory. Defaults live in the project folder
(never in the scones installation): state in `<project>/.scones`, staged images in
`<state>/data` (where `scones stage` puts them).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from scones.errors import SconesError

STATE_DIR = "SCONES_STATE_DIR"          # where venvs, LocalStack state, models and reports live
DATA_DIR = "SCONES_DATA_DIR"            # staged images in {train,test}/{bicycle,motorcycle}/
PYTHON313 = "SCONES_PYTHON313"          # interpreter for LocalStack's venv
TEST_TARGET = "SCONES_TEST_TARGET"      # "local" (default) or "aws" for the e2e tests
LOCALSTACK_PORT = "SCONES_LOCALSTACK_PORT"  # local stack: LocalStack gateway port (default 4566)
ENDPOINT_PORT = "SCONES_ENDPOINT_PORT"      # local stack in route mode: its endpoint server port (default 8080)
MODEL_DIR = "SCONES_MODEL_DIR"              # local stack: serve this model folder instead of ensure_model()'s
DEBUG = "SCONES_DEBUG"                      # "1": the CLI shows the traceback of an unexpected error
TRAINING_TOOLKIT_PYTHON = "SCONES_TRAINING_TOOLKIT_PYTHON"  # a Python with AWS's sagemaker-training toolkit
CAPTURE_SPOOL = "SCONES_CAPTURE_SPOOL"      # `scones serve`: the capture spool folder
# "1": `--target aws` may use an AWS session whose endpoints are on this machine (an emulator such as moto's
# server, on purpose); without it run/evaluate/monitor/status refuse such a session (deploy always does).
ALLOW_LOCAL_AWS_ENDPOINTS = "SCONES_ALLOW_LOCAL_AWS_ENDPOINTS"
# Switches of the local stack's parts, read inside LocalStack's process; "0" turns one off (see switched_off).
LAMBDA_SANDBOX = "SCONES_LAMBDA_SANDBOX"                      # run Lambda environments as plain processes
LAMBDA_RUNTIME_VALIDATION = "SCONES_LAMBDA_RUNTIME_VALIDATION"  # AWS's check of a function's runtime
LAMBDA_PYTHONS = "SCONES_LAMBDA_PYTHONS"                      # JSON {"python3.12": "/path/to/bin/python", ...}
SFN_CLIENT_CACHE = "SCONES_SFN_CLIENT_CACHE"                  # Step Functions reuses its Lambda client
SFN_DEFINITION_CACHE = "SCONES_SFN_DEFINITION_CACHE"          # each state machine definition parsed once
SFN_JSONPATH_CACHE = "SCONES_SFN_JSONPATH_CACHE"              # each JSONPath of a definition parsed once
LAMBDA_THREADS_PATCH = "SCONES_LAMBDA_THREADS_PATCH"          # no new threads on LocalStack's invoke path
EVENTS_SFN_TARGET_PATCH = "SCONES_EVENTS_SFN_TARGET_PATCH"    # EventBridge starts executions with transformed input
FAULTS_PATCH = "SCONES_FAULTS_PATCH"                          # the fault rules' handler on the gateway
SFN_TIME_SCALE_PATCH = "SCONES_SFN_TIME_SCALE_PATCH"          # Step Functions' waits follow the time scale
LAMBDA_METRICS_BATCH = "SCONES_LAMBDA_METRICS_BATCH"          # Lambda's CloudWatch metrics sent once a second
LAMBDA_LOGS_BATCH = "SCONES_LAMBDA_LOGS_BATCH"                # Lambda's logs sent one PutLogEvents per stream per batch
GATEWAY_KEEP_ALIVE = "SCONES_GATEWAY_KEEP_ALIVE"              # LocalStack keeps HTTP/1.1 connections open, as AWS
GATEWAY_BUFFERED_RESPONSES = "SCONES_GATEWAY_BUFFERED_RESPONSES"  # a short response crosses LocalStack's threads once
GATEWAY_ROUTE_CACHE = "SCONES_GATEWAY_ROUTE_CACHE"            # requests no edge route matches are remembered
SERVICE_EVENTS_IN_PROCESS = "SCONES_SERVICE_EVENTS_IN_PROCESS"  # Step Functions' and S3's events reach EventBridge directly
LAMBDA_ENVIRONMENT_QUEUE = "SCONES_LAMBDA_ENVIRONMENT_QUEUE"  # at a function's cap an invoke waits for its environment
INTERNAL_CLIENT_REQUESTS = "SCONES_INTERNAL_CLIENT_REQUESTS"  # calls between LocalStack's services skip SigV4's hashing
LOCALSTACK_QUICK_EXIT = "SCONES_LOCALSTACK_QUICK_EXIT"        # LocalStack's process ends without a last GC
SWITCHES = (LAMBDA_SANDBOX, LAMBDA_RUNTIME_VALIDATION, SFN_CLIENT_CACHE, SFN_DEFINITION_CACHE, SFN_JSONPATH_CACHE,
            LAMBDA_THREADS_PATCH, EVENTS_SFN_TARGET_PATCH, FAULTS_PATCH, SFN_TIME_SCALE_PATCH, LAMBDA_METRICS_BATCH,
            LAMBDA_LOGS_BATCH, GATEWAY_KEEP_ALIVE, GATEWAY_BUFFERED_RESPONSES, GATEWAY_ROUTE_CACHE, SERVICE_EVENTS_IN_PROCESS,
            LAMBDA_ENVIRONMENT_QUEUE, INTERNAL_CLIENT_REQUESTS, LOCALSTACK_QUICK_EXIT)
# The patches that cut the CPU a workflow execution costs (issue 25): all "0" is benchmarks/execution_cpu.py's
# baseline and the switched-off LocalStack of tests/test_throughput_patches.py.
THROUGHPUT_SWITCHES = (LAMBDA_METRICS_BATCH, LAMBDA_LOGS_BATCH, GATEWAY_KEEP_ALIVE, GATEWAY_BUFFERED_RESPONSES,
                       GATEWAY_ROUTE_CACHE, SFN_JSONPATH_CACHE, SERVICE_EVENTS_IN_PROCESS, LAMBDA_ENVIRONMENT_QUEUE,
                       INTERNAL_CLIENT_REQUESTS)
# Values read inside LocalStack's process when it starts (`scones up` passes them on).
TIME_SCALE = "SCONES_TIME_SCALE"                    # Step Functions' time scale at the start (default 1: real time)
IAM_MODE = "SCONES_IAM"                             # enforce (default) | report | off
SAGEMAKER_DIR = "SCONES_SAGEMAKER_DIR"              # the SageMaker control plane's folder (default <LocalStack home>/sagemaker)
SAGEMAKER_PYTHON = "SCONES_SAGEMAKER_PYTHON"        # the Python (with torch) of endpoint servers and training jobs
SAGEMAKER_ENDPOINT_INSTANCES = "SCONES_SAGEMAKER_ENDPOINT_INSTANCES"  # the local stand-ins for AWS's quotas
SAGEMAKER_TRAINING_JOBS = "SCONES_SAGEMAKER_TRAINING_JOBS"
# "0": no spare endpoint host started ahead of need; "start": one as LocalStack starts (`scones up`).
SAGEMAKER_SPARE_ENDPOINT = "SCONES_SAGEMAKER_SPARE_ENDPOINT"
SAGEMAKER_CAPTURE_SPOOL = "SCONES_SAGEMAKER_CAPTURE_SPOOL"  # endpoint hosts' capture spools (default <sagemaker dir>/capture-spool)
# `scones deploy --target local`: how SageMaker is reached, route | api | auto (deploy/local.py sagemaker_mode).
LOCAL_SAGEMAKER = "SCONES_LOCAL_SAGEMAKER"
# The compose stack's deploy container (docker-compose.yml, harness/compose/deploy.py).
COMPOSE_BUCKET = "SCONES_BUCKET"
COMPOSE_PREFIX = "SCONES_PREFIX"
COMPOSE_ENDPOINT_NAME = "SCONES_ENDPOINT_NAME"
COMPOSE_THRESHOLD = "SCONES_THRESHOLD"
COMPOSE_MODEL_DIR = "SCONES_COMPOSE_MODEL_DIR"      # the host's paths of the folders mounted at /model and /data
COMPOSE_DATA_DIR = "SCONES_COMPOSE_DATA_DIR"

CONFIG_FILE = "scones.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_STATE_FOLDER = ".scones"
# Config file key -> (environment variable, kind). Paths are the project's locations; ports move a stack.
KEYS = {
    "state_dir": (STATE_DIR, "path"),
    "data_dir": (DATA_DIR, "path"),
    "model_dir": (MODEL_DIR, "path"),
    "localstack_port": (LOCALSTACK_PORT, "port"),
    "endpoint_port": (ENDPOINT_PORT, "port"),
}
DATA_DIR_HINT = (f"point scones at your images with data_dir in the [tool.scones] table of your {PYPROJECT} "
                 f"(or in {CONFIG_FILE}), or ${DATA_DIR}, or stage them into <state dir>/data with `scones stage`")


class SettingsError(SconesError, ValueError):
    """A config file or setting is malformed; the message names the file or variable and the key."""


@dataclass(frozen=True)
class Project:
    """The user's project: its folder, and the config file found there (None: no file, defaults only)."""
    root: Path
    config_path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        if self.config_path is None:
            return f"no {CONFIG_FILE} or [tool.scones] found from {self.root}: environment and defaults"
        return f"{self.config_path}" + (" [tool.scones]" if self.config_path.name == PYPROJECT else "")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path} is not valid TOML: {error}") from error


def _checked(table: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SettingsError(f"{where} in {path} must be a table of settings, not {type(table).__name__}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise SettingsError(f"{where} in {path}: unknown key {', '.join(map(repr, unknown))}; "
                            f"known keys: {', '.join(KEYS)}")
    for key, value in table.items():
        kind = KEYS[key][1]
        if kind == "path" and not isinstance(value, str):
            raise SettingsError(f"{key} in {where} of {path} must be a path string, not {value!r}")
        if kind == "port" and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
            raise SettingsError(f"{key} in {where} of {path} must be a port number (1-65535), not {value!r}")
    return table


def project(start: str | os.PathLike | None = None) -> Project:
    """The project around `start` (default: the working directory) and its scones config."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        config = folder / CONFIG_FILE
        if config.is_file():
            return Project(folder, config, _checked(_read_toml(config), config, "the file"))
        pyproject = folder / PYPROJECT
        if pyproject.is_file():
            table = _read_toml(pyproject).get("tool", {}).get("scones")
            if table is not None:
                return Project(folder, pyproject, _checked(table, pyproject, "[tool.scones]"))
    return Project(here)


def lookup(key: str, explicit: Any = None) -> Any:
    """A config key's value by the precedence above; None when nothing sets it (the caller's default)."""
    variable, kind = KEYS[key]
    if explicit not in (None, ""):
        return Path(explicit) if kind == "path" else int(explicit)
    raw = os.environ.get(variable)
    if raw:
        if kind == "path":
            return Path(raw)
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"${variable}={raw!r} is not a port number") from None
    found = project()
    if key in found.values:
        value = found.values[key]
        return (found.root / value) if kind == "path" else value
    return None


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    path = lookup("state_dir", explicit)
    path = Path(path or project().root / DEFAULT_STATE_FOLDER)
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Staged images; by default those `scones stage` put into the state dir (see DATA_DIR_HINT)."""
    path = lookup("data_dir", explicit)
    return Path(path or state_dir() / "data").resolve()


def model_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """A model folder (holding model.tar.gz) to serve, or None: train or reuse ensure_model()'s."""
    path = lookup("model_dir", explicit)
    return Path(path).resolve() if path else None


def localstack_port(explicit: int | None, default: int) -> int:
    return lookup("localstack_port", explicit) or default


def endpoint_port(explicit: int | None, default: int) -> int:
    return lookup("endpoint_port", explicit) or default


def named(variable: str) -> str | None:
    """The value of one of the variables above, or None when it is unset or blank (the caller's default)."""
    return os.environ.get(variable, "").strip() or None


def whole_number(variable: str, default: int) -> int:
    """A count such as the local SageMaker quotas: `default` when unset, else a whole number >= 0."""
    raw = named(variable)
    if raw is None:
        return default
    if not raw.isdigit():
        raise SettingsError(f"${variable}={raw!r} is not a whole number (0 or more)")
    return int(raw)


def switched_off(variable: str) -> bool:
    """Whether one of SWITCHES is turned off ("0"); every switch is on unless its variable says "0"."""
    return os.environ.get(variable, "1").strip() == "0"


def debug() -> bool:
    return os.environ.get(DEBUG, "").strip() not in ("", "0")


def test_target(explicit: str | None = None) -> str:
    """Which stack the e2e tests and the pytest plugin use: explicit, else $SCONES_TEST_TARGET, else local."""
    return explicit or os.environ.get(TEST_TARGET) or "local"


def allows_local_aws_endpoints() -> bool:
    return os.environ.get(ALLOW_LOCAL_AWS_ENDPOINTS, "").strip() == "1"


def check_writable(folder: Path) -> None:
    """Create folder if need be and write a scratch file in it, so a command finds out before its work, not
    after it, that it cannot save what it makes; OSError (naming the path) when it cannot."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass
