"""classifyImage: every path, against a small local server that speaks the SageMaker runtime API."""
from __future__ import annotations

import base64
import socket

import pytest
from support import load_event

from scones.lambdas import clients
from scones.lambdas.classify_image import lambda_handler
from scones.lambdas.errors import EndpointInvocationFailed, InvalidInferences, InvalidInput


@pytest.fixture
def runtime(fake_sagemaker_runtime, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "scones-test-endpoint")
    clients.reset()
    yield fake_sagemaker_runtime
    clients.reset()


def test_stores_the_endpoint_inferences(runtime, lambda_context):
    runtime.reply("scones-test-endpoint", [0.98, 0.02])
    event = load_event("classify_image_input")

    result = lambda_handler(event, lambda_context)

    assert result == {"statusCode": 200, "body": {**event["body"], "inferences": [0.98, 0.02]}}
    (request,) = runtime.requests
    assert request["path"] == "/endpoints/scones-test-endpoint/invocations"
    assert request["headers"]["Content-Type"] == "image/png"
    assert request["body"] == base64.b64decode(event["body"]["image_data"])


def test_uses_the_default_endpoint_name_without_environment(runtime, monkeypatch, lambda_context):
    monkeypatch.delenv("ENDPOINT_NAME")
    runtime.reply("scones-classifier", [0.1, 0.9])
    assert lambda_handler(load_event("classify_image_input"), lambda_context)["body"]["inferences"] == [0.1, 0.9]


def test_accepts_a_batch_of_one(runtime, lambda_context):
    runtime.reply("scones-test-endpoint", [[0.25, 0.75]])
    assert lambda_handler(load_event("classify_image_input"), lambda_context)["body"]["inferences"] == [0.25, 0.75]


def test_reuses_the_runtime_client_across_warm_invocations(runtime, lambda_context):
    runtime.reply("scones-test-endpoint", [0.5, 0.5])
    lambda_handler(load_event("classify_image_input"), lambda_context)
    first = clients.sagemaker_runtime()
    lambda_handler(load_event("classify_image_input"), lambda_context)
    assert clients.sagemaker_runtime() is first
    assert len(runtime.requests) == 2


def test_unknown_endpoint_names_the_endpoint(runtime, lambda_context):
    with pytest.raises(EndpointInvocationFailed) as error:
        lambda_handler(load_event("classify_image_input"), lambda_context)
    message = str(error.value)
    assert "endpoint 'scones-test-endpoint' failed" in message
    assert "ValidationError (HTTP 400)" in message and "not found" in message
    assert "s3://scones-local/test/bicycle/bicycle_s_000030.png" in message


def test_model_error_carries_what_the_model_answered(runtime, lambda_context):
    runtime.reply(
        "scones-test-endpoint",
        {"Message": "Received server error (500) from primary", "OriginalStatusCode": 500,
         "OriginalMessage": "cannot identify image file",
         "LogStreamArn": "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/x"},
        status=424,
        headers={"x-amzn-ErrorType": "ModelError"},
    )
    with pytest.raises(EndpointInvocationFailed) as error:
        lambda_handler(load_event("classify_image_input"), lambda_context)
    message = str(error.value)
    assert "ModelError (HTTP 424)" in message
    assert "the model answered HTTP 500: cannot identify image file" in message


def test_unreachable_endpoint_names_the_url(fake_aws_credentials, monkeypatch, lambda_context):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
    clients.reset()
    with pytest.raises(EndpointInvocationFailed, match=rf"could not invoke endpoint 'scones-classifier' at http://127.0.0.1:{port}"):
        lambda_handler(load_event("classify_image_input"), lambda_context)
    clients.reset()


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"<html>oops</html>", "are not JSON"),
        ({"predictions": [0.9, 0.1]}, "must be a list of 2 probabilities"),
        ([0.2, 0.3, 0.5], "must hold 2 probabilities"),
        ([1.5, -0.5], "not a probability"),
        (["0.9", "0.1"], "not a finite number"),
    ],
)
def test_refuses_a_reply_that_is_not_probabilities(runtime, lambda_context, payload, message):
    runtime.reply("scones-test-endpoint", payload)
    with pytest.raises(InvalidInferences, match=message) as error:
        lambda_handler(load_event("classify_image_input"), lambda_context)
    assert "endpoint 'scones-test-endpoint'" in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda event: event.pop("body"), "has no 'body'"),
        (lambda event: event["body"].update(image_data=""), "'image_data' is empty"),
        (lambda event: event["body"].update(image_data="not base64!"), "is not valid base64"),
        (lambda event: event["body"].pop("s3_key"), "has no 's3_key'"),
    ],
)
def test_refuses_a_bad_state(runtime, lambda_context, change, message):
    event = load_event("classify_image_input")
    change(event)
    with pytest.raises(InvalidInput, match=message):
        lambda_handler(event, lambda_context)
    assert runtime.requests == []
