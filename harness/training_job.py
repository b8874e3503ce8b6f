"""Run a training script the way a SageMaker PyTorch training job runs it (the emulation `scones train`
and the local SageMaker control plane share).

`write_training_job` / `lay_out_job` lay out a job folder as SageMaker lays out /opt/ml
(input/config/{hyperparameters,inputdataconfig,resourceconfig}.json, input/data/<channel>, model/,
output/data/), with the hyperparameters serialised exactly as the SDK serialises them. Then either
AWS's own training toolkit runs the job (`sagemaker-training` + `sagemaker-pytorch-training`, when a
Python that has them is named by $SCONES_TRAINING_TOOLKIT_PYTHON or is this one) or
`toolkit_invocation`, our port of it, builds the same command line (`python -- train.py --<key>
<value>...`, keys verbatim, values str() of the JSON-decoded value) and the same SM_* environment;
tests/parity proves the two equal. The model folder is packed into model.tar.gz as SageMaker packs it.
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Mapping

from scones import settings
from scones.contract import CLASSES
from scones.deploy import sagemaker as sm
from scones.errors import SconesError
from scones.harness.serving.handlers import extract_tar  # Debian 12's Python 3.11.2 has no filter=

MODEL_CODE_DIR = sm.SOURCE_DIR
TRAIN_SCRIPT = MODEL_CODE_DIR / "train.py"
CHANNELS = ("train", "test")

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
TOOLKIT_PYTHON = settings.TRAINING_TOOLKIT_PYTHON
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


def lay_out_job(root: Path, hyperparameters: Mapping[str, str], channels: Mapping[str, dict], *,
                instance_type: str = sm.TRAINING_INSTANCE) -> Path:
    """Lay out root/opt/ml as SageMaker does for a one-instance File-mode job; returns that base folder.

    hyperparameters: as CreateTrainingJob carries them (strings, the SDK's JSON encoding);
    channels: channel name -> its inputdataconfig.json entry. input/data/<channel> is left to the caller.
    """
    base = root / "opt" / "ml"
    config = base / "input" / "config"
    for folder in (config, base / "input" / "data", base / "model", base / "output" / "data"):
        folder.mkdir(parents=True)
    group = {"instance_group_name": INSTANCE_GROUP, "instance_type": instance_type, "hosts": [TRAINING_HOST]}
    resources = {"current_host": TRAINING_HOST, "current_instance_type": instance_type,
                 "current_group_name": INSTANCE_GROUP, "hosts": [TRAINING_HOST], "instance_groups": [group],
                 "network_interface_name": NETWORK_INTERFACE}
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters)))
    (config / "inputdataconfig.json").write_text(json.dumps(dict(channels)))
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    return base


def write_training_job(root: Path, data_dir: Path, hyperparameters: dict, *, name: str, source: bytes | None = None) -> Path:
    """Lay out root/opt/ml as SageMaker does for a one-instance File-mode job on ml.m5.xlarge; returns that base folder.

    source is the sourcedir.tar.gz (default: the one the AWS deploy uploads); it lies beside opt/ with
    its local path as sagemaker_submit_directory, where AWS has its s3:// URI.
    """
    tarball = root / "sourcedir.tar.gz"
    root.mkdir(parents=True, exist_ok=True)
    tarball.write_bytes(sm.source_tarball() if source is None else source)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    encoded = sm.sdk_hyperparameters(job_name=name, region=region, submit_directory=str(tarball), user=hyperparameters)
    base = lay_out_job(root, encoded, {channel: FILE_CHANNEL for channel in CHANNELS})
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
    version = _torch_version()   # sagemaker_pytorch_container.training._set_torch_version_environment
    if version is not None:
        added["SM_DLC_TORCH_VERSION"] = version
    return [sys.executable, "--", program, *args], added


def _torch_version() -> str | None:
    """torch.__version__ as torch/version.py states it, without importing torch (seconds on a loaded machine)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def _unpack_source(base: Path) -> Path:
    # sagemaker_training.files.download_and_extract into /opt/ml/code, as entry_point.run does.
    code_dir = base / "code"
    code_dir.mkdir(exist_ok=True)
    submit = json.loads(json.loads((base / "input" / "config" / "hyperparameters.json").read_text())["sagemaker_submit_directory"])
    with tarfile.open(submit, mode="r:gz") as archive:
        extract_tar(archive, code_dir)
    return code_dir


def toolkit_python() -> str | None:
    """The Python that runs AWS's training toolkit here: $SCONES_TRAINING_TOOLKIT_PYTHON, or this one if it has it."""
    named = settings.named(TOOLKIT_PYTHON)
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
