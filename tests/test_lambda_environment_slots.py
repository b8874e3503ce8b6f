"""The cap on live Lambda execution environments (harness/lambda_executor/environment_slots.py), on its own.

AWS never refuses an invoke below the account's concurrency (1,000): so at our machine's cap an
idle environment gives way, and with all busy the new one queues instead of failing.
https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html
"""
from __future__ import annotations

import threading

import pytest

from scones.harness.lambda_executor.environment_slots import (
    ENVIRONMENT_BUDGET_BYTES,
    MAX_PER_FUNCTION,
    MAX_TOTAL,
    MIN_TOTAL,
    NoFreeSlot,
    Slots,
    total_for,
)
from support import poll


class Environment:
    """Stands for an executor: idle or busy, and what evict_if_idle does to it (it releases its slot)."""

    def __init__(self, slots: Slots, last_used: float, busy: bool = False):
        self.slots, self.last_used, self.busy, self.evicted = slots, last_used, busy, False
        self.slot: object | None = None

    def take(self, function: str, timeout_s: float = 5.0) -> Environment:
        self.slot = self.slots.acquire(self, function, timeout_s=timeout_s)
        return self

    def evict_if_idle(self) -> bool:
        if self.busy or self.evicted:
            return False
        self.evicted = True
        self.slots.release(self.slot)
        return True


def test_at_the_total_cap_the_least_recently_used_idle_environment_gives_way():
    slots = Slots(per_function=4, total=2)
    older, newer = Environment(slots, last_used=1.0), Environment(slots, last_used=2.0)
    older.take("f")
    newer.take("g")
    Environment(slots, last_used=3.0).take("h")
    assert older.evicted and not newer.evicted
    assert slots.stats()["alive"] == 2 and slots.stats()["evictions"] == 1


def test_at_the_per_function_cap_only_that_functions_environments_give_way():
    slots = Slots(per_function=1, total=10)
    other = Environment(slots, last_used=0.0)
    mine = Environment(slots, last_used=5.0)
    other.take("g")
    mine.take("f")
    Environment(slots, last_used=6.0).take("f")
    assert mine.evicted and not other.evicted


def test_with_every_environment_busy_a_new_one_waits_for_a_free_place():
    slots = Slots(per_function=4, total=1)
    busy = Environment(slots, last_used=0.0, busy=True).take("f")
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (Environment(slots, 1.0).take("g", timeout_s=30), done.set()))
    waiter.start()
    poll(lambda: slots.stats()["waits"] == 1, timeout=10, interval=0.01, what="the new environment to wait")
    assert not done.is_set()
    slots.release(busy.slot)   # its invoke ended and LocalStack stopped it
    waiter.join(timeout=30)
    assert done.is_set()


def test_with_every_environment_busy_too_long_the_start_fails_clearly():
    slots = Slots(per_function=4, total=1)
    Environment(slots, last_used=0.0, busy=True).take("f")
    with pytest.raises(NoFreeSlot, match="all 1 Lambda execution environments .* stayed busy"):
        Environment(slots, last_used=1.0).take("g", timeout_s=0.2)


def test_the_total_cap_follows_the_memory_available_within_its_bounds():
    """Half the available memory at ENVIRONMENT_BUDGET_BYTES each (AWS's smallest MemorySize, 128 MB:
    https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html), never fewer
    than MIN_TOTAL nor more than MAX_TOTAL environments."""
    gib = 1024 ** 3
    assert total_for(2 * gib) == MIN_TOTAL                       # a small machine keeps the old cap
    assert total_for(20 * gib) == 20 * gib // 2 // ENVIRONMENT_BUDGET_BYTES == 80
    assert total_for(1024 * gib) == MAX_TOTAL
    assert total_for(20 * gib) >= 5 * MAX_PER_FUNCTION            # the stack's five functions, each at its cap
