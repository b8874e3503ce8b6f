"""ProcessRuntimeExecutor: LocalStack's RuntimeExecutor with a local process where Docker had a container.

LocalStack 4.14 creates one executor per execution environment and drives it:
prepare_version (function created/updated) -> start(env) -> invoke(payload)* -> stop().
The process (harness/lambda_runtime/bootstrap.py) gets the same environment variables a
container would and talks to us over a socket pair we own (its protocol is described there).
What it sends back resolves LocalStack's ExecutorEndpoint futures (startup, invocation, logs)
exactly as LocalStack's HTTP callback routes would, so LocalStack's own bookkeeping (logs to
CloudWatch, warm reuse, one environment per concurrent invoke) works unchanged, without two
requests through LocalStack's gateway per invoke.

What this class adds on top of the protocol:
- the function's timeout: at the deadline the process group is killed and the invoke fails
  with AWS's "Task timed out after N.NN seconds"; the next invoke starts a fresh process in
  the same environment (AWS resets the sandbox the same way);
- a process that dies mid-invoke or during start fails that invoke/start at once, with its
  exit status, instead of leaving LocalStack waiting for 905 seconds.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from pathlib import Path

from localstack import config
from localstack.aws.api.lambda_ import PackageType, RequestTooLargeException
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    InvokeSendError,
    StatusErrorException,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

from harness.lambda_executor.names import PYTHONS_ENV
from harness.lambda_runtime.bootstrap import CHANNEL_FD, PARENT_PID, read_frame, send_frame

LOG = logging.getLogger(__name__)

HOST = "127.0.0.1"
BOOTSTRAP = Path(__file__).resolve().parent.parent / "lambda_runtime" / "bootstrap.py"
STOP_GRACE_S = 2.0
SYNC_REQUEST_LIMIT = 6 * 1024 * 1024  # AWS: "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
LOG_TAIL_BYTES = 64 * 1024
INVOCATION_LOG_BYTES = 1024 * 1024  # the most of one invocation's own log quoted after a timeout or crash


# Time spent inside invoke() (invoke frame sent -> handler -> result frame read), for
# attributing latency: GET /_scones/executor on LocalStack's port reports it.
INVOKE_MS: deque[float] = deque(maxlen=2000)
_counts = {"invokes": 0, "timeouts": 0, "resets": 0, "environments_started": 0}


def stats() -> dict:
    ordered = sorted(INVOKE_MS)

    def percentile(fraction: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(fraction * (len(ordered) - 1) + 0.5))], 2) if ordered else None

    return {**_counts, "recent_invoke_ms": {"n": len(ordered), "p50": percentile(0.5), "p95": percentile(0.95)}}


def python_for_runtime(runtime: str | None) -> str:
    """The interpreter for a Lambda runtime such as "python3.12": the manager's map, else ours."""
    if not runtime or not runtime.startswith("python3"):
        raise LambdaRuntimeException(
            f"Runtime {runtime!r} is not supported by the scones process executor: only python3.x zip functions run here."
        )
    pythons = json.loads(os.environ.get(PYTHONS_ENV) or "{}")
    interpreter = pythons.get(runtime)
    if interpreter and os.access(interpreter, os.X_OK):
        return interpreter
    LOG.warning(
        "No %s interpreter configured in $%s; running %s functions with LocalStack's own Python %d.%d",
        runtime, PYTHONS_ENV, runtime, *sys.version_info[:2],
    )
    return sys.executable


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = ExecutorEndpoint(self.id, container_address=HOST, container_port=None)
        self.env_vars: dict[str, str] = {}
        self.process: subprocess.Popen | None = None
        self._channel: socket.socket | None = None  # our end of the socket pair with the process
        self.work_dir = Path(tempfile.gettempdir()) / "scones-lambda" / f"{function_version.id.function_name}-{id}"
        self.log_path = self.work_dir / "environment.log"
        self._lock = threading.Lock()
        self._stopped = False
        self._killing = False  # set while we kill the process on purpose: its exit is no crash
        self._request_id = ""  # the invoke in flight, for the watcher's and the timeout's reports

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        self.env_vars = {key: str(value) for key, value in env_vars.items()}
        _counts["environments_started"] += 1
        self._spawn()
        self.executor_endpoint.wait_for_startup()

    def stop(self) -> None:
        self._stopped = True
        self._kill(graceful=True)
        try:
            self.executor_endpoint.shutdown()
        except Exception as exc:  # already unregistered, or never started
            LOG.debug("Error while stopping executor endpoint of %s: %s", self.id, exc)
        self._close_channel()
        # Its /tmp and its log go with it (errors already quoted the log's tail), so that
        # thousands of short-lived environments leave nothing behind.
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _spawn(self) -> None:
        code_dir = self._code_dir()
        self._killing = False
        (self.work_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._close_channel()
        channel, child_end = socket.socketpair()
        self._channel = channel
        env = dict(self.env_vars)
        env.update({
            "LAMBDA_TASK_ROOT": str(code_dir),
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.work_dir / "tmp"),
            "TMPDIR": str(self.work_dir / "tmp"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            CHANNEL_FD: str(child_end.fileno()),
            PARENT_PID: str(os.getpid()),
        })
        interpreter = python_for_runtime(self.function_version.config.runtime)
        with open(self.log_path, "ab") as log_file:
            # -P: the bootstrap's folder must not shadow the function's modules; own process group
            # so a timeout kills whatever the handler started too.
            self.process = subprocess.Popen(
                [interpreter, "-P", str(BOOTSTRAP)],
                cwd=code_dir, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                pass_fds=(child_end.fileno(),), process_group=0,
            )
        child_end.close()
        LOG.debug("Started execution environment %s of %s as PID %s (%s)",
                  self.id, self.function_version.qualified_arn, self.process.pid, interpreter)
        threading.Thread(target=self._watch, args=(self.process,), daemon=True,
                         name=f"scones-lambda-watch-{self.id}").start()
        threading.Thread(target=self._read_frames, args=(self.process, channel), daemon=True,
                         name=f"scones-lambda-read-{self.id}").start()

    def _close_channel(self) -> None:
        if self._channel is not None:
            try:  # wakes the reader thread now: close() alone waits for its makefile() to go
                self._channel.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._channel.close()
            self._channel = None

    def _read_frames(self, process: subprocess.Popen, channel: socket.socket) -> None:
        """What the process sends: "ready" resolves the startup future, a result the invocation future."""
        try:
            reader = channel.makefile("rb")
            while (frame := read_frame(reader)) is not None:
                header, body = frame
                endpoint = self.executor_endpoint
                if header.get("ready"):
                    future = endpoint.startup_future
                    if future is not None and not future.done():
                        future.set_result(True)
                    continue
                future = endpoint.invocation_future
                if process is not self.process or future is None or header["request_id"] != self._request_id:
                    continue  # an answer to an invoke that already timed out
                endpoint.logs = header["logs"]
                try:
                    future.set_result(InvocationResult(header["request_id"], body, is_error=not header["ok"],
                                                       logs=header["logs"]))
                except InvalidStateError:  # the deadline passed at the same moment: the timeout stands
                    pass
        except (OSError, ValueError):  # we closed the channel (stop, reset): the process is going away
            pass

    def _code_dir(self) -> Path:
        if self.function_version.config.package_type != PackageType.Zip or not self.function_version.config.code:
            raise LambdaRuntimeException("Only zip-packaged functions run in the scones process executor.")
        return Path(self.function_version.config.code.get_unzipped_code_location())

    def _watch(self, process: subprocess.Popen) -> None:
        """Fail the pending start or invoke as soon as the process exits on its own."""
        code = process.wait()
        if self._stopped or self._killing or process is not self.process:
            return
        endpoint = self.executor_endpoint
        message = f"Runtime exited with error: exit status {code}" if code >= 0 else f"Runtime exited with error: signal: {signal.Signals(-code).name.lower()}"
        if endpoint.startup_future is not None and not endpoint.startup_future.done():
            body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": f"{message}\n{self._log_tail(4096)}"})
            try:
                endpoint.startup_future.set_exception(StatusErrorException(message, payload=body.encode()))
            except InvalidStateError:
                pass
            return
        future = endpoint.invocation_future
        if future is not None and not future.done():
            request_id = self._request_id
            body = {"errorType": "Runtime.ExitError", "errorMessage": f"RequestId: {request_id} Error: {message}"}
            logs = self._invocation_log(request_id) + f"END RequestId: {request_id}\n"
            try:
                future.set_result(InvocationResult(request_id, json.dumps(body).encode(), is_error=True, logs=logs))
            except InvalidStateError:
                pass

    def _kill(self, graceful: bool) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        self._killing = True
        try:
            os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_S if graceful else 5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def _restart(self) -> None:
        """A fresh process in the same environment (after a timeout or a crash), like AWS's sandbox reset."""
        _counts["resets"] += 1
        self.executor_endpoint.startup_future = Future()
        self._spawn()
        try:
            self.executor_endpoint.startup_future.result(timeout=config.LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT)
        except FutureTimeout:
            self._kill(graceful=False)
            raise LambdaRuntimeException(f"Execution environment {self.id} did not become ready again after a reset")

    # --- invoking --------------------------------------------------------------------------

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if len(payload.get("payload") or "") > SYNC_REQUEST_LIMIT and len(payload["payload"].encode()) > SYNC_REQUEST_LIMIT:
            raise RequestTooLargeException(
                f"Request must be smaller than {SYNC_REQUEST_LIMIT} bytes for the InvokeFunction operation")
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                self._restart()
            endpoint = self.executor_endpoint
            future: Future[InvocationResult] = Future()
            endpoint.invocation_future = future
            endpoint.logs = None
            self._request_id = payload["invoke-id"]
            timeout_s = float(self.function_version.config.timeout)
            deadline = time.monotonic() + timeout_s
            started = time.perf_counter()
            _counts["invokes"] += 1
            try:
                send_frame(self._channel, payload)
            except OSError as exc:
                raise InvokeSendError(f"Execution environment {self.id} did not take the invoke: {exc}") from exc
            try:
                result = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                _counts["timeouts"] += 1
                return self._time_out(future, timeout_s)
            INVOKE_MS.append((time.perf_counter() - started) * 1000)
            return result

    def _time_out(self, future: Future, timeout_s: float) -> InvocationResult:
        request_id = self._request_id
        # Stop the handler first, so nothing it prints after the deadline sneaks into the logs.
        self._kill(graceful=False)
        logs = (
            self._invocation_log(request_id)
            + f"{_now_iso()} {request_id} Task timed out after {timeout_s:.2f} seconds\n"
            + f"END RequestId: {request_id}\n"
            + f"REPORT RequestId: {request_id}\tDuration: {timeout_s * 1000:.2f} ms\t"
              f"Billed Duration: {int(timeout_s * 1000)} ms\t"
              f"Memory Size: {self.function_version.config.memory_size} MB\tStatus: timeout\n"
        )
        body = {"errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds"}
        result = InvocationResult(request_id, json.dumps(body).encode(), is_error=True, logs=logs)
        try:
            future.set_result(result)
        except InvalidStateError:  # the answer came in right at the deadline: keep it
            return future.result()
        return result

    # --- logs ------------------------------------------------------------------------------

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(offset)
                return log_file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, size: int) -> str:
        return self._log_since(max(0, self._log_size() - size))

    def _invocation_log(self, request_id: str) -> str:
        """What the process logged since the bootstrap's START line of this invocation (for a timeout or a
        crash, whose logs the process cannot send). Found afterwards rather than noting the log's size at
        each invoke: that stat() on the invoke path gave up the GIL to whatever else ran."""
        tail = self._log_tail(INVOCATION_LOG_BYTES)
        start = tail.rfind(f"START RequestId: {request_id} ")
        return tail[start:] if start >= 0 else tail

    def get_logs(self) -> str:
        return self._log_tail(LOG_TAIL_BYTES)

    # --- addresses -------------------------------------------------------------------------

    def get_address(self) -> str:
        return HOST

    def get_endpoint_from_executor(self) -> str:
        return HOST

    def get_runtime_endpoint(self) -> str:
        return f"http://{HOST}:{config.GATEWAY_LISTEN[0].port}{self.executor_endpoint.get_endpoint_prefix()}"

    # --- versions --------------------------------------------------------------------------

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        python_for_runtime(function_version.config.runtime)  # fail creation early for other runtimes
        if function_version.config.package_type != PackageType.Zip:
            raise LambdaRuntimeException("Container-image functions need Docker; the scones process executor runs zip functions.")
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        return BOOTSTRAP.exists()
