"""Latency patch for LocalStack 4.14.0 Step Functions: parse each state machine definition once.

Why: 4.14.0's `ExecutionWorker._get_evaluation_entrypoint` runs the ANTLR parser on the whole
definition at the start of every execution: ~5 ms of LocalStack's CPU per Scones execution on
this class of machine (py-spy: 11% of LocalStack's GIL time during sequential executions), the
same work every time for the same text. The parsed program is a tree of components that keep
no state of an execution (that lives in the Environment each execution gets); the one lazy
value on them, EvalComponent.heap_key (a uid naming a retrier's counters in the execution's
heap), is filled in before the tree is shared, so concurrent executions never race on it.

Pinned: applied only to localstack-core 4.14.0, where that method and the components were read;
any other version is left alone (with a warning). SCONES_SFN_DEFINITION_CACHE=0 turns it off,
e.g. to measure the difference. Its status (hits, misses) is in GET /_scones/executor.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict

from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.names import DEFINITION_CACHE_ENV

LOG = logging.getLogger(__name__)

MAX_DEFINITIONS = 64  # a few state machines and their revisions; least recently used goes first

_lock = threading.Lock()
_state = {"active": False, "reason": "not applied yet", "hits": 0, "misses": 0}
_programs: OrderedDict[str, object] = OrderedDict()


def apply() -> bool:
    """Install the cache once; True when it is active."""
    with _lock:
        if _state["active"]:
            return True
        reason = pinned.refusal(DEFINITION_CACHE_ENV, "Step Functions definition cache")
        if reason:
            _state["reason"] = reason
            return False
        from localstack.services.stepfunctions.backend.execution_worker import ExecutionWorker

        original = ExecutionWorker._get_evaluation_entrypoint

        @functools.wraps(original)
        def cached_evaluation_entrypoint(worker):
            definition = worker._evaluation_details.state_machine_details.definition
            with _lock:
                program = _programs.get(definition)
                if program is not None:
                    _programs.move_to_end(definition)
                    _state["hits"] += 1
                    return program
            program = original(worker)
            _fill_heap_keys(program)
            with _lock:
                _programs[definition] = program
                _state["misses"] += 1
                while len(_programs) > MAX_DEFINITIONS:
                    _programs.popitem(last=False)
            return program

        ExecutionWorker._get_evaluation_entrypoint = cached_evaluation_entrypoint
        _state.update(active=True, reason="applied")
        LOG.info("Step Functions definition cache active (each definition parsed once)")
        return True


def _fill_heap_keys(program) -> None:
    """Touch heap_key on every component of the tree, so its lazy uid is set before threads share it."""
    from localstack.services.stepfunctions.asl.component.component import Component
    from localstack.services.stepfunctions.asl.component.eval_component import EvalComponent

    seen: set[int] = set()
    pending = [program]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Component):
            if isinstance(item, EvalComponent):
                item.heap_key  # noqa: B018 (the property fills it in)
            pending.extend(vars(item).values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())


def status() -> dict:
    return {**_state, "definitions": len(_programs)}
