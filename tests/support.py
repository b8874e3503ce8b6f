"""Test helpers shared by the test modules: event fixtures, a deterministic Lambda context,
unique names and a small stand-in for the SageMaker runtime API.

They live here, not in conftest.py, because tests/e2e has a conftest.py of its own and
`from conftest import ...` resolves to whichever conftest was imported first."""
from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from scones import polling

CHECKOUT = Path(__file__).resolve().parent.parent  # this clone: the project folder the tests run in
COMPOSE_TEST = "SCONES_TEST_COMPOSE"     # "1": the real compose stack's test runs (.ci/run sets it)
EVENTS_DIR = CHECKOUT / "tests" / "events"
_EVENT_CACHE: dict[str, dict] = {}


def load_event(name: str) -> dict:
    """A fresh copy of tests/events/<name>.json (the ".json" may be left off)."""
    name = name.removesuffix(".json")
    if name not in _EVENT_CACHE:
        path = EVENTS_DIR / f"{name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in EVENTS_DIR.glob("*.json"))
            raise FileNotFoundError(f"no event fixture {path} (known: {known})")
        _EVENT_CACHE[name] = json.loads(path.read_text(encoding="utf-8"))
    return copy.deepcopy(_EVENT_CACHE[name])


@dataclass
class LambdaContext:
    """What a handler sees as `context`, with an injectable clock for remaining-time logic."""

    function_name: str = "scones-test"
    memory_limit_in_mb: int = 128
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time_source: Callable[[], float] = time.monotonic
    _start: float | None = None

    def __post_init__(self) -> None:
        self._start = self.time_source()
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "test"
        self.function_version = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        elapsed = self.time_source() - self._start
        return max(0, int((self.timeout_s - elapsed) * 1000))


def unique_name(prefix: str = "scones-test") -> str:
    """A name no other test (or parallel run) uses; lowercase so it is a valid bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class FakeSageMakerRuntime:
    """POST /endpoints/{name}/invocations as botocore sends it; replies are set per test."""

    def __init__(self):
        self.endpoints: dict[str, tuple[int, dict, bytes]] = {}
        self.requests: list[dict] = []
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = self.path.strip("/").split("/")
                name = parts[1] if len(parts) == 3 and parts[0] == "endpoints" else None
                runtime.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if name not in runtime.endpoints:
                    status, headers, payload = 400, {"x-amzn-ErrorType": "ValidationError"}, json.dumps(
                        {"message": f"Endpoint {name} of account 000000000000 not found."}).encode()
                else:
                    status, headers, payload = runtime.endpoints[name]
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> "FakeSageMakerRuntime":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, endpoint: str, payload, status: int = 200, headers: dict | None = None):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.endpoints[endpoint] = (status, {"x-Amzn-Invoked-Production-Variant": "AllTraffic", **(headers or {})}, raw)


def poll(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Call condition() until it returns something truthy; fail the test at the deadline."""
    try:
        return polling.poll(condition, timeout=timeout, interval=interval)
    except polling.PollTimedOut:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def zip_of(files: dict[str, str]) -> bytes:
    """A deployment package (or layer) holding these files: {"path/in/zip.py": "source"}."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@contextmanager
def running_localstack(home: Path, extra_env: dict[str, str] | None = None):
    """A LocalStack of its own on a free port, with its data in `home`; stopped afterwards."""
    from scones.harness.endpoint import free_port
    from scones.harness.localstack import LocalStack

    instance = LocalStack(port=free_port(), home=home, extra_env=extra_env)
    instance.ensure_venv(progress=False)
    instance.start()
    try:
        instance.wait_ready(timeout=120)
        yield instance
    finally:
        instance.stop()


def serialise_moto_operation_models() -> None:
    """moto's ServiceModel.operation_model (moto/core/model.py, 5.2.1 to 5.2.6 at least) builds its OperationModel by
    calling botocore's operation_model, which botocore's `instance_cache` stores under the same key: until moto's
    own result replaces it, the cache holds botocore's OperationModel, which has no `http_trait`. Another thread
    asking for that operation then (the deploy's step threads, a moto server's request threads) fails with
    "AttributeError: 'OperationModel' object has no attribute 'http_trait'" (CI, 2026-12-07). A lock around
    the method closes that window: no thread reads the cache while another is building into it."""
    from moto.core.model import ServiceModel

    build = ServiceModel.operation_model
    if getattr(build, "serialised", False):
        return
    lock = threading.RLock()

    def operation_model(self, operation_name):
        with lock:
            return build(self, operation_name)

    operation_model.serialised = True  # type: ignore[attr-defined]
    ServiceModel.operation_model = operation_model  # type: ignore[method-assign]
