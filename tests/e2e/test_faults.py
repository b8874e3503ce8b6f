"""Fault rules and the Step Functions time scale on the real local stack: the workflow's Retry rules at work.

Each test scales the stack's time by 0.001 (the `faults` fixture puts it back), so the state machine's
Retry (IntervalSeconds 2, BackoffRate 2) waits 2 ms, 4 ms... instead of 2 s, 4 s, while the history's
timestamps still show the intervals AWS would have waited. The Lambda functions' own botocore retries
run inside the function as on AWS (same attempts, same errors retried, same computed backoff); their
waits follow the scale too (harness/lambda_runtime/backoff_time_scale.py), and say so on the function's
log: "[scones] botocore retry backoff 0.734 s, waited 0.0007 s (time scale 0.001)". Five invocations
that each use up their client's attempts wait 30 s of Retry intervals and about 40 s of backoff on AWS:
75 ms here.
"""
from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from scones import settings
from scones.harness.faults import FaultsAPIError
from scones.polling import poll

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

SCALE = 0.001


@pytest.fixture
def lambda_once(scones_stack):
    """A Lambda client that makes one attempt per call: botocore would retry a throttled call itself."""
    from botocore.config import Config

    return scones_stack.session.client("lambda", region_name=scones_stack.region,
                                       config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def fast(faults):
    faults.time_scale(SCALE)
    return faults


@pytest.fixture
def fresh_classifier(scones_stack, lambda_client):
    """classifyImage in new execution environments, so that its client's retry quota is whole.

    botocore's standard mode keeps a retry quota per client (500; a throttle's retry costs 5, a 5xx's 14,
    botocore/retries/standard.py RetryQuotaChecker) and a warm environment keeps its client across
    invocations, so earlier tests' throttles and endpoint faults spend it, as they would on AWS (past it, a
    throttle fails at its first attempt). A configuration change replaces a function's environments, on
    AWS as here; the description is put back afterwards."""
    function = scones_stack.function_arns["classifyImage"]
    description = lambda_client.get_function_configuration(FunctionName=function).get("Description", "")

    def describe(text: str) -> None:
        lambda_client.update_function_configuration(FunctionName=function, Description=text)
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=function,
                                                             WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})

    describe(f"{description} (fresh environments for a retry test)".strip())
    yield function
    describe(description)


def history(stepfunctions_client, execution_arn: str) -> list[dict]:
    return stepfunctions_client.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def state_events(events: list[dict], state: str) -> list[dict]:
    """The events between `state`'s StateEntered and the next state's (its attempts, failures and exit)."""
    inside, found = False, []
    for event in events:
        if event["type"].endswith("StateEntered"):
            inside = event["stateEnteredEventDetails"]["name"] == state
        if inside:
            found.append(event)
    return found


def retry_gaps(events: list[dict]) -> list[float]:
    """Seconds from each TaskFailed to the TaskScheduled of the retry after it, by the history's clock."""
    gaps = []
    for failure, after in zip(events, events[1:]):
        if failure["type"] == "TaskFailed" and after["type"] == "TaskScheduled":
            gaps.append((after["timestamp"] - failure["timestamp"]).total_seconds())
    return gaps


def failures(events: list[dict]) -> list[str]:
    return [event["taskFailedEventDetails"]["error"] for event in events if event["type"] == "TaskFailed"]


def test_endpoint_not_ready_twice_then_answers(fast, confident_test_image, run_workflow, stepfunctions_client,
                                               scones_stack):
    """ModelNotReadyException is sagemaker-runtime's 429 (botocore/data/sagemaker-runtime/*/service-2.json);
    botocore's standard retry mode does not retry it (not a throttling code, not 500/502/503/504:
    botocore/retries/standard.py), so classifyImage fails with EndpointUnavailable (lambdas/classify_image.py
    treats a 429 as transient) and the state machine's EndpointUnavailable Retry (IntervalSeconds 2,
    BackoffRate 2: waits of 2 s then 4 s, https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html)
    tries again."""
    key, _ = confident_test_image("bicycle")
    rule = fast.add(service="sagemaker-runtime", operation="InvokeEndpoint", resource=scones_stack.endpoint_name,
                    error="ModelNotReadyException", times=2)
    saved_before = fast.client.time_scale()["saved_s"]

    result = run_workflow(key)

    assert result.status == "SUCCEEDED", f"{result.error}: {result.cause}"
    assert result.predicted_class == "bicycle"
    classify = state_events(history(stepfunctions_client, result.execution_arn), "classifyImage")
    assert failures(classify) == ["EndpointUnavailable", "EndpointUnavailable"]
    assert "ModelNotReadyException (HTTP 429)" in classify[3]["taskFailedEventDetails"]["cause"]
    gaps = retry_gaps(classify)
    assert len(gaps) == 2 and 2 <= gaps[0] < 3.5 and 4 <= gaps[1] < 5.5, gaps   # the unscaled intervals
    # The scale at work: of the 6 s the two retries wait on AWS, 99.9% were not waited here (the wall clock
    # of one execution on a loaded machine says little; benchmarks/faults.py times it). What was saved is
    # the interval less the time really waited, which a loaded machine stretches by a few tens of ms.
    assert 6 * (1 - SCALE) - 0.5 < fast.client.time_scale()["saved_s"] - saved_before <= 6 * (1 - SCALE) + 0.01
    assert fast.get(rule["id"])["fired"] == 2


def test_endpoint_not_ready_five_times_fails_after_the_retry_budget(fast, confident_test_image, run_workflow,
                                                                     stepfunctions_client, scones_stack):
    """The EndpointUnavailable Retry has MaxAttempts 4 (state_machine/definition.template.json): five failing
    invocations in all, then the execution fails with the state's error (ASL: a retrier whose attempts are
    exhausted lets the error through, https://states-language.net/spec.html#retrying-after-error)."""
    key, _ = confident_test_image("motorcycle")
    rule = fast.add(service="sagemaker-runtime", operation="InvokeEndpoint", resource=scones_stack.endpoint_name,
                    error="ModelNotReadyException", times=5)

    result = run_workflow(key)

    assert result.status == "FAILED" and result.error == "EndpointUnavailable", result.cause
    assert result.failed_state == "classifyImage"
    classify = state_events(history(stepfunctions_client, result.execution_arn), "classifyImage")
    assert failures(classify) == ["EndpointUnavailable"] * 5
    assert [round(gap) for gap in retry_gaps(classify)] == [2, 4, 8, 16]
    assert fast.get(rule["id"])["fired"] == 5


def backoff_waits(scones_stack, function: str, since_ms: int, expected: int) -> list[tuple[float, float]]:
    """(backoff botocore computed, seconds waited) of each retry the function's own client made since
    `since_ms`, from its CloudWatch log (the function's log reaches CloudWatch Logs after the invoke)."""
    logs = scones_stack.client("logs")
    group = f"/aws/lambda/{function.rsplit(':', 1)[-1]}"

    def read() -> list[tuple[float, float]]:
        messages = [event["message"] for page in logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, startTime=since_ms) for event in page["events"]]
        return [(float(found[1]), float(found[2])) for message in messages
                if (found := re.search(BACKOFF_LINE, message))]

    return poll(read, timeout=30, interval=0.2, until=lambda waits: len(waits) >= expected)


BACKOFF_LINE = r"\[scones\] botocore retry backoff ([\d.]+) s, waited ([\d.]+) s"
# classifyImage's client (lambdas/clients.py, lambdas/config.py): botocore's standard mode, 5 attempts in all
# (`total_max_attempts` counts the first one: botocore/config.py). Standard mode retries ThrottlingException,
# a throttling code (botocore/retries/standard.py ThrottledRetryableChecker), after rand(0, 1) * 2 ** i s
# (ExponentialBackoff.delay_amount: base 1 s for throttles, at most 20 s).
CLIENT_ATTEMPTS = 5


def test_endpoint_throttled_twice_is_absorbed_by_the_functions_own_retries(fast, fresh_classifier, confident_test_image, run_workflow,
                                                                           stepfunctions_client, scones_stack):
    """ThrottlingException (400, AWS's common errors: https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html)
    twice: classifyImage's client retries it itself (attempts 2 and 3 answer), so the state machine never sees
    it: the history has no failure, the function's log has the client's two backoffs, the rule fired twice."""
    key, _ = confident_test_image("bicycle")
    function = fresh_classifier
    rule = fast.add(service="sagemaker-runtime", operation="InvokeEndpoint", resource=scones_stack.endpoint_name,
                    error="ThrottlingException", times=2)
    since_ms = int(time.time() * 1000)

    result = run_workflow(key)

    assert result.status == "SUCCEEDED", f"{result.error}: {result.cause}"
    assert failures(history(stepfunctions_client, result.execution_arn)) == []
    assert fast.get(rule["id"])["fired"] == 2
    waits = backoff_waits(scones_stack, function, since_ms, expected=2)
    assert len(waits) == 2
    for attempt, (backoff, waited) in enumerate(waits):
        assert backoff <= 2 ** attempt and waited == pytest.approx(backoff * SCALE, abs=1e-3)


def test_endpoint_throttled_past_the_clients_attempts_twice_then_answers(fast, fresh_classifier, confident_test_image, run_workflow,
                                                                          stepfunctions_client, scones_stack):
    """The endpoint throttles long enough to outlast classifyImage's own 5 attempts, twice (10 throttled calls):
    each time the client gives up with ThrottlingException (RetryAttempts 4), the function fails with
    EndpointUnavailable (lambdas/classify_image.py: an error botocore retried is transient), and the state
    machine's EndpointUnavailable Retry (IntervalSeconds 2, BackoffRate 2: 2 s then 4 s,
    https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html) invokes it again; the
    third invocation is answered. The history shows the two retries at AWS's intervals; the function's log
    shows its client's 8 backoffs."""
    key, _ = confident_test_image("bicycle")
    function = fresh_classifier
    rule = fast.add(service="sagemaker-runtime", operation="InvokeEndpoint", resource=scones_stack.endpoint_name,
                    error="ThrottlingException", times=2 * CLIENT_ATTEMPTS)
    saved_before = fast.client.time_scale()["saved_s"]
    since_ms = int(time.time() * 1000)

    result = run_workflow(key)

    assert result.status == "SUCCEEDED", f"{result.error}: {result.cause}"
    assert result.predicted_class == "bicycle"
    classify = state_events(history(stepfunctions_client, result.execution_arn), "classifyImage")
    assert failures(classify) == ["EndpointUnavailable", "EndpointUnavailable"]
    causes = [event["taskFailedEventDetails"]["cause"] for event in classify if event["type"] == "TaskFailed"]
    assert all("ThrottlingException (HTTP 400): Rate exceeded" in cause for cause in causes), causes
    gaps = retry_gaps(classify)
    assert len(gaps) == 2 and 2 <= gaps[0] < 3.5 and 4 <= gaps[1] < 5.5, gaps   # the unscaled intervals
    assert 6 * (1 - SCALE) - 0.5 < fast.client.time_scale()["saved_s"] - saved_before <= 6 * (1 - SCALE) + 0.01
    assert fast.get(rule["id"])["fired"] == 2 * CLIENT_ATTEMPTS
    assert len(backoff_waits(scones_stack, function, since_ms, expected=2 * (CLIENT_ATTEMPTS - 1))) == 8


def test_endpoint_throttled_without_end_fails_with_endpoint_unavailable_after_the_retry_budget(
        fast, fresh_classifier, confident_test_image, run_workflow, stepfunctions_client, scones_stack):
    """Every InvokeEndpoint throttled: five invocations of classifyImage (the first and the EndpointUnavailable
    Retry's MaxAttempts 4, state_machine/definition.template.json), each making its client's 5 attempts, then
    the execution fails with the state's error (a retrier whose attempts are exhausted lets the error through:
    https://states-language.net/spec.html#retrying-after-error). Waited here: the state machine's 30 s and the
    clients' backoffs (up to 5 * 15 s), each a thousandth."""
    key, _ = confident_test_image("motorcycle")
    rule = fast.add(service="sagemaker-runtime", operation="InvokeEndpoint", resource=scones_stack.endpoint_name,
                    error="ThrottlingException")

    result = run_workflow(key)

    assert result.status == "FAILED" and result.error == "EndpointUnavailable", result.cause
    assert result.failed_state == "classifyImage"
    assert "ThrottlingException (HTTP 400): Rate exceeded" in result.cause
    classify = state_events(history(stepfunctions_client, result.execution_arn), "classifyImage")
    assert failures(classify) == ["EndpointUnavailable"] * 5
    assert [round(gap) for gap in retry_gaps(classify)] == [2, 4, 8, 16]
    assert fast.get(rule["id"])["fired"] == 5 * CLIENT_ATTEMPTS


@pytest.mark.parametrize("state", ["serializeImageData", "classifyImage", "filterInferences"])
def test_lambda_service_exception_on_a_tasks_first_invoke_is_retried(fast, confident_test_image, run_workflow,
                                                                     stepfunctions_client, scones_stack, state):
    """Lambda's ServiceException is HTTP 500 (botocore/data/lambda/*/service-2.json); Step Functions reports it
    as Lambda.ServiceException (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html),
    which each task's first Retry rule matches. The rule fires on the call Step Functions makes itself."""
    key, _ = confident_test_image("bicycle")
    function = scones_stack.function_arns[state]
    rule = fast.add(service="lambda", operation="Invoke", resource=function, error="ServiceException", times=1)

    result = run_workflow(key)

    assert result.status == "SUCCEEDED", f"{result.error}: {result.cause}"
    task = state_events(history(stepfunctions_client, result.execution_arn), state)
    assert failures(task) == ["Lambda.ServiceException"]
    assert "Status Code: 500; Error Code: ServiceException" in task[3]["taskFailedEventDetails"]["cause"]
    assert [round(gap) for gap in retry_gaps(task)] == [2]
    assert fast.get(rule["id"])["fired"] == 1


def test_s3_slow_down_on_the_image_read(fast, confident_test_image, run_workflow, scones_stack):
    """S3's SlowDown is 503 (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html) and a
    throttling code botocore retries (botocore/retries/standard.py); the serializer's client makes 4 attempts
    in all (lambdas/clients.py `total_max_attempts`): one SlowDown is absorbed, four fail the read
    (ImageReadFailed, lambdas/serialize_image_data.py), which no Retry matches. The backoff between them
    (random, up to 1, 2, 4 s) runs inside the function, scaled."""
    key, _ = confident_test_image("bicycle")
    once = fast.add(service="s3", operation="GetObject", resource=f"{scones_stack.bucket}/{key}", error="SlowDown",
                    times=1)
    assert run_workflow(key).status == "SUCCEEDED"
    assert fast.get(once["id"])["fired"] == 1

    four = fast.add(service="s3", operation="GetObject", resource=f"{scones_stack.bucket}/{key}", error="SlowDown",
                    times=4)
    result = run_workflow(key)

    assert result.status == "FAILED" and result.error == "ImageReadFailed", result.cause
    assert result.failed_state == "serializeImageData"
    assert "SlowDown: Please reduce your request rate." in result.cause
    assert fast.get(four["id"])["fired"] == 4


def test_sandbox_timeout_fails_the_classifier(fast, confident_test_image, run_workflow, scones_stack, lambda_client):
    """A function that runs out of time: Lambda answers the invoke 200 with X-Amz-Function-Error: Unhandled and
    {"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: ... Error: Task timed out after N.NN seconds"}
    (https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-invocation.html); no Retry of the workflow
    matches a function's own failure (only Lambda.* service errors and EndpointUnavailable), so it fails."""
    key, _ = confident_test_image("bicycle")
    function = scones_stack.function_arns["classifyImage"]
    timeout = lambda_client.get_function_configuration(FunctionName=function)["Timeout"]
    rule = fast.add(service="lambda", operation="Invoke", resource=function, function_error="timeout", times=2)

    direct = lambda_client.invoke(FunctionName=function, Payload=b"{}")
    assert direct["StatusCode"] == 200 and direct["FunctionError"] == "Unhandled"
    payload = json.loads(direct["Payload"].read())
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith(f"Error: Task timed out after {timeout:.2f} seconds")

    result = run_workflow(key)

    assert result.status == "FAILED" and result.failed_state == "classifyImage"
    assert json.loads(result.cause)["errorType"] == "Sandbox.Timedout"
    assert fast.get(rule["id"])["fired"] == 2


@pytest.mark.parametrize("kind, error_type, message", [
    ("out_of_memory", "Runtime.OutOfMemory", "Error: Runtime exited with error: signal: killed"),
    ("init_error", "Runtime.ExitError", "Error: Runtime exited with error: exit status 1"),
])
def test_function_killed_for_memory_or_failing_init(faults, scones_stack, lambda_client, kind, error_type, message):
    """What AWS's Lambda answers for a sandbox the OOM killer ended and for a runtime that exited during init
    (errorType Runtime.OutOfMemory / Runtime.ExitError, "RequestId: <id> Error: Runtime exited with error: ...":
    https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-invocation.html; harness/lambda_executor/executor.py
    words real ones the same), with FunctionError Unhandled, and only for the function the rule names."""
    function = scones_stack.function_arns["filterInferences"]
    faults.add(service="lambda", operation="Invoke", resource=function, function_error=kind, times=1)

    reply = lambda_client.invoke(FunctionName=function, Payload=b"{}")

    assert reply["StatusCode"] == 200 and reply["FunctionError"] == "Unhandled"
    payload = json.loads(reply["Payload"].read())
    assert payload["errorType"] == error_type and payload["errorMessage"].endswith(message)
    assert payload["errorMessage"].startswith(f"RequestId: {reply['ResponseMetadata']['RequestId']} ")


def test_rules_are_listed_counted_and_cleared_over_http(faults, scones_stack, lambda_once):
    """The HTTP API other languages' tests use: POST adds, GET lists with counts, DELETE clears. Lambda's
    TooManyRequestsException is 429 (botocore/data/lambda/*/service-2.json)."""
    url = scones_stack.record["localstack"]["url"] + "/_scones/faults"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = json.dumps({"service": "lambda", "operation": "GetFunction", "error": "TooManyRequestsException",
                       "nth": 2}).encode()
    with opener.open(urllib.request.Request(url, data=body, method="POST")) as reply:
        assert reply.status == 201
        rule = json.loads(reply.read())["rule"]
    function = scones_stack.function_arns["filterInferences"]
    lambda_once.get_function(FunctionName=function)
    with pytest.raises(lambda_once.exceptions.TooManyRequestsException) as raised:
        lambda_once.get_function(FunctionName=function)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    lambda_once.get_function(FunctionName=function)
    with opener.open(url) as reply:
        [listed] = [r for r in json.loads(reply.read())["rules"] if r["id"] == rule["id"]]
    assert (listed["matched"], listed["fired"]) == (3, 1)
    with opener.open(urllib.request.Request(url, method="DELETE")) as reply:
        assert rule["id"] in [r["id"] for r in json.loads(reply.read())["removed"]]
    assert faults.list() == []


def test_a_bad_rule_is_refused_with_the_reason(faults):
    with pytest.raises(FaultsAPIError, match="operation: lambda has no operation 'Invok'"):
        faults.add(service="lambda", operation="Invok", error="ServiceException")


def test_a_seeded_rule_gives_the_same_sequence_twice(faults, scones_stack, lambda_once):
    function = scones_stack.function_arns["filterInferences"]

    def sequence() -> list[bool]:
        rule = faults.add(service="lambda", operation="GetFunction", error="TooManyRequestsException",
                          probability=0.5, seed=23)
        outcomes = []
        for _ in range(16):
            try:
                lambda_once.get_function(FunctionName=function)
                outcomes.append(False)
            except lambda_once.exceptions.TooManyRequestsException:
                outcomes.append(True)
        faults.clear()
        assert rule["seed"] == 23
        return outcomes

    first = sequence()
    assert first == sequence()
    assert 0 < sum(first) < 16


def test_wait_and_timeout_follow_the_time_scale(fast, stepfunctions_client, scones_stack):
    """A Wait of 30 s and a Task whose TimeoutSeconds (1 s) passes while a latency rule holds its Lambda
    invoke: with the scale, both end in a fraction of their time; the history shows the Wait's 30 s and
    the task failing with States.Timeout (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html)."""
    function = scones_stack.function_arns["filterInferences"]
    definition = {"StartAt": "pause", "States": {
        "pause": {"Type": "Wait", "Seconds": 30, "Next": "slow"},
        "slow": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "TimeoutSeconds": 1,
                 "Parameters": {"FunctionName": function, "Payload": {}}, "End": True}}}
    machine = stepfunctions_client.create_state_machine(
        name=f"scones-time-scale-{time.time_ns()}", definition=json.dumps(definition),
        roleArn=scones_stack.record.get("role_arn") or "arn:aws:iam::000000000000:role/scones-test")["stateMachineArn"]
    fast.add(service="lambda", operation="Invoke", resource=function, latency_ms=1500, times=1)
    try:
        started = time.monotonic()
        execution = stepfunctions_client.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        described = poll(lambda: stepfunctions_client.describe_execution(executionArn=execution), timeout=30,
                         interval=0.05, until=lambda found: found["status"] != "RUNNING")
        wall = time.monotonic() - started
        events = history(stepfunctions_client, execution)
    finally:
        stepfunctions_client.delete_state_machine(stateMachineArn=machine)

    assert described["status"] == "FAILED" and described["error"] == "States.Timeout"
    by_type = {event["type"]: event for event in events}
    waited = (by_type["WaitStateExited"]["timestamp"] - by_type["WaitStateEntered"]["timestamp"]).total_seconds()
    assert 30 <= waited < 31.5, waited
    assert wall < 30, wall        # unscaled, the Wait alone takes 30 s


def test_cli_adds_lists_and_clears(faults, scones_stack):
    from click.testing import CliRunner

    from scones.harness.commands.faults import faults as command

    url = ["--localstack-url", scones_stack.record["localstack"]["url"]]
    runner = CliRunner()
    added = runner.invoke(command, ["add", "--service", "s3", "--operation", "GetObject", "--resource",
                                    f"{scones_stack.bucket}/nothing-here/", "--error", "SlowDown", "--times", "2", *url])
    assert added.exit_code == 0, added.output
    assert "s3 GetObject" in added.output and "error SlowDown (HTTP 503)" in added.output
    listed = runner.invoke(command, ["list", "--json", *url])
    assert [rule["error"]["code"] for rule in json.loads(listed.output)] == ["SlowDown"]
    cleared = runner.invoke(command, ["clear", *url])
    assert cleared.exit_code == 0 and "removed 1 rule(s)" in cleared.output
    assert faults.list() == []
    scaled = runner.invoke(command, ["time-scale", "0.5", *url])
    assert scaled.exit_code == 0 and "time scale 0.5" in scaled.output, scaled.output
    runner.invoke(command, ["time-scale", "1", *url])


NEVER_FIRING_TEST = '''
def test_adds_a_rule_for_a_bucket_nobody_reads(faults, scones_stack):
    faults.add(service="s3", operation="GetObject", resource="no-such-bucket/", error="SlowDown")
    fired = faults.add(service="s3", operation="HeadBucket", resource=scones_stack.bucket, error="SlowDown", times=1)
    try:
        scones_stack.client("s3").head_bucket(Bucket=scones_stack.bucket)
    except Exception:
        pass
    assert faults.get(fired["id"])["fired"] == 1
'''


def test_a_fault_rule_that_never_fired_is_named_at_the_end_of_the_session(pytester, scones_stack, monkeypatch):
    """A rule that never fired means a test did not test what it meant to; the session's summary names it
    (and its test), and not the rule that fired."""
    pytester.makepyfile(test_inner=NEVER_FIRING_TEST)
    # The inner session runs in pytester's folder: it attaches to this session's stack through its state dir.
    monkeypatch.setenv(settings.STATE_DIR, str(scones_stack.record_path.parent.parent))

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    summary = output[output.index("scones fault rules that never fired"):]
    assert "test_inner.py::test_adds_a_rule_for_a_bucket_nobody_reads:" in summary
    assert "s3 GetObject no-such-bucket/: error SlowDown (HTTP 503)  matched 0, fired 0" in summary
    assert "HeadBucket" not in summary
