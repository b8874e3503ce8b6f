"""Trained models cached by what made them, and small synthetic data for fast tests.

`ensure_model` is what the endpoint tests, the e2e tests and the demo call: it returns a folder
holding model.tar.gz, metrics.json and baseline.json, training on first use (harness/training_job.py
runs the job as a SageMaker training job runs it). The cache key hashes the data (every file's path
and bytes), the training/serving code and the hyperparameters, so a change to any of them trains a
fresh model. A file lock keeps two processes from training the same model at once; the result
appears atomically (rename).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from scones import settings
from scones.harness.training_job import MODEL_CODE_DIR, _check_data_dir, train_model

# Everything whose change must retrain a cached model.
MODEL_CODE_FILES = ("train.py", "network.py", "inference.py", "outliers.py")
ARTIFACTS = ("model.tar.gz", "metrics.json", "baseline.json")
CACHE_FORMAT = 1


def _data_fingerprint(data_dir: Path, digest: "hashlib._Hash") -> None:
    for split in ("train", "test"):
        for path in sorted((data_dir / split).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(data_dir)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())


def model_key(data_dir: Path, hyperparameters: dict) -> str:
    digest = hashlib.sha256(f"scones-model-cache-v{CACHE_FORMAT}\0".encode())
    _data_fingerprint(data_dir, digest)
    for name in MODEL_CODE_FILES:
        digest.update(name.encode() + b"\0" + (MODEL_CODE_DIR / name).read_bytes())
    digest.update(json.dumps(hyperparameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def _report_waiting(lock_path: Path) -> None:
    print(f"waiting for another process to finish with {lock_path.name} (lock {lock_path})", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _report_waiting(path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ARTIFACTS)


def ensure_model(data_dir: str | os.PathLike | None = None, state_dir: str | os.PathLike | None = None,
                 **hyperparameters) -> Path:
    """The folder holding model.tar.gz, metrics.json and baseline.json for this data, code and hyperparameters.

    Trains (a couple of minutes on two CPU cores with the defaults) only when no cached model matches.
    """
    data = settings.data_dir(data_dir)
    _check_data_dir(data)
    models = settings.state_dir(state_dir) / "models"
    key = model_key(data, hyperparameters)
    final = models / key
    if _complete(final):
        return final
    with file_lock(models / f"{key}.lock"):
        if _complete(final):  # another process finished it while we waited
            return final
        for leftover in models.glob(f".{key}-*"):  # from a run that was killed; we hold the lock now
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=models))
        try:
            started = time.perf_counter()
            print(f"training model {key} on {data} (first use; cached afterwards in {final})", file=sys.stderr, flush=True)
            train_model(data, staging, hyperparameters)
            (staging / "cache.json").write_text(json.dumps({
                "key": key, "data_dir": str(data), "hyperparameters": hyperparameters,
                "seconds": round(time.perf_counter() - started, 1),
            }, indent=2, default=str) + "\n")
            if final.exists():  # an incomplete leftover from a killed run
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return final
