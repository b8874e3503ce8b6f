"""Run the workflow on a target and read back what happened, from the execution history.

`run_executions(target, inputs)` starts one execution per input (unique names), waits for
each by polling with a deadline, then reads its history: the failed state, error and cause,
how long each state took, and the list of history event types. Used by `scones run`,
`scones evaluate`, the e2e tests and the benchmark alike.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from scones.errors import SconesError
from scones.lambdas.errors import InvalidInferences
from scones.lambdas.events import best_class, inferences_of
from scones.lambdas.run_results import FINISHED_STATUSES, RunResult, iso_date
from scones.polling import PollTimedOut, poll

DEFAULT_TIMEOUT_S = 120.0
# The status of an execution the harness could not start while others ran (Step Functions has no status for it).
NOT_STARTED = "NOT_STARTED"


class ExecutionTimeout(SconesError, RuntimeError):
    """An execution was still RUNNING (its `status`) at the deadline."""

    def __init__(self, message: str, status: str = "RUNNING"):
        super().__init__(message)
        self.status = status


class ExecutionUnreadable(SconesError, RuntimeError):
    """Step Functions answered describe_execution without the execution's status."""


# What can go wrong between the harness and the service for one execution: each is that execution's own
# failure (the service died or hung mid-run), reported in its result while the others' results stand.
LOST_CONTACT = (BotoCoreError, ClientError, ExecutionTimeout, ExecutionUnreadable)


def execution_name(key: str) -> str:
    """A unique, valid execution name that still says which object it ran on."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", key.rsplit("/", 1)[-1]).strip("-")[:40] or "input"
    return f"{stem}-{uuid.uuid4().hex[:16]}"


def workflow_input(item: str | Mapping[str, Any], bucket: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {"s3_bucket": bucket, "s3_key": item}
    document = dict(item)
    document.setdefault("s3_bucket", bucket)
    if "s3_key" not in document:
        raise ValueError(f"workflow input {item!r} has no s3_key")
    return str(document["s3_key"]), document


class DurationEstimate:
    """How long a state machine's executions took lately, seen from this process: when to poll first.

    Every describe_execution is a request that Step Functions serves on the interpreter that runs the
    executions (LocalStack: one GIL), so polling from 10 ms on costs about as much CPU as the
    execution itself under load (issue 25: 6 polls per execution at 1 concurrent, 11 at 8). Once a
    few executions of a machine have ended, the first poll comes when half of the recent ones had
    ended, counted from start_execution's answer (when the execution had started; never past
    MAX_FIRST_POLL_S, so that a fast execution among slow ones is still seen soon), then every half of
    the gap to the slowest tenth of them (at least poll_interval), growing as poll() grows it.
    """

    WINDOW = 16
    MIN_SEEN = 3
    MAX_FIRST_POLL_S = 2.0

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.WINDOW)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(seconds)

    def schedule(self, poll_interval: float) -> tuple[float, float]:
        """(seconds after the execution started to poll first, interval after that)."""
        with self._lock:
            recent = list(self._recent)
        if len(recent) < self.MIN_SEEN:
            return 0.0, poll_interval
        median = statistics.median(recent)
        return min(median, self.MAX_FIRST_POLL_S), max(poll_interval, (percentile(recent, 0.9) - median) / 2)


_estimates: dict[str, DurationEstimate] = {}
_estimates_lock = threading.Lock()


def duration_estimate(state_machine_arn: str) -> DurationEstimate:
    """The process's estimate for one state machine (shared by `scones run`, the pytest plugin's calls, ...)."""
    with _estimates_lock:
        return _estimates.setdefault(state_machine_arn, DurationEstimate())


def run_executions(target, inputs: Iterable[str | Mapping[str, Any]], concurrency: int = 1,
                   progress: Callable[[RunResult], None] | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S, poll_interval: float = 0.01,
                   client=None) -> list[RunResult]:
    """Run one execution per input on `target` and return their results in input order.

    An input is an S3 key in the target's bucket, or a full workflow input document.
    `progress` is called with each result as it completes (from worker threads). When the service dies
    mid-run, each execution it strands says so in its own result (NOT_STARTED, or the last status it was
    seen in) and the others stand; when no execution could start at all, the service's error is raised.
    """
    sfn = client or target.client("stepfunctions")
    prepared = [workflow_input(item, target.bucket) for item in inputs]
    estimate = duration_estimate(target.state_machine_arn)
    not_started: list[Exception] = []

    def one(pair: tuple[str, dict[str, Any]]) -> RunResult:
        key, document = pair
        try:
            result = run_execution(sfn, target.state_machine_arn, key, document, timeout, poll_interval, estimate)
        except LOST_CONTACT as error:
            not_started.append(error)
            result = RunResult(s3_bucket=document.get("s3_bucket"), s3_key=key, status=NOT_STARTED, input=document,
                               error=type(error).__name__, cause=str(error))
        if progress is not None:
            progress(result)
        return result

    if concurrency <= 1:
        results = [one(pair) for pair in prepared]
    else:
        slots: list[RunResult | None] = [None] * len(prepared)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scones-exec") as pool:
            futures = {pool.submit(one, pair): index for index, pair in enumerate(prepared)}
            for future in as_completed(futures):
                slots[futures[future]] = future.result()
        results = [result for result in slots if result is not None]
    if prepared and len(not_started) == len(prepared):
        raise not_started[0]   # nothing ran at all (the service is down): one error says it, not a row per input
    return results


def run_execution(sfn, state_machine_arn: str, key: str, document: dict[str, Any],
                  timeout: float = DEFAULT_TIMEOUT_S, poll_interval: float = 0.01,
                  estimate: DurationEstimate | None = None) -> RunResult:
    """One execution's result. A failure to start it raises; once it started, losing the service (it cannot
    be reached or read, or the deadline passes) is this execution's result (its error the exception's name,
    its cause the message), never an exception that loses the other executions' results.
    `estimate` (of this machine's recent executions) paces the polling, and learns this one's duration."""
    started = time.perf_counter()
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=execution_name(key),
                              input=json.dumps(document))["executionArn"]
    running_since = time.perf_counter()   # the answer came once the execution had started
    try:
        first_poll, interval = estimate.schedule(poll_interval) if estimate else (0.0, poll_interval)
        if (pause := min(first_poll, timeout) - (time.perf_counter() - running_since)) > 0:
            time.sleep(pause)   # about half of the recent executions took longer
        description = wait_for_execution(sfn, arn, timeout, interval)
        wall = time.perf_counter() - started
        events = execution_history(sfn, arn)
    except LOST_CONTACT as error:
        return RunResult(s3_bucket=document.get("s3_bucket"), s3_key=key,
                         status=getattr(error, "status", None) or "UNKNOWN", execution_arn=arn,
                         input=document, error=type(error).__name__, cause=str(error),
                         wall_duration=time.perf_counter() - started)
    result = parse_execution(key, document, description, events, wall)
    if estimate is not None and result.duration is not None:
        estimate.add(result.duration)
    return result


def wait_for_execution(sfn, execution_arn: str, timeout: float = DEFAULT_TIMEOUT_S,
                       poll_interval: float = 0.01) -> dict[str, Any]:
    """Poll describe_execution until the execution ends; short polls first, longer later."""
    def describe() -> dict[str, Any]:
        description = sfn.describe_execution(executionArn=execution_arn)
        if not isinstance(description.get("status"), str):
            raise ExecutionUnreadable(f"describe_execution of {execution_arn} answered without a status "
                                      f"(fields: {sorted(description)})")
        return description

    try:
        return poll(describe, timeout=timeout, interval=poll_interval, backoff=1.2, max_interval=0.25,
                    until=lambda description: description["status"] in FINISHED_STATUSES)
    except PollTimedOut as timed_out:
        status = timed_out.last["status"]
        raise ExecutionTimeout(f"execution {execution_arn} still {status} after {timeout:.0f} s", status) from None


def execution_history(sfn, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(page["events"])
    events.sort(key=lambda event: event["id"])
    return events


def parse_execution(key: str, document: dict[str, Any], description: Mapping[str, Any],
                    events: list[dict[str, Any]], wall_duration: float | None = None) -> RunResult:
    status = description["status"]
    start, stop = description.get("startDate"), description.get("stopDate")
    duration = (stop - start).total_seconds() if isinstance(start, datetime) and isinstance(stop, datetime) else None

    state_durations: dict[str, float] = {}
    error = cause = None
    entered: dict[str, datetime] = {}
    open_states: list[str] = []
    last_inferences: list[float] | None = None
    for event in events:
        details_key = next((k for k in event if k.endswith("EventDetails")), None)
        details = event.get(details_key, {}) if details_key else {}
        if event["type"].endswith("StateEntered"):
            entered[details["name"]] = event["timestamp"]
            open_states.append(details["name"])
        elif event["type"].endswith("StateExited"):
            name = details["name"]
            if name in entered:
                state_durations[name] = (event["timestamp"] - entered[name]).total_seconds()
            if name in open_states:
                open_states.remove(name)
            last_inferences = inferences_in(details.get("output")) or last_inferences
        elif event["type"] in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"):
            error = error or details.get("error")
            cause = cause or details.get("cause")
            for name in open_states:  # the state that was running when the execution ended
                state_durations[name] = (event["timestamp"] - entered[name]).total_seconds()

    output = None
    if description.get("output") is not None:
        try:
            output = json.loads(description["output"])
        except ValueError:
            output = description["output"]
        last_inferences = inferences_in(output) or last_inferences
    predicted, confidence = best_class(last_inferences) if last_inferences else (None, None)
    return RunResult(
        s3_bucket=document.get("s3_bucket"), s3_key=key, status=status, execution_arn=description["executionArn"],
        predicted_class=predicted, confidence=confidence, inferences=last_inferences or None,
        error=description.get("error") or error, cause=description.get("cause") or cause,
        started_at=iso_date(start), stopped_at=iso_date(stop),
        duration=duration, wall_duration=wall_duration,
        failed_state=open_states[-1] if status != "SUCCEEDED" and open_states else None,
        state_durations=state_durations, event_types=[event["type"] for event in events],
        input=document, output=output)


def inferences_in(payload: Any) -> list[float] | None:
    """The `inferences` of a workflow envelope (as JSON text or parsed), if it holds valid ones."""
    try:
        return inferences_of(payload)
    except InvalidInferences:
        return None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]
