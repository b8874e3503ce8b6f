"""The execution-environment process (harness/lambda_runtime/bootstrap.py) against a stand-in for LocalStack.

No LocalStack needed: a small HTTP server records the callbacks the process makes, so the
protocol (ready, logs, response/error) and the handler side (context, AWS error shapes,
init errors) are checked in a second.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parent.parent / "harness" / "lambda_runtime" / "bootstrap.py"

HANDLERS = '''
import logging, os
logging.getLogger().setLevel(logging.INFO)
print("module loaded")

def echo(event, context):
    print("event", event)
    logging.getLogger("x").info("logged")
    return {"event": event, "name": context.function_name, "memory": context.memory_limit_in_mb,
            "arn": context.invoked_function_arn, "request_id": context.aws_request_id,
            "remaining": context.get_remaining_time_in_millis(), "var": os.environ.get("MY_VAR"),
            "trace": os.environ.get("_X_AMZN_TRACE_ID")}

class ThresholdConfidenceNotMet(Exception):
    pass

def fail(event, context):
    raise ThresholdConfidenceNotMet("max confidence 0.6 is below 0.93")
'''


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.calls.put((self.path, body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_localstack():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.calls = queue.Queue()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _next_call(server, timeout: float = 30):
    path, body = server.calls.get(timeout=timeout)
    return path, body


@pytest.fixture
def environment(tmp_path, fake_localstack):
    """Starts bootstrap.py as the executor does; returns a function that starts one for a handler."""
    processes = []

    def start(handler: str):
        (tmp_path / "code").mkdir(exist_ok=True)
        (tmp_path / "code" / "handlers.py").write_text(HANDLERS)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        env = {
            "PATH": os.environ["PATH"],
            "LOCALSTACK_RUNTIME_ENDPOINT": f"http://127.0.0.1:{fake_localstack.server_address[1]}/_localstack_lambda/env1",
            "LOCALSTACK_RUNTIME_ID": "env1",
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(tmp_path / "code"),
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "5",
            "MY_VAR": "configured",
            "SCONES_LAMBDA_LISTEN_FD": str(listener.fileno()),
            "SCONES_LAMBDA_PARENT_PID": str(os.getpid()),
        }
        process = subprocess.Popen([sys.executable, "-P", str(BOOTSTRAP)], cwd=tmp_path / "code", env=env,
                                   pass_fds=(listener.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        listener.close()
        processes.append(process)
        path, _ = _next_call(fake_localstack)
        assert path == "/_localstack_lambda/env1/status/env1/ready"
        return port

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _invoke(port: int, request_id: str, payload: dict) -> int:
    body = json.dumps({"invoke-id": request_id, "invoked-function-arn": "arn:aws:lambda:us-east-1:000000000000:function:fn",
                       "payload": json.dumps(payload), "trace-id": "Root=1-abc"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invoke", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_invoke_posts_logs_then_response(environment, fake_localstack):
    port = environment("handlers.echo")
    assert _invoke(port, "req-1", {"a": 1}) == 202
    logs_path, logs_body = _next_call(fake_localstack)
    result_path, result_body = _next_call(fake_localstack)
    assert logs_path == "/_localstack_lambda/env1/invocations/req-1/logs"
    assert result_path == "/_localstack_lambda/env1/invocations/req-1/response"
    result = json.loads(result_body)
    assert result["event"] == {"a": 1}
    assert (result["name"], result["memory"], result["var"]) == ("fn", "512", "configured")
    assert result["request_id"] == "req-1" and result["trace"] == "Root=1-abc"
    assert 0 < result["remaining"] <= 5000
    logs = json.loads(logs_body)["logs"]
    assert logs.startswith("START RequestId: req-1 Version: $LATEST")
    assert "event {'a': 1}" in logs
    assert "[INFO]\t" in logs and "\treq-1\tlogged" in logs
    assert "END RequestId: req-1" in logs and "REPORT RequestId: req-1" in logs and "Init Duration" in logs

    # Warm: the second invoke of the same process reports no init.
    _invoke(port, "req-2", {})
    logs = json.loads(_next_call(fake_localstack)[1])["logs"]
    _next_call(fake_localstack)
    assert "Init Duration" not in logs


def test_exception_becomes_aws_error_shape(environment, fake_localstack):
    port = environment("handlers.fail")
    _invoke(port, "req-3", {})
    logs = json.loads(_next_call(fake_localstack)[1])["logs"]
    path, body = _next_call(fake_localstack)
    assert path.endswith("/invocations/req-3/error")
    error = json.loads(body)
    assert error["errorType"] == "ThresholdConfidenceNotMet"
    assert error["errorMessage"] == "max confidence 0.6 is below 0.93"
    assert error["requestId"] == "req-3"
    assert len(error["stackTrace"]) == 1 and "handlers.py" in error["stackTrace"][0]
    assert "[ERROR] ThresholdConfidenceNotMet: max confidence 0.6 is below 0.93" in logs


@pytest.mark.parametrize("handler, error_type", [
    ("missing_module.handler", "Runtime.ImportModuleError"),
    ("handlers.no_such_function", "Runtime.HandlerNotFound"),
    ("nodots", "Runtime.MalformedHandlerName"),
])
def test_init_errors_are_reported_per_invoke(environment, fake_localstack, handler, error_type):
    port = environment(handler)
    _invoke(port, "req-4", {})
    _next_call(fake_localstack)
    path, body = _next_call(fake_localstack)
    assert path.endswith("/invocations/req-4/error")
    assert json.loads(body)["errorType"] == error_type
