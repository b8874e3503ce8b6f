"""One endpoint instance of the local SageMaker control plane: `python -m scones.harness.sagemaker.endpoint_host SPEC`.

Started by control.py with the project's Python (the one with torch) in the endpoint's own folder,
with AWS_ENDPOINT_URL pointing at LocalStack, once control.py has downloaded the model's
ModelDataUrl (SPEC's "model"). It runs the endpoint server `scones serve` runs
(harness/endpoint.py EndpointServer, a subprocess) with the config's DataCaptureConfig and the
container's Environment. It imports no boto3: the server's start is what takes the time. Its stdout says
one line of JSON, {"url": ...} once /ping answers or {"error": FailureReason}, and nothing else;
SIGTERM stops the server gracefully (in-flight requests finish, capture is flushed) and exits.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from scones.harness import processes
from scones.harness.endpoint import EndpointServer, EndpointStartError
from scones.harness.serving.capture import CaptureConfig


def say(report: dict) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def fail(reason: str) -> NoReturn:
    say({"error": reason})
    sys.exit(1)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec_path).parent
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    artifact = Path(spec["model"])
    capture = None
    if spec.get("data_capture") and spec["data_capture"].get("EnableCapture", True):
        try:
            capture = CaptureConfig.from_data_capture_config(spec["data_capture"])
        except ValueError as error:
            fail(f"DataCaptureConfig: {error}")
    server = EndpointServer(model=artifact, endpoint_name=spec["endpoint_name"], variant_name=spec["variant_name"],
                            capture=capture, mode="subprocess", log_path=folder / "server.log",
                            capture_spool=folder / "capture-spool", env=dict(spec.get("environment") or {}))
    try:
        server.start(wait=True)
    except EndpointStartError as error:
        server.stop()
        fail(f"The primary container for production variant {spec['variant_name']} did not pass the ping health "
             f"check: {error}")
    say({"url": server.url, "pid": server.pid})
    try:
        while not stopping.wait(0.5):
            if not processes.alive(server.pid):
                sys.exit(f"the endpoint server exited; see {server.log_path}")
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
