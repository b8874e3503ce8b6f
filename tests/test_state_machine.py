"""The ASL template and its renderer: a valid render, and each refusal."""
from __future__ import annotations

import json

import pytest

from scones.state_machine.render import FUNCTION_NAMES, TEMPLATE_PATH, DefinitionError, render_definition

LAMBDA_ERRORS = ["Lambda.ServiceException", "Lambda.AWSLambdaException",
                 "Lambda.SdkClientException", "Lambda.TooManyRequestsException",
                 "Lambda.ClientExecutionTimeoutException"]


def arns(prefix="scones"):
    return {name: f"arn:aws:lambda:us-east-1:000000000000:function:{prefix}-{name}" for name in FUNCTION_NAMES}


def template():
    return json.loads(TEMPLATE_PATH.read_text())


def test_renders_the_three_lambda_invoke_tasks_in_order():
    definition = json.loads(render_definition(arns()))

    assert definition["StartAt"] == "serializeImageData"
    states = definition["States"]
    assert list(states) == list(FUNCTION_NAMES)
    assert states["serializeImageData"]["Next"] == "classifyImage"
    assert states["classifyImage"]["Next"] == "filterInferences"
    assert states["filterInferences"]["End"] is True
    for name, state in states.items():
        assert state["Type"] == "Task"
        assert state["Resource"] == "arn:aws:states:::lambda:invoke"
        assert state["Parameters"] == {"FunctionName": arns()[name], "Payload.$": "$"}
        assert state["OutputPath"] == "$.Payload"
        assert state["Retry"][0] == {"ErrorEquals": LAMBDA_ERRORS, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2}
    # classifyImage also retries what outlasted its own endpoint retries (tests/test_classify_retries.py)
    assert [len(state["Retry"]) for state in states.values()] == [1, 2, 1]
    # The threshold state fails loudly: nothing may catch ThresholdConfidenceNotMet.
    assert "Catch" not in states["filterInferences"]


def test_the_template_keeps_named_placeholders():
    text = TEMPLATE_PATH.read_text()
    for name in FUNCTION_NAMES:
        assert "${" + name + "}" in text


def test_refuses_an_unfilled_placeholder():
    given = arns()
    del given["classifyImage"]
    with pytest.raises(DefinitionError, match=r"unfilled placeholder \$\{classifyImage\} at \$\.States\.classifyImage\.Parameters\.FunctionName"):
        render_definition(given)


def test_refuses_an_arn_for_a_function_the_template_lacks():
    with pytest.raises(DefinitionError, match=r"ARNs given for \['classifyImages'\]"):
        render_definition({**arns(), "classifyImages": "arn:aws:lambda:us-east-1:000000000000:function:x"})


@pytest.mark.parametrize("arn", ["", "  ", None])
def test_refuses_an_empty_arn(arn):
    with pytest.raises(DefinitionError, match="'filterInferences' is empty or not a string"):
        render_definition({**arns(), "filterInferences": arn})


def test_refuses_an_unknown_next_state():
    broken = template()
    broken["States"]["classifyImage"]["Next"] = "filterInference"
    with pytest.raises(DefinitionError, match="state 'classifyImage' has Next 'filterInference', which is not a state"):
        render_definition(arns(), json.dumps(broken))


def test_refuses_an_unknown_catch_target():
    broken = template()
    broken["States"]["classifyImage"]["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": "Nowhere"}]
    with pytest.raises(DefinitionError, match=r"Catch\[0\]\.Next 'Nowhere'"):
        render_definition(arns(), json.dumps(broken))


def test_refuses_an_unreachable_state():
    broken = template()
    broken["States"]["Orphan"] = {"Type": "Pass", "End": True}
    with pytest.raises(DefinitionError, match=r"states \['Orphan'\] cannot be reached from StartAt 'serializeImageData'"):
        render_definition(arns(), json.dumps(broken))


def test_refuses_an_unknown_start_state():
    broken = template()
    broken["StartAt"] = "serialize"
    with pytest.raises(DefinitionError, match="StartAt 'serialize' is not a state"):
        render_definition(arns(), json.dumps(broken))


def test_refuses_a_state_with_no_way_on():
    broken = template()
    del broken["States"]["filterInferences"]["End"]
    with pytest.raises(DefinitionError, match="'filterInferences' has neither Next nor End"):
        render_definition(arns(), json.dumps(broken))


def test_refuses_a_template_that_is_not_json():
    with pytest.raises(DefinitionError, match="not valid JSON"):
        render_definition(arns(), "{not json")


def test_render_is_stable_text():
    assert render_definition(arns()) == render_definition(arns())
