"""The local target as one unit: LocalStack + endpoint server + model + deployed workflow + data.

`up()` starts what is not running yet and attaches to what is (so a second `up` starts nothing
twice), deploys the Lambdas and state machine through the same code path as AWS, uploads the
staged test images and .lst files (train/ too with upload_train), and records pids, ports,
names and ARNs in <state>/local/stack.json.
`down()` flushes capture, stops everything `up()` started, and checks that no process and no
listening port is left behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from scones import settings
from scones.deploy import local as local_target
from scones.deploy.record import MANAGED_BY_COMPOSE, local_record_path, local_stack_record, read_record, write_record
from scones.errors import SconesError
from scones.harness import localstack as localstack_manager
from scones.harness.processes import alive as pid_alive
from scones.harness.processes import port_open, process_tree, rss_bytes, wait_until
from scones.harness.processes import terminate as _terminate
from scones.harness.targets import find_local_record

Progress = Callable[[str], None]
ENDPOINT_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
ENDPOINT_STOP_TIMEOUT_S = 60.0   # its shutdown drains requests and writes pending capture records
CAPTURE_UPLOAD_TIMEOUT_S = 60.0


class StackError(SconesError, RuntimeError):
    """The local stack could not be brought up or down; the message says which part and why."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class StopSignal(BaseException):
    """SIGTERM or SIGHUP reached `up`. A BaseException, like KeyboardInterrupt, so that nothing on the
    way out swallows it. `stack_left_up`: it came after the stack was complete and recorded."""

    def __init__(self, signum: int, stack_left_up: bool = False):
        self.signum, self.stack_left_up = signum, stack_left_up
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class _StopSignals:
    """While armed, SIGTERM and SIGHUP raise StopSignal in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so `up` stops what it started; disarmed (the stack is complete), they wait.

    Signals the caller ignores (nohup's SIGHUP) stay ignored; outside the main thread Python
    cannot install handlers, and nothing changes.
    """

    def __init__(self):
        self.armed, self.pending, self._previous = True, None, {}

    def _handle(self, signum, frame):
        if not self.armed:
            self.pending = self.pending or signum
            return
        self.armed = False          # a second signal must not cut the cleanup short
        raise StopSignal(signum)

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
            raise StopSignal(signum)

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
        return cls(
            state_dir=settings.state_dir(state_dir),
            data_dir=settings.data_dir(data_dir),
            localstack_port=settings.localstack_port(localstack_port, local_target.DEFAULT_LOCALSTACK_PORT),
            endpoint_port=settings.endpoint_port(endpoint_port, local_target.DEFAULT_ENDPOINT_PORT),
            **{"model_dir": settings.model_dir(), **{k: v for k, v in overrides.items() if v is not None}},
        )

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
        path = self.state_dir / "local"
        path.mkdir(parents=True, exist_ok=True)
        return path


# ----------------------------------------------------------------------------- processes

def terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    _terminate(pid, timeout)


def _reap(pid: int) -> None:
    """Collect a child's exit status so it does not linger as a zombie of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ----------------------------------------------------------------------------- parts

def _localstack(config: StackConfig):
    from scones.harness.localstack import LocalStack

    return LocalStack(config.state_dir, config.localstack_port)


def start_endpoint_server(config: StackConfig, model_dir: Path):
    """Start the endpoint server as a subprocess (it outlives `scones up`); does not wait for it."""
    from scones.harness.endpoint import EndpointServer
    from scones.harness.serving.capture import CaptureConfig

    if port_open(config.endpoint_port):
        raise StackError(f"port {config.endpoint_port} is already in use, so the endpoint server cannot bind it; "
                         f"stop what listens there or set {settings.ENDPOINT_PORT}")
    model = model_dir / "model.tar.gz" if (model_dir / "model.tar.gz").exists() else model_dir
    server = EndpointServer(
        model, endpoint_name=config.endpoint_name, port=config.endpoint_port, mode="subprocess",
        capture=CaptureConfig(local_target.capture_s3_uri(config.bucket), sampling_percentage=100),
        env=local_target.endpoint_server_environment(config.localstack_url),
        log_path=config.local_dir / "endpoint.log", capture_spool=config.capture_spool_dir,
    )
    return server.start(wait=False)


def resolve_model(config: StackConfig, progress: Progress) -> Path:
    if config.model_dir is not None:
        return Path(config.model_dir).resolve()
    from scones.harness.models import ensure_model

    progress("model: checking the cached model (trains on first use)")
    return Path(ensure_model(data_dir=config.data_dir, state_dir=config.state_dir, **config.hyperparameters))


# ----------------------------------------------------------------------------- up / down / status

def up(config: StackConfig, progress: Progress = print) -> dict[str, Any]:
    """Bring the local stack up (attaching to parts already running) and return its record.

    Holds a lock file, so two `up`s at once (two shells, pytest-xdist workers) start one stack.
    """
    import fcntl

    _refuse_compose_on_our_ports(config)
    with open(config.local_dir / "up.lock", "w") as lock, _StopSignals() as signals:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = _up(config, progress, signals)
    if signals.pending:
        raise StopSignal(signals.pending, stack_left_up=True)
    return record


def _refuse_compose_on_our_ports(config: StackConfig) -> None:
    """A compose stack beside this state dir that holds our ports is the stack to use, not a reason to start one."""
    path = find_local_record(config.state_dir)
    record = read_record(path) if path != local_record_path(config.state_dir) else None
    ports = {(record or {}).get(part, {}).get("port") for part in ("localstack", "endpoint")}
    held = [port for port in ports & {config.localstack_port, config.endpoint_port} if port and port_open(port)]
    if managed_by_compose(record) and held:   # (a record left by containers that died holds nothing)
        raise StackError(f"a docker compose stack holds ports {sorted(held)} (record {path}): "
                         f"`scones run`, `scones status` and the pytest plugin use it as it is; stop it with "
                         f"`{COMPOSE_DOWN}` first, or give this stack other ports ({settings.LOCALSTACK_PORT}, "
                         f"{settings.ENDPOINT_PORT})")


def _up(config: StackConfig, progress: Progress, signals: _StopSignals) -> dict[str, Any]:
    started_at = time.perf_counter()
    report = progress
    progress = lambda message: report(f"[{time.perf_counter() - started_at:5.1f} s] {message}")  # noqa: E731
    record_path = local_record_path(config.state_dir)
    previous = read_record(record_path) or {}
    localstack = _localstack(config)

    # The endpoint server takes seconds to import torch: start it first, then LocalStack beside it.
    model_dir = resolve_model(config, progress)
    endpoint_process = None
    localstack_started_here = False
    old_endpoint = previous.get("endpoint") or {}
    endpoint_attached = (pid_alive(old_endpoint.get("pid")) and old_endpoint.get("port") == config.endpoint_port
                         and old_endpoint.get("model_dir") == str(model_dir)
                         and old_endpoint.get("name") == config.endpoint_name
                         and old_endpoint.get("capture_s3_uri") == local_target.capture_s3_uri(config.bucket)
                         and _answers("endpoint", config.endpoint_url))
    try:
        if not endpoint_attached:
            if pid_alive(old_endpoint.get("pid")):
                progress(f"endpoint: stopping the old server (pid {old_endpoint['pid']}): its model, name, port or "
                         "capture destination changed")
                terminate(old_endpoint["pid"])
            with signals.deferred():   # a signal now would orphan the process before we hold it
                endpoint_process = start_endpoint_server(config, model_dir)
            progress(f"endpoint: starting {config.endpoint_name} on {config.endpoint_url} (pid {endpoint_process.pid})")
        else:
            progress(f"endpoint: attached to {config.endpoint_name} on {config.endpoint_url} (pid {old_endpoint['pid']})")

        old_localstack = previous.get("localstack") or {}
        running_pid = localstack.pid()   # from LocalStack's own pidfile under this state dir
        localstack_attached = _answers("localstack", config.localstack_url) and (
            running_pid is not None or old_localstack.get("port") == config.localstack_port)
        if localstack_attached:
            localstack_pid = running_pid or old_localstack.get("pid")
            progress(f"localstack: attached on {config.localstack_url} (pid {localstack_pid})")
        else:
            if port_open(config.localstack_port):
                raise StackError(f"port {config.localstack_port} is in use by something that is not this stack's "
                                 f"LocalStack; stop it or set {settings.LOCALSTACK_PORT}")
            localstack.ensure_venv()
            progress(f"localstack: starting on {config.localstack_url}")
            with signals.deferred():
                localstack_pid = localstack.start()
                localstack_started_here = True
            _preload_deploy_code()  # while LocalStack boots in its own process
            _report_lambda_sandbox(progress)
            localstack.wait_ready()

        progress("localstack: ready")
        try:
            localstack_manager.register_endpoint(config.localstack_url, config.endpoint_name, config.endpoint_url)
        except localstack_manager.EndpointRegistrationError as error:
            raise StackError(str(error)) from error
        session = local_target.local_session(config.localstack_url, config.endpoint_url)
        # LocalStack loads each service on its first request (a second or two each here): the
        # bucket is made in the upload's thread so that S3 and Lambda load side by side.
        stopping = threading.Event()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scones-up") as pool:
            try:
                deploying = pool.submit(_deploy, session, config, progress, stopping)
                uploading = pool.submit(_bucket_and_upload, session, config, progress)
                resources = deploying.result()
                uploaded, restored = uploading.result()
            except BaseException:
                stopping.set()   # the deploy's next poll gives up, so leaving the pool waits for no waiter
                raise
        progress("workflow deployed, data uploaded")
        event_runs = _deploy_event_runs(session, config, resources, progress)
        monitor = _deploy_monitor(session, config, model_dir, progress)

        if endpoint_process is not None:
            endpoint_process.wait_ready(ENDPOINT_READY_TIMEOUT_S)
            progress("endpoint: ready")
        _wait_capture_uploaded(config.endpoint_url, progress)
    except BaseException:
        # Do not leave a half-started stack behind: stop what this call started.
        if endpoint_process is not None:
            endpoint_process.stop(STOP_TIMEOUT_S)
        if localstack_started_here:
            localstack.stop()
        raise
    signals.armed = False   # complete: a signal now waits until the record is written

    endpoint_pid = endpoint_process.pid if endpoint_process else old_endpoint.get("pid")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    outputs = local_target.stack_outputs(bucket=config.bucket, resources=resources, endpoint_name=config.endpoint_name,
                                         localstack=config.localstack_url, endpoint_server=config.endpoint_url)
    outputs = dataclasses.replace(outputs, intake_s3_uri=f"s3://{config.bucket}/{event_runs.intake_prefix}",
                                  results_s3_uri=f"s3://{config.bucket}/{event_runs.results_prefix}",
                                  monitor_topic_arn=monitor.topic_arn)
    record = local_stack_record(
        outputs=outputs,
        created=(previous.get("created") if localstack_attached else None) or now,
        state_dir=config.state_dir, data_dir=str(config.data_dir), prefix=config.prefix, threshold=config.threshold,
        localstack={"pid": localstack_pid, "port": config.localstack_port, "url": config.localstack_url},
        endpoint={"pid": endpoint_pid, "port": config.endpoint_port, "url": config.endpoint_url,
                  "name": config.endpoint_name, "capture_s3_uri": local_target.capture_s3_uri(config.bucket),
                  "model_dir": str(model_dir), "log": str(config.local_dir / "endpoint.log")},
        event_runs=event_runs.to_dict(),
        monitor=monitor.to_dict(),
        dataset={"uploaded": uploaded.uploaded, "skipped": uploaded.skipped,
                 "parts": list(dataset_parts(config))} if uploaded else None,
        capture_restored=vars(restored),
        up_seconds=round(time.perf_counter() - started_at, 3),
    )
    write_record(record_path, record)
    return record


def _capture_status(endpoint_url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{endpoint_url}/capture/status", timeout=5) as reply:
        return json.loads(reply.read())


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

    for module in ("scones.deploy.packaging", "scones.deploy.workflow", "scones.deploy.event_runs", "scones.state_machine.render", "tqdm"):
        importlib.import_module(module)


def _deploy(session, config: StackConfig, progress: Progress, stopping: threading.Event):
    from scones.deploy.workflow import deploy_workflow

    def pause(seconds: float) -> None:
        # LocalStack makes a function Active in about a second; poll it 10x as often as AWS needs.
        if stopping.wait(min(seconds, 0.1)):
            raise StackError("deploy abandoned: `scones up` is stopping")

    return deploy_workflow(
        session,
        prefix=config.prefix,
        endpoint_name=config.endpoint_name,
        threshold=config.threshold,
        lambda_role_arn=local_target.LAMBDA_ROLE_ARN,
        states_role_arn=local_target.STATES_ROLE_ARN,
        progress=progress,
        sleep=pause,
    )


def _deploy_event_runs(session, config: StackConfig, resources, progress: Progress):
    """Photos under incoming/ start the workflow, results land under results/ (deploy/event_runs.py, as on AWS).
    After the upload, which creates the bucket that sends the events."""
    from scones.deploy.event_runs import deploy_event_runs

    return deploy_event_runs(
        session, prefix=config.prefix, bucket=config.bucket, state_machine_arn=resources.state_machine_arn,
        events_role_arn=local_target.EVENTS_ROLE_ARN, writer_role_arn=local_target.LAMBDA_ROLE_ARN,
        progress=progress, sleep=lambda seconds: time.sleep(min(seconds, 0.1)),
    )


def _deploy_monitor(session, config: StackConfig, model_dir: Path, progress: Progress):
    """The scheduled drift monitor, its alarms and topic (deploy/monitoring.py, as on AWS), with the served
    model's baseline; alarms evaluated every LOCAL_ALARM_PERIOD_S (LocalStack evaluates once a period)."""
    import json

    from scones.deploy import monitoring

    baseline_path = model_dir / "baseline.json"
    settings = monitoring.MonitorSettings(prefix=config.prefix, bucket=config.bucket, endpoint_name=config.endpoint_name,
                                          threshold=config.threshold, alarm_period_s=monitoring.LOCAL_ALARM_PERIOD_S)
    return monitoring.deploy_monitor(
        session, settings, role_arn=local_target.LAMBDA_ROLE_ARN,
        baseline=json.loads(baseline_path.read_text()) if baseline_path.is_file() else None,
        progress=progress, sleep=lambda seconds: time.sleep(min(seconds, 0.1)),
    )


def dataset_parts(config: StackConfig) -> tuple[str, ...]:
    """What `up` uploads besides train.lst/test.lst: test/ only, unless asked for train/ too."""
    return ("train", "test") if config.upload_train else local_target.DATASET_PARTS


def _bucket_and_upload(session, config: StackConfig, progress: Progress):
    """The bucket (always: data capture writes there), the capture files S3 lost put back from the spool's
    archive (LocalStack's free edition keeps no data across restarts), then the dataset unless upload_data is off."""
    from scones.deploy.workflow import upload_dataset

    local_target.ensure_bucket(session, config.bucket)
    restored = restore_capture(session, config, progress)
    if not config.upload_data:
        return None, restored
    return (upload_dataset(session, config.bucket, config.data_dir, progress=progress, parts=dataset_parts(config)),
            restored)


def restore_capture(session, config: StackConfig, progress: Progress):
    from scones.harness.serving.capture import restore_uploaded

    report = restore_uploaded(config.capture_spool_dir, session.client("s3"), buckets=[config.bucket])
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


HEALTH_PATHS = {"localstack": "/_localstack/health", "endpoint": "/ping"}
HEALTH_TIMEOUT_S = 2.0   # a live process that cannot answer in this long (stopped, hung) is unhealthy


def health_problem(part: str, url: str | None, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when LocalStack's health route or the endpoint's /ping replies 200 within `timeout`, else why not."""
    import urllib.error
    import urllib.request

    if not url:
        return "no URL recorded"
    probe = f"{url}{HEALTH_PATHS[part]}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(probe, timeout=timeout) as reply:
            return None if reply.status == 200 else f"{probe} answered HTTP {reply.status}"
    except urllib.error.HTTPError as error:
        return f"{probe} answered HTTP {error.code}"
    except OSError as error:
        reason = getattr(error, "reason", error)   # URLError wraps the socket's error
        if isinstance(reason, TimeoutError):
            return f"{probe} did not answer within {timeout:g} s (a stopped or hung process?)"
        return f"{probe} failed: {reason}"


def _answers(part: str, url: str | None, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    return health_problem(part, url, timeout) is None


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


def status(state_dir=None) -> dict[str, Any]:
    """What the record says, what is alive now, and whether each part answers its health check in time."""
    path = find_local_record(state_dir)
    record = read_record(path)
    if record is None:
        return {"up": False, "record": None, "record_path": str(path)}
    if managed_by_compose(record):
        return _compose_status(record, path)
    localstack, endpoint = record.get("localstack") or {}, record.get("endpoint") or {}
    ls_port, ep_port = localstack.get("port"), endpoint.get("port")
    pids = [pid for pid in (localstack.get("pid"), endpoint.get("pid")) if pid_alive(pid)]
    tree = process_tree(pids)
    parts = {
        "localstack": {**localstack, "alive": pid_alive(localstack.get("pid")),
                       "listening": bool(ls_port and port_open(ls_port))},
        "endpoint": {**endpoint, "alive": pid_alive(endpoint.get("pid")),
                     "listening": bool(ep_port and port_open(ep_port))},
    }
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
        "processes": tree,
        "rss_bytes": rss_bytes(tree),
    }


def down(state_dir=None, progress: Progress = print, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """Stop the endpoint server (it flushes capture on SIGTERM), then LocalStack, then any stragglers."""
    path = find_local_record(state_dir)
    record = read_record(path)
    if record is None:
        # No record, but a LocalStack from this state dir may still run (its own pidfile says so).
        try:
            stopped_orphan = _localstack(StackConfig(state_dir=settings.state_dir(state_dir),
                                                     data_dir=settings.data_dir())).stop()
        except ImportError:
            stopped_orphan = False
        progress("stopped a LocalStack left without a stack record" if stopped_orphan
                 else f"nothing to stop: no local stack recorded at {path}")
        return {"stopped": [], "leftover_processes": [], "open_ports": []}
    if managed_by_compose(record):
        # Its processes live in containers; their pids mean nothing here, and stopping them is compose's job.
        raise StackError(f"the local stack recorded at {path} is managed by docker compose, so `scones down` "
                         f"does not stop it: run `{COMPOSE_DOWN}` (it stops the containers and flushes capture)")
    localstack, endpoint = record.get("localstack") or {}, record.get("endpoint") or {}
    roots = [pid for pid in (endpoint.get("pid"), localstack.get("pid")) if pid_alive(pid)]
    tree = process_tree(roots)     # snapshot now: once a parent dies its children get re-parented
    stopped = []

    if pid_alive(endpoint.get("pid")):
        progress(f"endpoint: stopping pid {endpoint['pid']} (flushes data capture first)")
        terminate(endpoint["pid"], max(timeout, ENDPOINT_STOP_TIMEOUT_S))
        _reap(endpoint["pid"])
        stopped.append(endpoint["pid"])

    if localstack.get("port"):
        config = StackConfig(state_dir=settings.state_dir(state_dir), data_dir=settings.data_dir(),
                             localstack_port=localstack["port"])
        progress(f"localstack: stopping (port {localstack['port']})")
        try:
            _localstack(config).stop()
        except ImportError:
            pass
        if pid_alive(localstack.get("pid")):
            terminate(localstack["pid"], timeout)
        stopped.append(localstack.get("pid"))

    for pid in tree:  # Lambda environments or helpers that outlived their parent
        if pid_alive(pid):
            progress(f"stopping leftover process {pid}")
            terminate(pid, 5.0)
        _reap(pid)

    ports = [port for port in (localstack.get("port"), endpoint.get("port")) if port]
    wait_until(lambda: not any(port_open(port) for port in ports), timeout)
    leftovers = [pid for pid in tree if pid_alive(pid)]
    open_ports = [port for port in ports if port_open(port)]
    if not leftovers and not open_ports:
        path.unlink(missing_ok=True)
    return {"stopped": stopped, "leftover_processes": leftovers, "open_ports": open_ports}
