"""The time an execution environment is charged against its init and invoke limits.

On AWS every execution environment has its own CPU share: ten cold starts at once take as long as
one. Here they share the machine's cores, and ten cold starts importing a heavy SDK on 2 cores
overran the 10 s init limit, a failure AWS would not show. The rule we apply: a phase (init or
invoke) is charged its wall-clock time minus the time the runtime's main thread spent runnable
but waiting for a CPU that other work on this machine held (the kernel's run-queue delay, the
second field of /proc/<pid>/schedstat). Computing, sleeping and waiting for I/O (S3, an endpoint)
all count, as on AWS; queueing behind other processes for a core does not. Where the kernel does
not report it (no schedstat), the charge is the wall-clock time.

No LocalStack imports: tests/test_lambda_charged_time.py runs it on its own.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from scones.harness.lambda_executor.sandbox import KernelFile

RUNTIME_MARKER = b"awslambdaric"   # in the command line of the runtime process of every environment

_schedstats: dict[int, KernelFile] = {}   # pid -> its /proc/<pid>/schedstat, open while the process lives
_schedstats_lock = threading.Lock()


def run_queue_delay_s(pid: int) -> float | None:
    """Seconds the main thread of `pid` has waited, runnable, for a CPU since it started; None if unknown."""
    with _schedstats_lock:
        schedstat = _schedstats.get(pid)
        if schedstat is None:
            try:
                schedstat = _schedstats[pid] = KernelFile(f"/proc/{pid}/schedstat")
            except OSError:
                return None
    try:
        return int(schedstat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):   # it ended (ESRCH): a later process with its pid opens afresh
        forget(pid)
        return None


def forget(pid: int) -> None:
    """Close what run_queue_delay_s keeps open for `pid`."""
    with _schedstats_lock:
        schedstat = _schedstats.pop(pid, None)
    if schedstat is not None:
        schedstat.close()


def forget_ended() -> None:
    """Close what run_queue_delay_s keeps open for processes that have ended (call when one has)."""
    with _schedstats_lock:
        kept = list(_schedstats.items())
    for pid, schedstat in kept:
        try:
            schedstat.read()
        except OSError:
            forget(pid)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def runtime_pid(root: int, marker: bytes = RUNTIME_MARKER) -> int | None:
    """The runtime's own process under `root`: the deepest one whose command line holds the marker (the
    sandbox's tools before it carry the runtime's command line as their arguments), once it runs Python."""
    pid: int | None = root
    while pid is not None and not _has_marker(pid, marker):   # a shell in front (the memory cgroup's, say)
        pid = next(iter(_children(pid)), None)
    while pid is not None:
        deeper = next((child for child in _children(pid) if _has_marker(child, marker)), None)
        if deeper is None:
            break
        pid = deeper
    if pid is None:
        return None
    try:
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("python") else None
    except OSError:
        return None


class ChargedClock:
    """Wall time since the clock started, less the run-queue delay the runtime accrued meanwhile."""

    def __init__(self, root_pid: int, *, new_process: bool, runtime: int | None = None):
        self.started = time.monotonic()
        self._root = root_pid
        self._pid = runtime
        # A process started for this phase accrued all its delay in it; else count from now.
        self._baseline = 0.0 if new_process else (self._delay() or 0.0)

    def _delay(self) -> float | None:
        if self._pid is None:
            self._pid = runtime_pid(self._root)
            if self._pid is None:
                return None
        return run_queue_delay_s(self._pid)

    @property
    def runtime(self) -> int | None:
        return self._pid

    def wall(self) -> float:
        return time.monotonic() - self.started

    def queued(self) -> float:
        delay = self._delay()
        return max(0.0, delay - self._baseline) if delay is not None else 0.0

    def charged(self) -> float:
        return max(0.0, self.wall() - self.queued())


def wait_charged(clock: ChargedClock, limit_s: float, wait: Callable[[float], bool]) -> bool:
    """Call wait(seconds) until it returns True (done) or the clock has charged limit_s (False)."""
    while True:
        remaining = limit_s - clock.charged()
        if remaining <= 0:
            return False
        if wait(remaining):
            return True
