"""The local stack's parts: the processes `scones up` starts or adopts, `scones status` checks and
`scones down` stops (harness/stack.py loops over them).

A part is declared once from the stack's settings (StackConfig) and hands them whole to its
process (the endpoint server's EndpointServer, LocalStack's environment). It can

- start its process without waiting for it, and say how to wait until it is ready;
- name the settings a running process must have to be adopted instead of replaced;
- find its running processes again, whatever survived: the ledger below, the stack record,
  its own records (LocalStack's pidfile), and the environment marker every process we start
  carries (processes.find_marked), which is what is left after a kill -9 of `up` before it
  wrote anything, or with a corrupt record;
- check its health, and stop what was found.

The ledger (<state>/local/processes.json) is written atomically the moment a process is started,
before anything waits for it, so an interrupted `up`, the next `up`, `down` and `status` know it.

A part whose processes another part starts (say SageMaker training jobs and endpoints that
LocalStack's hooks start) fits the same loop: `start` returns None (nothing to start itself),
its processes carry the marker with their own part name (`marker_environment(state_dir, name)`),
`find` finds them by it and `stop` stops them; list it before LocalStack so `down` stops it first.
"""
from __future__ import annotations

import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from scones import loopback, settings
from scones.deploy import local as local_target
from scones.deploy.record import RecordError, read_record, write_record
from scones.errors import SconesError
from scones.harness import processes
from scones.harness.processes import ProcessId

Progress = Callable[[str], None]
HEALTH_TIMEOUT_S = 2.0    # a live process that cannot answer in this long (stopped, hung) is unhealthy
STOP_TIMEOUT_S = 15.0
LEDGER_VERSION = 1


def health_problem(url: str | None, path: str, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when GET url+path replies 200 within `timeout`, else why not."""
    if not url:
        return "no URL recorded"
    probe = f"{url}{path}"
    try:
        status, _ = loopback.get(probe, timeout=timeout)
        return None if status == 200 else f"{probe} answered HTTP {status}"
    except urllib.error.HTTPError as error:
        return f"{probe} answered HTTP {error.code}"
    except OSError as error:
        reason = getattr(error, "reason", error)   # URLError wraps the socket's error
        if isinstance(reason, TimeoutError):
            return f"{probe} did not answer within {timeout:g} s (a stopped or hung process?)"
        return f"{probe} failed: {reason}"


class Part:
    """One process of the local stack (subclasses below); `entry` is what the ledger and record keep of it."""
    name: ClassVar[str]
    health_path: ClassVar[str]
    ready_before_deploy: ClassVar[bool]   # `up` waits for it before the deploy (else after, while it loads)
    ready_timeout_s: ClassVar[float]
    stop_timeout_s: ClassVar[float] = STOP_TIMEOUT_S

    state_dir: Path
    port: int

    @property
    def url(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What a running process must have been started with to be adopted (the ledger keeps it)."""
        return {"port": self.port}

    def entry(self, process: ProcessId | None) -> dict[str, Any]:
        """The ledger's and the stack record's line for this part."""
        return {**(process.to_dict() if process else {"pid": None, "started": None}), "url": self.url,
                **self.settings()}

    def marker(self) -> dict[str, str]:
        return processes.marker_environment(self.state_dir, self.name)

    def own_records(self) -> list[ProcessId]:
        """Processes this part's own files name (beside the ledger)."""
        return []

    def prepare(self) -> None:
        """Work before the start that may take long (installing): done while signals still stop `up` at once."""

    def start(self) -> ProcessId | None:
        """Start the process without waiting for it to be ready; None: this part starts no process itself."""
        raise NotImplementedError

    def wait_ready(self, process: ProcessId) -> None:
        raise NotImplementedError

    def health_problem(self, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
        return health_problem(self.url, self.health_path, timeout)

    def stop(self, found: list[ProcessId], progress: Progress) -> None:
        for process in found:
            if process.running():
                processes.terminate(process.pid, self.stop_timeout_s)
            processes.reap(process.pid)


@dataclass
class EndpointPart(Part):
    """The endpoint server (harness/endpoint.py) serving the model, with data capture to the stack's bucket."""
    name: ClassVar[str] = "endpoint"
    health_path: ClassVar[str] = "/ping"
    ready_before_deploy: ClassVar[bool] = False   # it imports torch and loads the model while the deploy runs
    ready_timeout_s: ClassVar[float] = 120.0
    stop_timeout_s: ClassVar[float] = 60.0        # its shutdown drains requests and writes pending capture records

    state_dir: Path
    port: int
    endpoint_name: str
    model_dir: Path
    bucket: str
    localstack_url: str
    capture_spool_dir: Path
    _server: Any = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return local_target.endpoint_url(self.port)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "local" / "endpoint.log"

    def settings(self) -> dict[str, Any]:
        return {"port": self.port, "name": self.endpoint_name, "model_dir": str(self.model_dir),
                "capture_s3_uri": local_target.capture_s3_uri(self.bucket)}

    def entry(self, process: ProcessId | None) -> dict[str, Any]:
        return {**super().entry(process), "log": str(self.log_path)}

    def server(self):
        """The endpoint server's settings, declared once here and handed to it whole."""
        from scones.harness.endpoint import EndpointServer
        from scones.harness.serving.capture import CaptureConfig

        model = self.model_dir / "model.tar.gz" if (self.model_dir / "model.tar.gz").exists() else self.model_dir
        return EndpointServer(
            model, endpoint_name=self.endpoint_name, port=self.port, mode="subprocess",
            capture=CaptureConfig(local_target.capture_s3_uri(self.bucket), sampling_percentage=100),
            env={**local_target.endpoint_server_environment(self.localstack_url), **self.marker()},
            log_path=self.log_path, capture_spool=self.capture_spool_dir,
        )

    def start(self) -> ProcessId | None:
        self._server = self.server().start(wait=False)
        return ProcessId.of(self._server.pid) or ProcessId(self._server.pid)

    def wait_ready(self, process: ProcessId) -> None:
        if self._server is not None and self._server.pid == process.pid:
            self._server.wait_ready(self.ready_timeout_s)   # it knows its own exit status and log
        else:
            wait_answering(self, process)

    def stop(self, found: list[ProcessId], progress: Progress) -> None:
        for process in found:
            if process.running():
                progress(f"endpoint: stopping pid {process.pid} (flushes data capture first)")
        super().stop(found, progress)
        self._server = None


@dataclass
class LocalStackPart(Part):
    """LocalStack 4.14.0 with our Lambda executor and gateway hooks (harness/localstack.py)."""
    name: ClassVar[str] = "localstack"
    health_path: ClassVar[str] = "/_localstack/health"
    ready_before_deploy: ClassVar[bool] = True
    ready_timeout_s: ClassVar[float] = 60.0

    state_dir: Path
    port: int
    # Its SageMaker control plane serves the stack's endpoint (`up` in api mode): a spare endpoint host starts with
    # LocalStack (unless $SCONES_SAGEMAKER_SPARE_ENDPOINT is 0), and endpoint hosts spool capture under
    # <state>/capture-spool/<endpoint>, where `up` restores from as in route mode.
    serves_endpoint: bool = False

    @property
    def url(self) -> str:
        return local_target.localstack_url(self.port)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **({"serves_endpoint": True} if self.serves_endpoint else {})}

    def server(self):
        """LocalStack's settings, declared once here; its environment() is what its process gets."""
        from scones.harness.localstack import LocalStack
        from scones.harness.sagemaker import processes as sagemaker_processes

        serving = {sagemaker_processes.CAPTURE_SPOOL_ENV: str(self.state_dir / "capture-spool")}
        if settings.named(sagemaker_processes.SPARE_ENDPOINT_ENV) != "0":
            serving[sagemaker_processes.SPARE_ENDPOINT_ENV] = sagemaker_processes.SPARE_AT_START
        return LocalStack(self.state_dir, self.port, extra_env={**self.marker(), **(serving if self.serves_endpoint else {})})

    def own_records(self) -> list[ProcessId]:
        running = self.server().process()
        return [running] if running else []

    def prepare(self) -> None:
        self.server().ensure_venv()

    def start(self) -> ProcessId | None:
        pid = self.server().start()
        return ProcessId.of(pid) or ProcessId(pid)

    def wait_ready(self, process: ProcessId) -> None:
        self.server().wait_ready(self.ready_timeout_s)

    def stop(self, found: list[ProcessId], progress: Progress) -> None:
        if found:
            progress(f"localstack: stopping (port {self.port})")
        self.server().stop()   # SIGTERM, then SIGKILL of it and of every Lambda environment it started
        super().stop(found, progress)


def wait_answering(part: Part, process: ProcessId) -> None:
    """Poll a process we did not start in this call until its health check answers; fail if it dies."""
    last: list[str | None] = [None]

    def answering() -> bool:
        if not process.running():
            raise PartError(f"{part.name}: pid {process.pid} exited before it answered {part.url}{part.health_path}")
        last[0] = part.health_problem()
        return last[0] is None

    if not processes.wait_until(answering, part.ready_timeout_s, 0.1):
        raise PartError(f"{part.name}: not ready after {part.ready_timeout_s:.0f} s ({last[0]})")


class PartError(SconesError, RuntimeError):
    """A part could not be started, found or stopped; the message names the part and why."""


# ----------------------------------------------------------------------------- the ledger

class Ledger:
    """<state>/local/processes.json: each part's process, written the moment it is started.

    A damaged ledger is read as empty (its `problem` says why): the processes it named are still
    found by their environment marker.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "local" / "processes.json"
        self.problem: str | None = None
        self.parts: dict[str, dict[str, Any]] = {}
        try:
            record = read_record(self.path) or {}
        except RecordError as error:
            self.problem = str(error)
            return
        parts = record.get("parts")
        if isinstance(parts, dict):
            self.parts = {name: entry for name, entry in parts.items() if isinstance(entry, dict)}
        elif record:
            self.problem = f"{self.path} holds no parts"

    def process(self, name: str) -> ProcessId | None:
        return ProcessId.from_dict(self.parts.get(name))

    def put(self, name: str, entry: dict[str, Any]) -> None:
        self.parts[name] = entry
        self._write()

    def drop(self, name: str) -> None:
        if self.parts.pop(name, None) is not None:
            self._write()

    def _write(self) -> None:
        if self.parts:
            write_record(self.path, {"version": LEDGER_VERSION, "parts": self.parts})
        else:
            self.path.unlink(missing_ok=True)

    def remove(self) -> None:
        self.parts = {}
        self.path.unlink(missing_ok=True)


def find(part: Part, ledger: Ledger, record: dict[str, Any] | None,
         marked: dict[str, list[ProcessId]]) -> list[ProcessId]:
    """Every running process of `part` that anything knows of: ledger, stack record, its own records, marker."""
    candidates = [ledger.process(part.name), ProcessId.from_dict((record or {}).get(part.name)),
                  *part.own_records(), *marked.get(part.name, [])]
    found: dict[int, ProcessId] = {}
    for candidate in candidates:
        if candidate is not None and candidate.pid not in found and candidate.running():
            found[candidate.pid] = candidate
    return list(found.values())


def recorded_settings(part: Part, ledger: Ledger, record: dict[str, Any] | None) -> dict[str, Any]:
    """The settings the running process of `part` was started with, as the ledger (else the record) says."""
    return ledger.parts.get(part.name) or (record or {}).get(part.name) or {}
