"""The execution-environment process (harness/lambda_runtime/bootstrap.py), driven as the executor drives it.

No LocalStack needed: the test holds the other end of the process's socket pair, so the
protocol (ready, invoke, result with logs) and the handler side (context, AWS error shapes,
init errors) are checked in a second.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lambda_runtime.bootstrap import CHANNEL_FD, PARENT_PID, read_frame, send_frame

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


class _Environment:
    def __init__(self, channel: socket.socket):
        self.channel = channel
        self.reader = channel.makefile("rb")

    def next_frame(self) -> tuple[dict, bytes]:
        frame = read_frame(self.reader)
        assert frame is not None, "the environment closed its channel"
        return frame

    def invoke(self, request_id: str, payload: dict) -> tuple[dict, bytes]:
        send_frame(self.channel, {"invoke-id": request_id,
                                  "invoked-function-arn": "arn:aws:lambda:us-east-1:000000000000:function:fn",
                                  "payload": json.dumps(payload), "trace-id": "Root=1-abc"})
        return self.next_frame()


@pytest.fixture
def environment(tmp_path):
    """Starts bootstrap.py as the executor does; returns a function that starts one for a handler."""
    processes = []

    def start(handler: str) -> _Environment:
        (tmp_path / "code").mkdir(exist_ok=True)
        (tmp_path / "code" / "handlers.py").write_text(HANDLERS)
        channel, child_end = socket.socketpair()
        channel.settimeout(30)
        env = {
            "PATH": os.environ["PATH"],
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(tmp_path / "code"),
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "5",
            "MY_VAR": "configured",
            CHANNEL_FD: str(child_end.fileno()),
            PARENT_PID: str(os.getpid()),
        }
        process = subprocess.Popen([sys.executable, "-P", str(BOOTSTRAP)], cwd=tmp_path / "code", env=env,
                                   pass_fds=(child_end.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        child_end.close()
        processes.append((process, channel))
        environment = _Environment(channel)
        assert environment.next_frame() == ({"ready": True}, b"")
        return environment

    yield start
    for process, channel in processes:
        process.kill()
        process.wait()
        channel.close()


def test_invoke_returns_result_with_its_logs(environment):
    env = environment("handlers.echo")
    header, body = env.invoke("req-1", {"a": 1})
    assert (header["request_id"], header["ok"]) == ("req-1", True)
    result = json.loads(body)
    assert result["event"] == {"a": 1}
    assert (result["name"], result["memory"], result["var"]) == ("fn", "512", "configured")
    assert result["request_id"] == "req-1" and result["trace"] == "Root=1-abc"
    assert 0 < result["remaining"] <= 5000
    logs = header["logs"]
    assert logs.startswith("START RequestId: req-1 Version: $LATEST")
    assert "event {'a': 1}" in logs
    assert "[INFO]\t" in logs and "\treq-1\tlogged" in logs
    assert "END RequestId: req-1" in logs and "REPORT RequestId: req-1" in logs and "Init Duration" in logs

    # Warm: the second invoke of the same process reports no init.
    header, _ = env.invoke("req-2", {})
    assert header["ok"] and "Init Duration" not in header["logs"]


def test_exception_becomes_aws_error_shape(environment):
    header, body = environment("handlers.fail").invoke("req-3", {})
    assert header["ok"] is False
    error = json.loads(body)
    assert error["errorType"] == "ThresholdConfidenceNotMet"
    assert error["errorMessage"] == "max confidence 0.6 is below 0.93"
    assert error["requestId"] == "req-3"
    assert len(error["stackTrace"]) == 1 and "handlers.py" in error["stackTrace"][0]
    assert "[ERROR] ThresholdConfidenceNotMet: max confidence 0.6 is below 0.93" in header["logs"]


@pytest.mark.parametrize("handler, error_type", [
    ("missing_module.handler", "Runtime.ImportModuleError"),
    ("handlers.no_such_function", "Runtime.HandlerNotFound"),
    ("nodots", "Runtime.MalformedHandlerName"),
])
def test_init_errors_are_reported_per_invoke(environment, handler, error_type):
    header, body = environment(handler).invoke("req-4", {})
    assert header["ok"] is False
    assert json.loads(body)["errorType"] == error_type


def test_environment_exits_when_the_executor_closes_its_end(environment):
    env = environment("handlers.echo")
    env.channel.shutdown(socket.SHUT_WR)
    assert env.reader.read() == b""  # the process closed its end: it has exited
