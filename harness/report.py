"""`scones report`: one self-contained HTML page about a deployed workflow.

It shows the latest evaluation (table and summary), the monitoring plots and drift result,
and the state machine drawn as a graph from its ASL definition, each state coloured by what
happened to it in a chosen execution (from the execution history). The original project
showed Step Functions console screenshots of a passing and a failing run; by default this
draws the latest of each. Everything is inlined (plots as base64 PNG, graphs as SVG), so the
page can be mailed or attached to a CI run as one file.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import jinja2
from botocore.exceptions import BotoCoreError, ClientError

from scones.errors import SconesError
from scones.harness import operations
from scones.harness.evaluate import latest_evaluation
from scones.harness.executions import execution_history
from scones.harness.iam import denials as iam_denials
from scones.harness.monitor import PLOT_FILES, SUMMARY_FILE, drift_caption

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html"

OUTCOME_STYLE = {  # fill, stroke, label
    "succeeded": ("#d7f0d9", "#2e7d32", "succeeded"),
    "failed": ("#f9d6d5", "#c62828", "failed"),
    "retried": ("#fff1c7", "#b7791f", "succeeded after retry"),
    "running": ("#d6e6fb", "#1f5fae", "running / not finished"),
    "not_run": ("#f1f1f1", "#9e9e9e", "not reached"),
}


class ReportError(SconesError, RuntimeError):
    """There is nothing to put on the page, or a chosen execution cannot be read."""


# --- execution history -> state outcomes --------------------------------------------------

@dataclass
class StateOutcome:
    name: str
    outcome: str = "not_run"
    duration_s: float | None = None
    attempts: int = 0
    error: str | None = None
    cause: str | None = None


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _details(event: dict[str, Any]) -> dict[str, Any]:
    key = next((k for k in event if k.endswith("EventDetails")), None)
    return event.get(key) or {} if key else {}


def state_outcomes(definition: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, StateOutcome]:
    """What happened to each state of `definition` in one execution, from its history events."""
    outcomes = {name: StateOutcome(name) for name in definition.get("States", {})}
    entered: dict[str, datetime | None] = {}
    current: str | None = None
    for event in sorted(events, key=lambda e: e.get("id", 0)):
        kind, details = event["type"], _details(event)
        if kind.endswith("StateEntered"):
            current = name = details["name"]  # required in StateEnteredEventDetails (botocore's model)
            outcome = outcomes.setdefault(name, StateOutcome(name))
            outcome.outcome = "running"
            entered[name] = _when(event.get("timestamp"))
        elif kind.endswith("StateExited"):
            name = details["name"]  # required in StateExitedEventDetails
            outcome = outcomes.setdefault(name, StateOutcome(name))
            outcome.outcome = "retried" if outcome.attempts > 1 else "succeeded"
            start, stop = entered.get(name), _when(event.get("timestamp"))
            if start and stop:
                outcome.duration_s = (stop - start).total_seconds()
            current = None
        elif current and kind in ("TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled"):
            outcomes[current].attempts += 1
        elif current and kind in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut", "LambdaFunctionTimedOut",
                                  "TaskStartFailed", "LambdaFunctionStartFailed", "TaskSubmitFailed"):
            outcomes[current].error = details.get("error") or outcomes[current].error
            outcomes[current].cause = details.get("cause") or outcomes[current].cause
        elif kind in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted") and current:
            outcome = outcomes[current]
            outcome.outcome = "failed"
            outcome.error = details.get("error") or outcome.error
            outcome.cause = details.get("cause") or outcome.cause
            start, stop = entered.get(current), _when(event.get("timestamp"))
            if start and stop:
                outcome.duration_s = (stop - start).total_seconds()
    return outcomes


def execution_status(events: list[dict[str, Any]]) -> str:
    for event in reversed(sorted(events, key=lambda e: e.get("id", 0))):
        kind = event["type"]
        if kind == "ExecutionSucceeded":
            return "SUCCEEDED"
        if kind == "ExecutionFailed":
            return "FAILED"
        if kind == "ExecutionTimedOut":
            return "TIMED_OUT"
        if kind == "ExecutionAborted":
            return "ABORTED"
    return "RUNNING"


# --- ASL -> graph -> SVG -----------------------------------------------------------------

def transitions(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(target state, edge label) for every way out of one ASL state."""
    out: list[tuple[str, str]] = []
    if state.get("Next"):
        out.append((state["Next"], ""))
    for choice in state.get("Choices", []):
        if choice.get("Next"):
            out.append((choice["Next"], "choice"))
    if state.get("Default"):
        out.append((state["Default"], "default"))
    for catcher in state.get("Catch", []):
        if catcher.get("Next"):
            out.append((catcher["Next"], "catch " + ",".join(catcher.get("ErrorEquals", []))))
    return out


def layout(definition: dict[str, Any]) -> list[list[str]]:
    """States in rows: each state one row below the first state that leads to it (breadth first)."""
    states = definition.get("States", {})
    start = definition.get("StartAt")
    if start not in states:
        raise ReportError(f"state machine definition has StartAt {start!r}, which is not among its States")
    rank = {start: 0}
    queue = [start]
    while queue:
        name = queue.pop(0)
        for target, _ in transitions(states[name]):
            if target in states and target not in rank:
                rank[target] = rank[name] + 1
                queue.append(target)
    for name in states:  # unreachable states still get drawn, at the bottom
        rank.setdefault(name, max(rank.values()) + 1)
    rows: list[list[str]] = [[] for _ in range(max(rank.values()) + 1)]
    for name in states:
        rows[rank[name]].append(name)
    return rows


BOX_W, BOX_H, ROW_GAP, COL_GAP, MARGIN, TERMINAL_R = 250, 58, 46, 30, 24, 16


@dataclass
class Placement:
    """Where a definition's states go: box centres, the Start and End circles, the picture's size."""
    centres: dict[str, tuple[float, float]]
    start: tuple[float, float]
    end: tuple[float, float]
    width: float
    height: float


def placement(definition: dict[str, Any], box_h: float = BOX_H, end_room: float = 0) -> Placement:
    """The layout's rows placed on a canvas; `end_room` leaves space under the End circle."""
    rows = layout(definition)
    width = max(len(row) for row in rows) * (BOX_W + COL_GAP) - COL_GAP + 2 * MARGIN
    top = MARGIN + 2 * TERMINAL_R + ROW_GAP
    centres: dict[str, tuple[float, float]] = {}
    for index, row in enumerate(rows):
        row_width = len(row) * (BOX_W + COL_GAP) - COL_GAP
        for column, name in enumerate(row):
            x = (width - row_width) / 2 + column * (BOX_W + COL_GAP) + BOX_W / 2
            centres[name] = (x, top + index * (box_h + ROW_GAP) + box_h / 2)
    end_y = top + len(rows) * (box_h + ROW_GAP) + TERMINAL_R
    return Placement(centres, (width / 2, MARGIN + TERMINAL_R), (width / 2, end_y), width,
                     end_y + TERMINAL_R + MARGIN + end_room)


def svg_open(place: Placement, css_class: str, label: str, extra_style: str = "") -> str:
    """The <svg> element's opening, the arrow head and the shared styles."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{place.width:.0f}" '
            f'height="{place.height:.0f}" viewBox="0 0 {place.width:.0f} {place.height:.0f}" role="img" '
            f'aria-label="{html.escape(label, quote=True)}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
            '<style>text{font-family:system-ui,sans-serif;fill:#222}.name{font-weight:600;font-size:14px}'
            '.detail{font-size:11px;fill:#444}.edge{stroke:#555;stroke-width:1.5;fill:none}'
            f'.edge-label{{font-size:10px;fill:#666}}{extra_style}</style>')


def edge_svg(a: tuple[float, float], b: tuple[float, float], a_off: float, b_off: float, label: str = "",
             extra_class: str = "") -> str:
    """An arrow from box (or circle) a to b, leaving a's bottom and entering b's top; round the right to go up."""
    x1, y1, x2, y2 = a[0], a[1] + a_off, b[0], b[1] - b_off
    if y2 <= y1:  # a loop back up: go round the right-hand side
        side = max(x1, x2) + BOX_W / 2 + 14
        path = f"M{x1 + BOX_W / 2:.1f},{a[1]:.1f} H{side:.1f} V{b[1]:.1f} H{x2 + BOX_W / 2:.1f}"
    else:
        mid = (y1 + y2) / 2
        path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"
    extra = f" {extra_class}" if extra_class else ""
    drawn = f'<path class="edge{extra}" d="{path}" marker-end="url(#arrow)"/>'
    if label:
        drawn += (f'<text class="edge-label{extra}" x="{(x1 + x2) / 2 + 6:.1f}" y="{(y1 + y2) / 2:.1f}">'
                  f'{html.escape(label)}</text>')
    return drawn


def render_svg(definition: dict[str, Any], outcomes: dict[str, StateOutcome] | None = None,
               execution_status_text: str | None = None, title: str = "") -> str:
    """The state machine as an SVG graph; boxes coloured by outcome (all grey without one)."""
    states = definition.get("States", {})
    outcomes = outcomes or {}
    place = placement(definition)
    centres, start_xy, end_xy = place.centres, place.start, place.end
    parts = [svg_open(place, "state-machine", title or "state machine")]

    def edge(a: tuple[float, float], b: tuple[float, float], a_off: float, b_off: float, label: str = "") -> None:
        parts.append(edge_svg(a, b, a_off, b_off, label))

    start = definition["StartAt"]
    edge(start_xy, centres[start], TERMINAL_R, BOX_H / 2)
    for name, state in states.items():
        for target, label in transitions(state):
            if target in centres:
                edge(centres[name], centres[target], BOX_H / 2, BOX_H / 2, label)
        if state.get("End") or state.get("Type") in ("Succeed", "Fail"):
            edge(centres[name], end_xy, BOX_H / 2, TERMINAL_R)

    parts.append(_terminal(start_xy, "Start", "#e8e8e8", "#777"))
    finished_colour = {"SUCCEEDED": ("#d7f0d9", "#2e7d32"), "FAILED": ("#f9d6d5", "#c62828")}.get(
        execution_status_text or "", ("#e8e8e8", "#777"))
    parts.append(_terminal(end_xy, "End", *finished_colour))

    for name, state in states.items():
        outcome = outcomes.get(name, StateOutcome(name))
        fill, stroke, label = OUTCOME_STYLE.get(outcome.outcome, OUTCOME_STYLE["not_run"])
        x, y = centres[name]
        detail = state.get("Type", "")
        if outcome.duration_s is not None:
            detail += f" · {outcome.duration_s * 1000:.0f} ms"
        if outcome.attempts > 1:
            detail += f" · {outcome.attempts} attempts"
        second = outcome.error if outcome.outcome == "failed" and outcome.error else label
        tooltip = f"{name}: {label}" + (f"\n{outcome.error}: {outcome.cause}" if outcome.error else "")
        dash = ' stroke-dasharray="5,4"' if outcome.outcome == "not_run" else ""
        parts.append(
            f'<g class="state" data-state="{html.escape(name, quote=True)}" data-outcome="{outcome.outcome}">'
            f'<title>{html.escape(tooltip)}</title>'
            f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" height="{BOX_H}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="2"{dash}/>'
            f'<text class="name" x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{html.escape(name)}</text>'
            f'<text class="detail" x="{x:.1f}" y="{y + 8:.1f}" text-anchor="middle">{html.escape(detail)}</text>'
            f'<text class="detail" x="{x:.1f}" y="{y + 22:.1f}" text-anchor="middle" fill="{stroke}">'
            f'{html.escape(_shorten(second, 40))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _terminal(centre: tuple[float, float], text: str, fill: str, stroke: str) -> str:
    x, y = centre
    return (f'<g class="terminal"><circle cx="{x:.1f}" cy="{y:.1f}" r="{TERMINAL_R}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="2"/><text class="detail" x="{x:.1f}" y="{y + 4:.1f}" '
            f'text-anchor="middle">{text}</text></g>')


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- gathering what goes on the page ------------------------------------------------------

@dataclass
class ExecutionView:
    title: str
    arn: str
    status: str
    svg: str
    input: str = ""
    error: str | None = None
    cause: str | None = None
    states: list[StateOutcome] = field(default_factory=list)


def execution_view(definition: dict[str, Any], events: list[dict[str, Any]], arn: str, title: str = "") -> ExecutionView:
    outcomes = state_outcomes(definition, events)
    status = execution_status(events)
    started = next((e for e in events if e["type"] == "ExecutionStarted"), None)
    failed = next((e for e in events if e["type"] in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted")), None)
    failure = _details(failed) if failed else {}
    return ExecutionView(
        title=title or f"{status.lower()} execution",
        arn=arn,
        status=status,
        svg=render_svg(definition, outcomes, status, title=f"{arn} {status}"),
        input=str(_details(started).get("input", "")) if started else "",
        error=failure.get("error"),
        cause=failure.get("cause"),
        states=[outcomes[name] for name in definition.get("States", {}) if name in outcomes],
    )


def latest_executions(sfn, state_machine_arn: str) -> list[tuple[str, str]]:
    """(title, arn) of the latest passing and the latest failing execution, where there are any."""
    chosen = []
    for status, title in (("SUCCEEDED", "latest passing execution"), ("FAILED", "latest failing execution")):
        newest = None
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn,
                                                                   statusFilter=status):
            for item in page["executions"]:
                if newest is None or item["startDate"] > newest["startDate"]:
                    newest = item
        if newest is not None:
            chosen.append((title, newest["executionArn"]))
    return chosen


def missing_outcomes(views: list[ExecutionView], explicit: bool) -> list[str]:
    """Which of the default pair (a passing and a failing execution) the target has none of yet."""
    if explicit:
        return []
    statuses = {view.status for view in views}
    return [label for status, label in (("SUCCEEDED", "passing"), ("FAILED", "failing")) if status not in statuses]


def workflow_views(target, execution_arns: Iterable[str] = ()) -> tuple[dict[str, Any], list[ExecutionView]]:
    """The target's ASL definition and one view per chosen execution (default: latest pass and fail)."""

    sfn = target.client("stepfunctions")
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=target.state_machine_arn)["definition"])
    arns = list(execution_arns)
    chosen = [(f"execution {arn.rsplit(':', 1)[-1]}", arn) for arn in arns] if arns else \
        latest_executions(sfn, target.state_machine_arn)
    views = []
    for title, arn in chosen:
        try:
            events = execution_history(sfn, arn)
        except sfn.exceptions.ExecutionDoesNotExist:
            raise ReportError(f"execution {arn} does not exist on the {target.name} target") from None
        views.append(execution_view(definition, events, arn, title))
    return definition, views


def load_evaluation(reports_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:

    path = latest_evaluation(reports_dir)
    return (path, json.loads(path.read_text())) if path else (None, None)


def load_monitoring(monitor_dir: Path) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """monitor.json and its plots as data: URIs, if `scones monitor` has written them."""

    summary_path = monitor_dir / SUMMARY_FILE
    if not summary_path.is_file():
        return None, {}
    summary = json.loads(summary_path.read_text())
    images = {}
    for name, filename in PLOT_FILES.items():
        path = Path(summary.get("plots", {}).get(name) or monitor_dir / filename)
        if not path.is_file():
            path = monitor_dir / filename
        if path.is_file():
            images[name] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return summary, images


def render_report(context: dict[str, Any]) -> str:

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=jinja2.select_autoescape(["html"]),
                                     undefined=jinja2.StrictUndefined)
    environment.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.1%}"
    environment.filters["num"] = lambda v, digits=4: "–" if v is None else f"{v:.{digits}f}"
    return environment.get_template(TEMPLATE_NAME).render(**context)


def build_report(out_path: Path, reports_dir: Path, target=None, execution_arns: Iterable[str] = (),
                 monitor_dir: Path | None = None, coverage_json: Path | None = None) -> Path:
    """Gather the latest evaluation, the monitoring output, the workflow graphs and the workflow's coverage
    (from the target's executions, or from `coverage_json`) into one page."""
    execution_arns = list(execution_arns)
    evaluation_path, evaluation = load_evaluation(reports_dir)
    monitoring, plots = load_monitoring(monitor_dir or reports_dir / "monitor")
    definition, views = (workflow_views(target, execution_arns) if target is not None else (None, []))
    coverage = _coverage(target, definition, coverage_json)
    if evaluation is None and monitoring is None and definition is None and coverage is None:
        raise ReportError(f"nothing to report under {reports_dir}: run `scones evaluate` and `scones monitor` "
                          "first, or bring a stack up")
    context = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": getattr(target, "name", None),
        "state_machine_arn": getattr(target, "state_machine_arn", None),
        "evaluation": evaluation,
        "evaluation_path": str(evaluation_path) if evaluation_path else None,
        "monitoring": monitoring,
        "plots": plots,
        "drift_caption": _drift_caption(monitoring),
        "definition_svg": render_svg(definition) if definition is not None and not views else None,
        "executions": views,
        "missing_outcomes": missing_outcomes(views, bool(list(execution_arns))) if definition is not None else [],
        "outcome_style": OUTCOME_STYLE,
        "operations": _operations(target),
        "coverage": coverage,
        "iam": _iam(target),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_report(context), encoding="utf-8")
    return out_path


def _operations(target) -> dict[str, Any] | None:
    """Autoscaling, the drift monitor's alarms and runs (harness/operations.py), or None without a target."""
    if target is None:
        return None

    try:
        return operations.describe(target)
    except (BotoCoreError, ClientError) as error:
        return {"autoscaling": None, "monitor": None, "note": f"cannot be read ({error})"}


def _coverage(target, definition: dict[str, Any] | None, coverage_json: Path | None):
    """The workflow coverage section (harness/report_coverage.py), or None with nothing to draw it from."""
    from scones.harness.report_coverage import coverage_view

    arn = getattr(target, "state_machine_arn", None)
    try:
        return coverage_view(definition, target.client("stepfunctions") if target is not None else None, arn,
                             coverage_json)
    except ClientError as error:
        raise ReportError(f"cannot read the workflow's executions for its coverage: {error}") from None


def _iam(target) -> dict[str, Any] | None:
    """The local stack's IAM denials (harness/iam/denials.py); None for AWS (it enforces IAM itself) or no stack."""
    localstack_url = iam_denials.localstack_url_of(target)
    if not localstack_url:
        return None
    listing = iam_denials.fetch(localstack_url)
    return None if listing is None else {**listing, "distinct": iam_denials.distinct(listing["denials"])}


def _drift_caption(monitoring: dict[str, Any] | None) -> str | None:
    if not monitoring:
        return None
    return drift_caption(monitoring["drift"])
