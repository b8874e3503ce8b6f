"""ProcessRuntimeExecutor: LocalStack's RuntimeExecutor with a sandboxed local process where Docker had a container.

LocalStack 4.14 creates one executor per execution environment and drives it:
prepare_version (function created/updated) -> start(env) -> invoke(payload)* -> stop().
Each environment is AWS's own Python runtime interface client (`python -m awslambdaric <handler>`,
what AWS's Python base images run) on the function's own runtime interpreter, inside a sandbox laid
out as AWS's (sandbox.py: private /tmp, read-only /var/task, layers at /opt, memory cgroup). It talks
to a Lambda Runtime API served for that process alone (runtime_api.py), so handler loading, marshalling,
error shapes and log lines are AWS's code, not ours.

What this class adds, as the Lambda service does on AWS:
- the init phase: 10 s at most (then, and after an init error or a crash during init, the next
  invoke runs init again within the function's timeout: AWS's "suppressed init");
- the function's timeout: at the deadline the sandbox is killed and the invoke fails with
  "Task timed out after N.NN seconds"; the next invoke starts a fresh process;
- both limits charged as AWS would charge them, where each environment has its own CPU share:
  wall time less the time the runtime queued for a CPU held by other work here (charged_time.py);
- idle environments reclaimed after IDLE_RECLAIM_MS (LocalStack's keep-alive, set by the plugin
  unless LAMBDA_KEEPALIVE_MS says otherwise), and at most environment_slots' caps (per function, and in
  all by the machine's memory) alive at once;
- a sandbox killed by the OOM killer fails with Runtime.OutOfMemory, any other exit with
  Runtime.ExitError, at once, instead of leaving LocalStack waiting;
- START / END / REPORT lines around each invocation's own output, for CloudWatch Logs.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path

from localstack import config as localstack_config
from localstack.aws.api.lambda_ import PackageType, RequestTooLargeException
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

from scones.harness.lambda_executor import sandbox
from scones.harness.lambda_executor.charged_time import ChargedClock, forget_ended, wait_charged
from scones.harness.lambda_executor.environment_slots import NoFreeSlot, Slots
from scones.harness.lambda_executor.names import TIME_SCALE_PATCH_ENV, TIME_SCALE_PATH
from scones.harness.lambda_executor.runtime_api import Invocation, RuntimeApiListener, RuntimeApiServer
from scones.harness.lambda_executor.runtimes import PYTHON_RUNTIMES, MissingInterpreter, interpreter_for
from scones.harness.lambda_runtime import backoff_time_scale
from scones.harness.lambda_runtime.backoff_time_scale import TIME_SCALE_URL_ENV

LOG = logging.getLogger(__name__)

HOST = "127.0.0.1"
# What runs before AWS's runtime interface client in each environment, as `python -c` (no file to mount).
_BACKOFF_TIME_SCALE_SOURCE = Path(backoff_time_scale.__file__).read_text()
INIT_TIMEOUT_S = 10.0  # AWS: "The Init phase is limited to 10 seconds"
STOP_GRACE_S = 2.0
SYNC_REQUEST_LIMIT = 6 * 1024 * 1024  # AWS: "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
RESPONSE_LIMIT = 6 * 1024 * 1024
LOG_TAIL_BYTES = 64 * 1024
LOG_READ_BYTES = 64 * 1024   # one pread of an environment's log takes at most this much
LOG_ROTATE_BYTES = 32 * 1024 * 1024
WORK_ROOT = Path(tempfile.gettempdir()) / "scones-lambda"
# AWS reclaims idle environments after an unpublished time (minutes); here after 30 s, so that
# memory returns to the machine within a minute of a burst (benchmarks/lambda_sandbox.py).
IDLE_RECLAIM_MS = 30_000
SLOTS = Slots()

# Time spent inside invoke() (invocation handed out -> result back), for attributing latency:
# GET /_scones/executor on LocalStack's port reports it.
INVOKE_MS: deque[float] = deque(maxlen=2000)
COLD_START_MS: deque[float] = deque(maxlen=500)
_counts = {"invokes": 0, "timeouts": 0, "resets": 0, "environments_started": 0, "out_of_memory": 0}

# Every sandbox is started from this one long-lived thread: bubblewrap's --die-with-parent (and
# setpriv's --pdeathsig) fire when the *thread* that started the process ends, and LocalStack's
# own threads come and go.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scones-lambda-spawn")


def _percentile(values, fraction: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * (len(ordered) - 1) + 0.5))], 2) if ordered else None


def stats() -> dict:
    return {**_counts,
            "recent_invoke_ms": {"n": len(INVOKE_MS), "p50": _percentile(INVOKE_MS, 0.5),
                                 "p95": _percentile(INVOKE_MS, 0.95)},
            "cold_start_ms": {"n": len(COLD_START_MS), "p50": _percentile(COLD_START_MS, 0.5),
                              "p95": _percentile(COLD_START_MS, 0.95)},
            "sandbox": sandbox.capabilities().describe(),
            "environments": {**SLOTS.stats(), "idle_reclaim_ms": localstack_config.LAMBDA_KEEPALIVE_MS}}


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(request_id: str, error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"}).encode()


class _Incarnation:
    """One process of the environment, from spawn to exit: how its init ended and its invoke in flight."""

    def __init__(self, process: subprocess.Popen, started: float, slot: object):
        self.process = process
        self.slot = slot   # its place among the live environments (environment_slots.py)
        self.started = started
        self.settled = threading.Event()      # init ended: ready, init error, exit or (set by us) timeout
        self.ready = False
        self.init_error: tuple[bytes, str | None] | None = None
        self.init_ms: float | None = None
        self.report_init = False
        self.request_id = ""
        self.result: Future | None = None
        self.runtime_pid: int | None = None   # the runtime's own process (the sandbox's tools are its parents)


class ProcessRuntimeExecutor(RuntimeExecutor, RuntimeApiListener):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.env_vars: dict[str, str] = {}
        self.work_dir = WORK_ROOT / f"{function_version.id.function_name}-{id}"
        self.log_path = self.work_dir / "environment.log"
        self._log_fd: int | None = None   # read with pread from _log_read_to: one system call per read (sandbox.KernelFile)
        self._log_read_to = 0
        self._api: RuntimeApiServer | None = None
        self._cgroup: sandbox.MemoryCgroup | None = None
        self._current: _Incarnation | None = None
        self._lock = threading.Lock()
        self.last_used = time.monotonic()   # for choosing which idle environment gives way at a cap
        self._pending_init_log = ""   # what init printed, for the first invocation's logs

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        self.env_vars = {key: str(value) for key, value in env_vars.items()}
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "tmp").mkdir(exist_ok=True)
        (self.work_dir / "tmp").chmod(0o1777)   # the sandbox's /tmp, written by its unprivileged user
        self.log_path.touch()
        self._log_fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
        caps = sandbox.capabilities()
        if caps.memory_cgroup is not None:
            try:
                self._cgroup = sandbox.MemoryCgroup.create(
                    caps.memory_cgroup, f"{self.function_version.id.function_name}-{self.id}",
                    int(self.function_version.config.memory_size) * sandbox.MiB)
            except OSError as exc:
                LOG.warning("No memory cgroup for %s (%s): its memory size is not enforced", self.id, exc)
        _counts["environments_started"] += 1
        incarnation = self._spawn()
        clock = ChargedClock(incarnation.process.pid, new_process=True)
        if not wait_charged(clock, INIT_TIMEOUT_S, incarnation.settled.wait):
            # AWS ends an init phase after 10 s and runs init again inside the first invoke.
            self._kill(incarnation, graceful=False)
            self._pending_init_log = (self._read_new_logs()
                                      + f"INIT_REPORT Init Duration: {INIT_TIMEOUT_S * 1000:.2f} ms\tPhase: init\tStatus: timeout\n")
            return
        if incarnation.ready:
            incarnation.report_init = True
            COLD_START_MS.append(incarnation.init_ms or 0.0)
        # An init error or an exit during init: reported by the invoke that retries init, as on AWS.

    def stop(self) -> None:
        if self._current is not None:
            self._kill(self._current, graceful=True)
        if self._api is not None:
            self._api.close()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._cgroup is not None:
            self._cgroup.remove()
        # Its /tmp and its log go with it (errors already quoted the log), so that thousands of
        # short-lived environments leave nothing behind.
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _command(self) -> tuple[list[str], dict[str, str], Path]:
        config = self.function_version.config
        runtime = config.runtime
        try:
            interpreter = Path(interpreter_for(runtime))
        except MissingInterpreter as exc:
            raise LambdaRuntimeException(str(exc)) from None
        code_dir = self._code_dir()
        layers_dir = _layers_dir(self.function_version)
        caps = sandbox.capabilities()
        version = PYTHON_RUNTIMES[runtime]
        isolated = caps.isolated
        venv = interpreter.parent.parent
        task_root = sandbox.TASK_ROOT if isolated else str(code_dir)
        opt = sandbox.LAYERS_ROOT if isolated else str(layers_dir or self.work_dir / "no-layers")
        runtime_dir = sandbox.RUNTIME_ROOT if isolated else str(venv)
        python = f"{runtime_dir}/bin/{interpreter.name}"
        env = dict(self.env_vars)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": self._runtime_api().address,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "PATH": f"{runtime_dir}/bin:/usr/local/bin:/usr/bin:/bin:{opt}/bin",
            "LD_LIBRARY_PATH": f"/lib64:/usr/lib64:{task_root}:{task_root}/lib:{opt}/lib",
            "PYTHONPATH": sandbox.python_search_path(version).replace(sandbox.LAYERS_ROOT, opt),
            "LANG": "C.UTF-8",
            "HOME": "/tmp" if isolated else str(self.work_dir / "tmp"),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if not isolated:
            env["TMPDIR"] = str(self.work_dir / "tmp")
        handler = env.get("_HANDLER", "")
        runtime_command = [python, "-m", "awslambdaric", handler]
        if os.environ.get(TIME_SCALE_PATCH_ENV, "1") != "0":
            # The function's own botocore retries wait by the time scale too (backoff_time_scale.py).
            runtime_command = [python, "-c", _BACKOFF_TIME_SCALE_SOURCE, handler]
            env[TIME_SCALE_URL_ENV] = f"http://{HOST}:{localstack_config.GATEWAY_LISTEN[0].port}{TIME_SCALE_PATH}"
        layout = sandbox.Layout(
            code_dir=code_dir, tmp_dir=self.work_dir / "tmp", scratch_dir=self.work_dir / "sandbox",
            layers_dir=layers_dir, runtime_dir=venv, visible=tuple(_base_prefixes(venv)),
            hidden=_hidden_folders(venv))
        try:
            argv = sandbox.command(runtime_command, layout,
                                   ephemeral_bytes=int(config.ephemeral_storage.size) * sandbox.MiB, cgroup=self._cgroup)
        except (sandbox.SandboxUnavailable, ValueError) as exc:
            raise LambdaRuntimeException(str(exc)) from None
        return argv, env, code_dir

    def _spawn(self) -> _Incarnation:
        # A Runtime API of its own for each process: a request the previous one left waiting can
        # take nothing meant for this one (runtime_api.py).
        if self._api is not None:
            self._api.close()
        self._api = RuntimeApiServer(self, host=HOST).start()
        argv, env, code_dir = self._command()
        if self._cgroup is not None:
            self._cgroup.reset_peak()
        started = time.perf_counter()

        def popen() -> subprocess.Popen:
            with open(self.log_path, "ab") as log_file:
                # Own process group: a timeout kills whatever the handler started too.
                return subprocess.Popen(argv, cwd=code_dir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, process_group=0)

        try:
            slot = SLOTS.acquire(self, self.function_version.id.qualified_arn())
        except NoFreeSlot as exc:
            raise LambdaRuntimeException(str(exc)) from None
        try:
            process = _SPAWNER.submit(popen).result()
        except BaseException:
            SLOTS.release(slot)
            raise
        incarnation = _Incarnation(process, started, slot)
        self._current = incarnation
        LOG.debug("Started execution environment %s of %s as PID %s", self.id,
                  self.function_version.qualified_arn, process.pid)
        threading.Thread(target=self._watch, args=(incarnation,), daemon=True,
                         name=f"scones-lambda-watch-{self.id}").start()
        return incarnation

    def _code_dir(self) -> Path:
        if self.function_version.config.package_type != PackageType.Zip or not self.function_version.config.code:
            raise LambdaRuntimeException("Only zip-packaged functions run in the scones process executor.")
        return Path(self.function_version.config.code.get_unzipped_code_location())

    def _watch(self, incarnation: _Incarnation) -> None:
        """Settle a pending init or invoke as soon as the process exits on its own."""
        code = incarnation.process.wait()
        forget_ended()   # its runtime's schedstat, kept open by charged_time
        SLOTS.release(incarnation.slot)
        incarnation.settled.set()
        future = incarnation.result
        if future is not None and not future.done():
            try:
                future.set_result(("exit", code))
            except InvalidStateError:
                pass

    def _kill(self, incarnation: _Incarnation, graceful: bool) -> None:
        process = incarnation.process
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_S if graceful else 5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def evict_if_idle(self) -> bool:
        """End this environment's sandbox if no invoke is using it (environment_slots: a cap was reached)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            incarnation = self._current
            if incarnation is None or incarnation.process.poll() is not None or not incarnation.ready:
                return False
            self._kill(incarnation, graceful=False)
            return True
        finally:
            self._lock.release()

    # --- what the runtime says (Runtime API threads) ----------------------------------------

    def on_next(self) -> None:
        incarnation = self._current
        if incarnation is not None and not incarnation.ready:
            incarnation.init_ms = (time.perf_counter() - incarnation.started) * 1000
            incarnation.ready = True
            incarnation.settled.set()

    def on_init_error(self, body: bytes, error_type: str | None) -> None:
        incarnation = self._current
        if incarnation is not None:
            incarnation.init_error = (body, error_type)
            incarnation.settled.set()

    def on_response(self, request_id: str, body: bytes) -> None:
        self._settle(request_id, ("response", body))

    def on_error(self, request_id: str, body: bytes, error_type: str | None) -> None:
        self._settle(request_id, ("error", body))

    def _settle(self, request_id: str, outcome: tuple) -> None:
        incarnation = self._current
        if incarnation is None or incarnation.request_id != request_id or incarnation.result is None:
            return  # an answer to an invoke that already timed out
        try:
            incarnation.result.set_result(outcome)
        except InvalidStateError:  # the deadline passed at the same moment: the timeout stands
            pass

    # --- invoking --------------------------------------------------------------------------

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        event = payload.get("payload") or ""
        if len(event) > SYNC_REQUEST_LIMIT and len(event.encode()) > SYNC_REQUEST_LIMIT:
            raise RequestTooLargeException(
                f"Request must be smaller than {SYNC_REQUEST_LIMIT} bytes for the InvokeFunction operation")
        with self._lock:
            request_id = payload["invoke-id"]
            timeout_s = float(self.function_version.config.timeout)
            started = time.perf_counter()
            deadline = time.monotonic() + timeout_s
            _counts["invokes"] += 1
            logs = self._pending_init_log
            self._pending_init_log = ""
            incarnation = self._current
            clock: ChargedClock | None = None
            if incarnation is None or not incarnation.ready or incarnation.process.poll() is not None:
                # AWS's suppressed init: init runs again inside this invoke, under its timeout.
                if incarnation is not None:
                    self._kill(incarnation, graceful=False)
                    logs += self._read_new_logs()
                _counts["resets"] += 1
                incarnation = self._spawn()
                clock = ChargedClock(incarnation.process.pid, new_process=True)
                wait_charged(clock, timeout_s, incarnation.settled.wait)
                if not incarnation.ready:
                    return self._failed_init(incarnation, request_id, timeout_s, started, logs)
            init_line = ""
            if incarnation.report_init:  # the first invoke after a cold start reports its init phase
                init_line = f"Init Duration: {incarnation.init_ms:.2f} ms\t"
                incarnation.report_init = False
            logs += self._read_new_logs() + f"START RequestId: {request_id} Version: {self._version()}\n"
            future: Future = Future()
            incarnation.request_id, incarnation.result = request_id, future
            self._runtime_api().deliver(Invocation(
                request_id=request_id, payload=event.encode(),
                invoked_function_arn=payload.get("invoked-function-arn", ""),
                deadline_ms=int((time.time() + max(0.0, deadline - time.monotonic())) * 1000),
                trace_id=payload.get("trace-id") or ""))
            if clock is None:   # else the clock of a suppressed init goes on: init and handler share the timeout
                clock = ChargedClock(incarnation.process.pid, new_process=False, runtime=incarnation.runtime_pid)
            try:
                if not wait_charged(clock, timeout_s, lambda seconds: _done_within(future, seconds)):
                    _counts["timeouts"] += 1
                    return self._time_out(incarnation, request_id, timeout_s, logs)
                kind, value = future.result()
            finally:
                incarnation.result = None
                incarnation.runtime_pid = clock.runtime
                self.last_used = time.monotonic()
            elapsed_ms = (time.perf_counter() - started) * 1000
            INVOKE_MS.append(elapsed_ms)
            logs += self._read_new_logs()
            if kind == "exit":
                return self._exited(incarnation, request_id, value, logs, elapsed_ms)
            if kind == "response" and len(value) > RESPONSE_LIMIT:
                value = json.dumps({
                    "errorMessage": f"Response payload size exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge"}).encode()
                kind = "error"
            logs += self._end_lines(request_id, elapsed_ms, init_line)
            return InvocationResult(request_id, value, is_error=kind == "error", logs=logs)

    def _version(self) -> str:
        return self.env_vars.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")

    def _failed_init(self, incarnation: _Incarnation, request_id: str, timeout_s: float, started: float,
                     logs: str) -> InvocationResult:
        if incarnation.init_error is not None:
            body, error_type = incarnation.init_error
            try:  # the runtime exits after reporting: wait for the rest of what it printed
                incarnation.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill(incarnation, graceful=False)
            logs += self._read_new_logs()
            elapsed_ms = (time.perf_counter() - started) * 1000
            logs += (f"INIT_REPORT Init Duration: {elapsed_ms:.2f} ms\tPhase: invoke\tStatus: error\t"
                     f"Error Type: {error_type or 'Runtime.Unknown'}\n")
            logs += f"START RequestId: {request_id} Version: {self._version()}\n" + self._end_lines(
                request_id, elapsed_ms, "", status=f"Status: error\tError Type: {error_type or 'Runtime.Unknown'}\t")
            return InvocationResult(request_id, body, is_error=True, logs=logs)
        if incarnation.process.poll() is not None:
            logs += f"START RequestId: {request_id} Version: {self._version()}\n"
            return self._exited(incarnation, request_id, incarnation.process.returncode,
                                logs + self._read_new_logs(), (time.perf_counter() - started) * 1000)
        _counts["timeouts"] += 1
        logs += f"START RequestId: {request_id} Version: {self._version()}\n"
        return self._time_out(incarnation, request_id, timeout_s, logs)

    def _exited(self, incarnation: _Incarnation, request_id: str, code: int, logs: str,
                elapsed_ms: float) -> InvocationResult:
        if code > 128 and sandbox.capabilities().isolated:
            code = 128 - code  # both sandboxes exit with 128 + the signal that ended the sandboxed runtime
        message = f"Runtime exited with error: exit status {code}" if code >= 0 \
            else f"Runtime exited with error: signal: {(signal.strsignal(-code) or f'signal {-code}').lower()}"  # as AWS's Go init: "killed"
        error_type = "Runtime.ExitError"
        if code == -signal.SIGKILL and self._cgroup is not None and self._cgroup.oom_kills() > 0:
            error_type = "Runtime.OutOfMemory"
            _counts["out_of_memory"] += 1
        logs += f"{_now_iso()} {request_id} Error: {message}\n{error_type}\n"
        logs += self._end_lines(request_id, elapsed_ms, "", status=f"Status: error\tError Type: {error_type}\t")
        return InvocationResult(request_id, _error(request_id, error_type, message), is_error=True, logs=logs)

    def _time_out(self, incarnation: _Incarnation, request_id: str, timeout_s: float, logs: str) -> InvocationResult:
        # Stop the handler first, so nothing it prints after the deadline sneaks into the logs.
        self._kill(incarnation, graceful=False)
        logs += (self._read_new_logs()
                 + f"{_now_iso()} {request_id} Task timed out after {timeout_s:.2f} seconds\n"
                 + self._end_lines(request_id, timeout_s * 1000, "", status="Status: timeout\t"))
        return InvocationResult(request_id, _error(request_id, "Sandbox.Timedout",
                                                   f"Task timed out after {timeout_s:.2f} seconds"),
                                is_error=True, logs=logs)

    def _end_lines(self, request_id: str, elapsed_ms: float, init_line: str, status: str = "") -> str:
        memory_mb = int(self.function_version.config.memory_size)
        peak = self._cgroup.peak_bytes() if self._cgroup is not None else None
        used = f"Max Memory Used: {min(memory_mb, math.ceil(peak / sandbox.MiB))} MB\t" if peak else ""
        init_ms = float(init_line.split()[2]) if init_line else 0.0
        # Billed duration includes the init phase (AWS, since 2025-08-01, for on-demand functions).
        return (f"END RequestId: {request_id}\n"
                f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
                f"Billed Duration: {math.ceil(elapsed_ms + init_ms)} ms\tMemory Size: {memory_mb} MB\t"
                f"{used}{init_line}{status}\n")

    # --- logs ------------------------------------------------------------------------------

    def _read_new_logs(self) -> str:
        """What the process wrote since the last read: everything it printed before it answered."""
        if self._log_fd is None:
            return ""
        parts = []
        while chunk := os.pread(self._log_fd, LOG_READ_BYTES, self._log_read_to):
            parts.append(chunk)
            self._log_read_to += len(chunk)
            if len(chunk) < LOG_READ_BYTES:
                break
        if self._log_read_to > LOG_ROTATE_BYTES:
            # Read already, and the sandbox's file size limit (RLIMIT_FSIZE) applies to this log too:
            # start it again (the runtime appends, so its next line lands at the new end).
            os.truncate(self.log_path, 0)
            self._log_read_to = 0
        return b"".join(parts).decode("utf-8", errors="replace")

    def get_logs(self) -> str:
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(max(0, self.log_path.stat().st_size - LOG_TAIL_BYTES))
                return log_file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # --- addresses -------------------------------------------------------------------------

    def get_address(self) -> str:
        return HOST

    def get_endpoint_from_executor(self) -> str:
        return HOST

    def get_runtime_endpoint(self) -> str:
        return f"http://{self._api.address}" if self._api is not None else ""

    def _runtime_api(self) -> RuntimeApiServer:
        """The Runtime API server start() opened; runtimes and invocations come only after it."""
        if self._api is None:
            raise LambdaRuntimeException(f"environment {self.id} is not started: no Runtime API to serve")
        return self._api

    # --- versions --------------------------------------------------------------------------

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.package_type != PackageType.Zip:
            raise LambdaRuntimeException("Container-image functions need Docker; the scones process executor runs zip functions.")
        try:
            interpreter_for(function_version.config.runtime)  # a missing interpreter fails the function now
        except MissingInterpreter as exc:
            raise LambdaRuntimeException(str(exc)) from None
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()
        _layers_dir(function_version)

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        return True


def _layers_dir(function_version: FunctionVersion) -> Path | None:
    """The function's layers merged in order (built once per set of layer versions), or None."""
    layers = function_version.config.layers or []
    if not layers:
        return None
    key = sha256("\n".join(layer.layer_version_arn for layer in layers).encode()).hexdigest()[:16]
    merged = WORK_ROOT / "layers" / key
    if merged.exists():  # merged at prepare_version; every cold start after that only looks
        return merged
    for layer in layers:
        layer.code.prepare_for_execution()
    return sandbox.merge_layers([Path(layer.code.get_unzipped_code_location()) for layer in layers], merged)


def _done_within(future: Future, seconds: float) -> bool:
    return bool(wait_futures([future], timeout=seconds).done)


def _hidden_folders(venv: Path) -> tuple[Path, ...]:
    """Host folders a function must not see: the project's state dir (its runtime venvs live in
    <state>/lambda-runtimes), LocalStack's data and every environment's /tmp, LocalStack's venv."""
    folders = [venv.parent.parent, WORK_ROOT, Path(sys.prefix)]
    for variable in ("FILESYSTEM_ROOT", "LOCALSTACK_VOLUME_DIR", "TMPDIR"):
        if os.environ.get(variable):
            folders.append(Path(os.environ[variable]).parent)
    return tuple(dict.fromkeys(folders))


def _base_prefixes(venv: Path) -> list[Path]:
    """The base interpreter's installation a venv runs on (pyvenv.cfg's `home` is its bin folder)."""
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return [Path(value.strip()).parent]
    except OSError:
        pass
    return []
