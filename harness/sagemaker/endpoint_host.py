"""One endpoint instance of the local SageMaker control plane: `python -m scones.harness.sagemaker.endpoint_host SPEC`.

Started by control.py with the project's Python (the one with torch) in the endpoint's own folder,
with AWS_ENDPOINT_URL pointing at LocalStack, once control.py has downloaded the model's
ModelDataUrl (SPEC's "model"). It is the endpoint server `scones serve` runs
(harness/serving/server.py serve, in this very process) with the config's DataCaptureConfig and
the container's Environment. Its stdout says one line of JSON, {"url": ...} once /ping answers or
{"error": FailureReason}, and nothing else; SIGTERM stops the server gracefully (in-flight requests
finish, capture is flushed) and exits.

`python -m scones.harness.sagemaker.endpoint_host --spare` is the same host started ahead of need: it
imports what a server needs (torch, uvicorn, the server: most of a start's time), then waits on
stdin for one line, {"spec": SPEC, "log": LOG, "environ": {...}}, and serves that endpoint as
above (its stderr then goes to LOG). End of stdin before that (the control plane, LocalStack, is
gone) ends it. No fork: each spare is a fresh interpreter, so nothing inherits a started thread.
"""
from __future__ import annotations

import os

# Before torch is imported: idle OpenMP threads sleep instead of spinning (as harness/commands/endpoint.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

SPARE = "--spare"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PING_INTERVAL_S = 0.02
CAPTURE_FLUSH_S = 1.0       # `scones serve`'s --capture-flush-seconds default
MAX_SPOOL_SLOTS = 64


def say(report: dict) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def warm_up() -> None:
    """Import what serving needs, so that an assignment starts with only the model to load."""
    import boto3  # noqa: F401  (the capture writer's client)
    import torch  # noqa: F401
    import uvicorn  # noqa: F401

    import scones.harness.serving.server  # noqa: F401
    try:
        import torchvision  # noqa: F401  (what an image model's inference.py usually imports)
    except ImportError:
        pass


def serve_spec(spec_path: Path) -> int:
    """Serve the endpoint SPEC describes until SIGTERM; the exit status."""
    from scones.harness.endpoint import free_port
    from scones.harness.serving.capture import CaptureConfig
    from scones.harness.serving.server import EndpointSettings, serve
    from scones.loopback import get

    spec = json.loads(spec_path.read_text())
    folder = spec_path.parent
    variant = spec["variant_name"]
    os.environ.update(spec.get("environment") or {})   # the container's Environment, before the settings read it
    reported = threading.Lock()
    said: list[str] = []

    def report_once(report: dict) -> None:
        with reported:
            if not said:
                said.append(json.dumps(report))
                say(report)

    capture = None
    if spec.get("data_capture") and spec["data_capture"].get("EnableCapture", True):
        try:
            capture = CaptureConfig.from_data_capture_config(spec["data_capture"])
        except ValueError as error:
            report_once({"error": f"DataCaptureConfig: {error}"})
            return 1
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = EndpointSettings(model=spec["model"], endpoint_name=spec["endpoint_name"], variant_name=variant,
                                capture=capture, capture_writer_options={"flush_interval_s": CAPTURE_FLUSH_S,
                                                                         "spool_dir": spool_slot(spec, folder)})
    serving = threading.Event()

    def announce_when_ready() -> None:
        while not serving.is_set():
            try:
                if get(f"{url}/ping", timeout=2)[0] == 200:
                    report_once({"url": url})
                    return
            except OSError:
                pass
            time.sleep(PING_INTERVAL_S)

    threading.Thread(target=announce_when_ready, name="ping-announcer", daemon=True).start()
    try:
        serve(settings, host="127.0.0.1", port=port, log_level="info")
        return 0
    except (Exception, SystemExit) as error:   # ModelSourceError, or uvicorn's exit when it cannot bind
        report_once({"error": f"The primary container for production variant {variant} did not pass the ping "
                              f"health check: {error}"})
        return 1
    finally:
        serving.set()


def spool_slot(spec: dict, folder: Path) -> Path:
    """The first slot of the endpoint's capture spools that no live host holds (capture.py's writer.lock): a host
    replacing a killed one takes over its slot and sends what it left; during UpdateEndpoint the old and the new
    host each have one. Without spec["capture_spool"], a spool of this deploy's own."""
    import fcntl

    if not spec.get("capture_spool"):
        return folder / "capture-spool"
    root = Path(spec["capture_spool"])
    for slot in range(MAX_SPOOL_SLOTS):
        candidate = root / str(slot)
        candidate.mkdir(parents=True, exist_ok=True)
        with open(candidate / "writer.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return candidate
    return folder / "capture-spool"


def wait_for_assignment() -> Path | None:
    """A spare's wait: the spec it is to serve, with its log and environment taken on; None at end of stdin."""
    line = sys.stdin.readline()
    if not line.strip():
        return None
    assignment = json.loads(line)
    with open(assignment["log"], "ab") as log:
        os.dup2(log.fileno(), sys.stderr.fileno())
    os.environ.update(assignment.get("environ") or {})
    spec = Path(assignment["spec"])
    os.chdir(spec.parent)
    return spec


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if argv[:1] != [SPARE]:
        return serve_spec(Path(argv[0]))
    started = time.perf_counter()
    warm_up()
    logging.getLogger(__name__).info("spare endpoint host ready (imports took %.2f s)", time.perf_counter() - started)
    spec = wait_for_assignment()
    return serve_spec(spec) if spec is not None else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
