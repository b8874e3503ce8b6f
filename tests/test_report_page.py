"""The report page: state outcomes from execution histories, the workflow SVG, and the page itself."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import pytest

from scones.harness import report
from scones.state_machine.render import render_definition

EVENTS = Path(__file__).parent / "events"
FUNCTIONS = ("serializeImageData", "classifyImage", "filterInferences")
SVG = "{http://www.w3.org/2000/svg}"


def workflow_definition() -> dict:
    arns = {name: f"arn:aws:lambda:us-east-1:000000000000:function:scones-{name}" for name in FUNCTIONS}
    return json.loads(render_definition(arns))


def recorded(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_passing_history_marks_every_state_succeeded_with_durations():
    history = recorded("sfn_history_succeeded.json")
    outcomes = report.state_outcomes(workflow_definition(), history["events"])
    assert [o.outcome for o in outcomes.values()] == ["succeeded"] * 3
    assert all(o.duration_s and o.duration_s > 0 and o.attempts == 1 for o in outcomes.values())
    assert report.execution_status(history["events"]) == "SUCCEEDED"


def test_failing_history_marks_the_threshold_state_failed_with_its_error():
    history = recorded("sfn_history_failed.json")
    outcomes = report.state_outcomes(workflow_definition(), history["events"])
    assert outcomes["serializeImageData"].outcome == "succeeded"
    assert outcomes["classifyImage"].outcome == "succeeded"
    failed = outcomes["filterInferences"]
    assert failed.outcome == "failed" and failed.error == "ThresholdConfidenceNotMet"
    assert "below the threshold" in json.loads(failed.cause)["errorMessage"]
    assert report.execution_status(history["events"]) == "FAILED"


def test_a_state_the_execution_never_reached_is_not_run():
    events = [e for e in recorded("sfn_history_failed.json")["events"] if e["id"] <= 8]
    events.append({"id": 99, "type": "ExecutionFailed", "timestamp": events[-1]["timestamp"],
                   "executionFailedEventDetails": {"error": "States.Runtime", "cause": "boom"}})
    outcomes = report.state_outcomes(workflow_definition(), events)
    assert [outcomes[n].outcome for n in FUNCTIONS] == ["succeeded", "failed", "not_run"]


def test_svg_is_well_formed_and_has_one_box_per_state_coloured_by_outcome():
    definition = workflow_definition()
    view = report.execution_view(definition, recorded("sfn_history_failed.json")["events"], "arn:x", "failing")
    root = ElementTree.fromstring(view.svg)
    states = {g.get("data-state"): g.get("data-outcome") for g in root.iter(f"{SVG}g") if g.get("data-state")}
    assert states == {"serializeImageData": "succeeded", "classifyImage": "succeeded", "filterInferences": "failed"}
    assert len(list(root.iter(f"{SVG}path"))) >= 5   # marker + start edge + 2 transitions + end edge
    assert "ThresholdConfidenceNotMet" in view.svg and view.error == "ThresholdConfidenceNotMet"
    assert json.loads(view.input)["s3_key"].startswith("test/motorcycle/")


def test_layout_handles_choices_catches_and_loops():
    definition = {"StartAt": "A", "States": {
        "A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "B"}], "Default": "C"},
        "B": {"Type": "Task", "Resource": "r", "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "D"}], "Next": "A"},
        "C": {"Type": "Succeed"}, "D": {"Type": "Fail"}, "Orphan": {"Type": "Pass", "End": True}}}
    assert report.layout(definition) == [["A"], ["B", "C"], ["D"], ["Orphan"]]
    ElementTree.fromstring(report.render_svg(definition))  # well formed, loop edge included


def test_bad_start_is_a_clear_error():
    with pytest.raises(report.ReportError, match="StartAt 'Nope'"):
        report.layout({"StartAt": "Nope", "States": {"A": {"Type": "Pass", "End": True}}})


def test_build_report_inlines_everything(tmp_path, sample_reports):
    out = report.build_report(tmp_path / "page.html", sample_reports, target=sample_target())
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert 'id="evaluation-table"' in page and page.count("<tr class=\"status-") == 3
    assert page.count('class="state-machine"') == 2
    assert "latest passing execution" in page and "latest failing execution" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")   # nothing fetched from elsewhere


def test_nothing_to_report_is_a_clear_error(tmp_path):
    with pytest.raises(report.ReportError, match="scones evaluate"):
        report.build_report(tmp_path / "page.html", tmp_path / "empty")


# --- shared with the browser test ---------------------------------------------------------

def sample_target():
    """A stand-in for scones.harness.targets.Target whose Step Functions client serves the recorded histories."""
    definition = json.dumps(workflow_definition())
    histories = {recorded(n)["executionArn"]: recorded(n) for n in ("sfn_history_succeeded.json", "sfn_history_failed.json")}

    class Paginator:
        def __init__(self, operation):
            self.operation = operation

        def paginate(self, **kwargs):
            if self.operation == "list_executions":
                yield {"executions": [
                    {"executionArn": arn, "startDate": h["events"][0]["timestamp"],
                     "status": report.execution_status(h["events"])}
                    for arn, h in histories.items()
                    if kwargs.get("statusFilter") in (None, report.execution_status(h["events"]))]}
            else:
                yield {"events": histories[kwargs["executionArn"]]["events"]}

    class NotFound(Exception):
        pass

    client = SimpleNamespace(
        describe_state_machine=lambda stateMachineArn: {"definition": definition},
        get_paginator=Paginator,
        exceptions=SimpleNamespace(ExecutionDoesNotExist=NotFound),
    )
    return SimpleNamespace(name="local", state_machine_arn="arn:aws:states:us-east-1:000000000000:stateMachine:scones-workflow",
                           client=lambda service: client)


@pytest.fixture
def sample_reports(tmp_path) -> Path:
    """A reports folder as `scones evaluate` and `scones monitor` leave it."""
    from test_monitor_capture import START, answers_for, baseline_from, synthetic_test_set, write_capture

    from scones.harness import evaluate, monitor


    reports = tmp_path / "reports"
    rows = [
        {"key": "test/bicycle/bike_s_000330.png", "true_class": "bicycle", "status": "SUCCEEDED",
         "predicted_class": "bicycle", "confidence": 0.991, "error": None, "duration_s": 0.142,
         "failed_state": None, "cause": None, "execution_arn": "arn:1"},
        {"key": "test/motorcycle/motorbike_s_000135.png", "true_class": "motorcycle", "status": "FAILED",
         "predicted_class": "motorcycle", "confidence": 0.59, "error": "ThresholdConfidenceNotMet",
         "duration_s": 0.131, "failed_state": "filterInferences", "cause": "max confidence 0.59 is below 0.93",
         "execution_arn": "arn:2"},
        {"key": "test/motorcycle/moped_s_000044.png", "true_class": "motorcycle", "status": "SUCCEEDED",
         "predicted_class": "bicycle", "confidence": 0.95, "error": None, "duration_s": 0.128,
         "failed_state": None, "cause": None, "execution_arn": "arn:3"},
    ]
    evaluation = evaluate.Evaluation(target="local", bucket="scones-local", state_machine_arn="arn:sm", n=3, seed=7,
                                     concurrency=2, started_at="2026-11-26T22:15:00+00:00", rows=rows,
                                     summary=evaluate.summarize(rows))
    evaluate.save(evaluation, reports)
    predicted, confidences = synthetic_test_set(seed=1)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(baseline_from(predicted, confidences)))
    write_capture(tmp_path / "capture", answers_for(predicted[:60], confidences[:60]), START, per_file=9)
    monitor.monitor(tmp_path / "capture", reports / "monitor", baseline_path=baseline)
    return reports


def test_page_says_which_default_execution_is_missing():
    failing = SimpleNamespace(status="FAILED")
    assert report.missing_outcomes([failing], explicit=False) == ["passing"]
    assert report.missing_outcomes([], explicit=False) == ["passing", "failing"]
    assert report.missing_outcomes([failing], explicit=True) == []


def test_the_page_shows_the_share_of_generated_non_vehicles_refused(tmp_path, sample_reports):
    from scones.harness import evaluate

    saved = json.loads(evaluate.latest_evaluation(sample_reports).read_text())
    rows = saved["rows"] + [
        {"key": f"ood/{kind}/{kind}-3000017-00{number}.png", "true_class": evaluate.OOD_CLASS, "status": status,
         "predicted_class": "bicycle", "confidence": confidence, "error": error, "duration_s": 0.1,
         "failed_state": "filterInferences" if error else None, "cause": None, "execution_arn": f"arn:ood{number}"}
        for number, (kind, status, confidence, error) in enumerate([
            ("uniform", "FAILED", 0.51, "ThresholdConfidenceNotMet"), ("noise", "FAILED", 0.6, "ThresholdConfidenceNotMet"),
            ("tiny", "FAILED", 0.55, "ThresholdConfidenceNotMet"), ("stripes", "SUCCEEDED", 0.95, None)])]
    evaluation = evaluate.Evaluation(target="local", bucket="scones-local", state_machine_arn="arn:sm", n=3, seed=7,
                                     concurrency=2, started_at="2026-11-26T23:15:00+00:00", rows=rows,
                                     summary=evaluate.summarize(rows))
    evaluate.save(evaluation, sample_reports)

    page = report.build_report(tmp_path / "page.html", sample_reports, target=sample_target()).read_text()

    assert '<div class="value" id="ood-rejection">75.0%</div>' in page
    assert "3/4 generated non-vehicles below threshold" in page
    assert '<div class="value" id="accuracy">66.7%</div>' in page        # the test images' figure, unchanged


# --- workflow coverage drawn over the picture (harness/report_coverage.py) ------------------

def coverage_items(svg: str) -> dict[str, dict[str, tuple[int, bool]]]:
    """From the coverage SVG: per kind, each item's count and whether it is drawn as never exercised."""
    root = ElementTree.fromstring(svg)
    items: dict[str, dict[str, tuple[int, bool]]] = {"states": {}, "transitions": {}, "rules": {}}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "coverage-state":
            [rect] = group.iter(f"{SVG}rect")
            items["states"][group.get("data-covered-state")] = (int(group.get("data-count")),
                                                                rect.get("stroke-dasharray") is not None)
        elif group.get("class") == "coverage-transition":
            [path] = group.iter(f"{SVG}path")
            items["transitions"][group.get("data-transition")] = (int(group.get("data-count")),
                                                                  "never" in path.get("class"))
    for text in root.iter(f"{SVG}text"):
        if text.get("data-rule"):
            items["rules"][text.get("data-rule")] = (int(text.get("data-count")), "never" in text.get("class"))
    return items


def test_coverage_picture_counts_each_part_and_marks_what_never_ran():
    from test_workflow_coverage import below_threshold, succeeded

    from scones.harness.coverage import coverage
    from scones.harness.report_coverage import coverage_svg

    definition = workflow_definition()
    machine = coverage(definition, [succeeded(("EndpointUnavailable",)), succeeded(), below_threshold()])
    svg = coverage_svg(definition, machine)
    items = coverage_items(svg)

    assert items["states"] == {name: (3, False) for name in FUNCTIONS}
    assert items["transitions"] == {"serializeImageData -> classifyImage": (3, False),
                                    "classifyImage -> filterInferences": (3, False),
                                    "filterInferences -> (end)": (2, False)}
    fired = {key: value for key, value in items["rules"].items() if value[0]}
    assert fired == {"classifyImage Retry[1] EndpointUnavailable": (1, False)}
    never = [key for key, (count, marked) in items["rules"].items() if marked]
    assert len(never) == 3 and all("Lambda.ServiceException" in key for key in never)
    assert "EndpointUnavailable: fired ×1" in svg and "ThresholdConfidenceNotMet ×1" in svg


def test_coverage_picture_draws_never_taken_branches_catches_and_states_dashed():
    from test_workflow_coverage import entered, exited

    from scones.harness.coverage import coverage
    from scones.harness.report_coverage import coverage_svg

    definition = {"StartAt": "pick", "States": {
        "pick": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "work"}],
                 "Default": "done"},
        "work": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Next": "done",
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "oops"}]},
        "oops": {"Type": "Fail", "Error": "Oops"},
        "done": {"Type": "Succeed"}}}
    to_default = [{"type": "ExecutionStarted"}, entered("pick", "Choice"), exited("pick", "Choice"),
                  entered("done", "Succeed"), exited("done", "Succeed"), {"type": "ExecutionSucceeded"}]
    items = coverage_items(coverage_svg(definition, coverage(definition, [to_default])))

    assert items["states"] == {"pick": (1, False), "work": (0, True), "oops": (0, True), "done": (1, False)}
    assert items["transitions"]["pick -> done"] == (1, False)
    assert items["transitions"]["pick -> work"] == (0, True) and items["transitions"]["work -> oops"] == (0, True)
    assert items["rules"] == {"work Catch[0] States.ALL -> oops": (0, True)}


def test_report_draws_the_coverage_of_the_targets_executions(tmp_path, sample_reports):
    page = report.build_report(tmp_path / "report.html", sample_reports, target=sample_target()).read_text()

    assert 'id="coverage"' in page and "the newest 2 finished execution(s)" in page
    never = page[page.index('id="coverage-never"'):]
    never = never[:never.index("</ul>")]
    # Neither recorded execution retried: each of the four Retry rules is named as never fired.
    assert never.count("<li") == 4 and "classifyImage Retry[1] EndpointUnavailable" in never
    assert "filterInferences Retry[0] Lambda.ServiceException" in never
    assert "ThresholdConfidenceNotMet ×1" in page


def test_report_draws_coverage_from_the_pytest_json_alone(tmp_path):
    from test_workflow_coverage import succeeded

    from scones.harness.coverage import coverage

    definition = workflow_definition()
    arn = "arn:aws:states:us-east-1:000000000000:stateMachine:scones-workflow"
    recorded_json = tmp_path / "coverage.json"
    recorded_json.write_text(json.dumps({"since": None, "state_machines": [
        {"arn": arn, **coverage(definition, [succeeded()]), "definition": definition}]}))

    page = report.build_report(tmp_path / "report.html", tmp_path / "no-reports", coverage_json=recorded_json)

    text = page.read_text()
    assert f"1 execution(s) recorded in {recorded_json}" in text
    assert 'data-covered-state="classifyImage" data-count="1"' in text


def test_a_file_that_is_not_coverage_json_is_a_clear_error(tmp_path):
    wrong = tmp_path / "evaluation.json"
    wrong.write_text(json.dumps({"rows": []}))
    with pytest.raises(report.ReportError, match=f"{wrong} is not a workflow coverage JSON"):
        report.build_report(tmp_path / "report.html", tmp_path, coverage_json=wrong)
