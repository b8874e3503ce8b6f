"""One Lambda execution environment as a local process: what runs where AWS runs its Python runtime.

Started by the scones process executor (harness/lambda_executor) inside LocalStack, with the
function's own interpreter (a small per-version venv holding boto3, like AWS's runtimes).
Standard library only: the function's interpreter has nothing of ours installed.

It speaks LocalStack's executor protocol, the one LocalStack's Go init speaks in Docker:
  in:  POST /invoke {"invoke-id", "invoked-function-arn", "payload", "trace-id"} -> 202
  out: POST {LOCALSTACK_RUNTIME_ENDPOINT}/status/{LOCALSTACK_RUNTIME_ID}/ready once listening,
       POST {endpoint}/invocations/{id}/logs {"logs": ...}, then .../response (raw JSON result)
       or .../error ({"errorMessage", "errorType", "requestId", "stackTrace"} as AWS sends it).
The timeout is not enforced here: the executor kills this process at the deadline (as AWS
resets the sandbox) and reports "Task timed out", so a handler stuck in C code cannot escape.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
import queue
import resource
import socket
import sys
import threading
import time
import traceback
import http.client
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Set by the executor (not AWS names): the inherited listening socket and the parent to watch.
LISTEN_FD = "SCONES_LAMBDA_LISTEN_FD"
PARENT_PID = "SCONES_LAMBDA_PARENT_PID"

_invocations: "queue.Queue[dict]" = queue.Queue()


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


class _Callbacks:
    """POSTs to LocalStack over one kept-alive connection (no proxies: it is loopback)."""

    def __init__(self, endpoint: str):
        parsed = urllib.parse.urlsplit(endpoint)
        self.host, self.port, self.prefix = parsed.hostname, parsed.port or 80, parsed.path.rstrip("/")
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> None:
        for attempt in (1, 2):  # a kept-alive connection the server closed fails once: reconnect
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.connection.request("POST", self.prefix + path, body=body,
                                        headers={"Content-Type": "application/json"})
                response = self.connection.getresponse()
                response.read()
                if response.status >= 300:
                    print(f"LocalStack answered {response.status} to {path}", file=sys.__stderr__)
                return
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise


class _InvokeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/invoke":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        _invocations.put(json.loads(raw))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:  # keep the access log out of the function's logs
        pass


class Runtime:
    def __init__(self) -> None:
        self.callbacks = _Callbacks(os.environ["LOCALSTACK_RUNTIME_ENDPOINT"])
        self.runtime_id = os.environ["LOCALSTACK_RUNTIME_ID"]
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

    def invoke(self, invocation: dict) -> None:
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
        logs = tee_out.buffer_.getvalue() + tee_err.buffer_.getvalue()
        base = f"/invocations/{request_id}"
        self.callbacks.post(f"{base}/logs", json.dumps({"logs": logs}).encode())
        self.callbacks.post(f"{base}/response" if ok else f"{base}/error", result_bytes)

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

    listener = socket.socket(fileno=int(os.environ[LISTEN_FD]))
    server = ThreadingHTTPServer(listener.getsockname()[:2], _InvokeHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    threading.Thread(target=server.serve_forever, daemon=True).start()

    runtime.initialise()
    runtime.callbacks.post(f"/status/{runtime.runtime_id}/ready", b"{}")
    while True:
        runtime.invoke(_invocations.get())


if __name__ == "__main__":
    main()
