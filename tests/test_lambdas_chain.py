"""The three handlers chained the way the state machine chains them, each reaching its service
only through the standard AWS SDK endpoint settings: S3 on a moto server, the runtime on a fake."""
from __future__ import annotations

import io
import json

import boto3
import pytest
from support import unique_name
from moto.server import ThreadedMotoServer
from PIL import Image

from scones.lambdas import classify_image, clients, filter_inferences, serialize_image_data
from scones.lambdas.errors import ThresholdConfidenceNotMet


@pytest.fixture
def s3_server(fake_aws_credentials, monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    yield boto3.client("s3")
    server.stop()


@pytest.fixture
def chain(s3_server, fake_sagemaker_runtime, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "scones-chain-test")
    monkeypatch.delenv("THRESHOLD", raising=False)
    clients.reset()
    bucket = unique_name()
    s3_server.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 90, 200)).save(buffer, format="PNG")
    s3_server.put_object(Bucket=bucket, Key="test/motorcycle/m.png", Body=buffer.getvalue())
    yield bucket, fake_sagemaker_runtime
    clients.reset()


def run_chain(bucket: str) -> dict:
    """Each state's output through JSON, as Step Functions passes it ($.Payload of the invoke)."""
    state = {"image_data": "", "s3_bucket": bucket, "s3_key": "test/motorcycle/m.png"}
    for handler in (serialize_image_data, classify_image, filter_inferences):
        state = json.loads(json.dumps(handler.lambda_handler(state, None)))
    return state


def test_a_confident_image_goes_through(chain):
    bucket, runtime = chain
    runtime.reply("scones-chain-test", [0.03, 0.97])

    result = run_chain(bucket)

    assert result["statusCode"] == 200
    assert result["body"]["inferences"] == [0.03, 0.97]
    assert result["body"]["s3_bucket"] == bucket
    assert runtime.requests[0]["headers"]["Content-Type"] == "image/png"
    assert runtime.requests[0]["body"].startswith(b"\x89PNG")


def test_an_unsure_image_fails_loudly(chain):
    bucket, runtime = chain
    runtime.reply("scones-chain-test", [0.55, 0.45])
    with pytest.raises(ThresholdConfidenceNotMet, match="max confidence 0.5500 .* below the threshold 0.93"):
        run_chain(bucket)
