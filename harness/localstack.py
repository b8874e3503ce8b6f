"""LocalStack 4.14.0 as a local server: its own Python 3.13 venv, start, health, stop.

    ls = LocalStack(state_dir, port=4566)
    ls.ensure_venv()      # first use: venv + pinned LocalStack + our Lambda executor (progress shown)
    ls.start()            # python -m localstack.runtime.main, bound to 127.0.0.1:<port>
    ls.wait_ready()       # polls /_localstack/health with a deadline
    ls.stop()             # SIGTERM, then SIGKILL of that PID and everything it started

Everything lives under <state>/: the venv (localstack-venv/), one venv per Lambda Python
(lambda-runtimes/python3.X/, boto3 only, as on AWS), and LocalStack's data, temp files, log
and pidfile (localstack/). The pidfile lets `scones down` stop a LocalStack that another
process started.

Lambda functions run through our runtime executor (harness/lambda_executor), registered in the
venv as a plux entry point by a tiny hand-written dist-info plus a .pth that puts this checkout
on LocalStack's sys.path: edits to the executor or the runtime take effect at the next start,
without reinstalling.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import scones
from scones import loopback, settings
from scones.deploy.record import write_record
from scones.errors import SconesError
from scones.harness import processes
from scones.harness.iam import names as iam_names
from scones.harness.lambda_executor.names import (
    ENTRY_POINT,
    ENTRY_POINT_GROUP,
    FAULTS_HOOK,
    HOOK_GROUP,
    LOCALSTACK_VERSION,
    PLUGIN_NAME,
    PYTHONS_ENV,
    QUICK_EXIT_HOOK,
    SAGEMAKER_ENDPOINTS_PATH,
    SAGEMAKER_RUNTIME_HOOK,
)
from scones.harness.lambda_executor.runtimes import PYTHON_RUNTIMES
from scones.harness.sagemaker import processes as sagemaker_processes
from scones.polling import PollFailed, PollTimedOut, poll

HOST = "127.0.0.1"
DEFAULT_PORT = 4566
REQUIREMENTS = Path(__file__).resolve().parent / "localstack-requirements.txt"
RUNTIME_REQUIREMENTS = Path(__file__).resolve().parent / "lambda_runtime" / "requirements.txt"
LAMBDA_PYTHON_VERSIONS = tuple(PYTHON_RUNTIMES.values())   # every Python runtime AWS accepts today
# cloudwatch and sns: the drift monitor's metrics, alarms and topic (deploy/monitoring.py)
# kms: the SageMaker SDK uploads its source with SSE-KMS, which LocalStack's S3 hands to its KMS.
SERVICES = "s3,stepfunctions,lambda,iam,sts,logs,events,cloudwatch,sns,kms"
# Our pinned LocalStack patches' switches ("0" turns one off), passed on from the caller's environment
# so that e.g. `SCONES_SFN_DEFINITION_CACHE=0 scones up` measures without it (benchmarks/e2e.py does).
PATCH_SWITCHES = tuple(switch for switch in settings.SWITCHES
                       if switch not in (settings.LAMBDA_SANDBOX, settings.LAMBDA_RUNTIME_VALIDATION))
# The settings read inside LocalStack's process that the caller's environment passes on (the rest of SCONES_* stays out).
PASSED_ON = (*settings.SWITCHES, settings.TIME_SCALE, settings.IAM_MODE, settings.TRAINING_TOOLKIT_PYTHON,
             settings.SAGEMAKER_ENDPOINT_INSTANCES, settings.SAGEMAKER_TRAINING_JOBS,
             settings.SAGEMAKER_SPARE_ENDPOINT)
STOP_GRACE_S = 10.0
MARKER = ".scones-installed"
_DIST_NAME = "scones_lambda_executor"
_DIST_VERSION = "0.1.0"


class LocalStackError(SconesError, RuntimeError):
    """LocalStack could not be installed, started or reached; the message says what to do."""


# --- finding interpreters --------------------------------------------------------------------

def _version_key(path: Path) -> tuple[int, ...]:
    match = re.search(r"versions/(\d+)\.(\d+)\.(\d+)", str(path))
    return tuple(int(part) for part in match.groups()) if match else (0,)


def _usable(python: Path, version: str) -> bool:
    """Runs, is the right version, and can make venvs (Debian splits venv/ensurepip out)."""
    try:
        result = subprocess.run(
            [str(python), "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def find_python(version: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """A real (non-shim) interpreter for `version` such as "3.13": explicit, PATH, pyenv's versions, uv's."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    on_path = shutil.which(f"python{version}")
    # pyenv's shim is a shell script that fails in subprocesses without pyenv's own environment.
    if on_path and "shims" not in Path(on_path).parts:
        candidates.append(Path(on_path).resolve())
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), key=_version_key, reverse=True)
    uv_root = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local" / "share" / "uv" / "python")
    candidates += sorted(uv_root.glob(f"cpython-{version}.*/bin/python{version}"), reverse=True)
    candidates += [Path(f"/usr/local/bin/python{version}"), Path(f"/usr/bin/python{version}")]
    for candidate in candidates:
        if candidate.exists() and _usable(candidate, version):
            return candidate
    return None


def find_python313() -> Path:
    explicit = os.environ.get(settings.PYTHON313)
    if explicit and not _usable(Path(explicit), "3.13"):
        raise LocalStackError(f"${settings.PYTHON313}={explicit} is not a working Python 3.13 with venv and ensurepip.")
    python = find_python("3.13", explicit)
    if python is None:
        raise LocalStackError(
            "LocalStack 4.14 needs Python 3.13 (with venv/ensurepip), and none was found: looked at "
            f"${settings.PYTHON313}, python3.13 on PATH, ~/.pyenv/versions/3.13.*/bin/python3.13 and /usr/bin. "
            "Install it (e.g. `pyenv install 3.13` or `apt-get install python3.13 python3.13-venv`) "
            f"or point ${settings.PYTHON313} at one."
        )
    return python


# --- installing ------------------------------------------------------------------------------

def _run_pip(python: Path, args: list[str], log_path: Path, description: str, progress: bool = True) -> None:
    """pip with a progress bar over the packages it collects; the full output goes to log_path."""
    from tqdm import tqdm

    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", *args]
    with open(log_path, "a") as log, tqdm(desc=description, unit=" pkg", leave=True, disable=not progress) as bar:
        log.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout or ():
            log.write(line)
            if line.startswith(("Collecting ", "Requirement already satisfied")):
                bar.update(1)
                bar.set_postfix_str(line.split()[1 if line.startswith("Collecting") else 3][:40])
        code = process.wait()
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise LocalStackError(f"{description} failed (pip exit status {code}); full log: {log_path}\n{tail}")


def _make_venv(python: Path, venv_dir: Path) -> Path:
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    subprocess.run([str(python), "-m", "venv", str(venv_dir)], check=True, capture_output=True)
    return venv_dir / "bin" / "python"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _site_packages(python: Path) -> Path:
    venv_site = sorted(python.parent.parent.glob("lib/python3.*/site-packages"))
    if len(venv_site) == 1:  # a venv's own layout: no need to start the interpreter to ask
        return venv_site[0]
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def scones_package_dir() -> Path:
    """Where this scones's own package lives (a checkout's scones/, or an installation's)."""
    return Path(scones.__file__).resolve().parent


def _scones_import_folder(site: Path) -> Path:
    """A folder holding nothing but a link to the scones package: on LocalStack's sys.path it makes
    scones importable there without the rest of our venv (torch and all) shadowing LocalStack's."""
    folder = site.parent / "scones-import"
    folder.mkdir(exist_ok=True)
    link = folder / "scones"
    if not (link.is_symlink() and link.resolve() == scones_package_dir()):
        temporary = folder / f".scones.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(scones_package_dir(), target_is_directory=True)
        temporary.replace(link)
    return folder


# Application Auto Scaling on the gateway (harness/lambda_executor/application_autoscaling.py), hooked like the runtime.
APPLICATION_AUTOSCALING_HOOK = ("install_application_autoscaling = "
                                "scones.harness.lambda_executor.application_autoscaling:install_application_autoscaling")


def _register_executor(python: Path) -> None:
    """Make LocalStack's venv see our executor and our gateway hook (harness/lambda_executor/sagemaker_runtime.py):
    a dist-info with their entry points, and a .pth to this checkout."""
    site = _site_packages(python)
    dist_info = site / f"{_DIST_NAME}-{_DIST_VERSION}.dist-info"
    dist_info.mkdir(exist_ok=True)
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: {_DIST_NAME.replace('_', '-')}\nVersion: {_DIST_VERSION}\n"
                    "Summary: Scones: LocalStack Lambda runtime executor running environments as local processes\n",
        "entry_points.txt": f"[{ENTRY_POINT_GROUP}]\n{ENTRY_POINT}\n\n[{HOOK_GROUP}]\n{SAGEMAKER_RUNTIME_HOOK}\n{FAULTS_HOOK}\n"
                            f"{iam_names.HOOK}\n{APPLICATION_AUTOSCALING_HOOK}\n{QUICK_EXIT_HOOK}\n",
        "INSTALLER": "scones\n",
    }
    for name, text in files.items():
        if not (dist_info / name).exists() or (dist_info / name).read_text() != text:
            (dist_info / name).write_text(text)
    pth = site / f"{_DIST_NAME}.pth"
    pth_line = f"{_scones_import_folder(site)}\n"
    if not pth.exists() or pth.read_text() != pth_line:
        pth.write_text(pth_line)
    records = [f"{dist_info.name}/{name},," for name in [*files, "RECORD"]] + [f"{pth.name},,"]
    (dist_info / "RECORD").write_text("\n".join(records) + "\n")


class EndpointRegistrationError(SconesError, RuntimeError):
    """LocalStack did not take an endpoint's registration; the message says why and what to do."""


def control_plane_serves_endpoints(localstack: str, timeout: float = 65.0) -> bool:
    """Whether LocalStack's SageMaker control plane can start endpoint hosts (a Python with torch: not in the compose
    LocalStack container). The first answer may wait for its check of that Python."""
    from scones.loopback import get_json

    try:
        return get_json(f"{localstack}{SAGEMAKER_ENDPOINTS_PATH}", timeout=timeout).get("serves_endpoints") is True
    except (OSError, ValueError, AttributeError):
        return False


def register_endpoint(localstack: str, endpoint_name: str, endpoint_server_url: str, timeout: float = 10.0) -> None:
    """Tell LocalStack which endpoint server serves `endpoint_name`.

    LocalStack then answers sagemaker-runtime InvokeEndpoint for that name by forwarding it there
    (harness/lambda_executor/sagemaker_runtime.py), so a Lambda's default client, which goes to the
    AWS_ENDPOINT_URL every function gets, reaches the endpoint as it does on AWS: the functions
    need no endpoint setting of their own. LocalStack keeps this until it stops, like its other
    resources; an endpoint server restarted on the same URL needs no new registration.
    """
    url = f"{localstack}{SAGEMAKER_ENDPOINTS_PATH}/{endpoint_name}"
    try:
        loopback.request(url, json.dumps({"url": endpoint_server_url}).encode(), method="PUT",
                         headers={"Content-Type": "application/json"}, timeout=timeout)
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        hint = (" (this LocalStack predates that route: restart it, e.g. `scones down` then `scones up`)"
                if error.code == 404 else "")
        raise EndpointRegistrationError(f"LocalStack at {localstack} refused to register endpoint {endpoint_name} -> "
                           f"{endpoint_server_url}: HTTP {error.code} {detail}{hint}") from error
    except OSError as error:
        raise EndpointRegistrationError(f"could not register endpoint {endpoint_name} with LocalStack at {localstack}: {error}") from error


# --- the server ------------------------------------------------------------------------------

@dataclass
class _PidRecord:
    pid: int
    port: int
    log: str
    started: float | None = None     # the process' start time: a pid the kernel gave to another process is not it

    @classmethod
    def read(cls, path: Path) -> "_PidRecord | None":
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):   # a damaged pidfile names no process
            return None

    def write(self, path: Path) -> None:
        write_record(path, vars(self))   # atomic: a kill mid-write never leaves half a pidfile

    @property
    def process(self) -> processes.ProcessId:
        return processes.ProcessId(self.pid, self.started)


def _is_localstack(pid: int) -> bool:
    return processes.command_line_has(pid, "localstack.runtime.main")


def _running(record: _PidRecord | None) -> bool:
    """The LocalStack the pidfile names still runs, or is still exiting (that very process, not a reused pid:
    its start time says so; an older pidfile without one is checked by its command line)."""
    if record is None or not record.process.running():
        return False
    return record.started is not None or _is_localstack(record.pid)


class LocalStack:
    def __init__(self, state_dir: str | os.PathLike | None = None, port: int = DEFAULT_PORT, *,
                 home: str | os.PathLike | None = None, extra_env: dict[str, str] | None = None) -> None:
        """`home` holds this instance's data, log and pidfile (default <state>/localstack); the venvs
        are always shared under <state>, so tests can run a second LocalStack beside `scones up`'s."""
        self.state_dir = settings.state_dir(state_dir)
        self.port = int(port)
        self.extra_env = dict(extra_env or {})
        self.venv_dir = self.state_dir / "localstack-venv"
        self.python = self.venv_dir / "bin" / "python"
        self.runtimes_dir = self.state_dir / "lambda-runtimes"
        self.catalog_dir = self.venv_dir / "scones-service-catalog"
        self.home = Path(home).resolve() if home else self.state_dir / "localstack"
        self.pidfile = self.home / "localstack.pid"
        self.log_path = self.home / "localstack.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- venvs ---------------------------------------------------------------------------

    def ensure_venv(self, progress: bool = True) -> Path:
        """LocalStack's venv and the Lambda runtime venvs, created or repaired once; cheap when ready."""
        self.home.mkdir(parents=True, exist_ok=True)
        # Two processes (say `scones up` and a test session) must not build the same venv at once.
        with open(self.state_dir / ".localstack-venv.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._ensure_venv_locked(progress)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ensure_venv_locked(self, progress: bool) -> Path:
        pip_log = self.home / "pip.log"
        wanted = _digest(REQUIREMENTS.read_text(), ENTRY_POINT, str(scones_package_dir()), "v2")
        marker = self.venv_dir / MARKER
        if not (marker.exists() and marker.read_text() == wanted and self.python.exists()):
            python313 = find_python313()
            _print(progress, f"Creating LocalStack {LOCALSTACK_VERSION} venv with {python313} in {self.venv_dir}")
            python = _make_venv(python313, self.venv_dir)
            _run_pip(python, ["-r", str(REQUIREMENTS)], pip_log, f"Installing LocalStack {LOCALSTACK_VERSION}", progress)
            _register_executor(python)
            marker.write_text(wanted)
        else:
            _register_executor(self.python)  # cheap; repairs a removed .pth
        self.ensure_service_catalog(progress)
        self._ensure_lambda_runtimes(progress)
        return self.venv_dir

    def ensure_service_catalog(self, progress: bool = True) -> Path:
        """LocalStack's index of every AWS service spec, built once per venv and shared by every instance.

        LocalStack otherwise builds it on the first AWS request of each fresh data folder, which
        took 10-15 s here (a test's or benchmark's LocalStack, or the first `scones up`).
        """
        existing = sorted(self.catalog_dir.glob("service-catalog-*.dill"))
        if existing:
            return existing[-1]
        _print(progress, "Building LocalStack's service catalog index (once per venv)")
        self.catalog_dir.mkdir(parents=True, exist_ok=True)
        script = (
            "import os, sys\n"
            "from localstack.aws.spec import _get_catalog_filename, build_service_index_cache\n"
            "target = os.path.join(sys.argv[1], _get_catalog_filename())\n"
            "build_service_index_cache(target + '.partial')\n"
            "os.replace(target + '.partial', target)\n"
        )
        env = {**self.environment(), "FILESYSTEM_ROOT": str(self.catalog_dir / "filesystem")}
        result = subprocess.run([str(self.python), "-c", script, str(self.catalog_dir)],
                                env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalStackError(f"Building LocalStack's service catalog failed:\n{result.stderr[-2000:]}")
        shutil.rmtree(self.catalog_dir / "filesystem", ignore_errors=True)
        return sorted(self.catalog_dir.glob("service-catalog-*.dill"))[-1]

    def _link_service_catalog(self) -> None:
        # LocalStack looks for a prebuilt index in <FILESYSTEM_ROOT>/usr/lib/localstack first.
        static_libs = self.home / "filesystem" / "usr" / "lib" / "localstack"
        for catalog in self.catalog_dir.glob("service-catalog-*.dill"):
            static_libs.mkdir(parents=True, exist_ok=True)
            link = static_libs / catalog.name
            if not link.exists():
                link.unlink(missing_ok=True)  # a dangling link from an older venv
                link.symlink_to(catalog)

    def _ensure_lambda_runtimes(self, progress: bool = True) -> dict[str, str]:
        """One venv per Python found among LAMBDA_PYTHON_VERSIONS, holding what AWS's runtime holds
        (awslambdaric and boto3). Called under ensure_venv's lock."""
        wanted = _digest(RUNTIME_REQUIREMENTS.read_text(), "v1")
        pythons: dict[str, str] = {}
        for version in LAMBDA_PYTHON_VERSIONS:
            venv_dir = self.runtimes_dir / f"python{version}"
            marker = venv_dir / MARKER
            if not (marker.exists() and marker.read_text() == wanted):
                base = find_python(version, os.environ.get(settings.PYTHON313) if version == "3.13" else None)
                if base is None:
                    _print(progress, f"No Python {version} found (PATH, pyenv, uv): python{version} Lambda "
                                     "functions will fail to create, naming the missing interpreter")
                    continue
                python = _make_venv(base, venv_dir)
                _run_pip(python, ["-r", str(RUNTIME_REQUIREMENTS)], self.home / "pip.log",
                         f"Lambda runtime python{version}", progress)
                marker.write_text(wanted)
            pythons[f"python{version}"] = str(venv_dir / "bin" / "python")
        return pythons

    def lambda_pythons(self) -> dict[str, str]:
        wanted = _digest(RUNTIME_REQUIREMENTS.read_text(), "v1")
        return {
            f"python{version}": str(self.runtimes_dir / f"python{version}" / "bin" / "python")
            for version in LAMBDA_PYTHON_VERSIONS
            if (self.runtimes_dir / f"python{version}" / MARKER).exists()
            and (self.runtimes_dir / f"python{version}" / MARKER).read_text() == wanted
        }

    # --- process -------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """LocalStack's environment: loopback only, state under the project's state dir, our executor."""
        inherited = {
            key: value for key, value in os.environ.items()
            # Our callers' AWS settings and venv must not leak into LocalStack (it uses its own clients).
            if not key.startswith(("AWS_", "PYTHON", "LOCALSTACK_", "VIRTUAL_ENV", "GATEWAY_", "SCONES_"))
        }
        for folder in ("filesystem", "volume", "tmp"):
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        env = {
            **inherited,
            "GATEWAY_LISTEN": f"{HOST}:{self.port}",
            "GATEWAY_SERVER": "hypercorn",      # the default (twisted) ignores the host and binds 0.0.0.0
            "OVERRIDE_IN_DOCKER": "0",          # this machine has /.dockerenv
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SERVICES": SERVICES,
            "FILESYSTEM_ROOT": str(self.home / "filesystem"),
            "LOCALSTACK_VOLUME_DIR": str(self.home / "volume"),
            "TMPDIR": str(self.home / "tmp"),
            "LAMBDA_RUNTIME_EXECUTOR": PLUGIN_NAME,
            # An environment is a process that imports boto3: on a loaded 2-core CI machine many
            # cold starts at once can take longer than LocalStack's default 20 s.
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT": "60",
            # Internal clients (Step Functions -> Lambda, Lambda -> Logs) call the gateway in memory
            # instead of over the socket: about 40 ms less per Lambda task (benchmarks/lambda_executor.py).
            "IN_MEMORY_CLIENT": "1",
            PYTHONS_ENV: json.dumps(self.lambda_pythons()),
            # The local SageMaker control plane runs training jobs and endpoint servers on this Python (torch).
            sagemaker_processes.PYTHON_ENV: sys.executable,
            **{key: os.environ[key] for key in PASSED_ON if key in os.environ},
        }
        env.update(self.extra_env)
        return env

    def start(self) -> int:
        """Start LocalStack in the background (returns its PID); a running one from our pidfile is reused."""
        record = _PidRecord.read(self.pidfile)
        if record and _running(record):
            if record.port != self.port:
                raise LocalStackError(f"LocalStack is already running on port {record.port} (PID {record.pid}, "
                                      f"pidfile {self.pidfile}); stop it first or use that port.")
            return record.pid
        if not (self.python.exists() and (self.venv_dir / MARKER).exists()):
            raise LocalStackError(f"LocalStack's venv is missing at {self.venv_dir}: call ensure_venv() first.")
        if processes.port_open(self.port, HOST, timeout=0.5):
            raise LocalStackError(f"Port {self.port} on {HOST} is already in use by another process; "
                                  "stop it or choose another port.")
        self.home.mkdir(parents=True, exist_ok=True)
        self._link_service_catalog()
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(self.python), "-m", "localstack.runtime.main"],
                cwd=self.home, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        identity = processes.ProcessId.of(self._process.pid)
        _PidRecord(self._process.pid, self.port, str(self.log_path),
                   identity.started if identity else None).write(self.pidfile)
        return self._process.pid

    def health(self) -> dict | None:
        try:
            return loopback.get_json(f"{self.url}/_localstack/health", timeout=2)
        except (OSError, ValueError):  # URLError and HTTPError are OSErrors
            return None

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Poll the health endpoint until it answers; fail early, with the log's tail, if LocalStack dies."""
        record = _PidRecord.read(self.pidfile)

        def died(_health: dict | None) -> str | None:
            return "exited" if record is not None and not processes.alive(record.pid) else None

        try:
            health = poll(self.health, timeout=timeout, interval=0.1, until=lambda health: health is not None,
                          failure=died)
            return cast(dict, health)  # until() held: not None
        except PollFailed:
            raise LocalStackError(f"LocalStack exited while starting; see {self.log_path}:\n{self.log_tail()}") from None
        except PollTimedOut:
            raise LocalStackError(f"LocalStack did not answer {self.url}/_localstack/health within {timeout:.0f} s; "
                                  f"see {self.log_path}:\n{self.log_tail()}") from None

    def is_running(self) -> bool:
        return _running(_PidRecord.read(self.pidfile))

    def pid(self) -> int | None:
        record = _PidRecord.read(self.pidfile)
        return record.pid if record and _running(record) else None

    def process(self) -> processes.ProcessId | None:
        """The running LocalStack of this home, as its pidfile names it."""
        record = _PidRecord.read(self.pidfile)
        return record.process if record and _running(record) else None

    def stop(self, grace: float = STOP_GRACE_S) -> bool:
        """SIGTERM LocalStack, SIGKILL it after `grace` s, then SIGKILL anything it left behind. True if it ran."""
        record = _PidRecord.read(self.pidfile)
        if record is None or not _running(record):
            self.pidfile.unlink(missing_ok=True)
            self._reap()
            return False
        pid = record.pid
        started_below = processes.descendants(pid)
        processes.send_signal(pid, signal.SIGTERM)
        try:
            processes.wait_until(lambda: self._reaped(not processes.alive(pid)), grace, interval=0.1)
        finally:
            # It sometimes logs "bye" and never exits (a SIGTERM while it starts hangs its shutdown), and its
            # Lambda environments must go with it: killed even when Ctrl-C cuts the wait short.
            leftovers = [p for p in [pid, *started_below, *processes.descendants(pid)] if processes.alive(p)]
            for leftover in leftovers:
                processes.send_signal(leftover, signal.SIGKILL)
        processes.wait_until(lambda: self._reaped(not any(processes.alive(p) for p in leftovers)), 5)
        self._reap()
        self.pidfile.unlink(missing_ok=True)
        return True

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None

    def _reaped(self, condition: bool) -> bool:
        """condition, after collecting our child's exit status (else it lingers as a zombie of ours)."""
        self._reap()
        return condition

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except FileNotFoundError:
            return ""


def _print(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)
