"""The local endpoint through boto3's sagemaker-runtime client and the container contract.

Every error case asserts the exception class botocore raises against real SageMaker.
"""
from __future__ import annotations

import io
import json
import math
import signal
import tarfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from scones import settings
from scones.harness.endpoint import EndpointServer, EndpointStartError
from scones.testing import build_stub_model

ENDPOINT = "test-endpoint"


def runtime_client(url: str):
    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def read_test_image(label: str = "bicycle", index: int = 0) -> bytes:
    folder = settings.data_dir() / "test" / label
    files = sorted(folder.glob("*.png"))
    if not files:
        pytest.skip(f"no test images in {folder}")
    return files[index].read_bytes()


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory) -> Path:
    return build_stub_model(tmp_path_factory.mktemp("stub-model"))


@pytest.fixture(scope="module")
def endpoint(stub_model):
    with EndpointServer(stub_model, endpoint_name=ENDPOINT) as server:
        yield server


@pytest.fixture(scope="module")
def client(endpoint):
    return runtime_client(endpoint.url)


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --- success ------------------------------------------------------------------------------------

def test_real_image_gets_two_probabilities_summing_to_one(client):
    reply = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=read_test_image())
    probabilities = json.loads(reply["Body"].read())
    assert reply["ContentType"] == "application/json"
    assert reply["InvokedProductionVariant"] == "AllTraffic"
    assert len(probabilities) == 2
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-5)
    assert reply["ResponseMetadata"]["RequestId"]


def test_accept_and_target_variant_that_match_are_honoured(client):
    reply = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Accept="application/json",
                                   TargetVariant="AllTraffic", CustomAttributes="trace=1", Body=read_test_image())
    assert len(json.loads(reply["Body"].read())) == 2


def test_container_contract_ping_and_invocations(endpoint, client):
    with urllib.request.urlopen(f"{endpoint.url}/ping") as reply:
        assert reply.status == 200
    request = urllib.request.Request(f"{endpoint.url}/invocations", data=read_test_image("motorcycle"),
                                     headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(request) as reply:
        container_answer = json.loads(reply.read())
    runtime_answer = json.loads(client.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/png", Body=read_test_image("motorcycle"))["Body"].read())
    assert container_answer == runtime_answer


def test_container_invocations_answer_with_the_handler_status(endpoint):
    request = urllib.request.Request(f"{endpoint.url}/invocations", data=b"hello",
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 500
    assert b"Unsupported content type" in caught.value.read()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST with exactly these headers (urllib adds a form Content-Type to a body without one)."""
    import http.client
    from urllib.parse import urlsplit

    connection = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def test_handlers_get_what_the_toolkit_passes_them(tmp_path):
    """sagemaker_inference/transformer.py (sagemaker-pytorch-inference 2.0.25): the Content-Type as sent or None
    (utils.retrieve_content_type_header), a JSON/CSV body decoded as UTF-8, any other body as TorchServe's
    bytearray, Accept missing or */* -> application/json, a body alone answered as the Accept type; a failure is
    500 with "<message>\\n<traceback>" and no Content-Type. tests/parity compares with the real toolkit."""
    script = textwrap.dedent("""
        import json
        def model_fn(model_dir):
            return None
        def transform_fn(model, body, content_type, accept):
            return json.dumps([type(body).__name__, content_type, accept])
    """)
    archive = write_archive(tmp_path / "model.tar.gz", {"code/inference.py": script.encode()})
    with EndpointServer(archive, endpoint_name=ENDPOINT) as server:
        seen = {}
        for name, body, headers in [("none", b"\x89PNG", {}), ("json", b"[1]", {"Content-Type": "application/json"}),
                                    ("png", b"\x89PNG", {"Content-Type": "image/png", "Accept": "*/*"})]:
            status, reply_headers, reply = _post(server.url, body, headers)
            assert (status, reply_headers["content-type"]) == (200, "application/json"), reply
            seen[name] = json.loads(reply)
        failed = _post(server.url, b"\x89PNG", {"Content-Type": "text/csv"})
        with urllib.request.urlopen(f"{server.url}/ping") as ping:
            assert ping.read() == b'{\n  "status": "Healthy"\n}\n'
    assert seen == {"none": ["bytearray", None, "application/json"],
                    "json": ["str", "application/json", "application/json"],
                    "png": ["bytearray", "image/png", "application/json"]}
    status, headers, body = failed
    assert status == 500 and "content-type" not in headers
    assert body.startswith(b"'utf-8' codec can't decode byte 0x89 in position 0") and b"\nTraceback" in body


# --- errors as AWS shapes them --------------------------------------------------------------------

def test_unknown_endpoint_is_a_validation_error(client):
    with pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint(EndpointName="no-such-endpoint", ContentType="image/png", Body=read_test_image())
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "no-such-endpoint" in error["Error"]["Message"]


def test_unknown_target_variant_is_a_validation_error(client):
    with pytest.raises(client.exceptions.ValidationError):
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", TargetVariant="Canary",
                               Body=read_test_image())


@pytest.mark.parametrize("content_type, body, message", [
    ("text/plain", b"a bicycle, honest", "Unsupported content type"),
    ("image/png", b"\x89PNG but not really", "cannot identify image"),
])
def test_handler_failures_are_model_errors(client, content_type, body, message):
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType=content_type, Body=body)
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 500  # a plain exception in a handler, as in the PyTorch container
    assert message in error["OriginalMessage"]
    assert error["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{ENDPOINT}")
    assert "Received server error (500) from primary" in error["Error"]["Message"]


def test_an_answer_slower_than_invoke_endpoint_waits_is_a_model_error_with_status_0(tmp_path):
    """InvokeEndpoint waits 60 s for the container (API_runtime_InvokeEndpoint); then SageMaker answers
    424 ModelError 'Received server error (0) from primary with message "Your invocation timed out while
    waiting for a response from container primary. ..."' (as users report it, e.g.
    aws/amazon-sagemaker-examples#1407). The limit is shortened here; its default is AWS's."""
    release = tmp_path / "release"
    script = textwrap.dedent(f"""
        import os, time
        def model_fn(model_dir):
            return None
        def transform_fn(model, body, content_type, accept):
            deadline = time.monotonic() + 30
            while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
                time.sleep(0.02)
            return b"[1.0, 0.0]", "application/json"
    """)
    archive = write_archive(tmp_path / "model.tar.gz", {"code/inference.py": script.encode()})
    with EndpointServer(archive, endpoint_name=ENDPOINT, invoke_timeout_s=0.3) as server:
        client = runtime_client(server.url)
        with pytest.raises(client.exceptions.ModelError) as caught:
            client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"x")
        release.touch()
        assert "OriginalStatusCode" not in caught.value.response
        assert caught.value.response["Error"]["Message"].startswith(
            'Received server error (0) from primary with message "Your invocation timed out while waiting for a '
            'response from container primary.')
        reply = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"x")
        assert json.loads(reply["Body"].read()) == [1.0, 0.0]


def test_body_over_6_mib_is_rejected_like_aws(client):
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"\0" * (6 * 1024 * 1024 + 1))
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "413"  # AWS's front end sends no error type: botocore uses the status
    assert "6291456" in error["Error"]["Message"]


def test_body_of_exactly_6_mib_reaches_the_model(client):
    with pytest.raises(client.exceptions.ModelError):  # accepted, then the stub cannot read it as PNG
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"\0" * (6 * 1024 * 1024))


# --- the container's default handlers and readiness ---------------------------------------------

@pytest.fixture(scope="module")
def torchscript_only_model(tmp_path_factory):
    """No code/inference.py at all: the container's default model_fn/input_fn/predict_fn/output_fn."""
    import torch

    folder = tmp_path_factory.mktemp("torchscript-model")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), buffer)
    return write_archive(folder / "model.tar.gz", {"model.pt": buffer.getvalue()})


def test_missing_handlers_fall_back_to_the_container_defaults(torchscript_only_model):
    """DefaultPytorchInferenceHandler (sagemaker-pytorch-inference 2.0.25): TorchScript model.pt, JSON/CSV
    decoded to a FloatTensor, the answer encoded for Accept (np.savetxt for CSV: one value per line for a
    1-D prediction), and an unsupported type raises sagemaker_inference.errors.UnsupportedFormatError, a
    plain Exception, which Transformer.transform answers with 500. tests/parity runs the real toolkit on
    the same archive."""
    with EndpointServer(torchscript_only_model, endpoint_name=ENDPOINT) as server:
        client = runtime_client(server.url)
        json_reply = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                            Body=json.dumps([[1.0, 2.0, 3.0]]))
        assert json_reply["ContentType"] == "application/json"
        assert len(json.loads(json_reply["Body"].read())[0]) == 2
        csv_reply = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Accept="text/csv",
                                           Body="1,2,3")
        assert csv_reply["ContentType"] == "text/csv"
        assert len(csv_reply["Body"].read().decode().splitlines()) == 2
        with pytest.raises(client.exceptions.ModelError) as caught:
            client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"png")
        assert caught.value.response["OriginalStatusCode"] == 500
        assert "Content type image/png is not supported by this framework" in caught.value.response["OriginalMessage"]


def test_ping_is_503_until_the_model_is_loaded(tmp_path):
    release = tmp_path / "release"
    script = textwrap.dedent(f"""
        import os, time
        def model_fn(model_dir):
            deadline = time.monotonic() + 60
            while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
                time.sleep(0.02)
            return object()
        def transform_fn(model, body, content_type, accept):
            return b"[1.0, 0.0]", "application/json"
    """)
    archive = write_archive(tmp_path / "model.tar.gz", {"code/inference.py": script.encode()})
    with EndpointServer(archive, endpoint_name=ENDPOINT).start(wait=False) as server:
        with pytest.raises(EndpointStartError, match="HTTP 503"):
            server.wait_ready(timeout_s=0.5)
        with pytest.raises(runtime_client(server.url).exceptions.ServiceUnavailable):
            runtime_client(server.url).invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"x")
        release.touch()
        server.wait_ready(timeout_s=30)
        reply = runtime_client(server.url).invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"x")
        assert json.loads(reply["Body"].read()) == [1.0, 0.0]


def test_a_model_that_cannot_load_fails_start_with_the_reason(tmp_path):
    archive = write_archive(tmp_path / "model.tar.gz", {"code/inference.py": b"def model_fn(d):\n    raise RuntimeError('weights corrupt')\n"})
    with pytest.raises(EndpointStartError, match="weights corrupt"):
        EndpointServer(archive, endpoint_name=ENDPOINT).start(timeout_s=30)


def test_missing_archive_is_reported_with_its_path(tmp_path):
    with pytest.raises(EndpointStartError, match="does not exist"):
        EndpointServer(tmp_path / "nothing" / "model.tar.gz", endpoint_name=ENDPOINT).start(timeout_s=30)


# --- as the local stack runs it -----------------------------------------------------------------

def test_subprocess_endpoint_serves_and_stops_on_sigterm(stub_model, tmp_path):
    server = EndpointServer(stub_model, endpoint_name=ENDPOINT, mode="subprocess", log_path=tmp_path / "endpoint.log")
    with server:
        reply = runtime_client(server.url).invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png",
                                                           Body=read_test_image())
        assert len(json.loads(reply["Body"].read())) == 2
        process = server._process
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught, as a well-behaved server does.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "endpoint.log").read_text()


@pytest.mark.slow
def test_trained_model_through_the_endpoint_scores_what_training_measured():
    """Every test image through boto3 and the server: the accuracy training reported, to the image."""
    models = pytest.importorskip("scones.harness.models")
    model_dir = Path(models.ensure_model())
    measured = json.loads((model_dir / "metrics.json").read_text()).get("test_accuracy")
    with EndpointServer(model_dir, endpoint_name=ENDPOINT) as server:
        client = runtime_client(server.url)
        correct = total = 0
        for label_index, label in enumerate(("bicycle", "motorcycle")):
            for path in sorted((settings.data_dir() / "test" / label).glob("*.png")):
                probabilities = json.loads(client.invoke_endpoint(
                    EndpointName=ENDPOINT, ContentType="image/png", Body=path.read_bytes())["Body"].read())
                assert len(probabilities) == 2 and math.isclose(sum(probabilities), 1.0, abs_tol=1e-5)
                correct += probabilities.index(max(probabilities)) == label_index
                total += 1
    assert total == 200
    if measured is None:
        pytest.skip("metrics.json has no test_accuracy to compare with")
    assert abs(correct / total - measured) <= 1 / total  # one borderline image of slack for float ties


def test_serve_command_refuses_a_capture_destination_that_is_not_s3(stub_model):
    from click.testing import CliRunner

    from scones.harness.cli import main

    result = CliRunner().invoke(main, ["serve", "--model", str(stub_model), "--capture", "bucket/prefix"])
    assert result.exit_code == 2
    assert "is not an s3://bucket[/prefix] URI" in result.output
