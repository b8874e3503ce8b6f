"""The processes the harness starts and stops (LocalStack, the endpoint server, their children), through
psutil, and the one deadline loop everything that waits on them uses."""
from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeGuard

import psutil

from scones.harness.sagemaker import processes as sagemaker_processes
from scones.polling import poll_condition

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def alive(pid: int | None) -> TypeGuard[int]:
    """A running process, or one still exiting. A zombie whose threads are all gone only waits to be reaped:
    dead for our purposes. But a killed multi-threaded process (LocalStack, the endpoint server) shows its
    leader as a zombie at once while its other threads take a moment more (~0.2-0.4 s measured under load) to
    exit, and until the last one has, its files and listening ports stay open: it is not dead yet."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() not in _GONE or process.num_threads() > 1
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def command_line_has(pid: int, text: str) -> bool:
    try:
        return any(text in part for part in psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, grandchildren, ...)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def process_tree(root_pids: list[int]) -> list[int]:
    """The given live pids and all their descendants (Lambda environments are LocalStack's children)."""
    tree: list[int] = []
    for pid in root_pids:
        if psutil.pid_exists(pid):
            for member in (pid, *descendants(pid)):
                if member not in tree:
                    tree.append(member)
    return tree


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def reap(pid: int) -> None:
    """Collect a child's exit status so it does not linger as a zombie of this process (no-op for others)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_holder(port: int) -> str | None:
    """Which process listens on 127.0.0.1:port (pid and command), for an error that names the clash."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline())[:120]
            except psutil.Error:
                command = "?"
            return f"pid {conn.pid} ({command})"
    return None


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll condition until it holds (True) or the deadline passes (False); it is always tried at least once."""
    return poll_condition(condition, timeout, interval)


def send_signal(pid: int, number: int) -> None:
    """Signal pid if it still exists."""
    try:
        psutil.Process(pid).send_signal(number)
    except psutil.NoSuchProcess:
        pass


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL that pid (only processes this harness started)."""
    if not alive(pid):
        return
    send_signal(pid, signal.SIGTERM)
    if not wait_until(lambda: not alive(pid), timeout):
        send_signal(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 5.0)


# --- knowing our own processes again -------------------------------------------------------------

# Every process the local stack starts carries these in its environment, so a later `up`, `down` or `status`
# finds it by looking even when no record names it (a kill -9 of `up` before it wrote one, a corrupt record).
STACK_ENV = "SCONES_STACK"            # the stack's state dir, resolved
PART_ENV = sagemaker_processes.PART_ENV   # which part ("endpoint", "localstack", the control plane's "sagemaker")
# psutil's create_time is in seconds since the epoch, from the kernel's start time in clock ticks (1/100 s).
_SAME_START_S = 0.05


@dataclass(frozen=True)
class ProcessId:
    """A process known by pid and start time, so that a pid the kernel reused for another process is not it.
    `started` None: an older record that kept only the pid (trusted as before)."""
    pid: int
    started: float | None = None

    @classmethod
    def of(cls, pid: int) -> "ProcessId | None":
        """The running process pid, with its start time; None when it is gone."""
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            return cls(pid)

    @classmethod
    def from_dict(cls, value: object) -> "ProcessId | None":
        """From a record's {"pid", "started"}; None for anything else (a record may be hand-edited or damaged)."""
        if not isinstance(value, dict):
            return None
        pid, started = value.get("pid"), value.get("started")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        return cls(pid, float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None)

    def to_dict(self) -> dict[str, float | int | None]:
        return {"pid": self.pid, "started": self.started}

    def running(self) -> bool:
        """This very process still runs (not a zombie, not another process that got its pid)."""
        if not alive(self.pid):
            return False
        if self.started is None:
            return True
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < _SAME_START_S
        except psutil.Error:
            return False


def marker_environment(state_dir: str | os.PathLike, part: str) -> dict[str, str]:
    """The variables that let find_marked() know a process as `part` of the stack in state_dir."""
    return {STACK_ENV: str(Path(state_dir).resolve()), PART_ENV: part}


def find_marked(state_dir: str | os.PathLike) -> dict[str, list[ProcessId]]:
    """Every running process whose environment marks it as part of the stack in state_dir, by part."""
    wanted = str(Path(state_dir).resolve())
    found: dict[str, list[ProcessId]] = {}
    for process in psutil.process_iter(["environ", "create_time", "status"], ad_value=None):
        info = process.info
        environ = info.get("environ") or {}
        if environ.get(STACK_ENV) != wanted or info.get("status") in _GONE or process.pid == os.getpid():
            continue
        found.setdefault(environ.get(PART_ENV, "?"), []).append(ProcessId(process.pid, info.get("create_time")))
    return found


def listening_ports(pid: int) -> list[int]:
    """The TCP ports pid listens on (empty when it is gone or not ours to read)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []
    return sorted({conn.laddr.port for conn in connections if conn.status == psutil.CONN_LISTEN and conn.laddr})
