"""A hung endpoint (SIGSTOP) ends classifyImage in EndpointUnavailable, which the workflow retries.

Issue 26: with the endpoint server stopped, executions ended after 104 s in Sandbox.Timedout (the Lambda
timeout), which no retrier names, while the README promised EndpointUnavailable, retried. Now classifyImage
stops waiting when the time its context has left runs short (lambdas/classify_image.py). On the real local
stack: classifyImage's timeout is lowered to SHORT_TIMEOUT_S for the test (UpdateFunctionConfiguration, so the
function reads its budget from the context, as on AWS), the endpoint process is stopped, an execution starts,
and once its history shows classifyImage failed with EndpointUnavailable the endpoint is continued: the
state machine's retry then classifies the image and the workflow goes on to filterInferences. SIGCONT and the timeout are
restored whatever happens.

Sources: Lambda's timeout and Sandbox.Timedout ("Configure Lambda function timeout",
https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html); a function's errorType is the
exception's class name, which a Retrier's ErrorEquals matches, and the history records LambdaFunctionFailed or
TaskFailed with that error ("Handling errors in Step Functions workflows",
https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html; GetExecutionHistory's
HistoryEvent shapes in botocore/data/stepfunctions/2016-11-23/service-2.json).
"""
from __future__ import annotations

import os
import signal

import pytest

from support import poll

pytestmark = pytest.mark.e2e

SHORT_TIMEOUT_S = 12
FAILED_EVENTS = ("taskFailedEventDetails", "lambdaFunctionFailedEventDetails")


def failures(stepfunctions_client, execution_arn: str) -> list[tuple[str, str]]:
    events = stepfunctions_client.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [(details["error"], details.get("cause", "")) for event in events for key in FAILED_EVENTS
            if (details := event.get(key))]


def classify_attempts(stepfunctions_client, execution_arn: str, function_arn: str) -> int:
    events = stepfunctions_client.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return sum(1 for event in events
               if event["type"] == "TaskScheduled" and function_arn in event["taskScheduledEventDetails"]["parameters"])


@pytest.fixture
def short_classifier_timeout(scones_stack, lambda_client):
    function = scones_stack.function_arns["classifyImage"]
    original = lambda_client.get_function_configuration(FunctionName=function)["Timeout"]

    def set_timeout(seconds: int) -> None:
        lambda_client.update_function_configuration(FunctionName=function, Timeout=seconds)
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=function,
                                                             WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    set_timeout(SHORT_TIMEOUT_S)
    try:
        yield SHORT_TIMEOUT_S
    finally:
        set_timeout(original)


def test_a_hung_endpoint_is_endpoint_unavailable_and_the_workflow_retries_it(
        scones_target_name, scones_stack, stepfunctions_client, data_dir, short_classifier_timeout):
    if scones_target_name != "local":
        pytest.skip("stops the local endpoint server's process")
    image = sorted((data_dir / "test" / "bicycle").glob("*.png"))[0]
    key = f"test/bicycle/{image.name}"   # staged in the stack's bucket by `scones up`
    endpoint_pid = scones_stack.record["endpoint"]["pid"]
    os.kill(endpoint_pid, signal.SIGSTOP)
    try:
        execution = stepfunctions_client.start_execution(
            stateMachineArn=scones_stack.state_machine_arn,
            input=f'{{"s3_bucket": "{scones_stack.bucket}", "s3_key": "{key}"}}')["executionArn"]
        error, cause = poll(lambda: failures(stepfunctions_client, execution), 120,
                            what="classifyImage to fail while the endpoint is stopped")[0]
    finally:
        os.kill(endpoint_pid, signal.SIGCONT)
    # ended by the function itself inside its timeout, not by the Lambda timeout (Sandbox.Timedout)
    assert error == "EndpointUnavailable", (error, cause)
    assert "did not answer" in cause and "hung or overloaded" in cause
    ended = poll(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        stepfunctions_client.describe_execution(executionArn=execution)), 180, what="the retried execution to end")
    # The retry classified the image: the workflow went on to filterInferences, which passes or fails loudly
    # on the model's confidence (this test is about the endpoint, not the model).
    assert ended["status"] == "SUCCEEDED" or ended.get("error") == "ThresholdConfidenceNotMet", (
        ended["status"], ended.get("error"), failures(stepfunctions_client, execution))
    assert classify_attempts(stepfunctions_client, execution, scones_stack.function_arns["classifyImage"]) >= 2
