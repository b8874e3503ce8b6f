"""Latency patch for LocalStack 4.14.0 Lambda: no new threads on the invoke path.

Why: after every invoke, 4.14.0 starts two threads on the caller's path: the environment's
keep-alive `threading.Timer` (ExecutionEnvironment.release, a thread that sleeps 10 minutes
and is cancelled by the next invoke) and one that records the CloudWatch metric
(LambdaVersionManager.invoke -> start_thread(record_cw_metric_*)). Thread.start() waits until
the new thread runs, which needs the GIL: with Step Functions, the gateway and the log shipper
busy on 2 cores, py-spy (wall clock, idle included) put 43% of the time inside Step Functions'
Lambda call on those two Thread.start() calls, more than the invoke itself.
Here one scheduler thread runs every timer of the module (start/cancel as threading.Timer's,
the only methods LocalStack uses; a due timer still runs on its own thread, as before), and one
worker thread records the metrics in order (the same calls, off the invoke's path).

Pinned: applied only to localstack-core 4.14.0, where those call sites were read; any other
version is left alone (with a warning). SCONES_LAMBDA_THREADS_PATCH=0 turns it off, e.g. to
measure the difference. Its status is in GET /_scones/executor.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import queue
import threading
import time

from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.names import THREADS_PATCH_ENV

LOG = logging.getLogger(__name__)

METRIC_THREAD_PREFIX = "record-cloudwatch-metric"  # the names 4.14.0 gives its metric threads



class _Scheduler:
    """One thread that waits for the earliest deadline among all timers."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, SharedTimer]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, timer: SharedTimer) -> None:
        with self._wakeup:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scones-lambda-timers", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (timer.deadline, next(self._order), timer))
            if len(self._heap) > 1024:  # cancelled keep-alive timers pile up (one per invoke): drop them
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wakeup.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                PATCH.state["timers_fired"] += 1
                threading.Thread(target=timer.function, args=timer.args, kwargs=timer.kwargs,
                                 name="scones-lambda-timer", daemon=True).start()


_scheduler = _Scheduler()


class SharedTimer:
    """threading.Timer's start() and cancel() on the shared scheduler thread."""

    def __init__(self, interval: float, function, args=None, kwargs=None) -> None:
        self.interval = interval
        self.function = function
        self.args = args if args is not None else []
        self.kwargs = kwargs if kwargs is not None else {}
        self.deadline = 0.0
        self.cancelled = False

    def start(self) -> None:
        PATCH.state["timers_started"] += 1
        self.deadline = time.monotonic() + self.interval
        _scheduler.add(self)

    def cancel(self) -> None:
        self.cancelled = True


_metrics: queue.SimpleQueue = queue.SimpleQueue()


def _record_metrics() -> None:
    while True:
        record = _metrics.get()
        try:
            record()
            PATCH.state["metrics_recorded"] += 1
        except Exception as exc:  # as in a FuncThread: a failed metric must not stop the next ones
            LOG.debug("Recording a Lambda metric failed: %s", exc)


def _install() -> None:
    from localstack.services.lambda_.invocation import execution_environment, version_manager

    execution_environment.Timer = SharedTimer
    original_start_thread = version_manager.start_thread

    @functools.wraps(original_start_thread)
    def start_thread(method, *args, name: str | None = None, **kwargs):
        if name and name.startswith(METRIC_THREAD_PREFIX):
            _metrics.put(method)  # the caller ignores the thread it would get back
            return None
        return original_start_thread(method, *args, name=name, **kwargs)

    version_manager.start_thread = start_thread
    threading.Thread(target=_record_metrics, name="scones-lambda-metrics", daemon=True).start()


PATCH = pinned.Patch("Lambda thread patch (shared keep-alive timers, one metrics thread)", THREADS_PATCH_ENV, _install,
                     timers_started=0, timers_fired=0, metrics_recorded=0)


def apply() -> bool:
    """Install both once; True when active."""
    return PATCH.apply()


def status() -> dict:
    return PATCH.status()
