"""The local target as one unit: its parts (harness/parts.py: the endpoint server, LocalStack) plus the
deployed workflow and data.

`up()` loops over the parts: it adopts each part that runs as asked and answers, replaces what
runs otherwise (left by a killed `up`, or with other settings), starts the rest (each recorded in
the ledger before anything waits for it), deploys the Lambdas and state machine through the same
code path as AWS, serves the model through LocalStack's SageMaker control plane (api mode, the
default: the record's endpoint is the control plane's host; route mode: an endpoint server part), uploads the staged test images and .lst files (train/ too with upload_train),
and records pids, ports, names and ARNs in <state>/local/stack.json.
`status()` and `down()` loop over the parts too, finding their processes from the record, the
ledger, LocalStack's pidfile and the marker in each process' environment, so that a missing or
damaged record hides nothing: `down()` flushes capture, stops all of it, and checks that no process
and no listening port is left behind.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from scones import loopback, settings
from scones.deploy import local as local_target
from scones.deploy.planner import SAGEMAKER_API as API
from scones.deploy.planner import SAGEMAKER_ROUTE as ROUTE
from scones.deploy.record import (
    MANAGED_BY_COMPOSE,
    RecordError,
    StackOutputs,
    local_record_path,
    local_stack_record,
    read_record,
    write_record,
)
from scones.errors import SconesError
from scones.harness import localstack as localstack_manager
from scones.harness import processes
from scones.harness.parts import HEALTH_TIMEOUT_S, EndpointPart, Ledger, LocalStackPart, Part, recorded_settings
from scones.harness.parts import find as find_part
from scones.harness.parts import health_problem as parts_health_problem
from scones.harness.processes import ProcessId, port_open, process_tree, rss_bytes, wait_until
from scones.harness.processes import alive as pid_alive
from scones.harness.processes import terminate as _terminate
from scones.harness.sagemaker import processes as sagemaker_processes
from scones.harness.targets import find_local_record

Progress = Callable[[str], None]
SERVED_BY_CONTROL_PLANE = "sagemaker"   # the record's endpoint["served_by"] in api mode
ENDPOINT_READY_TIMEOUT_S = 120.0
ORPHAN_STOP_GRACE_S = 5.0
STOP_TIMEOUT_S = 15.0
CAPTURE_UPLOAD_TIMEOUT_S = 60.0
PORT_RANGE = (1, 65535)


class StackError(SconesError, RuntimeError):
    """The local stack could not be brought up or down; the message says which part and why."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignal(BaseException):
    """SIGINT, SIGTERM or SIGHUP reached `up`. A BaseException, like KeyboardInterrupt, so that nothing on the
    way out swallows it. `stack_left_up`: it came after the stack was complete and recorded."""

    def __init__(self, signum: int, stack_left_up: bool = False):
        self.signum, self.stack_left_up = signum, stack_left_up
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @classmethod
    def raised_for(cls, signum: int, stack_left_up: bool = False) -> "StopSignal":
        return (Interrupted if signum == signal.SIGINT else cls)(signum, stack_left_up)


class Interrupted(StopSignal, KeyboardInterrupt):
    """SIGINT (Ctrl-C): a StopSignal for `scones up` (exit status 130), and still a KeyboardInterrupt for
    whoever else calls up() (pytest stops its session on one)."""


class _StopSignals:
    """While armed, SIGINT, SIGTERM and SIGHUP raise StopSignal in the main thread, so `up` stops what it
    started; disarmed (the stack is complete), they wait.

    Signals the caller ignores (nohup's SIGHUP, SIGINT in a background job) stay ignored; outside the main
    thread Python cannot install handlers, and nothing changes.
    """

    def __init__(self):
        self.armed, self.pending, self._previous = True, None, {}

    def _handle(self, signum, frame):
        if not self.armed:
            self.pending = self.pending or signum
            return
        self.armed = False          # a second signal must not cut the cleanup short
        raise StopSignal.raised_for(signum)

    @contextlib.contextmanager
    def deferred(self):
        """Hold a signal while a process is being started, until its handle is kept: then raise it."""
        was_armed, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = was_armed
        if was_armed and self.pending:
            signum, self.pending, self.armed = self.pending, None, False
            raise StopSignal.raised_for(signum)

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


@dataclass
class StackConfig:
    state_dir: Path
    data_dir: Path
    localstack_port: int = local_target.DEFAULT_LOCALSTACK_PORT
    endpoint_port: int = local_target.DEFAULT_ENDPOINT_PORT
    prefix: str = local_target.DEFAULT_PREFIX
    bucket: str = local_target.DEFAULT_BUCKET
    endpoint_name: str = local_target.DEFAULT_ENDPOINT_NAME
    threshold: float = local_target.DEFAULT_THRESHOLD
    model_dir: Path | None = None           # a directory holding model.tar.gz; default: ensure_model()
    upload_data: bool = True
    # Local training and evaluation read the images from disk; the workflow only ever sees test/
    # keys. Uploading train/ too (1000 more objects) doubled `scones up`.
    upload_train: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, state_dir=None, data_dir=None, localstack_port=None, endpoint_port=None,
                         **overrides) -> "StackConfig":
        """Each setting as scones/settings.py resolves it (argument, environment, project config, default)."""
        try:
            state = settings.state_dir(state_dir)
        except OSError as error:
            raise StackError(f"cannot create the state dir {error.filename or state_dir} ({error.strerror or error}); "
                             f"choose another with --state-dir or ${settings.STATE_DIR}") from error
        return cls(
            state_dir=state,
            # Default <this state dir>/data (settings.data_dir() alone would take the default state dir's).
            data_dir=Path(settings.lookup("data_dir", data_dir) or state / "data").resolve(),
            # An explicit 0 is kept, for check() to refuse, rather than read as "not given".
            localstack_port=localstack_port if localstack_port is not None else settings.localstack_port(
                None, local_target.DEFAULT_LOCALSTACK_PORT),
            endpoint_port=endpoint_port if endpoint_port is not None else settings.endpoint_port(
                None, local_target.DEFAULT_ENDPOINT_PORT),
            **{"model_dir": settings.model_dir(), **{k: v for k, v in overrides.items() if v is not None}},
        )

    def check(self) -> None:
        """Refuse, before any work, ports that cannot be used and a state dir that cannot be written."""
        ports = {"--localstack-port": self.localstack_port, "--endpoint-port": self.endpoint_port}
        variables = {"--localstack-port": settings.LOCALSTACK_PORT, "--endpoint-port": settings.ENDPOINT_PORT}
        for option, port in ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
                raise StackError(f"{option} (or ${variables[option]}) must be a port number in "
                                 f"{PORT_RANGE[0]}-{PORT_RANGE[1]}, not {port!r}")
        if self.localstack_port == self.endpoint_port:
            raise StackError(f"LocalStack and the endpoint server cannot share port {self.endpoint_port}: give "
                             "--localstack-port and --endpoint-port (or their variables) different values")
        try:
            settings.check_writable(self.local_dir)
        except OSError as error:
            raise StackError(f"the state dir {self.state_dir} is not writable ({error.strerror or error}): "
                             f"`scones up` keeps its record, logs and LocalStack's data there; choose another with "
                             f"--state-dir or ${settings.STATE_DIR}") from error

    @property
    def localstack_url(self) -> str:
        return local_target.localstack_url(self.localstack_port)

    @property
    def endpoint_url(self) -> str:
        return local_target.endpoint_url(self.endpoint_port)

    @property
    def capture_spool_dir(self) -> Path:
        """The endpoint's capture spool and archive (harness/serving/capture.py): what re-seeds S3 at `up`."""
        return self.state_dir / "capture-spool" / self.endpoint_name

    @property
    def local_dir(self) -> Path:
        return self.state_dir / "local"


# ----------------------------------------------------------------------------- processes

def terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    _terminate(pid, timeout)


# ----------------------------------------------------------------------------- parts

def stack_parts(config: StackConfig, model_dir: Path | None = None, sagemaker: str = ROUTE) -> list[Part]:
    """The parts of this stack, in the order `up` starts them and `down` stops them. Route mode: the endpoint
    server takes seconds to import torch, so it starts first; it flushes capture to S3 when stopped, so it stops
    first. Api mode: LocalStack alone, whose SageMaker control plane starts the endpoint host (and a spare one
    at LocalStack's start, which takes the torch import off the deploy's path)."""
    if sagemaker == API:
        return [LocalStackPart(state_dir=config.state_dir, port=config.localstack_port, serves_endpoint=True)]
    return [endpoint_part(config, model_dir), LocalStackPart(state_dir=config.state_dir, port=config.localstack_port)]


def sagemaker_mode() -> str:
    """How `up` serves the endpoint: "api" (the default: CreateModel/CreateEndpointConfig/CreateEndpoint through
    LocalStack's SageMaker control plane, as on AWS) or "route" ($SCONES_LOCAL_SAGEMAKER=route: an endpoint server
    of its own, registered with the sagemaker-runtime route). "auto" is api: this LocalStack has the control plane."""
    from scones.deploy.waiting import DeployError

    try:
        mode = local_target.requested_sagemaker_mode(default=API)
    except DeployError as error:
        raise StackError(str(error)) from error
    return ROUTE if mode == ROUTE else API


def endpoint_part(config: StackConfig, model_dir: Path | None) -> EndpointPart:
    return EndpointPart(state_dir=config.state_dir, port=config.endpoint_port, endpoint_name=config.endpoint_name,
                        model_dir=model_dir or Path(), bucket=config.bucket, localstack_url=config.localstack_url,
                        capture_spool_dir=config.capture_spool_dir)


def resolve_model(config: StackConfig, progress: Progress) -> Path:
    if config.model_dir is not None:
        return Path(config.model_dir).resolve()
    from scones.harness.models import ensure_model

    progress("model: checking the cached model (trains on first use)")
    return Path(ensure_model(data_dir=config.data_dir, state_dir=config.state_dir, **config.hyperparameters))


# ----------------------------------------------------------------------------- up / down / status

def up(config: StackConfig, progress: Progress = print) -> dict[str, Any]:
    """Bring the local stack up (adopting parts already running, replacing stale ones) and return its record.

    Holds a lock file, so two `up`s at once (two shells, pytest-xdist workers) start one stack.
    """
    import fcntl

    config.check()
    _refuse_compose_on_our_ports(config)
    with open(config.local_dir / "up.lock", "w") as lock, _StopSignals() as signals:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = _up(config, progress, signals)
    if signals.pending:
        raise StopSignal.raised_for(signals.pending, stack_left_up=True)
    return record


def _refuse_compose_on_our_ports(config: StackConfig) -> None:
    """A compose stack beside this state dir that holds our ports is the stack to use, not a reason to start one."""
    path = find_local_record(config.state_dir)
    record = _read_record(path, None)[0] if path != local_record_path(config.state_dir) else None
    ports = {(record or {}).get(part, {}).get("port") for part in ("localstack", "endpoint")}
    held = [port for port in ports & {config.localstack_port, config.endpoint_port} if port and port_open(port)]
    if managed_by_compose(record) and held:   # (a record left by containers that died holds nothing)
        raise StackError(f"a docker compose stack holds ports {sorted(held)} (record {path}): "
                         f"`scones run`, `scones status` and the pytest plugin use it as it is; stop it with "
                         f"`{COMPOSE_DOWN}` first, or give this stack other ports ({settings.LOCALSTACK_PORT}, "
                         f"{settings.ENDPOINT_PORT})")


def _read_record(path: Path, progress: Progress | None) -> tuple[dict[str, Any] | None, str | None]:
    """The stack record, or None and why when it is missing or damaged: what runs is then found by looking."""
    try:
        return read_record(path), None
    except RecordError as error:
        if progress:
            progress(f"WARNING: {error}; going by the processes found instead")
        return None, str(error)


def _matches(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(recorded.get(key) == value for key, value in wanted.items())


def _plan_part(part: Part, ledger: Ledger, previous: dict | None, marked: dict) -> tuple[ProcessId | None, str | None]:
    """(the process to adopt, None) or (None, why what runs of it must be replaced; None when nothing runs)."""
    found = find_part(part, ledger, previous, marked)
    if not found:
        return None, None
    pids = ", ".join(str(process.pid) for process in found)
    if len(found) > 1:
        return None, f"several processes ({pids})"
    if not _matches(recorded_settings(part, ledger, previous), part.settings()):
        return None, f"pid {pids} runs with other settings ({', '.join(sorted(part.settings()))})"
    problem = part.health_problem()
    if problem:
        return None, f"pid {pids} does not answer ({problem})"
    return found[0], None


def _up(config: StackConfig, progress: Progress, signals: _StopSignals) -> dict[str, Any]:
    started_at = time.perf_counter()
    report = progress
    progress = lambda message: report(f"[{time.perf_counter() - started_at:5.1f} s] {message}")  # noqa: E731
    record_path = local_record_path(config.state_dir)
    previous, _ = _read_record(record_path, progress)
    ledger = Ledger(config.state_dir)
    if ledger.problem:
        progress(f"WARNING: {ledger.problem}; going by the processes found instead")
    model_dir = resolve_model(config, progress)
    mode = sagemaker_mode()
    parts = stack_parts(config, model_dir, mode)
    marked = processes.find_marked(config.state_dir)
    # An endpoint the control plane served is none of the parts' processes (its host is the control plane's).
    parts_record = {**(previous or {}), EndpointPart.name: None} if _served_by_control_plane(previous) else previous
    running = _adopt_or_clear(parts, ledger, parts_record, marked, progress)
    if mode == API:
        _retire_route_endpoint(config, ledger, parts_record, marked, progress)
    if LocalStackPart.name not in running:
        _stop_orphaned_hosts(config, progress)

    started_here: list[Part] = []
    try:
        _start_missing(parts, running, started_here, ledger, signals, progress)
        _wait_ready([part for part in started_here if part.ready_before_deploy], running, progress)
        deployed = deploy_stack(config, model_dir, progress, mode)
        _wait_ready([part for part in started_here if not part.ready_before_deploy], running, progress)
        served = served_endpoint(config, model_dir, progress) if mode == API else None
        _wait_capture_uploaded(served["url"] if served else config.endpoint_url, progress)
    except BaseException:
        # Do not leave a half-started stack behind: stop what this call started.
        for part in started_here:
            part.stop([running[part.name]] if part.name in running else [], lambda message: None)
            ledger.drop(part.name)
        raise
    signals.armed = False   # complete: a signal now waits until the record is written

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    localstack_adopted = LocalStackPart.name in running and all(part.name != LocalStackPart.name for part in started_here)
    entries: dict[str, Any] = {part.name: part.entry(running.get(part.name)) for part in parts}
    record = local_stack_record(
        outputs=deployed.outputs,
        created=((previous or {}).get("created") if localstack_adopted else None) or now,
        state_dir=config.state_dir, data_dir=str(config.data_dir), prefix=config.prefix, threshold=config.threshold,
        localstack=entries.pop(LocalStackPart.name), endpoint=served or entries.pop(EndpointPart.name), **entries,
        **deployed.details,
        up_seconds=round(time.perf_counter() - started_at, 3),
    )
    write_record(record_path, record)
    return record


def _retire_route_endpoint(config: StackConfig, ledger: Ledger, previous: dict | None, marked: dict,
                           progress: Progress) -> None:
    """Stop an endpoint server an earlier `up` in route mode started: the control plane serves the endpoint now."""
    part = endpoint_part(config, None)
    found = find_part(part, ledger, previous, marked)
    if found:
        progress(f"endpoint: stopping the route-mode endpoint server ({', '.join(str(p.pid) for p in found)}); "
                 "the SageMaker control plane serves the endpoint now")
        part.stop(found, progress)
    ledger.drop(part.name)


def _stop_orphaned_hosts(config: StackConfig, progress: Progress) -> None:
    """LocalStack is not running (stopped, or killed -9), but the training jobs and endpoint hosts its control plane
    started may be: a new LocalStack knows nothing of them, so they go (an endpoint host's spool keeps what it
    could not upload, and the next host on that spool sends it)."""
    for entry in sagemaker_processes.stop_all(_sagemaker_root(config.state_dir), grace_s=ORPHAN_STOP_GRACE_S):
        progress(f"sagemaker: stopped {entry.kind} {entry.name} (pid {entry.pid}), left by a LocalStack that is gone")


def _served_by_control_plane(record: dict | None) -> bool:
    return ((record or {}).get("endpoint") or {}).get("served_by") == SERVED_BY_CONTROL_PLANE


def control_plane_endpoint(state_dir: Path, localstack_url: str, name: str) -> dict[str, Any] | None:
    """The endpoint host that serves `name` now, as the control plane knows it: its URL (from the sagemaker-runtime
    route) and its process (from the control plane's process records); None when LocalStack does not answer or
    names no URL."""
    from urllib.parse import urlsplit

    from scones.harness.lambda_executor.names import SAGEMAKER_ENDPOINTS_PATH
    from scones.loopback import get_json

    try:
        url = get_json(f"{localstack_url}{SAGEMAKER_ENDPOINTS_PATH}", timeout=HEALTH_TIMEOUT_S)["endpoints"].get(name)
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    if not url:
        return None
    port = urlsplit(url).port
    hosts = [entry for entry in sagemaker_processes.recorded(_sagemaker_root(state_dir))
             if entry.kind == "endpoint" and entry.name == name and entry.alive]
    host = next((entry for entry in hosts if port in processes.listening_ports(entry.pid)), None)
    process = ProcessId.of(host.pid) if host else None
    return {**(process.to_dict() if process else {"pid": None, "started": None}), "url": url, "port": port,
            "name": name, "log": host.log if host else None, "served_by": SERVED_BY_CONTROL_PLANE}


def served_endpoint(config: StackConfig, model_dir: Path, progress: Progress) -> dict[str, Any]:
    """The record's endpoint entry in api mode, once the host the control plane names answers /ping (a host that
    replaces a killed one may still be starting)."""
    found: list[dict[str, Any]] = []

    def answering() -> bool:
        current = control_plane_endpoint(config.state_dir, config.localstack_url, config.endpoint_name)
        if current is None or current["pid"] is None or parts_health_problem(current["url"], EndpointPart.health_path):
            return False
        found[:] = [current]
        return True

    if not wait_until(answering, ENDPOINT_READY_TIMEOUT_S, 0.1):
        raise StackError(f"endpoint: the SageMaker control plane's endpoint {config.endpoint_name} does not answer "
                         f"after {ENDPOINT_READY_TIMEOUT_S:.0f} s; its host's log is under "
                         f"{_sagemaker_root(config.state_dir) / 'endpoints'}")
    progress(f"endpoint: served by the SageMaker control plane on {found[0]['url']} (pid {found[0]['pid']})")
    return {**found[0], "model_dir": str(model_dir), "capture_s3_uri": local_target.capture_s3_uri(config.bucket)}


def _adopt_or_clear(parts: list[Part], ledger: Ledger, previous: dict | None, marked: dict,
                    progress: Progress) -> dict[str, ProcessId]:
    """Adopt each part that runs as asked and answers; stop whatever else of it an earlier `up` left (all of it
    before anything starts, so that a part moved to another part's old port finds that port free)."""
    running: dict[str, ProcessId] = {}
    for part in parts:
        adopted, stale = _plan_part(part, ledger, previous, marked)
        if adopted is not None:
            running[part.name] = adopted
            ledger.put(part.name, part.entry(adopted))
            progress(f"{part.name}: attached on {part.url} (pid {adopted.pid})")
        elif stale:
            progress(f"{part.name}: replacing what runs of it: {stale}")
            part.stop(find_part(part, ledger, previous, marked), progress)
            ledger.drop(part.name)
    return running


def _start_missing(parts: list[Part], running: dict[str, ProcessId], started_here: list[Part], ledger: Ledger,
                   signals: _StopSignals, progress: Progress) -> None:
    """Start each part not running, without waiting for it; each process is in the ledger before anything waits."""
    for part in parts:
        if part.name in running:
            continue
        _refuse_a_held_port(part)
        part.prepare()
        with signals.deferred():   # a signal now would orphan the process before it is recorded
            process = part.start()
            started_here.append(part)
            if process is not None:
                running[part.name] = process
                ledger.put(part.name, part.entry(process))
        progress(f"{part.name}: starting on {part.url}" + (f" (pid {process.pid})" if process else ""))
    if any(part.ready_before_deploy for part in started_here):
        _preload_deploy_code()  # while LocalStack boots in its own process
        _report_lambda_sandbox(progress)


def _wait_ready(parts: list[Part], running: dict[str, ProcessId], progress: Progress) -> None:
    for part in parts:
        if part.name in running:
            part.wait_ready(running[part.name])
            progress(f"{part.name}: ready")


def _refuse_a_held_port(part: Part) -> None:
    """Fail at once, naming who holds it, when a port a part needs is taken by something not of this stack."""
    if port_open(part.port):
        holder = processes.port_holder(part.port)
        variable = {"endpoint": settings.ENDPOINT_PORT, "localstack": settings.LOCALSTACK_PORT}.get(part.name, "")
        raise StackError(f"port {part.port} is already in use" + (f" by {holder}" if holder else "")
                         + f", so the {part.name} cannot bind it; stop what listens there or choose another port"
                         + (f" (${variable})" if variable else ""))


@dataclass
class Deployed:
    """What the deploy phase made: the record's outputs, and its details for the record beside them."""
    outputs: StackOutputs
    details: dict[str, Any]


def deploy_stack(config: StackConfig, model_dir: Path, progress: Progress, sagemaker: str = ROUTE) -> Deployed:
    """The deploy phase of `up`, on the running parts: the local target's plan (deploy/planner.py), the one
    every target runs: the endpoint registered with LocalStack, the bucket and data, the workflow, event runs
    and the drift monitor."""
    from scones.deploy.waiting import DeployError

    through_api = sagemaker == API
    deploy_config = local_target.LocalConfig(
        localstack_url=config.localstack_url, data_dir=Path(config.data_dir),
        # api mode: sagemaker-runtime through LocalStack's gateway, as clients reach it on AWS
        endpoint_url=config.localstack_url if through_api else config.endpoint_url,
        bucket=config.bucket, prefix=config.prefix, endpoint_name=config.endpoint_name, threshold=config.threshold,
        upload_data=config.upload_data, dataset_parts=dataset_parts(config), model_dir=model_dir,
        sagemaker=sagemaker, register_endpoint=None if through_api else localstack_manager.register_endpoint,
        restore_capture=lambda s3: restore_capture(s3, config, progress))
    try:
        deployed = local_target.deploy_local_stack(deploy_config, state_dir=config.state_dir, progress=progress)
    except (localstack_manager.EndpointRegistrationError, DeployError) as error:
        raise StackError(str(error)) from error
    progress("deployed: workflow, event runs, monitor, data")
    return Deployed(deployed.outputs, deployed.details)


def _capture_status(endpoint_url: str) -> dict:
    return loopback.get_json(f"{endpoint_url}/capture/status")


def _wait_capture_uploaded(endpoint_url: str, progress: Progress) -> None:
    """Wait until S3 holds what the endpoint had spooled when `up` got here: the records a new endpoint found
    left by its predecessor, or those an attached one could not send while LocalStack was down. So
    `scones monitor` right after `up` counts every record captured before a crash."""
    try:
        status = _capture_status(endpoint_url)
    except (OSError, ValueError) as error:
        progress(f"capture: WARNING: cannot read the endpoint's capture status ({error})")
        return
    waiting = status.get("pending", 0)
    if not waiting:
        return
    goal = status["written_records"] + waiting
    progress(f"capture: waiting for the endpoint to upload {waiting} spooled records")
    latest = status

    def uploaded() -> bool:
        nonlocal latest
        try:
            latest = _capture_status(endpoint_url)
        except (OSError, ValueError):
            return False
        return latest["written_records"] >= goal

    if not wait_until(uploaded, CAPTURE_UPLOAD_TIMEOUT_S, 0.1):
        progress(f"capture: WARNING: the endpoint has not uploaded its {waiting} spooled records after "
                 f"{CAPTURE_UPLOAD_TIMEOUT_S:.0f} s; they stay in {status.get('spool_dir')} and it keeps trying "
                 f"(last error: {latest.get('last_error')})")
        return
    progress(f"capture: the endpoint uploaded the {waiting} spooled records")


def _report_lambda_sandbox(progress: Progress) -> None:
    from scones.harness.lambda_executor import sandbox

    caps = sandbox.capabilities()
    if (problem := sandbox.unavailable()) is not None:   # no sandbox, and the user did not opt out by name
        raise StackError(problem)
    progress(f"lambda: {caps.describe()}")
    if caps.reason:
        progress(f"WARNING: Lambda environments are less isolated than on AWS: {caps.reason}")


def _preload_deploy_code() -> None:
    import importlib

    for module in ("scones.deploy.packaging", "scones.deploy.planner", "scones.deploy.executor",
                   "scones.deploy.resources", "scones.state_machine.render", "tqdm"):
        importlib.import_module(module)


def dataset_parts(config: StackConfig) -> tuple[str, ...]:
    """What `up` uploads besides train.lst/test.lst: test/ only, unless asked for train/ too."""
    return ("train", "test") if config.upload_train else local_target.DATASET_PARTS


def restore_capture(s3, config: StackConfig, progress: Progress):
    from scones.harness.serving.capture import restore_uploaded

    report = restore_uploaded(config.capture_spool_dir, s3, buckets=[config.bucket])
    if report.files:
        progress(f"capture: restored {report.records} records in {report.files} files to s3://{config.bucket} "
                 f"from {config.capture_spool_dir} in {report.seconds:.2f} s ({report.present} files were still there)")
    if report.pending_files:
        progress(f"capture: {report.pending_records} records in {report.pending_files} files not yet in S3 wait in "
                 f"the spool; the endpoint uploads them")
    return report


COMPOSE_DOWN = "harness/compose/stack.sh down"


def managed_by_compose(record: dict | None) -> bool:
    return record is not None and record.get("managed_by") == MANAGED_BY_COMPOSE


HEALTH_PATHS = {part.name: part.health_path for part in (LocalStackPart, EndpointPart)}


def health_problem(part: str, url: str | None, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when LocalStack's health route or the endpoint's /ping replies 200 within `timeout`, else why not."""
    return parts_health_problem(url, HEALTH_PATHS[part], timeout)


def _health(parts: dict[str, dict]) -> dict[str, str | None]:
    """Each part's health_problem, probed side by side so that status takes one deadline, not two."""
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="scones-health") as pool:
        futures = {name: pool.submit(health_problem, name, part.get("url")) for name, part in parts.items()}
        return {name: future.result() for name, future in futures.items()}


def _compose_status(record: dict, path: Path) -> dict[str, Any]:
    """A compose stack's processes live in containers: no pids to check, only what answers on its ports."""
    parts = {name: record.get(name) or {} for name in HEALTH_PATHS}
    problems = _health(parts)
    for name, part in parts.items():
        port = part.get("port")
        parts[name] = {**part, "alive": None, "listening": bool(port and port_open(port)),
                       "answers": problems[name] is None, "problem": problems[name]}
    return {
        "up": all(part["answers"] for part in parts.values()),
        "managed_by": MANAGED_BY_COMPOSE,
        "record": record,
        "record_path": str(path),
        "parts": parts,
        "processes": [],
        "rss_bytes": None,
    }


def _recorded_parts(state: Path, record: dict | None, ledger: Ledger) -> list[Part]:
    """The parts as recorded (their ports), for `status` and `down`, which know no StackConfig."""
    def port(name: str, default: int) -> int:
        for source in (ledger.parts.get(name), (record or {}).get(name)):
            value = (source or {}).get("port")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return default

    config = StackConfig(state_dir=state, data_dir=state,
                         localstack_port=port(LocalStackPart.name, local_target.DEFAULT_LOCALSTACK_PORT),
                         endpoint_port=port(EndpointPart.name, local_target.DEFAULT_ENDPOINT_PORT))
    return stack_parts(config)


def _found(state: Path, record: dict | None, ledger: Ledger) -> tuple[list[Part], dict[str, list[ProcessId]]]:
    """Each part's running processes, and those marked with a part this version does not know, by part."""
    parts = _recorded_parts(state, record, ledger)
    marked = processes.find_marked(state)
    found = {part.name: find_part(part, ledger, record, marked) for part in parts}
    found.update({name: pids for name, pids in marked.items() if name not in found})
    return parts, found


def status(state_dir=None) -> dict[str, Any]:
    """What the record says, what is alive now, and whether each part answers its health check in time.

    With no record (or a damaged one) but processes of this stack running (a kill -9 of `up`), "found"
    lists them: not up, and `up` adopts or replaces them, `down` stops them."""
    path = find_local_record(state_dir)
    record, problem = _read_record(path, None)
    if record is not None and managed_by_compose(record):
        return _compose_status(record, path)
    state = settings.state_dir(state_dir)
    ledger = Ledger(state)
    _, found = _found(state, record, ledger)
    running = {name: [process.pid for process in pids] for name, pids in found.items() if pids}
    if record is None:
        tree = process_tree([pid for pids in running.values() for pid in pids])
        return {"up": False, "record": None, "record_path": str(path), "record_problem": problem,
                "found": running, "processes": tree, "rss_bytes": rss_bytes(tree)}
    parts: dict[str, dict[str, Any]] = {}
    for name in HEALTH_PATHS:
        entry = record.get(name) or {}
        pids = running.get(name, [])
        if name == EndpointPart.name and _served_by_control_plane(record):
            # The control plane may have replaced the host since `up` (a new pid and port): ask it.
            localstack_url = (record.get(LocalStackPart.name) or {}).get("url")
            current = control_plane_endpoint(state, localstack_url, entry.get("name", "")) if localstack_url else None
            entry = {**entry, **(current or {"pid": None})}
            pids = [entry["pid"]] if pid_alive(entry["pid"]) else []
        port = entry.get("port")
        parts[name] = {**entry, "pid": pids[0] if len(pids) == 1 else pids or entry.get("pid"), "alive": bool(pids),
                       "listening": bool(port and port_open(port))}
    tree = process_tree([pid for pids in running.values() for pid in pids])
    # A process that lives and listens may still not answer (stopped with SIGSTOP, hung): probe each one.
    problems = _health(parts)
    for name, part in parts.items():
        part["healthy"] = part["alive"] and part["listening"] and problems[name] is None
        part["problem"] = problems[name] if part["alive"] else "process not running"
    return {
        "up": all(part["healthy"] for part in parts.values()),
        "record": record,
        "record_path": str(path),
        "parts": parts,
        "found": running,
        "sagemaker": [vars(entry) for entry in sagemaker_processes.recorded(_sagemaker_root(state)) if entry.alive],
        "processes": tree,
        "rss_bytes": rss_bytes(tree),
    }


def _sagemaker_root(state: Path) -> Path:
    """Where the local SageMaker control plane records its training-job and endpoint processes."""
    return sagemaker_processes.sagemaker_dir(localstack_manager.LocalStack(state).home)


def down(state_dir=None, progress: Progress = print, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """Stop every process of this stack that anything knows of (record, ledger, LocalStack's pidfile, the
    marker in their environment), endpoint first (it flushes capture on SIGTERM), then LocalStack, then any
    stragglers; then check that no process and no port is left. A missing or damaged record stops nothing less."""
    path = find_local_record(state_dir)
    record, problem = _read_record(path, progress)
    if managed_by_compose(record):
        # Its processes live in containers; their pids mean nothing here, and stopping them is compose's job.
        raise StackError(f"the local stack recorded at {path} is managed by docker compose, so `scones down` "
                         f"does not stop it: run `{COMPOSE_DOWN}` (it stops the containers and flushes capture)")
    state = settings.state_dir(state_dir)
    ledger = Ledger(state)
    if ledger.problem:
        progress(f"WARNING: {ledger.problem}; going by the processes found instead")
    parts, found = _found(state, record, ledger)
    everything = [process for pids in found.values() for process in pids]
    # Snapshot now: once a parent dies its children get re-parented. Ports: recorded, and any a found process holds.
    tree = process_tree([process.pid for process in everything])
    ports = sorted({part.port for part in parts if part.name in ledger.parts or (record or {}).get(part.name)}
                   | {port for process in everything for port in processes.listening_ports(process.pid)})
    if record is None and not everything and not ledger.parts:
        progress(f"nothing to stop: no local stack recorded at {path}, and no process of it found")
        _set_aside(path, problem, progress)
        return {"stopped": [], "leftover_processes": [], "open_ports": []}

    stopped = []
    # The control plane's training jobs and endpoint servers first, while LocalStack still runs: each endpoint
    # flushes its capture on SIGTERM, which LocalStack's own stop would not give it time for.
    for entry in sagemaker_processes.stop_all(_sagemaker_root(state)):
        progress(f"sagemaker: stopped {entry.kind} {entry.name} (pid {entry.pid})")
        stopped.append(entry.pid)
    for part in parts:
        part.stop(found.get(part.name, []), progress)
        stopped += [process.pid for process in found.get(part.name, [])]
    for name in [name for name in found if name not in {part.name for part in parts}]:
        progress(f"{name}: stopping {[process.pid for process in found[name]]}")
        for process in found[name]:
            terminate(process.pid, timeout)
            stopped.append(process.pid)
    for pid in tree:  # Lambda environments or helpers that outlived their parent
        if pid_alive(pid):
            progress(f"stopping leftover process {pid}")
            terminate(pid, 5.0)
        processes.reap(pid)

    wait_until(lambda: not any(port_open(port) for port in ports), timeout)
    leftovers = [pid for pid in tree if pid_alive(pid)]
    open_ports = [port for port in ports if port_open(port)]
    if not leftovers and not open_ports:
        ledger.remove()
        if record is not None:
            path.unlink(missing_ok=True)
        _set_aside(path, problem, progress)
    return {"stopped": stopped, "leftover_processes": leftovers, "open_ports": open_ports}


def _set_aside(path: Path, problem: str | None, progress: Progress) -> None:
    """A damaged record names nothing any more: keep it beside, out of the way of the next `up`, and say where."""
    if problem and path.exists():
        aside = path.with_name(path.name + ".damaged")
        path.replace(aside)
        progress(f"the damaged record is kept as {aside}")
