"""The shared timer that replaces LocalStack's per-invoke keep-alive threads (harness/lambda_executor/lambda_threads.py).

No LocalStack needed: the timer is plain threading; that LocalStack uses it is checked in
test_lambda_executor_sfn.py.
"""
from __future__ import annotations

import threading

from scones.harness.lambda_executor.lambda_threads import SharedTimer


def test_a_timer_runs_its_function_with_its_arguments_once_due():
    fired = threading.Event()
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        fired.set()

    SharedTimer(0.05, record, args=[1], kwargs={"k": 2}).start()
    assert fired.wait(timeout=10)
    assert calls == [((1,), {"k": 2})]


def test_a_cancelled_timer_never_runs_and_the_later_ones_still_do():
    cancelled_ran = threading.Event()
    later_ran = threading.Event()
    first = SharedTimer(0.05, cancelled_ran.set)
    first.start()
    first.cancel()
    SharedTimer(0.2, later_ran.set).start()
    assert later_ran.wait(timeout=10)
    assert not cancelled_ran.is_set()


def test_an_earlier_timer_added_later_is_not_held_up_by_a_long_one():
    SharedTimer(600, lambda: None).start()  # like a keep-alive timer: ten minutes
    fired = threading.Event()
    SharedTimer(0.05, fired.set).start()
    assert fired.wait(timeout=10)
