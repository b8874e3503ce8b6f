"""Workflow coverage (harness/coverage.py) over execution histories shaped as GetExecutionHistory returns them.

Event types and details as in the Step Functions API reference (HistoryEvent:
https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html): a retried task shows
TaskFailed followed by a new TaskScheduled inside the same TaskStateEntered/TaskStateExited; a caught error
TaskFailed, then TaskStateExited and the catcher's Next entered; an uncaught one TaskFailed then ExecutionFailed.
tests/e2e/test_faults.py checks the same on real histories of the local stack.
"""
from __future__ import annotations

import json
from pathlib import Path

from scones.harness.coverage import coverage, format_report

DEFINITION = json.loads((Path(__file__).resolve().parents[1] / "state_machine" / "definition.template.json").read_text())


def entered(name: str, kind: str = "Task") -> dict:
    return {"type": f"{kind}StateEntered", "stateEnteredEventDetails": {"name": name}}


def exited(name: str, kind: str = "Task") -> dict:
    return {"type": f"{kind}StateExited", "stateExitedEventDetails": {"name": name}}


def failed(error: str) -> dict:
    return {"type": "TaskFailed", "taskFailedEventDetails": {"error": error, "cause": "..."}}


def task_ok(name: str, failures: tuple[str, ...] = ()) -> list[dict]:
    events = [entered(name)]
    for error in failures:
        events += [{"type": "TaskScheduled"}, {"type": "TaskStarted"}, failed(error)]
    return events + [{"type": "TaskScheduled"}, {"type": "TaskStarted"}, {"type": "TaskSucceeded"}, exited(name)]


def succeeded(classify_failures: tuple[str, ...] = ()) -> list[dict]:
    return [{"type": "ExecutionStarted"}, *task_ok("serializeImageData"),
            *task_ok("classifyImage", classify_failures), *task_ok("filterInferences"), {"type": "ExecutionSucceeded"}]


def below_threshold() -> list[dict]:
    return [{"type": "ExecutionStarted"}, *task_ok("serializeImageData"), *task_ok("classifyImage"),
            entered("filterInferences"), {"type": "TaskScheduled"}, {"type": "TaskStarted"},
            failed("ThresholdConfidenceNotMet"),
            {"type": "ExecutionFailed", "executionFailedEventDetails": {"error": "ThresholdConfidenceNotMet"}}]


def test_states_transitions_retries_and_terminal_errors():
    report = coverage(DEFINITION, [succeeded(), succeeded(("EndpointUnavailable", "EndpointUnavailable")),
                                   below_threshold()], name="scones")
    assert report["executions"] == 3
    assert report["states"]["counts"] == {"serializeImageData": 3, "classifyImage": 3, "filterInferences": 3}
    assert report["states"]["never"] == []
    assert report["transitions"]["counts"] == {"serializeImageData -> classifyImage": 3,
                                               "classifyImage -> filterInferences": 3, "filterInferences -> (end)": 2}
    retries = report["retries"]["counts"]
    assert retries["classifyImage Retry[1] EndpointUnavailable"] == 2
    assert report["retries"]["covered"] == 1 and len(report["retries"]["never"]) == 3
    assert "serializeImageData Retry[0] Lambda.ServiceException,Lambda.AWSLambdaException,Lambda.SdkClientException," \
           "Lambda.TooManyRequestsException,Lambda.ClientExecutionTimeoutException" in report["retries"]["never"]
    assert report["terminal_errors"] == {"ThresholdConfidenceNotMet": 1}
    text = format_report({"state_machines": [report]})
    assert "Retry rules fired: 1/4" in text and "never  filterInferences Retry[0]" in text


def test_choice_branches_and_catch_rules():
    definition = {"StartAt": "pick", "States": {
        "pick": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "work"}],
                 "Default": "done"},
        "work": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Next": "done",
                 "Retry": [{"ErrorEquals": ["Lambda.ServiceException"]}],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "oops"}]},
        "oops": {"Type": "Fail", "Error": "Oops"},
        "done": {"Type": "Succeed"}}}
    to_default = [{"type": "ExecutionStarted"}, entered("pick", "Choice"), exited("pick", "Choice"),
                  entered("done", "Succeed"), exited("done", "Succeed"), {"type": "ExecutionSucceeded"}]
    caught = [{"type": "ExecutionStarted"}, entered("pick", "Choice"), exited("pick", "Choice"), entered("work"),
              {"type": "TaskScheduled"}, failed("Lambda.ServiceException"), {"type": "TaskScheduled"}, failed("Boom"),
              exited("work"), entered("oops", "Fail"),
              {"type": "ExecutionFailed", "executionFailedEventDetails": {"error": "Oops"}}]
    report = coverage(definition, [to_default, caught])
    assert report["choices"]["counts"] == {"pick Choices[0] -> work": 1, "pick Default -> done": 1}
    assert report["catches"]["counts"] == {"work Catch[0] States.ALL -> oops": 1}
    assert report["retries"]["counts"] == {"work Retry[0] Lambda.ServiceException": 1}
    assert report["transitions"]["never"] == ["work -> done"]
    assert report["transitions"]["counts"]["oops -> (end)"] == 1
    assert report["terminal_errors"] == {"Oops": 1}
