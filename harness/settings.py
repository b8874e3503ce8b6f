"""Every environment variable the harness reads, in one place.

Precedence everywhere: an explicit argument beats the environment, which beats the default.
"""
from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = "SCONES_STATE_DIR"          # where venvs, LocalStack state, models and reports live
DATA_DIR = "SCONES_DATA_DIR"            # staged images in {train,test}/{bicycle,motorcycle}/
PYTHON313 = "SCONES_PYTHON313"          # interpreter for LocalStack's venv
TEST_TARGET = "SCONES_TEST_TARGET"      # "local" (default) or "aws" for the e2e tests
LOCALSTACK_PORT = "SCONES_LOCALSTACK_PORT"  # local stack: LocalStack gateway port (default 4566)
ENDPOINT_PORT = "SCONES_ENDPOINT_PORT"      # local stack: endpoint server port (default 8080)
MODEL_DIR = "SCONES_MODEL_DIR"              # local stack: serve this model folder instead of ensure_model()'s

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    path = Path(explicit or os.environ.get(STATE_DIR) or PROJECT_ROOT / ".scones")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Staged data: explicit, else $SCONES_DATA_DIR, else ../shared/data beside the checkout."""
    return Path(explicit or os.environ.get(DATA_DIR) or PROJECT_ROOT.parent / "shared" / "data").resolve()
