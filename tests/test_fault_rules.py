"""Fault rules (harness/faults.py): parsing, the error shapes they answer with, and which calls they fire on.

The gateway that applies them runs inside LocalStack (tests/e2e/test_faults.py shows them on the stack).
"""
from __future__ import annotations

import pytest

from scones.harness.faults import FaultRuleError, RuleSet, function_error_payload, parse_rule

INVOKE_ENDPOINT = {"service": "sagemaker-runtime", "operation": "InvokeEndpoint"}


def fires(rules: RuleSet, calls: int, service="sagemaker-runtime", operation="InvokeEndpoint",
          resources=("scones-classifier",)) -> list[bool]:
    return [rules.decide(service, operation, resources) is not None for _ in range(calls)]


def test_error_shapes_come_from_botocore_models_and_aws_common_errors():
    """Statuses as AWS answers them. botocore's models (botocore/data/<service>/*/service-2.json, the `error`
    trait's httpStatusCode): sagemaker-runtime ModelError 424 and ModelNotReadyException 429, Lambda
    TooManyRequestsException 429 and ServiceException 500. Not in those models but documented by AWS:
    ThrottlingException 400 "Rate exceeded" (Common Errors of every API reference, e.g.
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html) and S3's SlowDown 503
    "Please reduce your request rate." (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""
    cases = [("sagemaker-runtime", "InvokeEndpoint", "ThrottlingException", 400),
             ("sagemaker-runtime", "InvokeEndpoint", "ModelError", 424),
             ("sagemaker-runtime", "InvokeEndpoint", "ModelNotReadyException", 429),
             ("lambda", "Invoke", "TooManyRequestsException", 429),
             ("lambda", "Invoke", "ServiceException", 500),
             ("s3", "GetObject", "SlowDown", 503)]
    for service, operation, code, status in cases:
        rule = parse_rule({"service": service, "operation": operation, "error": code}, "r1")
        assert (rule.error.code, rule.error.status) == (code, status), code
    assert parse_rule({**INVOKE_ENDPOINT, "error": "ThrottlingException"}, "r1").error.message == "Rate exceeded"
    model_error = parse_rule({**INVOKE_ENDPOINT, "error": {"code": "ModelError", "OriginalStatusCode": 500,
                                                           "OriginalMessage": "boom"}}, "r1").error
    assert model_error.members == {"OriginalStatusCode": 500, "OriginalMessage": "boom"}


@pytest.mark.parametrize("document, complaint", [
    ({"service": "sagemaker", "operation": "InvokeEndpoint", "error": "X"}, "operation: sagemaker has no operation"),
    ({"service": "nope", "operation": "Invoke", "error": "X"}, "service: 'nope' is not an AWS service"),
    ({**INVOKE_ENDPOINT, "error": "MadeUpError"}, "give its HTTP status"),
    ({**INVOKE_ENDPOINT}, "needs something to do"),
    ({**INVOKE_ENDPOINT, "error": "ThrottlingException", "probability": 0.5}, "needs a seed"),
    ({**INVOKE_ENDPOINT, "error": "ThrottlingException", "nth": 2, "times": 1}, "leave out"),
    ({**INVOKE_ENDPOINT, "function_error": "timeout"}, "only a Lambda Invoke"),
    ({"service": "lambda", "operation": "Invoke", "function_error": "slow"}, "expected one of timeout"),
    ({**INVOKE_ENDPOINT, "error": "ThrottlingException", "times": 0}, "times: expected a whole number >= 1"),
    ({**INVOKE_ENDPOINT, "error": "ThrottlingException", "colour": "red"}, "unknown field(s) colour"),
])
def test_a_bad_rule_is_refused_naming_the_field(document, complaint):
    with pytest.raises(FaultRuleError, match=None) as raised:
        parse_rule(document, "r1")
    assert complaint in str(raised.value)


def test_times_after_and_nth_pick_the_calls():
    rules = RuleSet()
    rules.add({**INVOKE_ENDPOINT, "error": "ThrottlingException", "times": 2})
    assert fires(rules, 4) == [True, True, False, False]
    rules.clear()
    rules.add({**INVOKE_ENDPOINT, "error": "ThrottlingException", "after": 1, "times": 2})
    assert fires(rules, 5) == [False, True, True, False, False]
    rules.clear()
    rules.add({**INVOKE_ENDPOINT, "error": "ThrottlingException", "nth": 3})
    assert fires(rules, 5) == [False, False, True, False, False]
    [removed] = rules.clear()
    assert (removed["matched"], removed["fired"]) == (5, 1)
    assert not rules


def test_resource_matches_names_arns_and_s3_prefixes():
    rules = RuleSet()
    rules.add({"service": "lambda", "operation": "Invoke", "resource": "serialize", "error": "ServiceException"})
    rules.add({"service": "s3", "operation": "GetObject", "resource": "bucket/test/", "error": "SlowDown"})
    assert rules.decide("lambda", "Invoke", ("arn:aws:lambda:us-east-1:000000000000:function:serialize", "serialize"))
    assert rules.decide("lambda", "Invoke", ("classify",)) is None
    assert rules.decide("s3", "GetObject", ("bucket/test/bicycle/a.png",))
    assert rules.decide("s3", "GetObject", ("bucket/train/a.png",)) is None
    assert rules.decide("s3", "PutObject", ("bucket/test/a.png",)) is None
    assert [rule["fired"] for rule in rules.snapshot()] == [1, 1]


def test_a_seed_gives_the_same_sequence_twice():
    def sequence(seed: int) -> list[bool]:
        rules = RuleSet()
        rules.add({**INVOKE_ENDPOINT, "error": "ThrottlingException", "probability": 0.5, "seed": seed})
        return fires(rules, 40)

    first = sequence(7)
    assert first == sequence(7)
    assert 5 < sum(first) < 35           # it is a coin, not a constant
    assert first != sequence(8)


def test_latency_adds_up_and_the_first_error_answers():
    rules = RuleSet()
    rules.add({**INVOKE_ENDPOINT, "latency_ms": 30})
    first = rules.add({**INVOKE_ENDPOINT, "error": "ModelError", "latency_ms": 20, "times": 1})
    rules.add({**INVOKE_ENDPOINT, "error": "ThrottlingException"})
    decision = rules.decide("sagemaker-runtime", "InvokeEndpoint", ())
    assert decision.latency_s == pytest.approx(0.05) and decision.answer is first
    decision = rules.decide("sagemaker-runtime", "InvokeEndpoint", ())
    assert decision.answer.error.code == "ThrottlingException"
    # The throttling rule did not count the call the ModelError answered.
    assert [(rule["matched"], rule["fired"]) for rule in rules.snapshot()] == [(2, 2), (2, 1), (1, 1)]


def test_function_error_payloads_are_worded_as_aws_lambda_words_them():
    """AWS's Lambda answers a timed-out invoke with 200, X-Amz-Function-Error: Unhandled and
    {"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: <id> Error: Task timed out after 3.00 seconds"}
    (https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-invocation.html, "Sandbox.Timedout"); a sandbox
    killed for memory Runtime.OutOfMemory "Runtime exited with error: signal: killed", a runtime that exits
    during init Runtime.ExitError; harness/lambda_executor/executor.py answers real ones the same way."""
    rule = parse_rule({"service": "lambda", "operation": "Invoke", "function_error": "timeout"}, "r1")
    assert function_error_payload(rule, "req-1", 3) == {
        "errorType": "Sandbox.Timedout", "errorMessage": "RequestId: req-1 Error: Task timed out after 3.00 seconds"}
    rule = parse_rule({"service": "lambda", "operation": "Invoke", "function_error": "out_of_memory"}, "r2")
    assert function_error_payload(rule, "req-2", 3)["errorType"] == "Runtime.OutOfMemory"
