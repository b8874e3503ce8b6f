"""How many execution environments may be alive at once: a cap per function and one in all.

AWS's own limit is the account's concurrency (1,000 by default); this machine runs out of memory
and cores long before that, so the executor caps live sandboxes: MAX_PER_FUNCTION per function, and in
all as many as half the memory available at start holds at ENVIRONMENT_BUDGET_BYTES each (between
MIN_TOTAL and MAX_TOTAL), so that the stack's five functions each reach their cap on a machine with the
memory for it. At the per-function cap LocalStack's invoke waits for one of the function's environments
(lambda_environment_queue.py); at the total cap, a new environment
first takes the place of the least recently used idle one (its sandbox is ended; if LocalStack
hands that environment an invoke later, the invoke starts a fresh sandbox with a cold start, as
AWS may at any time). With every environment busy, the new one waits for a free place, so
concurrent invokes queue instead of failing; after SLOT_WAIT_S it fails with a clear error
(Step Functions retries it as Lambda.ServiceException).

No LocalStack imports: tests/test_lambda_environment_slots.py runs it on its own.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Protocol

import psutil

from scones.errors import SconesError

MAX_PER_FUNCTION = 16
MIN_TOTAL = 32
MAX_TOTAL = 128
# What one environment may hold here: AWS's smallest MemorySize; a Python runtime with boto3 uses about 55 MB.
ENVIRONMENT_BUDGET_BYTES = 128 * 1024 * 1024
SLOT_WAIT_S = 50.0   # under the 60 s LocalStack allows an environment to start (LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT)


class NoFreeSlot(SconesError, RuntimeError):
    pass


def total_for(available_bytes: int) -> int:
    """The cap on live environments in all, for a machine with `available_bytes` of memory available."""
    return max(MIN_TOTAL, min(MAX_TOTAL, available_bytes // 2 // ENVIRONMENT_BUDGET_BYTES))


class Holder(Protocol):
    last_used: float

    def evict_if_idle(self) -> bool: ...


class Slots:
    def __init__(self, per_function: int = MAX_PER_FUNCTION, total: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_function = per_function
        self.total = total if total is not None else total_for(psutil.virtual_memory().available)
        self._clock = clock
        self._changed = threading.Condition()
        self._holders: dict[object, tuple[Holder, Hashable]] = {}   # slot -> (its environment, its function)
        self.evictions = 0
        self.waits = 0

    def acquire(self, holder: Holder, function: Hashable, timeout_s: float = SLOT_WAIT_S) -> object:
        """A slot for one sandbox of `holder` (hand it back to release() when that sandbox has ended)."""
        deadline = self._clock() + timeout_s
        waited = False
        while True:
            with self._changed:
                same = [other for other, owner in self._holders.values() if owner == function]
                if len(self._holders) < self.total and len(same) < self.per_function:
                    slot = object()
                    self._holders[slot] = (holder, function)
                    return slot
                pool = same if len(same) >= self.per_function else [other for other, _ in self._holders.values()]
                victims = sorted((other for other in pool if other is not holder), key=lambda other: other.last_used)
            if any(victim.evict_if_idle() for victim in victims):
                self.evictions += 1
                self._wait_for_change(deadline)   # the evicted sandbox's release wakes us
                continue
            if not waited:
                self.waits += 1
                waited = True
            if not self._wait_for_change(deadline):
                raise NoFreeSlot(
                    f"all {self.total} Lambda execution environments (at most {self.per_function} per function) "
                    f"stayed busy for {timeout_s:.0f} s")

    def _wait_for_change(self, deadline: float) -> bool:
        """Wait for a release (at most a second, so a missed wake-up costs little); False past the deadline."""
        with self._changed:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._changed.wait(min(remaining, 1.0))
            return True

    def release(self, slot: object) -> None:
        with self._changed:
            self._holders.pop(slot, None)
            self._changed.notify_all()

    def stats(self) -> dict:
        with self._changed:
            return {"alive": len(self._holders), "max_total": self.total, "max_per_function": self.per_function,
                    "evictions": self.evictions, "waits": self.waits}
