"""The workflow coverage section of `scones report`: harness/coverage.py's counts drawn over the workflow picture.

Each state box says how often it was entered and lists its Retry and Catch rules with how often each
fired; each arrow (Next, Choice branch, Default, Catch, End) is labelled with how often it was taken;
the terminal errors are written under End. What was never exercised is drawn in red and dashed, and
named in words beside the picture, so a reader sees both where the gaps are and what they are called.

The counts come from the stack's own executions (GetExecutionHistory, the newest `limit` of them) or
from the JSON that `pytest --scones-coverage-json PATH` wrote (`scones report --coverage-json PATH`).
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scones.harness import coverage as workflow_coverage
from scones.harness.report import (
    BOX_H,
    BOX_W,
    TERMINAL_R,
    ReportError,
    _shorten,
    _terminal,
    edge_svg,
    placement,
    svg_open,
    transitions,
)

RULE_LINE_H = 13
NEVER = "#c62828"
COVERED = ("#d7f0d9", "#2e7d32")
NOT_COVERED = ("#f6f6f6", NEVER)
KIND_LABELS = {"states": "states entered", "transitions": "transitions taken", "retries": "Retry rules fired",
               "catches": "Catch rules taken", "choices": "Choice branches taken"}
EXECUTIONS_READ = 500    # the newest executions `scones report` reads for coverage (GetExecutionHistory each)


@dataclass
class CoverageView:
    source: str                         # where the counts come from, in words
    machine: dict[str, Any]             # one state machine's part of harness/coverage.py's report
    svg: str = ""
    summary: list[dict[str, Any]] = field(default_factory=list)   # per kind: label, covered, total, never


def _rules(state_name: str, state: dict[str, Any], machine: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(coverage key, words, count) of each Retry and Catch rule of a state."""
    found = []
    for kind, word in (("retries", "Retry"), ("catches", "Catch")):
        counts = machine[kind]["counts"]
        prefix = f"{state_name} {word}["
        for key, count in counts.items():
            if key.startswith(prefix):
                found.append((key, f"{word} {key[len(state_name) + 1:].split('] ', 1)[1]}", count))
    return found


def coverage_svg(definition: dict[str, Any], machine: dict[str, Any], title: str = "") -> str:
    """The workflow picture with coverage: counts on boxes, rules and arrows; never-exercised parts in red."""
    states = definition.get("States", {})
    rules = {name: _rules(name, state, machine) for name, state in states.items()}
    box_h = BOX_H + RULE_LINE_H * max((len(found) for found in rules.values()), default=0)
    errors = machine.get("terminal_errors", {})
    place = placement(definition, box_h=box_h, end_room=RULE_LINE_H * (len(errors) + 1))
    centres = place.centres
    style = (f".never{{stroke:{NEVER};stroke-dasharray:5,4}}text.never{{fill:{NEVER};stroke:none;font-weight:600}}"
             ".rule{font-size:10.5px}")
    parts = [svg_open(place, "state-machine coverage", title or "workflow coverage", style)]
    transition_counts = machine["transitions"]["counts"]

    def arrow(source: str, target: str, a, b, a_off: float, b_off: float, label: str) -> None:
        key = f"{source} -> {target}"
        count = transition_counts.get(key, 0)
        text = (f"{label} " if label else "") + (f"×{count}" if count else "never")
        parts.append(f'<g class="coverage-transition" data-transition="{html.escape(key, quote=True)}" '
                     f'data-count="{count}">' + edge_svg(a, b, a_off, b_off, text, "" if count else "never") + "</g>")

    parts.append(edge_svg(place.start, centres[definition["StartAt"]], TERMINAL_R, box_h / 2))
    for name, state in states.items():
        for target, label in transitions(state):
            if target in centres:
                arrow(name, target, centres[name], centres[target], box_h / 2, box_h / 2, label)
        if state.get("End") or state.get("Type") in ("Succeed", "Fail"):
            arrow(name, workflow_coverage.END, centres[name], place.end, box_h / 2, TERMINAL_R, "")
    parts.append(_terminal(place.start, "Start", "#e8e8e8", "#777"))
    parts.append(_terminal(place.end, "End", "#e8e8e8", "#777"))
    x_end, y_end = place.end
    for index, (error, count) in enumerate([("terminal errors:", None), *errors.items()] if errors else
                                           [("terminal errors: none", None)]):
        text = error if count is None else f"{error} ×{count}"
        parts.append(f'<text class="detail terminal-error" x="{x_end:.1f}" '
                     f'y="{y_end + TERMINAL_R + RULE_LINE_H * (index + 1):.1f}" text-anchor="middle">'
                     f'{html.escape(text)}</text>')

    entered = machine["states"]["counts"]
    for name, state in states.items():
        count = entered.get(name, 0)
        fill, stroke = COVERED if count else NOT_COVERED
        x, y = centres[name]
        top = y - box_h / 2
        dash = ' stroke-dasharray="5,4"' if not count else ""
        status = f"entered ×{count}" if count else "never entered"
        parts.append(
            f'<g class="coverage-state" data-covered-state="{html.escape(name, quote=True)}" data-count="{count}">'
            f'<title>{html.escape(f"{name}: {status}")}</title>'
            f'<rect x="{x - BOX_W / 2:.1f}" y="{top:.1f}" width="{BOX_W}" height="{box_h}" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="2"{dash}/>'
            f'<text class="name" x="{x:.1f}" y="{top + 20:.1f}" text-anchor="middle">{html.escape(name)}</text>'
            f'<text class="detail{"" if count else " never"}" x="{x:.1f}" y="{top + 36:.1f}" text-anchor="middle">'
            f'{html.escape(state.get("Type", "") + " · " + status)}</text>')
        for index, (key, words, fired) in enumerate(rules[name]):
            verb = "taken" if words.startswith("Catch") else "fired"
            text = _shorten(words, 30) + (f": {verb} ×{fired}" if fired else ": never")
            parts.append(f'<text class="detail rule{"" if fired else " never"}" data-rule="{html.escape(key, quote=True)}" '
                         f'data-count="{fired}" x="{x:.1f}" y="{top + 36 + RULE_LINE_H * (index + 1):.1f}" '
                         f'text-anchor="middle"><title>{html.escape(key)}</title>{html.escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def summary(machine: dict[str, Any]) -> list[dict[str, Any]]:
    """Per kind of coverage item (with any items): its words, covered and total counts, and what never ran."""
    return [{"kind": kind, "label": label, "covered": machine[kind]["covered"], "total": machine[kind]["total"],
             "never": machine[kind]["never"]}
            for kind, label in KIND_LABELS.items() if machine[kind]["total"]]


def load_coverage_json(path: Path, state_machine_arn: str | None) -> dict[str, Any]:
    """The state machine's part of a coverage JSON (`pytest --scones-coverage-json`); the only one if no ARN
    matches (the JSON may come from another run of the same definition)."""
    try:
        report = json.loads(Path(path).read_text())
        machines = report["state_machines"]
    except OSError as error:
        raise ReportError(f"cannot read the coverage JSON {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError):
        raise ReportError(f"{path} is not a workflow coverage JSON (pytest --scones-coverage-json writes one): "
                          "expected an object with \"state_machines\"") from None
    matching = [machine for machine in machines if machine.get("arn") == state_machine_arn] or (
        machines if len(machines) == 1 else [])
    if not matching:
        names = ", ".join(machine.get("arn", "?") for machine in machines) or "none"
        raise ReportError(f"the coverage JSON {path} has no coverage of {state_machine_arn or 'the workflow'} "
                          f"(its state machines: {names})")
    return matching[0]


def coverage_view(definition: dict[str, Any] | None, sfn=None, state_machine_arn: str | None = None,
                  coverage_json: Path | None = None, limit: int = EXECUTIONS_READ) -> CoverageView | None:
    """The coverage section's content: from `coverage_json` when given (drawn on `definition`, else on the
    one the JSON recorded), else from the stack's executions; None without a stack or a finished execution."""
    if coverage_json is not None:
        machine = load_coverage_json(coverage_json, state_machine_arn)
        source = f"{machine['executions']} execution(s) recorded in {coverage_json}"
        definition = definition or machine.get("definition")
        if definition is None:
            raise ReportError(f"the coverage JSON {coverage_json} has no definition to draw on (written by an older "
                              "scones): bring the stack up or name a target so the report can read it")
    elif definition is None or sfn is None or state_machine_arn is None:
        return None
    else:
        collected = workflow_coverage.collect(sfn, state_machine_arns=[state_machine_arn], limit=limit)
        if not collected["state_machines"]:
            return None
        machine = collected["state_machines"][0]
        source = f"the newest {machine['executions']} finished execution(s) of {state_machine_arn}"
    # Drawn against the deployed definition; the counts are keyed by state names, Retry/Catch positions.
    machine = {**machine, **_against(definition, machine)}
    return CoverageView(source=source, machine=machine, svg=coverage_svg(definition, machine, title=source),
                        summary=summary(machine))


def _against(definition: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """The counts re-keyed on `definition`'s own items (a JSON from an older definition may miss some)."""
    fresh = workflow_coverage.MachineCoverage(machine.get("name", ""), definition).report()
    for kind in KIND_LABELS:
        counts = {key: machine.get(kind, {}).get("counts", {}).get(key, 0) for key in fresh[kind]["counts"]}
        fresh[kind] = {"covered": sum(1 for count in counts.values() if count), "total": len(counts),
                       "counts": counts, "never": [key for key, count in counts.items() if not count]}
    return {kind: fresh[kind] for kind in KIND_LABELS}
