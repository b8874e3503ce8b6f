"""The Lambda Runtime API (2018-06-01) that one execution environment's runtime client talks to.

AWS's own Python runtime interface client (awslambdaric, what AWS's Python runtimes run) polls
`GET /2018-06-01/runtime/invocation/next` and posts `.../invocation/{id}/response`, `.../error`
or `/runtime/init/error`, as https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
describes. One server per runtime process, on a loopback port of its own (the runtime finds it in
AWS_LAMBDA_RUNTIME_API), so handler loading, marshalling, error shapes and log formats are AWS's
code; this side only hands out invocations and receives what comes back.

Per process, not per environment: a runtime killed while it waited in `next` (an idle environment
ended to make room, environment_slots.py) leaves that request's thread waiting here. Sharing one
queue with the environment's next process, that thread took the next invocation, wrote it to a dead
socket, and the invoke waited out the function's timeout; the new process, waiting too, timed out
in turn (issue 25's 32 concurrent executions all failed so). A closed server's waiters get GONE.
"""
from __future__ import annotations

import json
import queue
import socket
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


@dataclass(frozen=True)
class Invocation:
    request_id: str
    payload: bytes
    invoked_function_arn: str
    deadline_ms: int
    trace_id: str = ""
    client_context: str | None = None
    cognito_identity: str | None = None


class RuntimeApiListener:
    """What the executor does with what the runtime says (called on the server's threads)."""

    def on_next(self) -> None: ...
    def on_response(self, request_id: str, body: bytes) -> None: ...
    def on_error(self, request_id: str, body: bytes, error_type: str | None) -> None: ...
    def on_init_error(self, body: bytes, error_type: str | None) -> None: ...


_STOP = object()


class RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listener: RuntimeApiListener, host: str = "127.0.0.1") -> None:
        self.listener = listener
        self.invocations: queue.SimpleQueue = queue.SimpleQueue()
        super().__init__((host, 0), _Handler)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"scones-runtime-api-{self.server_address[1]}")

    @property
    def address(self) -> str:
        host, port = cast("tuple[str, int]", self.server_address)[:2]  # bound to (a str host, 0): AF_INET
        return f"{host}:{port}"

    def start(self) -> "RuntimeApiServer":
        self._thread.start()
        return self

    def deliver(self, invocation: Invocation) -> None:
        self.invocations.put(invocation)

    def _accept_loop(self) -> None:
        # Blocks in accept() instead of serve_forever's select() every 0.5 s: no wake-ups on
        # LocalStack's interpreter while the environment idles, and close() takes effect at once.
        while not self._closed:
            try:
                request, client_address = self.get_request()
            except OSError:
                return
            self.process_request(request, client_address)  # a thread per connection (ThreadingMixIn)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return   # the runtime went away mid-reply (killed at a timeout or to make room): nothing to report
        super().handle_error(request, client_address)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.invocations.put(_STOP)  # wakes the waiting `next`s (each passes it on)
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"        # the runtime client keeps its connection alive
    disable_nagle_algorithm = True       # a reply is one write: sent at once
    wbufsize = 64 * 1024                 # headers and body leave in that one write (handle_one_request flushes)
    server: RuntimeApiServer

    def log_message(self, format, *args):  # the environment's own log is the handler's output
        pass

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(HTTPStatus.NOT_FOUND, {"errorMessage": f"unknown path {self.path}"})
        if self.server.closed:
            return self._gone()
        self.server.listener.on_next()
        invocation = self.server.invocations.get()
        if invocation is _STOP:
            self.server.invocations.put(_STOP)
            return self._gone()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
        }
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        if invocation.cognito_identity:
            headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
        self._send(HTTPStatus.OK, invocation.payload, "application/json", headers)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.closed:   # from a process that has ended: nothing it says is about the current one
            return self._gone()
        error_type = self.headers.get(ERROR_TYPE_HEADER)
        path = self.path
        listener = self.server.listener
        if path == f"{PREFIX}/init/error":
            listener.on_init_error(body, error_type)
        elif path.startswith(f"{PREFIX}/invocation/") and path.endswith(("/response", "/error")):
            request_id, _, kind = path[len(f"{PREFIX}/invocation/"):].rpartition("/")
            if kind == "response":
                listener.on_response(request_id, body)
            else:
                listener.on_error(request_id, body, error_type)
        else:
            return self._reply(HTTPStatus.NOT_FOUND, {"errorMessage": f"unknown path {path}"})
        self._reply(HTTPStatus.ACCEPTED, {"status": "OK"})

    def _gone(self) -> None:
        self.close_connection = True
        self._reply(HTTPStatus.GONE, {"errorMessage": "execution environment is shutting down"})

    def _reply(self, status: HTTPStatus, document: dict) -> None:
        self._send(status, json.dumps(document).encode(), "application/json", {})

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

