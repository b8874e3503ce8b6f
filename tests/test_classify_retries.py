"""classifyImage rides out transient endpoint faults and fails at once on bad input.

Against a real HTTP server on 127.0.0.1 that answers a scripted sequence, reached the standard way
(AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME). Sources for what is transient:
- botocore's standard retry mode (botocore/retries/standard.py, botocore 1.44): retries
  ConnectionError/HTTPClientError, HTTP 500/502/503/504, throttling error codes such as
  ThrottlingException, and a 429 only when its error code is not a modeled one;
- InvokeEndpoint's modeled errors (botocore/data/sagemaker-runtime/2017-05-13/service-2.json):
  InternalFailure 500, ServiceUnavailable 503, ValidationError 400, ModelError 424,
  InternalDependencyException 530, ModelNotReadyException 429 (none marked retryable, so botocore
  retries the 500 and the 503 by status but neither the 530 nor the 429);
- Step Functions, "Handle Lambda service exceptions"
  (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html): Retry on
  Lambda.ClientExecutionTimeoutException, Lambda.ServiceException, Lambda.AWSLambdaException,
  Lambda.SdkClientException with IntervalSeconds 2, MaxAttempts 6, BackoffRate 2; the same page names
  Lambda.TooManyRequestsException for Lambda's invocation limit;
- a function's own exception reaches Step Functions as its errorType, the Python class name, which a
  Retrier's ErrorEquals matches ("Handling errors in Step Functions workflows",
  https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html, and its tutorial
  "Handling error conditions", tutorial-handling-error-conditions.html): so EndpointUnavailable is
  retried and EndpointInvocationFailed is not, on AWS as in LocalStack;
- a function that outlives its timeout ends in Sandbox.Timedout ("Lambda function timeout",
  https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html; the error name in Step Functions'
  "Error handling" page), which no retrier here names; the time left is the context's
  get_remaining_time_in_millis() ("Using the Lambda context object to retrieve Python function information",
  https://docs.aws.amazon.com/lambda/latest/dg/python-context.html), so classifyImage ends before it.
"""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scones.deploy.packaging import function_spec
from scones.lambdas import clients, config
from scones.lambdas.classify_image import classify, lambda_handler
from scones.lambdas.classify_image import time_budget_s as classify_budget
from scones.lambdas.errors import EndpointInvocationFailed, EndpointUnavailable
from scones.state_machine.render import FUNCTION_NAMES, render_definition
from support import LambdaContext

ENDPOINT = "scones-retry-endpoint"
OK = (200, {}, b"[0.97, 0.03]")


def aws_error(status: int, code: str, message: str = "scripted", **extra) -> tuple[int, dict, bytes]:
    return status, {"x-amzn-ErrorType": code}, json.dumps({"Message": message, **extra}).encode()


class ScriptedRuntime:
    """Answers POST /endpoints/{name}/invocations with the scripted replies in order; the last one repeats."""

    def __init__(self, replies: list[tuple[int, dict, bytes]]):
        self.replies = list(replies)
        self.count = 0
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, body = runtime.replies[min(runtime.count, len(runtime.replies) - 1)]
                runtime.count += 1
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted(fake_aws_credentials, monkeypatch):
    servers = []

    def start(*replies):
        server = ScriptedRuntime(list(replies))
        servers.append(server)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
        clients.reset()
        return server

    yield start
    clients.reset()
    for server in servers:
        server.stop()


@pytest.mark.parametrize("fault", [
    aws_error(503, "ServiceUnavailable"),
    aws_error(500, "InternalFailure"),
    aws_error(502, "BadGateway"),
    aws_error(400, "ThrottlingException", "Rate exceeded"),
])
def test_transient_faults_are_retried_until_the_endpoint_answers(scripted, fault):
    runtime = scripted(fault, fault, OK)
    assert classify(b"png", ENDPOINT) == [0.97, 0.03]
    assert runtime.count == 3


def test_a_fault_that_outlasts_the_attempts_is_endpoint_unavailable(scripted):
    runtime = scripted(aws_error(503, "ServiceUnavailable", "the model is loading"))
    with pytest.raises(EndpointUnavailable, match=r"ServiceUnavailable \(HTTP 503\)"):
        classify(b"png", ENDPOINT)
    assert runtime.count == config.ENDPOINT_MAX_ATTEMPTS


def test_a_throttle_after_the_clients_retry_quota_is_spent_is_still_endpoint_unavailable(scripted):
    """botocore's standard mode spends a client's retry quota (500, 14 per retry of a 5xx and 5 per retry of a
    throttle, given back on success: botocore/retries/standard.py RetryQuotaChecker, botocore 1.44); once it
    is spent, a throttled call fails at its first attempt (RetryAttempts 0, RetryQuotaReached). A warm
    environment's client keeps its quota across invocations, so this happens to a busy function on AWS."""
    throttled = aws_error(400, "ThrottlingException", "Rate exceeded")
    runtime = scripted(aws_error(503, "ServiceUnavailable"))
    client = clients.sagemaker_runtime()

    def spend(limit: int) -> None:
        """Fail calls until one is refused a retry at its first attempt."""
        for _ in range(limit):
            try:
                client.invoke_endpoint(EndpointName=ENDPOINT, Body=b"png", ContentType="image/png")
            except client.exceptions.ClientError as error:
                metadata = error.response["ResponseMetadata"]
                if metadata.get("RetryQuotaReached") and metadata["RetryAttempts"] == 0:
                    return
        pytest.fail(f"{limit} failing calls did not spend the client's retry quota")

    spend(60)   # 503s back off from 50 ms: spending most of the quota takes seconds, not minutes
    runtime.replies = [throttled]
    spend(10)   # what is left is less than a 503's retry, perhaps enough for a throttle's
    runtime.count = 0

    with pytest.raises(EndpointUnavailable, match=r"ThrottlingException \(HTTP 400\)"):
        classify(b"png", ENDPOINT)
    assert runtime.count == 1


@pytest.mark.parametrize("fault", [aws_error(429, "ModelNotReadyException"), aws_error(530, "InternalDependencyException")])
def test_modeled_faults_botocore_does_not_retry_are_still_transient_for_the_workflow(scripted, fault):
    """botocore gives up on these at once; the state machine's EndpointUnavailable retrier takes over."""
    runtime = scripted(fault)
    with pytest.raises(EndpointUnavailable):
        classify(b"png", ENDPOINT)
    assert runtime.count == 1


@pytest.mark.parametrize("fault, shown", [
    (aws_error(424, "ModelError", "Received client error (415)", OriginalStatusCode=415,
               OriginalMessage="cannot identify image file"), "ModelError (HTTP 424)"),
    (aws_error(400, "ValidationError", f"Endpoint {ENDPOINT} of account 000000000000 not found."),
     "ValidationError (HTTP 400)"),
])
def test_bad_input_fails_at_once_with_its_own_error(scripted, fault, shown):
    runtime = scripted(fault, OK)
    with pytest.raises(EndpointInvocationFailed, match=re.escape(shown)) as error:
        classify(b"not a png", ENDPOINT)
    assert type(error.value) is EndpointInvocationFailed  # not EndpointUnavailable: nothing retries it
    assert runtime.count == 1


def test_an_endpoint_nobody_listens_on_is_retried_then_unavailable(fake_aws_credentials, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
    clients.reset()
    try:
        with pytest.raises(EndpointUnavailable, match=rf"at http://127.0.0.1:{port} .* in {config.ENDPOINT_MAX_ATTEMPTS} attempts"):
            classify(b"png", ENDPOINT)
    finally:
        clients.reset()


def test_the_function_timeout_leaves_room_for_every_attempt():
    assert function_spec("classifyImage").timeout > config.ENDPOINT_TIME_BUDGET_S
    assert config.ENDPOINT_READ_TIMEOUT_S > 60  # InvokeEndpoint's own limit on AWS


def test_the_workflow_retries_lambda_service_errors_everywhere_and_only_transient_endpoint_errors():
    definition = json.loads(render_definition(
        {name: f"arn:aws:lambda:us-east-1:000000000000:function:s-{name}" for name in FUNCTION_NAMES}))
    aws_recommended = {"Lambda.ClientExecutionTimeoutException", "Lambda.ServiceException",
                       "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
    for name, state in definition["States"].items():
        service = state["Retry"][0]
        assert set(service["ErrorEquals"]) == aws_recommended, name
        assert (service["IntervalSeconds"], service["MaxAttempts"], service["BackoffRate"]) == (2, 6, 2)
        caught = {error for retrier in state["Retry"] for error in retrier["ErrorEquals"]}
        # bad input must fail at once: no retrier may match it, nor everything
        assert not caught & {"States.ALL", "States.TaskFailed", "Lambda.Unknown", "EndpointInvocationFailed"}, name
    endpoint_retrier = definition["States"]["classifyImage"]["Retry"][1]
    assert endpoint_retrier["ErrorEquals"] == ["EndpointUnavailable"]
    waits = [endpoint_retrier["IntervalSeconds"] * endpoint_retrier["BackoffRate"] ** attempt
             for attempt in range(endpoint_retrier["MaxAttempts"])]
    assert sum(waits) >= 20  # rides out an endpoint restart (model load included) of 20 s or more



def test_a_hung_endpoint_is_endpoint_unavailable_before_the_function_times_out(fake_aws_credentials, monkeypatch):
    """A server that accepts connections and never answers (as a SIGSTOPped endpoint does: the kernel still
    completes the handshake): classifyImage must end with EndpointUnavailable, which the state machine retries,
    within the time its context says it has, not in a Lambda timeout that nothing retries."""

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)   # never accepted, never answered
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{hung.getsockname()[1]}")
    monkeypatch.setenv(config.ENDPOINT_NAME, ENDPOINT)
    clients.reset()
    event = {"body": {"s3_bucket": "b", "s3_key": "k.png", "image_data": "aW1hZ2U=", "inferences": []}}
    context = LambdaContext(timeout_s=config.ENDPOINT_REPORT_RESERVE_S + 3)
    try:
        with pytest.raises(EndpointUnavailable, match=r"did not answer for s3://b/k.png within \d+\.\d s.* hung or overloaded"):
            lambda_handler(event, context)
        left_ms = context.get_remaining_time_in_millis()
        assert 0 < left_ms <= config.ENDPOINT_REPORT_RESERVE_S * 1000
    finally:
        clients.reset()
        hung.close()


def test_the_time_budget_is_what_the_context_has_left_less_the_reserve():
    assert classify_budget(LambdaContext(timeout_s=103)) == pytest.approx(103 - config.ENDPOINT_REPORT_RESERVE_S, abs=0.1)
    # a very short remainder keeps half of itself for reporting rather than none
    assert classify_budget(LambdaContext(timeout_s=2)) == pytest.approx(1.0, abs=0.1)
    assert classify_budget(None) is None   # called as a library: no budget, botocore's own timeouts only
