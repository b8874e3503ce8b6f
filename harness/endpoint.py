"""Start and stop the local SageMaker endpoint, in this process (a thread) or as a subprocess.

    with EndpointServer(model_dir, capture=CaptureConfig("s3://bucket/capture")) as endpoint:
        boto3.client("sagemaker-runtime", endpoint_url=endpoint.url).invoke_endpoint(...)

A thread is quickest for tests; a subprocess is what the local stack runs (it survives the
harness and has its own GIL). Both wait until GET /ping answers 200, and stop cleanly: the
server's shutdown flushes data capture before it returns.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scones import contract, loopback
from scones import settings as harness_settings
from scones.errors import SconesError
from scones.harness.serving.capture import CaptureConfig
from scones.polling import PollTimedOut, poll

if TYPE_CHECKING:  # imported when a thread-mode server starts: a subprocess' parent needs neither
    import uvicorn

    from scones.harness.serving.server import EndpointApp

DEFAULT_ENDPOINT_NAME = contract.ENDPOINT_NAME


class EndpointStartError(SconesError, RuntimeError):
    """The endpoint did not become ready; the message says why and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class EndpointServer:
    model: str | os.PathLike
    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    variant_name: str = contract.VARIANT_NAME
    capture: CaptureConfig | None = None
    host: str = "127.0.0.1"
    port: int | None = None                  # a free port when None
    mode: str = "thread"                     # "thread" or "subprocess"
    inference_threads: int | None = None      # handler threads; None: the container's variables, else 2 (server.py)
    # torch intra-op threads. None: 1 in a subprocess (the measured best, see benchmarks/endpoint.py), and
    # untouched in thread mode, where torch.set_num_threads would change the whole host process.
    torch_threads: int | None = None
    # scones' opt-in dynamic batching (harness/serving/server.py); 1: one request per predict_fn call, as the container.
    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    invoke_timeout_s: float | None = None    # thread mode: the runtime API's wait for the handlers (None: AWS's 60 s)
    env: dict[str, str | None] = field(default_factory=dict)   # extra environment for a subprocess; None unsets
    capture_writer_options: dict = field(default_factory=dict)  # CaptureWriter tuning; a subprocess takes flush_interval_s
    log_path: str | os.PathLike | None = None            # subprocess output; under the state dir when None
    # Where capture records are spooled before upload and archived after (harness/serving/capture.py);
    # None: a temporary folder of this server's own.
    capture_spool: str | os.PathLike | None = None
    http: str = "auto"                                   # uvicorn HTTP parser: auto, h11, httptools
    loop: str = "auto"                                   # uvicorn event loop: auto, asyncio, uvloop

    def __post_init__(self) -> None:
        if self.mode not in ("thread", "subprocess"):
            raise ValueError(f"mode must be 'thread' or 'subprocess', not {self.mode!r}")
        self._server: uvicorn.Server | None = None
        self._app: EndpointApp | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._temporary_spool: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- start -------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout_s: float = 120.0) -> "EndpointServer":
        if self.port is None:
            self.port = free_port(self.host)
        if self.mode == "thread":
            self._start_thread(self.port)
        else:
            self._start_subprocess()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def _start_thread(self, port: int) -> None:
        import uvicorn

        from scones.harness.serving.server import INVOKE_TIMEOUT_S, EndpointSettings, create_app

        self._app = create_app(EndpointSettings(
            model=str(self.model), endpoint_name=self.endpoint_name, variant_name=self.variant_name,
            capture=self.capture, inference_threads=self.inference_threads, torch_threads=self.torch_threads,
            max_batch_size=self.max_batch_size, max_batch_delay_ms=self.max_batch_delay_ms,
            invoke_timeout_s=self.invoke_timeout_s if self.invoke_timeout_s is not None else INVOKE_TIMEOUT_S,
            capture_writer_options={**self.capture_writer_options, "spool_dir": self.capture_spool},
        ))
        # asyncio in a thread: uvloop's policy is process-wide, and tests share the process.
        config = uvicorn.Config(self._app, host=self.host, port=port, log_level="warning", access_log=False,
                                proxy_headers=False,
                                lifespan="on", http=self.http, loop="asyncio" if self.loop == "auto" else self.loop)
        self._server = uvicorn.Server(config)
        # Bind here, so a port clash fails now and not later in the thread.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"endpoint-{self.endpoint_name}", daemon=True)
        self._thread.start()

    def _start_subprocess(self) -> None:
        command = [sys.executable, "-m", "scones.harness.commands.endpoint", "--model", str(self.model),
                   "--endpoint-name", self.endpoint_name, "--variant-name", self.variant_name,
                   "--host", self.host, "--port", str(self.port),
                   "--torch-threads", str(self.torch_threads or 1), "--http", self.http, "--loop", self.loop,
                   "--max-batch-size", str(self.max_batch_size), "--max-batch-delay-ms", str(self.max_batch_delay_ms)]
        if self.inference_threads is not None:
            command += ["--inference-threads", str(self.inference_threads)]
        if self.capture is not None:
            command += ["--capture", self.capture.destination_s3_uri,
                        "--sampling", str(self.capture.sampling_percentage)]
            command += [arg for mode, on in (("Input", self.capture.capture_input), ("Output", self.capture.capture_output))
                        if on for arg in ("--capture-mode", mode)]
            command += [arg for value in self.capture.csv_content_types for arg in ("--csv-content-type", value)]
            command += [arg for value in self.capture.json_content_types for arg in ("--json-content-type", value)]
            if self.capture_spool is None:
                self._temporary_spool = self.capture_spool = tempfile.mkdtemp(prefix="scones-capture-spool-")
            command += ["--capture-spool", str(self.capture_spool)]
            if "flush_interval_s" in self.capture_writer_options:
                command += ["--capture-flush-seconds", str(self.capture_writer_options["flush_interval_s"])]
        if self.log_path is None:
            log_dir = harness_settings.state_dir() / "endpoint"
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = log_dir / f"{self.endpoint_name}-{self.port}.log"
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT,
            env={name: value for name, value in {**os.environ, **self.env}.items() if value is not None},
        )
        log_file.close()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Poll GET /ping until 200; raise EndpointStartError with the reason at the deadline."""
        def ping() -> tuple[bool, str]:
            """(ready, what /ping said); raises when the server can never become ready."""
            if self._process is not None and self._process.poll() is not None:
                raise EndpointStartError(f"endpoint process exited with {self._process.returncode}; "
                                         f"see {self.log_path}:\n{self._log_tail()}")
            if self._thread is not None and not self._thread.is_alive():
                raise EndpointStartError(f"endpoint thread for {self.endpoint_name} stopped before it was ready")
            try:
                status, _ = loopback.get(f"{self.url}/ping", timeout=2)
                return status == 200, f"HTTP {status}"
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")
                if '"failed"' in detail:
                    self.stop()
                    raise EndpointStartError(f"endpoint {self.endpoint_name} could not load {self.model}: {detail}") from None
                return False, f"HTTP {error.code} {detail}"
            except OSError as error:
                return False, str(error)

        try:
            poll(ping, timeout=timeout_s, interval=0.05, until=lambda answer: answer[0])
        except PollTimedOut as timed_out:
            raise EndpointStartError(
                f"endpoint {self.endpoint_name} at {self.url} not ready after {timeout_s:.0f} s "
                f"(last /ping: {timed_out.last[1]})" + (f"; log {self.log_path}" if self.log_path else "")) from None

    # --- stop --------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful stop: the server drains requests and flushes capture; SIGKILL a subprocess at the deadline."""
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:  # started with the server
                self._thread.join(timeout_s)
            self._server = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            self._process = None
        if self._temporary_spool and not any(Path(self._temporary_spool, "pending").rglob("*.jsonl")):
            shutil.rmtree(self._temporary_spool, ignore_errors=True)
            self._temporary_spool = self.capture_spool = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else os.getpid() if self._server else None

    def capture_status(self) -> dict:
        return loopback.get_json(f"{self.url}/capture/status")

    def inference_status(self) -> dict:
        """Requests, batches and the largest batch served so far (see harness/serving/server.py)."""
        return loopback.get_json(f"{self.url}/inference/status")

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None:  # a thread-mode server logs to this process' own handlers
            return ""
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "EndpointServer":
        return self.start() if self._server is None and self._process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
