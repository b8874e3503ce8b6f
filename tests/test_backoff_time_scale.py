"""The Lambda environments' runtime hook: botocore's own retry backoff waits by the stack's time scale.

A real botocore client in a fresh Python (as inside a Lambda environment) calls a real HTTP server that
answers InvokeEndpoint with ThrottlingException and serves the time scale the way LocalStack's gateway
does (GET /_scones/time-scale).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scones.harness.lambda_executor.names import TIME_SCALE_PATH
from scones.harness.lambda_runtime import backoff_time_scale

SCALE = 0.001
CLIENT = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("backoff_time_scale", sys.argv[1])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)
assert hook.install(), "no time scale URL in the environment"
assert hook.TIME_SCALE_URL_ENV not in os.environ, "the function would see the harness's variable"
import boto3
from botocore.config import Config
client = boto3.client("sagemaker-runtime", endpoint_url=sys.argv[2], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
try:
    client.invoke_endpoint(EndpointName="scones-classifier", Body=b"png", ContentType="image/png")
except client.exceptions.ClientError as error:
    print(json.dumps({"code": error.response["Error"]["Code"],
                      "retries": error.response["ResponseMetadata"]["RetryAttempts"]}))
"""


@pytest.fixture
def throttling_server():
    """Answers every InvokeEndpoint with sagemaker-runtime's ThrottlingException (400, rest-json) and the
    time scale with SCALE; counts both."""
    seen = {"invocations": 0, "scale_reads": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            assert self.path == TIME_SCALE_PATH
            seen["scale_reads"] += 1
            self._answer(200, {"scale": SCALE, "active": True})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen["invocations"] += 1
            self._answer(400, {"message": "Rate exceeded"}, {"x-amzn-ErrorType": "ThrottlingException"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_botocore_retries_as_configured_and_waits_the_scaled_backoff(throttling_server):
    """botocore's standard mode retries ThrottlingException (botocore/retries/standard.py
    ThrottledRetryableChecker) up to total_max_attempts (5: the first and four retries, botocore/config.py),
    with a backoff of rand(0, 1) * min(2 ** i, 20) s for a throttle (ExponentialBackoff.delay_amount).
    The hook leaves all of that to botocore and scales only the wait."""
    url, seen = throttling_server
    env = {**os.environ, backoff_time_scale.TIME_SCALE_URL_ENV: url + TIME_SCALE_PATH, "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-c", CLIENT, backoff_time_scale.__file__, url], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"code": "ThrottlingException", "retries": 4}
    assert seen == {"invocations": 5, "scale_reads": 4}
    waits = re.findall(r"\[scones\] botocore retry backoff ([\d.]+) s, waited ([\d.]+) s \(time scale 0.001\)",
                       done.stderr)
    assert len(waits) == 4, done.stderr
    for attempt, (backoff, waited) in enumerate(waits):
        assert 0 <= float(backoff) <= 2 ** attempt
        assert float(waited) == pytest.approx(float(backoff) * SCALE, abs=1e-4)


def test_an_unreadable_scale_is_real_time():
    assert backoff_time_scale.current_scale("http://127.0.0.1:9/_scones/time-scale") == 1.0


def test_without_the_variable_nothing_is_installed():
    environ: dict[str, str] = {}
    before = list(sys.meta_path)
    assert backoff_time_scale.install(environ) is False
    assert sys.meta_path == before
