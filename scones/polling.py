"""The one deadline loop every wait in scones uses: check, decide, sleep, until done, failed or out of time.

Modelled on LocalStack's `localstack.utils.sync.poll_condition`, with what our waits also need: the
last value seen (a timeout names the state it was stuck in), an early exit when the value says the
wait can never succeed (a process died, a resource is Failed), a growing interval for waits that
start short, and an injectable clock and sleep so tests drive the loop without waiting.
"""
from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

from scones.errors import SconesError

T = TypeVar("T")


class PollTimedOut(SconesError, TimeoutError, Generic[T]):
    """The deadline passed before the condition held; `last` is the last value the check returned."""

    def __init__(self, timeout: float, last: T):
        super().__init__(f"the condition did not hold within {timeout:g} s")
        self.timeout = timeout
        self.last = last


class PollFailed(SconesError, RuntimeError, Generic[T]):
    """The check's value said the wait cannot succeed; `reason` says why, `last` is that value."""

    def __init__(self, reason: str, last: T):
        super().__init__(reason)
        self.reason = reason
        self.last = last


def poll(
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float,
    until: Callable[[T], object] = bool,
    failure: Callable[[T], str | None] | None = None,
    max_interval: float | None = None,
    backoff: float = 1.0,
    each: Callable[[T, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call check() until until(value) holds and return that value; it is always tried at least once.

    failure(value) returning a reason ends the wait at once with PollFailed; past the deadline the wait
    ends with PollTimedOut. each(value, elapsed_s) sees every value (progress lines). The interval grows
    by `backoff` after each sleep, up to max_interval.
    """
    started = clock()
    deadline = started + timeout
    wait = interval
    while True:
        value = check()
        now = clock()
        if each is not None:
            each(value, now - started)
        if until(value):
            return value
        reason = failure(value) if failure is not None else None
        if reason:
            raise PollFailed(reason, value)
        if now >= deadline:
            raise PollTimedOut(timeout, value)
        sleep(wait)
        wait = wait * backoff if max_interval is None else min(wait * backoff, max_interval)


def poll_condition(condition: Callable[[], object], timeout: float, interval: float = 0.05,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    """LocalStack's poll_condition: True once condition() holds, False when the deadline passes first."""
    try:
        poll(condition, timeout=timeout, interval=interval, clock=clock, sleep=sleep)
    except PollTimedOut:
        return False
    return True
