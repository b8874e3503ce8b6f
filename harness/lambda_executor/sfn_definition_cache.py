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
from collections import OrderedDict

from scones.harness.lambda_executor import pinned
from scones.settings import SFN_DEFINITION_CACHE as DEFINITION_CACHE_ENV

MAX_DEFINITIONS = 64  # a few state machines and their revisions; least recently used goes first

_programs: OrderedDict[str, object] = OrderedDict()


def _install() -> None:
    from localstack.services.stepfunctions.backend.execution_worker import ExecutionWorker

    original = ExecutionWorker._get_evaluation_entrypoint

    @functools.wraps(original)
    def cached_evaluation_entrypoint(worker):
        definition = worker._evaluation_details.state_machine_details.definition
        with PATCH.lock:
            program = _programs.get(definition)
            if program is not None:
                _programs.move_to_end(definition)
                PATCH.state["hits"] += 1
                return program
        program = original(worker)
        _fill_heap_keys(program)
        with PATCH.lock:
            _programs[definition] = program
            PATCH.state["misses"] += 1
            while len(_programs) > MAX_DEFINITIONS:
                _programs.popitem(last=False)
        return program

    ExecutionWorker._get_evaluation_entrypoint = cached_evaluation_entrypoint


PATCH = pinned.Patch("Step Functions definition cache (each definition parsed once)", DEFINITION_CACHE_ENV, _install,
                     hits=0, misses=0)
apply = PATCH.apply


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
    return {**PATCH.status(), "definitions": len(_programs)}
