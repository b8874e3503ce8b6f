"""filterInferences: the threshold, its configuration, and inferences that are not probabilities."""
from __future__ import annotations

import pytest
from support import load_event

from scones.lambdas.errors import InvalidConfiguration, InvalidInferences, InvalidInput, ThresholdConfidenceNotMet
from scones.lambdas.filter_inferences import lambda_handler


@pytest.fixture(autouse=True)
def no_threshold_in_environment(monkeypatch):
    monkeypatch.delenv("THRESHOLD", raising=False)


def with_inferences(inferences):
    event = load_event("filter_inferences_input")
    event["body"]["inferences"] = inferences
    return event


def test_passes_a_confident_inference_through_unchanged(lambda_context):
    event = load_event("filter_inferences_input")
    assert lambda_handler(event, lambda_context) == event


def test_fails_loudly_below_the_default_threshold(lambda_context):
    event = load_event("filter_inferences_input_low_confidence")
    with pytest.raises(ThresholdConfidenceNotMet) as error:
        lambda_handler(event, lambda_context)
    message = str(error.value)
    assert "max confidence 0.6100 (bicycle)" in message
    assert "below the threshold 0.93" in message
    assert event["body"]["s3_key"] in message
    assert type(error.value).__name__ == "ThresholdConfidenceNotMet"  # the errorType Step Functions shows


def test_the_threshold_itself_passes(lambda_context):
    assert lambda_handler(with_inferences([0.07, 0.93]), lambda_context)["body"]["inferences"] == [0.07, 0.93]


def test_names_the_winning_class(lambda_context):
    with pytest.raises(ThresholdConfidenceNotMet, match=r"0\.8000 \(motorcycle\)"):
        lambda_handler(with_inferences([0.2, 0.8]), lambda_context)


def test_threshold_comes_from_the_environment(monkeypatch, lambda_context):
    monkeypatch.setenv("THRESHOLD", "0.6")
    assert lambda_handler(load_event("filter_inferences_input_low_confidence"), lambda_context)["statusCode"] == 200
    monkeypatch.setenv("THRESHOLD", "0.99")
    with pytest.raises(ThresholdConfidenceNotMet, match="below the threshold 0.99"):
        lambda_handler(load_event("filter_inferences_input"), lambda_context)


@pytest.mark.parametrize("value", ["high", "0", "1.5", "-0.2", "nan"])
def test_refuses_an_unusable_threshold(monkeypatch, lambda_context, value):
    monkeypatch.setenv("THRESHOLD", value)
    with pytest.raises(InvalidConfiguration, match=f"THRESHOLD='{value}'"):
        lambda_handler(load_event("filter_inferences_input"), lambda_context)


def test_accepts_the_original_projects_json_string_inferences(lambda_context):
    event = load_event("filter_inferences_input_original")
    assert isinstance(event["body"]["inferences"], str)
    assert lambda_handler(event, lambda_context)["body"]["inferences"] == [0.9712345, 0.0287655]


@pytest.mark.parametrize(
    "inferences, message",
    [
        ([], "must hold 2 probabilities"),
        ([0.97], "must hold 2 probabilities"),
        ({"bicycle": 0.97}, "must be a list of 2 probabilities"),
        (0.97, "must be a list of 2 probabilities"),
        ("[0.97, oops]", "are not JSON"),
        ([True, False], "not a finite number"),
        ([None, 1.0], "not a finite number"),
        ([1.2, -0.2], "not a probability in"),
        ([0.5, 0.2], "do not sum to 1"),
    ],
)
def test_refuses_inferences_that_are_not_probabilities(lambda_context, inferences, message):
    with pytest.raises(InvalidInferences, match=message) as error:
        lambda_handler(with_inferences(inferences), lambda_context)
    assert "s3://scones-local/test/bicycle/bicycle_s_000030.png" in str(error.value)


def test_refuses_a_state_without_inferences(lambda_context):
    event = load_event("filter_inferences_input")
    del event["body"]["inferences"]
    with pytest.raises(InvalidInferences, match="has no 'inferences'"):
        lambda_handler(event, lambda_context)


def test_refuses_the_raw_workflow_input(lambda_context):
    with pytest.raises(InvalidInput, match="has no 'body'"):
        lambda_handler(load_event("workflow_input"), lambda_context)


def test_the_invoke_result_payload_is_what_the_next_state_gets(lambda_context):
    # OutputPath "$.Payload" hands the next state the Lambda's own return value.
    payload = load_event("lambda_invoke_result")["Payload"]
    payload["body"]["inferences"] = [0.95, 0.05]
    assert lambda_handler(payload, lambda_context)["body"]["inferences"] == [0.95, 0.05]
