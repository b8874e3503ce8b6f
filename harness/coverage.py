"""Workflow coverage: which states, transitions, Retry rules, Catch rules and Choice branches a set of
executions exercised, per state machine, computed from their histories against the definition.

    report = collect(stepfunctions_client, since=started)    # every execution started since then
    print(format_report(report))
    Path("coverage.json").write_text(json.dumps(report, indent=2))

What counts, from GetExecutionHistory (the same events on AWS and locally):
- a state is entered when a StateEntered event names it;
- a transition A -> B (every Next, Default, Choice rule's Next and Catch's Next of the definition, and
  A -> (end) for an End or a Succeed/Fail state) is taken when B is entered right after A exited;
- a Retry rule fires when a state failed with an error it matches (its first matching rule, as the
  interpreter picks it) and the state then tried again instead of exiting;
- a Catch rule is taken when a state failed with an error it matches and the execution went on to
  its Next;
- a Choice branch is taken when the state after the Choice is that rule's Next (rules sharing a
  Next are credited together: the history does not say which of them matched);
- terminal errors: the error of each failed execution (ExecutionFailed), counted.
States inside Parallel branches and Map iterations are counted by name like the others.
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any, Iterable

END = "(end)"
FAILURE_EVENTS = ("TaskFailed", "TaskTimedOut", "LambdaFunctionFailed", "LambdaFunctionTimedOut",
                  "LambdaFunctionScheduleFailed", "LambdaFunctionStartFailed", "ActivityFailed", "ActivityTimedOut",
                  "ParallelStateFailed", "MapStateFailed", "ExecutionFailed")
ATTEMPT_EVENTS = ("TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled", "ParallelStateStarted",
                  "MapStateStarted")


def _all_states(states: dict[str, Any]) -> dict[str, dict]:
    """Every state of a definition by name, those inside Parallel branches and Map processors too."""
    found: dict[str, dict] = {}
    for name, state in states.items():
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(_all_states(branch.get("States", {})))
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            found.update(_all_states(processor.get("States", {})))
    return found


def _matches(error_equals: list[str], error: str) -> bool:
    """ASL's ErrorEquals: the name itself; States.ALL any error but States.Runtime and States.DataLimitExceeded
    (https://states-language.net/spec.html#error-names; AWS: "Error names" in the Step Functions guide);
    States.TaskFailed any error of a task but States.Timeout."""
    if error in error_equals:
        return True
    if "States.ALL" in error_equals:
        return error not in ("States.Runtime", "States.DataLimitExceeded")
    return "States.TaskFailed" in error_equals and error != "States.Timeout" and not error.startswith("States.Runtime")


def _first_match(rules: list[dict], error: str) -> int | None:
    for index, rule in enumerate(rules):
        if _matches(rule.get("ErrorEquals", []), error):
            return index
    return None


def _describe_rule(rule: dict) -> str:
    return ",".join(rule.get("ErrorEquals", []))


class MachineCoverage:
    """The coverage items of one definition and how often each was exercised."""

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        self.states = _all_states(definition.get("States", {}))
        self.executions = 0
        self.entered: Counter[str] = Counter({name: 0 for name in self.states})
        self.transitions: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.catches: Counter[str] = Counter()
        self.choices: Counter[str] = Counter()
        self.terminal_errors: Counter[str] = Counter()
        for state_name, state in self.states.items():
            for target in self._targets(state):
                self.transitions[f"{state_name} -> {target}"] = 0
            for index, rule in enumerate(state.get("Retry", [])):
                self.retries[f"{state_name} Retry[{index}] {_describe_rule(rule)}"] = 0
            for index, rule in enumerate(state.get("Catch", [])):
                self.catches[f"{state_name} Catch[{index}] {_describe_rule(rule)} -> {rule.get('Next')}"] = 0
            for key in self._choice_branches(state_name, state):
                self.choices[key] = 0

    @staticmethod
    def _targets(state: dict) -> list[str]:
        targets = [state["Next"]] if "Next" in state else []
        targets += [rule["Next"] for rule in state.get("Choices", []) if "Next" in rule]
        targets += [state["Default"]] if "Default" in state else []
        targets += [rule["Next"] for rule in state.get("Catch", []) if "Next" in rule]
        if state.get("End") or state.get("Type") in ("Succeed", "Fail"):
            targets.append(END)
        return list(dict.fromkeys(targets))

    @staticmethod
    def _choice_branches(name: str, state: dict) -> list[str]:
        if state.get("Type") != "Choice":
            return []
        branches = [f"{name} Choices[{index}] -> {rule.get('Next')}" for index, rule in enumerate(state.get("Choices", []))]
        return branches + ([f"{name} Default -> {state['Default']}"] if "Default" in state else [])

    def add_execution(self, events: list[dict[str, Any]]) -> None:
        self.executions += 1
        previous: str | None = None       # the state last exited
        current: str | None = None        # the state being evaluated
        failure: str | None = None        # the error it last failed with (kept across its exit, for Catch)
        for event in events:
            kind = event["type"]
            if kind.endswith("StateEntered"):
                name = event["stateEnteredEventDetails"]["name"]
                self.entered[name] += 1
                if previous is not None:
                    self._transition(previous, name, failure)
                current, previous, failure = name, None, None
            elif kind.endswith("StateExited"):
                previous = event["stateExitedEventDetails"]["name"]
                current = None if current == previous else current
            elif kind == "ExecutionFailed":
                self.terminal_errors[_event_error(event) or "(no error)"] += 1
                if current is not None and self.states.get(current, {}).get("Type") == "Fail":
                    self._transition(current, END, None)
            elif kind == "ExecutionSucceeded" and previous is not None:
                self._transition(previous, END, None)
            elif kind in FAILURE_EVENTS and current is not None:
                failure = _event_error(event)
            elif kind in ATTEMPT_EVENTS and failure is not None and current is not None:
                self._retried(current, failure)
                failure = None

    def _transition(self, source: str, target: str, failure: str | None) -> None:
        state = self.states.get(source, {})
        self.transitions[f"{source} -> {target}"] += 1
        if failure is not None:
            index = _first_match(state.get("Catch", []), failure)
            if index is not None and state["Catch"][index].get("Next") == target:
                rule = state["Catch"][index]
                self.catches[f"{source} Catch[{index}] {_describe_rule(rule)} -> {target}"] += 1
        for key in self._choice_branches(source, state):
            if key.endswith(f"-> {target}"):
                self.choices[key] += 1

    def _retried(self, name: str, error: str) -> None:
        rules = self.states.get(name, {}).get("Retry", [])
        index = _first_match(rules, error)
        if index is not None:
            self.retries[f"{name} Retry[{index}] {_describe_rule(rules[index])}"] += 1

    def report(self) -> dict[str, Any]:
        def part(counter: Counter[str]) -> dict[str, Any]:
            return {"covered": sum(1 for count in counter.values() if count), "total": len(counter),
                    "counts": dict(counter), "never": [key for key, count in counter.items() if not count]}

        return {"name": self.name, "executions": self.executions,
                "states": part(self.entered), "transitions": part(self.transitions),
                "retries": part(self.retries), "catches": part(self.catches), "choices": part(self.choices),
                "terminal_errors": dict(self.terminal_errors)}


def _event_error(event: dict[str, Any]) -> str | None:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict) and "error" in value:
            return value["error"]
    return None


def coverage(definition: dict[str, Any], histories: Iterable[list[dict[str, Any]]], name: str = "") -> dict[str, Any]:
    """The coverage report of one state machine's definition over the given execution histories."""
    machine = MachineCoverage(name, definition)
    for events in histories:
        machine.add_execution(events)
    return machine.report()


def _history(client, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in client.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(page["events"])
    return events


def collect(client, since: datetime | None = None, state_machine_arns: Iterable[str] | None = None,
            limit: int | None = None) -> dict[str, Any]:
    """Coverage of every state machine (or those named) over its finished executions started since `since`
    (at most the newest `limit` of each)."""
    arns = list(state_machine_arns) if state_machine_arns is not None else [
        machine["stateMachineArn"] for page in client.get_paginator("list_state_machines").paginate()
        for machine in page["stateMachines"]]
    machines = []
    for arn in arns:
        histories = []
        finished = [execution for page in client.get_paginator("list_executions").paginate(stateMachineArn=arn)
                    for execution in page["executions"]
                    if execution["status"] != "RUNNING" and (since is None or execution["startDate"] >= since)]
        finished.sort(key=lambda execution: execution["startDate"], reverse=True)
        for execution in finished[:limit]:
            histories.append(_history(client, execution["executionArn"]))
        if histories:
            definition = json.loads(client.describe_state_machine(stateMachineArn=arn)["definition"])
            machines.append({"arn": arn, **coverage(definition, histories, name=arn.rsplit(":", 1)[-1]),
                             "definition": definition})
    return {"since": since.isoformat() if since else None, "state_machines": machines}


def format_report(report: dict[str, Any]) -> str:
    """The report as lines for a terminal: per state machine each kind's covered/total and what never ran."""
    if not report["state_machines"]:
        return "workflow coverage: no execution finished in this session"
    lines = []
    for machine in report["state_machines"]:
        lines.append(f"workflow coverage of {machine['name']} over {machine['executions']} execution(s):")
        for kind in ("states", "transitions", "retries", "catches", "choices"):
            part = machine[kind]
            if not part["total"]:
                continue
            label = {"retries": "Retry rules fired", "catches": "Catch rules taken", "choices": "Choice branches",
                     "states": "states entered", "transitions": "transitions taken"}[kind]
            lines.append(f"  {label}: {part['covered']}/{part['total']}")
            for key, count in part["counts"].items():
                if count:
                    lines.append(f"      {count:>5}  {key}")
            for key in part["never"]:
                lines.append(f"      never  {key}")
        errors = machine["terminal_errors"]
        lines.append("  terminal errors: " + (", ".join(f"{error} x{count}" for error, count in errors.items())
                                               if errors else "none"))
    return "\n".join(lines)
