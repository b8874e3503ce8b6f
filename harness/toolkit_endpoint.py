"""AWS's own SageMaker PyTorch inference toolkit under TorchServe, run on this machine.

The serving half of the parity suite (tests/parity/test_serving_parity.py) and benchmarks/endpoint.py
run the code the SageMaker PyTorch 2.5.1 inference images run (sagemaker-pytorch-inference 2.0.25,
TorchServe 0.12.0, from the venv tests/parity/conftest.py builds) beside `scones serve`:

    with ToolkitEndpoint(python=".../toolkit-venv/bin/python", model="model.tar.gz", work_dir=tmp) as toolkit:
        scones.loopback.get(f"{toolkit.url}/ping")

What the image's entry point does (sagemaker_pytorch_serving_container.serving.main ->
torchserve.start_torchserve), done with the toolkit's own functions: the model unpacked as SageMaker
unpacks it into $SAGEMAKER_BASE_DIR/model (the toolkit's /opt/ml/model), code/ put on PYTHONPATH
(_set_python_path), the TorchServe properties the toolkit generates from the SAGEMAKER_* variables
(_generate_ts_config_properties, with its handler service), then `torchserve --start` with the
toolkit's model store, log config and `--models model=<model dir>`. The differences, all about
where it runs and none about what it does: the properties file lives in work_dir instead of
/etc/sagemaker-ts.properties; the inference/management address is 127.0.0.1 on a free port instead
of 0.0.0.0:8080; TorchServe's other listeners (metrics, gRPC) get free 127.0.0.1 ports and its pid
file, sockets and logs stay in work_dir; `--foreground`, so that stopping the process group stops
the Java frontend and its Python workers; code/requirements.txt is not pip-installed.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from scones import loopback
from scones.errors import SconesError
from scones.harness.endpoint import free_port
from scones.harness.serving.handlers import unpack_model
from scones.polling import poll_condition

# Runs inside the toolkit venv (argv[1]: where to write the properties file).
_LAUNCH = """
import os, sys
from sagemaker_inference import environment
from sagemaker_pytorch_serving_container import serving, torchserve

torchserve._set_python_path()
properties = torchserve._generate_ts_config_properties(serving.HANDLER_SERVICE)
with open(sys.argv[1], "w") as config:
    config.write(properties.replace("http://0.0.0.0:", "http://127.0.0.1:"))
os.makedirs(torchserve.MODEL_STORE, exist_ok=True)
executable = os.path.join(os.path.dirname(sys.executable), "torchserve")
os.execv(executable, [executable, "--start", "--foreground", "--model-store", torchserve.MODEL_STORE,
                      "--ts-config", sys.argv[1], "--log-config", torchserve.DEFAULT_TS_LOG_FILE,
                      "--models", torchserve.DEFAULT_TS_MODEL_NAME + "=" + environment.model_dir])
"""


class ToolkitStartError(SconesError, RuntimeError):
    """TorchServe with the toolkit did not become ready; the message carries its log's tail."""


@dataclass
class ToolkitEndpoint:
    python: str | os.PathLike                  # the toolkit venv's interpreter
    model: str | os.PathLike                   # model.tar.gz, or a folder holding one
    work_dir: str | os.PathLike                # everything TorchServe writes goes here
    env: dict[str, str] = field(default_factory=dict)   # the model's Environment (SAGEMAKER_*), as on AWS
    host: str = "127.0.0.1"
    port: int | None = None

    def __post_init__(self) -> None:
        self._work_root = Path(self.work_dir)
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._work_root / "torchserve.log"

    def start(self, timeout_s: float = 180.0) -> "ToolkitEndpoint":
        archive = Path(self.model)
        if archive.is_dir():
            archive = archive / "model.tar.gz"
        base = self._work_root / "ml"
        unpack_model(archive, base / "model")
        for folder in ("tmp", "logs"):
            (self._work_root / folder).mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        local = f"{self.host}"
        env = {name: value for name, value in os.environ.items() if not name.startswith(("SAGEMAKER_", "TS_"))}
        env.update({
            "SAGEMAKER_BASE_DIR": str(base),                    # the toolkit's /opt/ml
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "TMPDIR": str(self._work_root / "tmp"),             # TorchServe's pid file (tempfile.gettempdir())
            "TEMP": str(self._work_root / "tmp"),               # java.io.tmpdir: the workers' unix sockets
            "LOG_LOCATION": str(self._work_root / "logs"),
            "METRICS_LOCATION": str(self._work_root / "logs"),
            # enable_envvars_config=true in the toolkit's properties: TS_* variables set these.
            "TS_METRICS_ADDRESS": f"http://{local}:{free_port(self.host)}",
            "TS_GRPC_INFERENCE_ADDRESS": local,
            "TS_GRPC_MANAGEMENT_ADDRESS": local,
            "TS_GRPC_INFERENCE_PORT": str(free_port(self.host)),
            "TS_GRPC_MANAGEMENT_PORT": str(free_port(self.host)),
            **self.env,
        })
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.python), "-c", _LAUNCH, str(self._work_root / "sagemaker-ts.properties")],
                cwd=self._work_root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """/ping answers 200 and every worker of the model is READY (management API on the same port)."""
        process = self._process
        if process is None:
            raise ToolkitStartError("TorchServe is not running: start() launches it")
        last = "no answer"

        def ready() -> bool:
            nonlocal last
            if process.poll() is not None:
                raise ToolkitStartError(f"TorchServe exited with {process.returncode}:\n{self.log_tail()}")
            try:
                last = f"ping {loopback.get(f'{self.url}/ping', timeout=2)[0]}"
                workers = [worker["status"] for worker in self.workers(timeout_s=2)]
            except (OSError, ValueError, KeyError) as error:
                last = str(error)
                return False
            last = f"workers {workers}"
            return bool(workers) and all(status == "READY" for status in workers)

        if not poll_condition(ready, timeout_s, interval=0.2):
            raise ToolkitStartError(f"TorchServe at {self.url} not ready after {timeout_s:.0f} s ({last}):\n"
                                    f"{self.log_tail()}")

    def workers(self, timeout_s: float = 5.0) -> list[dict]:
        models = loopback.get_json(f"{self.url}/models/model", timeout=timeout_s)
        return [worker for model in models for worker in model["workers"]]

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole process group (CLI, Java frontend, Python workers); SIGKILL at the deadline."""
        if self._process is None:
            return
        group = self._process.pid
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            if poll_condition(lambda: self._reaped_and_gone(group), wait_s):
                break
        self._process.wait(10)
        if _group_alive(group):
            raise RuntimeError(f"TorchServe process group {group} still alive after SIGKILL")
        self._process = None

    def _reaped_and_gone(self, group: int) -> bool:
        if self._process is not None:
            self._process.poll()  # reap the CLI as soon as it exits
        return not _group_alive(group)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "ToolkitEndpoint":
        return self.start() if self._process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    """Whether any process of the group is still running (zombies waiting for their parent do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False
