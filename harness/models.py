"""Train the classifier the way SageMaker does, and cache trained models by what made them.

`train_model` runs local_model/train.py in a subprocess under SageMaker's environment contract
(SM_CHANNEL_TRAIN/TEST, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR, SM_NUM_GPUS; hyperparameters as
--name value) and packs the model directory into model.tar.gz exactly as SageMaker would.

`ensure_model` is what the endpoint tests, the e2e tests and the demo call: it returns a folder
holding model.tar.gz, metrics.json and baseline.json, training on first use. The cache key
hashes the data (every file's path and bytes), the training/serving code and the
hyperparameters, so a change to any of them trains a fresh model. A file lock keeps two
processes from training the same model at once; the result appears atomically (rename).
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from harness import settings

MODEL_CODE_DIR = settings.PROJECT_ROOT / "local_model"
TRAIN_SCRIPT = MODEL_CODE_DIR / "train.py"
# Everything whose change must retrain a cached model.
MODEL_CODE_FILES = ("train.py", "network.py", "inference.py")
ARTIFACTS = ("model.tar.gz", "metrics.json", "baseline.json")
CLASSES = ("bicycle", "motorcycle")
CACHE_FORMAT = 1


class TrainingError(RuntimeError):
    """train.py failed; the message carries the tail of its log."""


def _check_data_dir(data_dir: Path) -> None:
    for split in ("train", "test"):
        for class_name in CLASSES:
            folder = data_dir / split / class_name
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"data directory {data_dir} lacks {split}/{class_name}/: expected staged images in "
                    f"{{train,test}}/{{bicycle,motorcycle}}/*.png (see `scones stage`, or set ${settings.DATA_DIR})"
                )


def hyperparameter_args(hyperparameters: dict) -> list[str]:
    """{'batch_size': 64, 'widths': [32, 64]} -> ['--batch-size', '64', '--widths', '32,64'] (SageMaker's form)."""
    args: list[str] = []
    for name, value in sorted(hyperparameters.items()):
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def pack_model_dir(model_dir: Path, tarball: Path) -> None:
    """Tar model_dir's contents (model.pth, code/...) at the archive root, byte-for-byte reproducibly."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(model_dir.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(model_dir)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    with tarball.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped:
        zipped.write(buffer.getvalue())


def train_model(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    hyperparameters: dict | None = None,
    *,
    log: IO[str] | None = None,
    echo: bool = True,
) -> Path:
    """Run train.py as SageMaker would and write out_dir/{model.tar.gz,metrics.json,baseline.json}.

    The script's output streams to stderr when echo is set, and always into out_dir/train.log.
    """
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    _check_data_dir(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sm-", dir=out_dir) as scratch:
        scratch = Path(scratch)
        env = {
            **os.environ,
            "SM_CHANNEL_TRAIN": str(data_dir / "train"),
            "SM_CHANNEL_TEST": str(data_dir / "test"),
            "SM_MODEL_DIR": str(scratch / "model"),
            "SM_OUTPUT_DATA_DIR": str(scratch / "output"),
            "SM_NUM_GPUS": os.environ.get("SM_NUM_GPUS", "0"),  # deterministic CPU training unless asked
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),  # see train.py
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = [sys.executable, str(TRAIN_SCRIPT), *hyperparameter_args(hyperparameters or {})]
        log_path = out_dir / "train.log"
        with log_path.open("w") as log_file:
            log_file.write("$ " + " ".join(command) + "\n")
            log_file.flush()
            process = subprocess.Popen(command, env=env, cwd=scratch, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert process.stdout is not None
            for line in process.stdout:
                log_file.write(line)
                if echo:
                    (log or sys.stderr).write(line)
                    (log or sys.stderr).flush()
            returncode = process.wait()
        if returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
            raise TrainingError(f"{TRAIN_SCRIPT} exited with status {returncode}; full log in {log_path}:\n{tail}")
        pack_model_dir(scratch / "model", out_dir / "model.tar.gz")
        for name in ("metrics.json", "baseline.json"):
            shutil.copyfile(scratch / "output" / name, out_dir / name)
    return out_dir


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
    print(f"waiting for another process to finish training (lock {lock_path})", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
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
    with _file_lock(models / f"{key}.lock"):
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


# Tiny models for fast tests: seconds to train, same artifacts and handlers as the real one.
TINY_HYPERPARAMETERS = {"epochs": 1, "widths": [8, 16], "blocks": [1, 1], "batch_size": 8}


def write_synthetic_dataset(root: str | os.PathLike, per_split: dict[str, int] | None = None) -> Path:
    """Staged-layout data of random 32x32 RGBA PNGs (like the real files): reddish bicycles, bluish motorcycles."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for split, count in (per_split or {"train": 8, "test": 4}).items():
        for label, class_name in enumerate(CLASSES):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
                pixels[..., 3] = 255
                pixels[..., 0 if label == 0 else 2] |= 0x80
                Image.fromarray(pixels).save(folder / f"{class_name}_{index:03d}.png")
    return root


def ensure_tiny_model(state_dir: str | os.PathLike | None = None) -> Path:
    """A cached model folder like ensure_model's, trained in seconds on synthetic data (its predictions mean nothing)."""
    data = settings.state_dir(state_dir) / "models" / "synthetic-data"
    with _file_lock(data.with_suffix(".lock")):
        if not (data / "test" / CLASSES[-1]).is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=data.parent))
            write_synthetic_dataset(staging)
            os.rename(staging, data)
    return ensure_model(data, state_dir, **TINY_HYPERPARAMETERS)


def load_serving_handlers(model_dir: str | os.PathLike):
    """Import <model_dir>/code/inference.py as the SageMaker PyTorch container does (code/ on sys.path).

    Returns the module; call module.model_fn(str(model_dir)) for the model. The plain `import network`
    inside it binds to this model's code/network.py, not to a previously loaded one.
    """
    import importlib.util

    code_dir = Path(model_dir) / "code"
    if not (code_dir / "inference.py").is_file():
        raise FileNotFoundError(f"{code_dir / 'inference.py'} does not exist: is {model_dir} an unpacked model.tar.gz?")
    saved = {name: sys.modules.pop(name) for name in ("inference", "network") if name in sys.modules}
    sys.path.insert(0, str(code_dir))
    try:
        spec = importlib.util.spec_from_file_location("inference", code_dir / "inference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(code_dir))
        sys.modules.pop("network", None)
        sys.modules.update(saved)
