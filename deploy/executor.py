"""Run a plan (deploy/planner.py) and keep its record; destroy a record newest entry first.

Each resource starts once what it comes after is done (independent ones side by side, as many as max_workers),
and is written to the record (kind, name, plan id) BEFORE its `ensure` runs, so a deploy killed at any point
leaves a record that `destroy` can clean up. Writes are atomic (deploy/record.py). A re-run finds each entry by
kind and name and moves it to the end, so the record's order stays the order things were made in, and destroy,
walking it backwards, deletes what depends on a resource before the resource.
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Mapping

from scones.deploy import resources as r
from scones.deploy.planner import steps_of
from scones.deploy.waiting import DeployError

Outputs = dict[str, dict[str, Any]]
Timings = dict[str, tuple[float, float]]   # plan id -> (its ensure's start, its end), time.perf_counter()


def _entry_for(record: dict, resource: r.Resource) -> tuple[r.Entry, bool]:
    """The record's entry for this resource (moved to the end), or a new one appended; and whether it is new."""
    listed: list[r.Entry] = record["resources"]
    for entry in listed:
        if entry["kind"] == resource.kind and entry["name"] == resource.name:
            listed.remove(entry)
            listed.append(entry)
            entry["id"] = resource.id
            return entry, False
    entry = {"kind": resource.kind, "name": resource.name, "id": resource.id}
    listed.append(entry)
    return entry, True


def _check(plan: list[r.Resource]) -> dict[str, set[str]]:
    ids = [resource.id for resource in plan]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a plan's ids must be unique: {sorted(i for i in ids if ids.count(i) > 1)}")
    needs = {resource.id: set(resource.after) | {ref.id for ref in resource.refs()} for resource in plan}
    for resource_id, wanted in needs.items():
        unknown = wanted - set(ids)
        if unknown:
            raise ValueError(f"{resource_id} comes after {sorted(unknown)}, which the plan does not hold")
    return needs


def execute(plan: list[r.Resource], run: r.Run, record: dict, *, max_workers: int = 4,
            on_done: Callable[[r.Resource, Mapping[str, Any]], None] | None = None,
            timings: Timings | None = None) -> Outputs:
    """Ensure every resource of the plan; returns each one's outputs by plan id. record["resources"] is the
    list of entries and record["steps_done"] the steps finished; run.save() writes the record. timings, when
    given, gets each resource's start and end (benchmarks/deploy_local.py)."""
    needs = _check(plan)
    record.setdefault("resources", [])
    record.setdefault("steps_done", [])
    steps = steps_of(plan)
    outputs: Outputs = {}
    started_steps: set[str] = set()

    def ensure(resource: r.Resource) -> dict[str, Any]:
        started = time.perf_counter()
        with run.lock:
            if resource.step not in started_steps:
                started_steps.add(resource.step)
                run.say(f"step {steps.index(resource.step) + 1}/{len(steps)}: {resource.step}")
            resolved = resource.resolved(outputs)
            if resolved.recorded:
                entry, new = _entry_for(record, resolved)
                if new:
                    run.save()    # before it exists: a kill from here on leaves it destroyable
            else:
                entry = {}
            before = dict(entry)
        made = resolved.ensure(run, entry)
        if resolved.recorded and entry != before:   # an ARN, a job's state: written once known
            run.save()
        if timings is not None:
            timings[resource.id] = (started, time.perf_counter())
        return made

    def mark_steps(done: set[str]) -> bool:
        """Add the steps now complete to the record; returns whether any was."""
        marked = False
        for step in steps:
            if step in record["steps_done"]:
                continue
            if any(resource.id not in done for resource in plan if resource.step == step):
                break
            record["steps_done"].append(step)
            marked = True
        return marked

    done: set[str] = set()
    running: dict[Future, r.Resource] = {}
    failure: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scones-deploy")
    try:
        while len(done) < len(plan) and failure is None:
            running_ids = {resource.id for resource in running.values()}
            for resource in plan:
                if resource.id not in done and resource.id not in running_ids and needs[resource.id] <= done:
                    running[pool.submit(ensure, resource)] = resource
            if not running:
                raise DeployError("the plan cannot go on: its resources wait on each other")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                resource = running.pop(future)
                try:
                    made = future.result()
                except BaseException as error:   # noqa: BLE001 - KeyboardInterrupt too: let the others finish, then raise
                    failure = failure or error
                    continue
                with run.lock:
                    outputs[resource.id] = made
                    done.add(resource.id)
                    if mark_steps(done):
                        run.save()
                if on_done:
                    on_done(resource, made)
        if failure is not None:
            for future in running:
                future.cancel()   # not started yet: it never will be
            wait(list(running))   # leave no call half-way in another thread; their entries are recorded already
            with run.lock:
                for future, resource in running.items():
                    if not future.cancelled() and future.exception() is None:
                        outputs[resource.id] = future.result()
                        done.add(resource.id)
                mark_steps(done)
                run.save()
            raise failure
    except BaseException:
        run.stopping.set()   # interrupted here (Ctrl-C, a stop signal) or failed: waits in other threads give up
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return outputs


def destroy(record: dict, run: r.Run, *, keep: Callable[[r.Entry], bool] = lambda entry: False) -> list[str]:
    """Delete the record's entries, newest first, each from what the entry says; returns what was deleted.
    Each entry leaves the record as soon as its resource is gone, so an interrupted destroy resumes."""
    deleted: list[str] = []
    for entry in reversed(list(record.get("resources") or [])):
        if keep(entry):
            continue
        kind = r.KINDS.get(entry.get("kind", ""))
        if kind is None:
            raise DeployError(f"the record lists a resource of unknown kind {entry.get('kind')!r}: {entry}")
        what = kind.delete(run, entry)
        record["resources"].remove(entry)
        run.save()
        if what:
            deleted.append(what)
            run.say(f"deleted {what}")
    return deleted
