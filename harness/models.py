"""Train the classifier the way a SageMaker training job does, and cache trained models by what made them.

`train_model` runs local_model/train.py as the PyTorch training container runs it: it lays out a
job folder as SageMaker lays out /opt/ml (input/config/{hyperparameters,inputdataconfig,
resourceconfig}.json, input/data/<channel>, model/, output/data/), with the hyperparameters
serialised exactly as the SDK serialises them and the very sourcedir.tar.gz the AWS deploy uploads
(deploy/sagemaker.py builds both). Then either AWS's own training toolkit runs the job
(`sagemaker-training` + `sagemaker-pytorch-training`, when a Python that has them is named by
$SCONES_TRAINING_TOOLKIT_PYTHON or is this one) or `toolkit_invocation`, our port of it, builds
the same command line (`python -- train.py --<key> <value>...`, keys verbatim, values str() of
the JSON-decoded value) and the same SM_* environment; tests/parity proves the two equal. The
model folder is packed into model.tar.gz as SageMaker packs it.

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
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Iterator, Mapping

from scones import settings
from scones.contract import CLASSES
from scones.deploy import sagemaker as sm
from scones.errors import SconesError

MODEL_CODE_DIR = sm.SOURCE_DIR
TRAIN_SCRIPT = MODEL_CODE_DIR / "train.py"
# Everything whose change must retrain a cached model.
MODEL_CODE_FILES = ("train.py", "network.py", "inference.py", "outliers.py")
ARTIFACTS = ("model.tar.gz", "metrics.json", "baseline.json")
CHANNELS = ("train", "test")
CACHE_FORMAT = 1

# What SageMaker gives a one-instance job (resourceconfig.json, inputdataconfig.json; see
# https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html).
TRAINING_HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
FILE_CHANNEL = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
# The PyTorch training image's ENV (deep-learning-containers pytorch/training/docker/2.5/py3/Dockerfile.cpu).
IMAGE_ENVIRONMENT = {
    "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "UTF-8",
}
TOOLKIT_PYTHON = "SCONES_TRAINING_TOOLKIT_PYTHON"
AUTO = "auto"
# sagemaker_pytorch_container.training: NCCL settings and the rendezvous port it sets for every job.
PYTORCH_TOOLKIT_ENVIRONMENT = {"NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "WARN", "MASTER_PORT": "7777"}


class TrainingError(SconesError, RuntimeError):
    """train.py failed; the message carries the tail of its log."""


def _check_data_dir(data_dir: Path) -> None:
    for split in CHANNELS:
        for class_name in CLASSES:
            folder = data_dir / split / class_name
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"data directory {data_dir} lacks {split}/{class_name}/: expected staged images in "
                    f"{{train,test}}/{{bicycle,motorcycle}}/*.png: {settings.DATA_DIR_HINT}"
                )


def job_name() -> str:
    """A training job name as the SDK makes one (base name + sagemaker.utils.sagemaker_timestamp())."""
    now = time.time()
    return time.strftime("scones-train-%Y-%m-%d-%H-%M-%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"


def write_training_job(root: Path, data_dir: Path, hyperparameters: dict, *, name: str, source: bytes | None = None) -> Path:
    """Lay out root/opt/ml as SageMaker does for a one-instance File-mode job on ml.m5.xlarge; returns that base folder.

    source is the sourcedir.tar.gz (default: the one the AWS deploy uploads); it lies beside opt/ with
    its local path as sagemaker_submit_directory, where AWS has its s3:// URI.
    """
    base = root / "opt" / "ml"
    config = base / "input" / "config"
    for folder in (config, base / "input" / "data", base / "model", base / "output" / "data"):
        folder.mkdir(parents=True)
    tarball = root / "sourcedir.tar.gz"
    tarball.write_bytes(sm.source_tarball() if source is None else source)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    encoded = sm.sdk_hyperparameters(job_name=name, region=region, submit_directory=str(tarball), user=hyperparameters)
    group = {"instance_group_name": INSTANCE_GROUP, "instance_type": sm.TRAINING_INSTANCE, "hosts": [TRAINING_HOST]}
    resources = {"current_host": TRAINING_HOST, "current_instance_type": sm.TRAINING_INSTANCE,
                 "current_group_name": INSTANCE_GROUP, "hosts": [TRAINING_HOST], "instance_groups": [group],
                 "network_interface_name": NETWORK_INTERFACE}
    (config / "hyperparameters.json").write_text(json.dumps(encoded))
    (config / "inputdataconfig.json").write_text(json.dumps({channel: FILE_CHANNEL for channel in CHANNELS}))
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    for channel in CHANNELS:
        (base / "input" / "data" / channel).symlink_to(data_dir / channel, target_is_directory=True)
    return base


def _decoded(value: str) -> object:
    # sagemaker_training.environment.read_hyperparameters: JSON when it parses, else the string.
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def toolkit_cmd_args(hyperparameters: dict) -> list[str]:
    """sagemaker_training.mapping.to_cmd_args: sorted keys verbatim, values str() of the decoded JSON."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if hasattr(value, "items"):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{key}" if len(str(key)) > 1 else f"-{key}", "" if value is None else str(value)]
    return args


def _env_value(value: object) -> str:
    # sagemaker_training.mapping.to_env_vars
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _num_gpus() -> int:
    # sagemaker_training.environment.num_gpus
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(1 for line in listing.split("\n") if line.startswith("GPU "))


def toolkit_invocation(base: Path, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command and the environment additions with which the PyTorch training toolkit, started
    with environ, runs the entry point of the job laid out in base (one instance, no distribution).

    A port of sagemaker_training.environment.Environment (to_cmd_args, to_env_vars) and of what
    trainer.train, entry_point.run and sagemaker_pytorch_container.training put into os.environ;
    tests/parity/test_training_toolkit.py compares both with the real toolkit's.
    """
    config = base / "input" / "config"
    every = {key: _decoded(value) for key, value in json.loads((config / "hyperparameters.json").read_text()).items()}
    resources = json.loads((config / "resourceconfig.json").read_text())
    data_config = json.loads((config / "inputdataconfig.json").read_text())
    sagemaker_keys = {key: value for key, value in every.items() if key.startswith("sagemaker_")}
    hyperparameters = {key: value for key, value in every.items() if key not in sagemaker_keys}
    framework_parameters = {key: value for key, value in sagemaker_keys.items() if key not in (
        "sagemaker_program", "sagemaker_submit_directory", "sagemaker_enable_cloudwatch_metrics", "sagemaker_region",
        "sagemaker_container_log_level", "sagemaker_job_name", "sagemaker_s3_output")}
    if framework_parameters:
        raise ValueError(f"distributed training parameters {sorted(framework_parameters)} are not emulated")
    program = sagemaker_keys["sagemaker_program"]
    if not isinstance(program, str):
        raise ValueError(f"sagemaker_program in {config / 'hyperparameters.json'} must name the entry point, not {program!r}")
    groups = resources.get("instance_groups", [])
    current_group = resources.get("current_group_name", INSTANCE_GROUP)
    hosts = resources["hosts"]
    channels = {channel: str(base / "input" / "data" / channel) for channel in data_config}
    args = toolkit_cmd_args(hyperparameters)
    environment = {
        "additional_framework_parameters": framework_parameters,
        "channel_input_dirs": channels,
        "current_host": resources["current_host"],
        "current_instance_group": current_group,
        "current_instance_group_hosts": next((g["hosts"] for g in groups if g["instance_group_name"] == current_group), []),
        "current_instance_type": resources.get("current_instance_type", "local"),
        "distribution_hosts": [] if groups else list(hosts),
        "distribution_instance_groups": [],
        "framework_module": environ.get("SAGEMAKER_TRAINING_MODULE"),
        "hosts": hosts,
        "hyperparameters": hyperparameters,
        "input_config_dir": str(config),
        "input_data_config": data_config,
        "input_dir": str(base / "input"),
        "instance_groups": [g["instance_group_name"] for g in groups],
        "instance_groups_dict": {g["instance_group_name"]: g for g in groups},
        "is_hetero": len(groups) > 1,
        "is_master": resources["current_host"] == hosts[0],
        "is_modelparallel_enabled": None,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": environ.get("TRAINING_JOB_NAME"),
        "log_level": sagemaker_keys.get("sagemaker_container_log_level", 20),
        "master_hostname": hosts[0],
        "model_dir": str(base / "model"),
        "module_dir": str(sagemaker_keys.get("sagemaker_submit_directory", base / "code")),
        "module_name": program[:-3] if program.endswith(".py") else program,
        "network_interface_name": resources.get("network_interface_name", NETWORK_INTERFACE),
        "num_cpus": os.cpu_count(),
        "num_gpus": _num_gpus(),
        "num_neurons": 0,
        "output_data_dir": str(base / "output" / "data"),
        "output_dir": str(base / "output"),
        "output_intermediate_dir": str(base / "output" / "intermediate"),
        "resource_config": resources,
        "topology": resources.get("topology", []),
        "user_entry_point": program,
    }
    variables = {key: environment[key] for key in (
        "hosts", "network_interface_name", "user_entry_point", "resource_config", "input_data_config",
        "output_data_dir", "current_host", "current_instance_type", "current_instance_group",
        "current_instance_group_hosts", "instance_groups", "instance_groups_dict", "distribution_instance_groups",
        "is_hetero", "module_name", "log_level", "framework_module", "input_dir", "input_config_dir", "output_dir",
        "num_cpus", "num_gpus", "num_neurons", "model_dir", "module_dir", "output_intermediate_dir")}
    variables.update({
        "hps": hyperparameters, "framework_params": framework_parameters, "channels": sorted(channels),
        "training_env": environment, "user_args": args,
        **{f"channel_{name}": path for name, path in channels.items()},
        **{f"hp_{key}": value for key, value in hyperparameters.items()},
    })
    if environment["topology"]:
        variables["topology"] = environment["topology"]
    code_dir = base / "code"
    added = {f"SM_{key.upper()}": _env_value(value) for key, value in variables.items()}
    added.update({
        "SAGEMAKER_JOB_NAME": str(sagemaker_keys.get("sagemaker_job_name", "")),
        "CURRENT_HOST": resources["current_host"],
        "SAGEMAKER_REGION": str(sagemaker_keys.get("sagemaker_region", "")),
        "NCCL_SOCKET_IFNAME": environment["network_interface_name"],
        "MASTER_ADDR": hosts[0],
        **PYTORCH_TOOLKIT_ENVIRONMENT,
        # environment.write_env_vars: the toolkit's sys.path, with the code folder first.
        "PYTHONPATH": os.pathsep.join([str(code_dir), *filter(None, sys.path)]),
    })
    with contextlib.suppress(ImportError):  # sagemaker_pytorch_container.training._set_torch_version_environment
        import torch

        added["SM_DLC_TORCH_VERSION"] = torch.__version__
    return [sys.executable, "--", program, *args], added


def _unpack_source(base: Path) -> Path:
    # sagemaker_training.files.download_and_extract into /opt/ml/code, as entry_point.run does.
    code_dir = base / "code"
    code_dir.mkdir(exist_ok=True)
    submit = json.loads(json.loads((base / "input" / "config" / "hyperparameters.json").read_text())["sagemaker_submit_directory"])
    from scones.harness.serving.handlers import extract_tar  # Debian 12's Python 3.11.2 has no filter=

    with tarfile.open(submit, mode="r:gz") as archive:
        extract_tar(archive, code_dir)
    return code_dir


def toolkit_python() -> str | None:
    """The Python that runs AWS's training toolkit here: $SCONES_TRAINING_TOOLKIT_PYTHON, or this one if it has it."""
    named = os.environ.get(TOOLKIT_PYTHON)
    if named:
        return named
    if importlib.util.find_spec("sagemaker_training") and importlib.util.find_spec("sagemaker_pytorch_container"):
        return sys.executable
    return None


def job_command(base: Path, *, name: str, toolkit: str | None) -> tuple[list[str], dict[str, str], Path]:
    """(command, environment, cwd) that run the job in base: with the real toolkit when toolkit names
    its Python, else with our port of it."""
    env = {**os.environ, **IMAGE_ENVIRONMENT, "TRAINING_JOB_NAME": name,
           # Outside SageMaker no DNS knows algo-1: the toolkit's own switch skips its lookups.
           "SM_STUDIO_LOCAL_MODE": "true",
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}  # see train.py
    if toolkit:
        env["SAGEMAKER_BASE_DIR"] = str(base)
        return [toolkit, "-m", "sagemaker_training.cli.train"], env, base.parent.parent
    code_dir = _unpack_source(base)
    command, added = toolkit_invocation(base, env)
    return command, {**env, **added}, code_dir


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


def run_job(base: Path, log_path: Path, *, name: str, toolkit: str | None, log: IO[str] | None = None,
            echo: bool = True) -> None:
    """Run the job laid out in base, its output into log_path (and to log/stderr when echo is set)."""
    command, env, cwd = job_command(base, name=name, toolkit=toolkit)
    with log_path.open("w") as log_file:
        runner = "AWS's sagemaker-training toolkit" if toolkit else "our port of sagemaker-training"
        log_file.write(f"$ {shlex.join(command)}\n# {runner}, in {cwd}\n")
        log_file.flush()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
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
        raise TrainingError(f"{TRAIN_SCRIPT.name} exited with status {returncode}; full log in {log_path}:\n{tail}")


def train_model(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    hyperparameters: dict | None = None,
    *,
    log: IO[str] | None = None,
    echo: bool = True,
    toolkit: str | None = AUTO,
) -> Path:
    """Run train.py as a SageMaker training job would and write out_dir/{model.tar.gz,metrics.json,baseline.json}.

    toolkit: the Python of AWS's training toolkit; AUTO: toolkit_python(); None: our port of the toolkit.
    The job's output streams to stderr when echo is set, and always into out_dir/train.log.
    """
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    _check_data_dir(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    toolkit = toolkit_python() if toolkit == AUTO else toolkit
    name = job_name()
    with tempfile.TemporaryDirectory(prefix="sm-", dir=out_dir) as scratch:
        base = write_training_job(Path(scratch), data_dir, hyperparameters or {}, name=name)
        run_job(base, out_dir / "train.log", name=name, toolkit=toolkit, log=log, echo=echo)
        pack_model_dir(base / "model", out_dir / "model.tar.gz")
        for artifact in ("metrics.json", "baseline.json"):
            shutil.copyfile(base / "output" / "data" / artifact, out_dir / artifact)
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
    with file_lock(data.with_suffix(".lock")):
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
    saved: dict[str, ModuleType] = {name: sys.modules.pop(name) for name in ("inference", "network") if name in sys.modules}
    sys.path.insert(0, str(code_dir))
    try:
        spec = importlib.util.spec_from_file_location("inference", code_dir / "inference.py")
        if spec is None or spec.loader is None:  # only for a file Python has no loader for: not a .py
            raise ImportError(f"cannot import {code_dir / 'inference.py'}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(code_dir))
        sys.modules.pop("network", None)
        sys.modules.update(saved)
