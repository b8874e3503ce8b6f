"""One Lambda execution environment as a local process: what runs where AWS runs its Python runtime.

Started by the scones process executor (harness/lambda_executor) inside LocalStack, with the
function's own interpreter (a small per-version venv holding boto3, like AWS's runtimes).
Standard library only: the function's interpreter has nothing of ours installed.

It talks to the executor over a socket pair the executor made for it (fd in $SCONES_LAMBDA_CHANNEL_FD),
in frames (see send_frame): the executor imports the frame functions from this file.
  out: {"ready": true} once the handler module is loaded (or failed to load: that is reported per invoke);
  in:  {"invoke-id", "invoked-function-arn", "payload", "trace-id"}, the invoke as LocalStack sends it;
  out: {"request_id", "ok", "logs"} + the raw result (JSON of the return value) or the error
       ({"errorMessage", "errorType", "requestId", "stackTrace"} as AWS sends it).
The executor resolves LocalStack's invocation future with that, as LocalStack's own /logs and
/response routes would. Why not those HTTP routes, as LocalStack's Go init does in Docker: each
callback is a full request through LocalStack's gateway, two per invoke, plus an HTTP POST to start
it: 9.5-12.4 ms per invoke inside the executor, against 0.6-1.1 ms over the socket pair (echo
handler; `benchmarks/lambda_executor.py --baseline-checkout` runs both, "executor share").
The timeout is not enforced here: the executor kills this process at the deadline (as AWS
resets the sandbox) and reports "Task timed out", so a handler stuck in C code cannot escape.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
import resource
import socket
import struct
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

# Set by the executor (not AWS names): our end of the socket pair and the parent to watch.
CHANNEL_FD = "SCONES_LAMBDA_CHANNEL_FD"
PARENT_PID = "SCONES_LAMBDA_PARENT_PID"

_FRAME_HEAD = struct.Struct(">II")  # length of the JSON header, length of the raw body


def send_frame(channel: socket.socket, header: dict, body: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    channel.sendall(_FRAME_HEAD.pack(len(encoded), len(body)) + encoded + body)


def read_frame(reader) -> "tuple[dict, bytes] | None":
    """The next (header, body) from a buffered reader of the channel; None at its end."""
    head = reader.read(_FRAME_HEAD.size)
    if len(head) < _FRAME_HEAD.size:
        return None
    header_size, body_size = _FRAME_HEAD.unpack(head)
    header, body = reader.read(header_size), reader.read(body_size)
    if len(header) < header_size or len(body) < body_size:
        return None
    return json.loads(header), body


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LambdaContext:
    """The context object AWS passes as the handler's second argument."""

    def __init__(self, request_id: str, invoked_function_arn: str, deadline: float):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Tee(io.TextIOBase):
    """Collects what the handler prints for the invocation's logs, and still writes it to the process log."""

    def __init__(self, original):
        self.original = original
        self.buffer_ = io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        try:
            self.original.write(text)
            self.original.flush()
        except (OSError, ValueError):
            pass
        return len(text)

    def flush(self) -> None:
        try:
            self.original.flush()
        except (OSError, ValueError):
            pass

    # Handlers may hand sys.stdout to subprocesses or write bytes: those go to the process log only.
    @property
    def buffer(self):
        return self.original.buffer

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return False


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now, so log records land in the invocation's logs."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _install_aws_logging() -> _RequestIdFilter:
    # Same line shape as AWS's Python runtime: "[LEVEL]\t<time>Z\t<request id>\t<message>".
    request_filter = _RequestIdFilter()
    handler = _CurrentStdoutHandler()
    formatter = logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                                  "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(request_filter)
    handler.terminator = ""
    logging.getLogger().addHandler(handler)
    return request_filter


def _user_frames(exc: BaseException) -> traceback.StackSummary:
    """The traceback without this file's frames: AWS shows only the function's own code."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__]
    return traceback.StackSummary.from_list(frames)


def _error_body(exc: BaseException, request_id: str, error_type: str | None = None) -> dict:
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": _user_frames(exc).format(),
    }


def _max_memory_mb() -> int:
    # ru_maxrss survives exec (it would report LocalStack's own peak); VmHWM is this process's.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class _InitError(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


def _load_handler(handler_string: str, task_root: str):
    """Import "package.module.function" from the task root; AWS's error types when that fails."""
    module_name, _, function_name = handler_string.rpartition(".")
    if not module_name or not function_name:
        raise _InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler_string}': not enough values to unpack")
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as exc:
        raise _InitError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}") from exc
    except ImportError as exc:
        raise _InitError("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from exc
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise _InitError("Runtime.HandlerNotFound",
                         f"Handler '{function_name}' missing on module '{module_name}'") from None


class Runtime:
    def __init__(self) -> None:
        self.handler_string = os.environ.get("_HANDLER", "")
        self.task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
        self.timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
        self.memory_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.max_payload = int(os.environ.get("LOCALSTACK_MAX_PAYLOAD_SIZE") or 6 * 1024 * 1024 + 100)
        self.request_filter = _install_aws_logging()
        self.handler = None
        self.init_error: _InitError | None = None
        self.init_duration_ms: float | None = None

    def initialise(self) -> None:
        started = time.perf_counter()
        try:
            self.handler = _load_handler(self.handler_string, self.task_root)
            self.init_error = None
        except _InitError as exc:
            self.init_error = exc
        except Exception as exc:  # module-level code raised: AWS reports it as the handler's error type
            self.init_error = _InitError(type(exc).__name__, str(exc))
            self.init_error.__traceback__ = exc.__traceback__
        self.init_duration_ms = (time.perf_counter() - started) * 1000

    def invoke(self, invocation: dict) -> tuple[bool, bytes, str]:
        """Run one invocation: (ok, the result or error body, its logs)."""
        request_id = invocation["invoke-id"]
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        os.environ["_X_AMZN_TRACE_ID"] = invocation.get("trace-id") or ""
        self.request_filter.request_id = request_id
        tee_out, tee_err = _Tee(sys.__stdout__), _Tee(sys.__stderr__)
        sys.stdout, sys.stderr = tee_out, tee_err
        init_line = ""
        if self.init_duration_ms is not None:
            init_line = f"Init Duration: {self.init_duration_ms:.2f} ms\t"
        print(f"START RequestId: {request_id} Version: {self.version}")
        if self.init_error is not None:  # AWS re-runs init on the next invoke after an init failure
            self.initialise()
        try:
            if self.init_error is not None:
                body = _error_body(self.init_error, request_id, self.init_error.error_type)
                body["requestId"] = ""
                print(f"[ERROR] {self.init_error.error_type}: {self.init_error}")
                ok, result_bytes = False, json.dumps(body).encode()
            else:
                ok, result_bytes = self._call_handler(invocation, request_id, deadline)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            max_rss_mb = _max_memory_mb()
            print(f"END RequestId: {request_id}")
            print(f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
                  f"Billed Duration: {int(elapsed_ms) + 1} ms\tMemory Size: {self.memory_mb} MB\t"
                  f"Max Memory Used: {max_rss_mb} MB\t{init_line}")
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.init_duration_ms = None
        return ok, result_bytes, tee_out.buffer_.getvalue() + tee_err.buffer_.getvalue()

    def _call_handler(self, invocation: dict, request_id: str, deadline: float) -> tuple[bool, bytes]:
        context = LambdaContext(request_id, invocation.get("invoked-function-arn", ""), deadline)
        try:
            event = json.loads(invocation.get("payload") or "null")
            result = self.handler(event, context)
        except Exception as exc:
            body = _error_body(exc, request_id)
            trace = "Traceback (most recent call last):\n" + "".join(_user_frames(exc).format())
            # AWS logs the error as one record: "[ERROR] Type: message" then the traceback.
            print(f"[ERROR] {type(exc).__name__}: {exc}\n{trace}".rstrip("\n"))
            return False, json.dumps(body).encode()
        try:
            encoded = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            print(f"[ERROR] Runtime.MarshalError: Unable to marshal response: {exc}")
            body = {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError",
                    "requestId": request_id, "stackTrace": []}
            return False, json.dumps(body).encode()
        if len(encoded) > self.max_payload:  # AWS's synchronous response limit bites here too
            body = {"errorMessage": f"Response payload size exceeded maximum allowed payload size ({self.max_payload} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge"}
            return False, json.dumps(body).encode()
        return True, encoded


def _exit_when_orphaned(parent_pid: int) -> None:
    # LocalStack may be SIGKILLed; an environment must not outlive it.
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(1.0)


def main() -> None:
    runtime = Runtime()
    parent_pid = int(os.environ.get(PARENT_PID) or os.getppid())
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()

    channel = socket.socket(fileno=int(os.environ[CHANNEL_FD]))
    channel.set_inheritable(False)  # what the handler starts must not hold the executor's channel open
    reader = channel.makefile("rb")
    runtime.initialise()
    send_frame(channel, {"ready": True})
    while (frame := read_frame(reader)) is not None:  # the executor closed its end: nothing more to do
        invocation, _ = frame
        ok, result, logs = runtime.invoke(invocation)
        send_frame(channel, {"request_id": invocation["invoke-id"], "ok": ok, "logs": logs}, result)


if __name__ == "__main__":
    main()
