"""The processes the harness starts and stops (LocalStack, the endpoint server, their children), through
psutil, and the one deadline loop everything that waits on them uses."""
from __future__ import annotations

import signal
import socket
from typing import Callable, TypeGuard

import psutil

from scones.polling import poll_condition

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def alive(pid: int | None) -> TypeGuard[int]:
    """A running process (a zombie is dead for our purposes: it only waits to be reaped)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() not in _GONE
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
