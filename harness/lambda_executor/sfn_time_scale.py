"""Time scale for LocalStack 4.14.0 Step Functions: Retry intervals, Wait states and timeouts, times a factor.

Why: a state machine's Retry (IntervalSeconds 2, BackoffRate 2, MaxAttempts 6) waits a minute of wall
clock per test; Step Functions Local has WAIT_TIME_SCALE for this, LocalStack nothing. With a scale
of 0.01 every wait of the interpreter lasts a hundredth of its time:

- Retry: `asl/component/common/retry/retrier_decl.py::RetrierDecl._eval_body` sleeps the computed
  interval (backoff, MaxDelaySeconds and jitter already applied) with `time.sleep`;
- Wait states: `asl/component/state/state_wait/wait_function/wait_function.py::WaitFunction._wait_interval`
  waits on the program's state event (so a StopExecution still ends it at once);
- TimeoutSeconds: `asl/component/state/state_execution/execute_state.py::ExecutionState._evaluate_with_timeout`
  waits `threading.Event().wait(timeout_seconds)` for the task's thread;
- HeartbeatSeconds and callback/activity timeouts: `asl/eval/callback/callback.py`'s endpoints' waits.

What AWS would have shown stays: the definition, the history's details (e.g. a task's
`timeoutInSeconds`) and the history's timestamps, which run on the execution's own clock: each
scaled wait moves the timestamps of the events after it on by the time it saved, so the gap between
a TaskFailed and the retried TaskScheduled is the interval AWS would have waited. (Only the history
events: DescribeExecution's start/stop dates stay wall-clock; a callback's heartbeat or timeout that
expires is scaled but does not move the clock; the branches of a Parallel or Map share their
execution's clock, so a wait in one moves the others' timestamps too.)

The scale is SCONES_TIME_SCALE at LocalStack's start (default 1: real time), and can be changed at
run time over `PUT /_scones/time-scale {"scale": 0.01}` (faults_gateway.py), e.g. by the pytest
`faults` fixture; it applies to waits that start after the change. Pinned like the other patches
(pinned.py): applied only to localstack-core 4.14.0; SCONES_SFN_TIME_SCALE_PATCH=0 turns it off.
"""
from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import os
import threading
import time
import types
from typing import Any

from localstack.http import Request, Response, route

from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.names import TIME_SCALE_ENV, TIME_SCALE_PATCH_ENV, TIME_SCALE_PATH

LOG = logging.getLogger(__name__)

MIN_SCALE, MAX_SCALE = 1e-6, 1000.0
_lock = threading.Lock()
_state: dict[str, Any] = {"active": False, "reason": "not applied yet", "scale": 1.0, "saved_s": 0.0}
_current = threading.local()      # the environment whose state is being evaluated on this thread
SKEW_ATTRIBUTE = "_scones_skew_s"  # on an EventManager: seconds its execution's clock runs ahead of the wall


def parse_scale(value: Any, source: str) -> float:
    """A time scale from the API or the environment; ValueError naming `source` and the allowed range."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected a number such as 0.01, got {value!r}") from None
    if not (math.isfinite(scale) and MIN_SCALE <= scale <= MAX_SCALE):
        raise ValueError(f"{source}: the time scale must be between {MIN_SCALE:g} and {MAX_SCALE:g} "
                         f"(1 is real time, 0.01 a hundred times faster), got {value!r}")
    return scale


def set_scale(value: Any) -> float:
    scale = parse_scale(value, "scale")
    if not _state["active"] and scale != 1.0 and not apply():
        raise ValueError(f"the Step Functions time scale is off: {_state['reason']}")
    _state["scale"] = scale
    LOG.info("Step Functions time scale %g", scale)
    return scale


def scale() -> float:
    return _state["scale"]


def status() -> dict[str, Any]:
    return {**_state, "version": pinned.localstack_version()}


def _advance_clock(seconds: float) -> None:
    """The execution being evaluated on this thread skipped `seconds` of the time AWS would have taken."""
    env = getattr(_current, "env", None)
    manager = getattr(env, "event_manager", None)
    if manager is None or seconds <= 0:
        return
    with _lock:
        setattr(manager, SKEW_ATTRIBUTE, getattr(manager, SKEW_ATTRIBUTE, 0.0) + seconds)
        _state["saved_s"] += seconds


def _scaled_wait(event: threading.Event, seconds: float) -> bool:
    """event.wait for `seconds` of the execution's time; the clock moves on by what the scale saved."""
    factor = _state["scale"]
    wait = threading.Event.wait     # not event.wait: _ScaledEvent's own comes back here
    if factor == 1.0:
        return wait(event, seconds)
    started = time.monotonic()
    happened = wait(event, seconds * factor)
    if not happened:   # set early (a task that ended before its timeout): the time it took was real
        _advance_clock(seconds - (time.monotonic() - started))
    return happened


class _ScaledTime(types.SimpleNamespace):
    """retrier_decl's `time`: its sleep follows the scale."""

    @staticmethod
    def sleep(seconds: float) -> None:
        _scaled_wait(threading.Event(), seconds)


class _ScaledEvent(threading.Event):
    """execute_state's `threading.Event`: a timed wait (TimeoutSeconds) follows the scale."""

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait() if timeout is None else _scaled_wait(self, timeout)


def _remembering_env(method):
    """Wrap an evaluation method taking (self, env) so waits inside it know their execution."""

    @functools.wraps(method)
    def wrapper(self, env, *args, **kwargs):
        previous = getattr(_current, "env", None)
        _current.env = env
        try:
            return method(self, env, *args, **kwargs)
        finally:
            _current.env = previous

    return wrapper


def apply() -> bool:
    """Install the scaled waits once; True when active."""
    with _lock:
        if _state["active"]:
            return True
        reason = pinned.refusal(TIME_SCALE_PATCH_ENV, "Step Functions time scale")
        if reason:
            _state["reason"] = reason
            return False
        from localstack.services.stepfunctions.asl.component.common.retry import retrier_decl
        from localstack.services.stepfunctions.asl.component.state.state_execution import execute_state
        from localstack.services.stepfunctions.asl.component.state.state_wait.wait_function import wait_function
        from localstack.services.stepfunctions.asl.eval.callback import callback
        from localstack.services.stepfunctions.asl.eval.event import event_manager

        retrier_decl.time = _ScaledTime()
        retrier_decl.RetrierDecl._eval_body = _remembering_env(retrier_decl.RetrierDecl._eval_body)
        execute_state.threading = types.SimpleNamespace(Event=_ScaledEvent)
        state_class = execute_state.ExecutionState
        state_class._evaluate_with_timeout = _remembering_env(state_class._evaluate_with_timeout)

        def wait_interval(self, env, wait_seconds):
            # As 4.14.0's: wait on the program's state event, so that stopping the execution ends the wait.
            deadline = time.monotonic() + max(wait_seconds, 0) * _state["scale"]
            previous = getattr(_current, "env", None)
            _current.env = env
            try:
                while env.is_running() and (left := deadline - time.monotonic()) > 0:
                    env.program_state_event.wait(left)
                if env.is_running():
                    _advance_clock(max(wait_seconds, 0) * (1 - _state["scale"]))
            finally:
                _current.env = previous

        wait_function.WaitFunction._wait_interval = wait_interval

        heartbeat_wait = callback.HeartbeatEndpoint.clear_and_wait

        def clear_and_wait(self):
            seconds = self._heartbeat_seconds
            self._heartbeat_seconds = seconds * _state["scale"]
            try:
                return heartbeat_wait(self)
            finally:
                self._heartbeat_seconds = seconds

        callback.HeartbeatEndpoint.clear_and_wait = clear_and_wait
        for endpoint, name in ((callback.ActivityTaskStartEndpoint, "timeout_seconds"), (callback.CallbackEndpoint, "timeout")):
            endpoint.wait = _scaling_argument(endpoint.wait, name)

        add_event = event_manager.EventManager.add_event

        @functools.wraps(add_event)
        def add_event_on_execution_clock(self, context, event_type, event_details=None, timestamp=None,
                                         update_source_event_id=True):
            skew = getattr(self, SKEW_ATTRIBUTE, 0.0)
            if timestamp is None and skew:
                timestamp = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=skew)
            return add_event(self, context, event_type, event_details, timestamp, update_source_event_id)

        event_manager.EventManager.add_event = add_event_on_execution_clock
        _state.update(active=True, reason="applied")
        LOG.info("Step Functions time scale active (scale %g)", _state["scale"])
        return True


def _scaling_argument(method, name: str):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if args:
            args = (args[0] * _state["scale"] if args[0] is not None else None, *args[1:])
        elif kwargs.get(name) is not None:
            kwargs[name] = kwargs[name] * _state["scale"]
        return method(self, *args, **kwargs)

    return wrapper


class TimeScaleAPI:
    @route(TIME_SCALE_PATH, methods=["GET"])
    def get(self, request: Request) -> Response:
        return Response.for_json(status())

    @route(TIME_SCALE_PATH, methods=["PUT"])
    def put(self, request: Request) -> Response:
        try:   # any Content-Type: curl and urllib send none by default
            document = json.loads(request.get_data() or b"null")
            set_scale(document.get("scale") if isinstance(document, dict) else None)
        except ValueError as error:
            return Response.for_json({"message": f"time scale refused: {error}"}, status=400)
        return Response.for_json(status())


def install() -> None:
    """At LocalStack's start: the API, the scale from SCONES_TIME_SCALE (a bad one is logged and real time
    kept), and apply() in the background: importing Step Functions' interpreter takes seconds on a busy
    machine, which must not delay the start."""
    from localstack.services.edge import ROUTER

    ROUTER.add(TimeScaleAPI())
    try:
        _state["scale"] = parse_scale(os.environ.get(TIME_SCALE_ENV, "1"), TIME_SCALE_ENV)
    except ValueError as error:
        LOG.error("%s; Step Functions keeps real time", error)
    threading.Thread(target=apply, name="scones-sfn-time-scale", daemon=True).start()
