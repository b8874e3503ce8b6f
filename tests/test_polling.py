"""scones.polling: the one deadline loop (driven here by a fake clock, so nothing waits)."""
from __future__ import annotations

import pytest

from scones.polling import PollFailed, PollTimedOut, poll, poll_condition


class FakeTime:
    """A clock that moves only when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_value_that_satisfies_the_condition():
    fake, values = FakeTime(), iter([0, 0, 3, 4])
    assert poll(lambda: next(values), timeout=10, interval=1, clock=fake.clock, sleep=fake.sleep) == 3
    assert fake.sleeps == [1, 1]


def test_is_tried_once_even_with_no_time_left():
    fake = FakeTime()
    assert poll(lambda: "ready", timeout=0, interval=1, clock=fake.clock, sleep=fake.sleep) == "ready"
    assert fake.sleeps == []


def test_times_out_with_the_last_value():
    fake, values = FakeTime(), iter(range(100))
    with pytest.raises(PollTimedOut) as raised:
        poll(lambda: next(values), until=lambda v: v > 50, timeout=3, interval=1, clock=fake.clock, sleep=fake.sleep)
    assert raised.value.last == 3 and fake.now == 3


def test_a_failure_ends_the_wait_at_once():
    fake, values = FakeTime(), iter(["starting", "died"])
    with pytest.raises(PollFailed, match="the process died") as raised:
        poll(lambda: next(values), until=lambda v: v == "up", timeout=60, interval=1,
             failure=lambda v: "the process died" if v == "died" else None, clock=fake.clock, sleep=fake.sleep)
    assert raised.value.last == "died" and fake.sleeps == [1]


def test_the_interval_grows_up_to_its_cap():
    fake, values = FakeTime(), iter([False] * 5 + [True])
    poll(lambda: next(values), timeout=60, interval=0.1, backoff=2, max_interval=0.5, clock=fake.clock,
         sleep=fake.sleep)
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_each_sees_every_value_with_the_elapsed_time():
    fake, values, seen = FakeTime(), iter([1, 2, 3]), []
    poll(lambda: next(values), until=lambda v: v == 3, timeout=60, interval=2, clock=fake.clock, sleep=fake.sleep,
         each=lambda value, elapsed: seen.append((value, elapsed)))
    assert seen == [(1, 0), (2, 2), (3, 4)]


def test_poll_condition_says_whether_it_held():
    fake = FakeTime()
    assert poll_condition(lambda: fake.now >= 2, 5, 1, clock=fake.clock, sleep=fake.sleep) is True
    assert poll_condition(lambda: False, 5, 1, clock=fake.clock, sleep=fake.sleep) is False
