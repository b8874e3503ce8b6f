"""sagemaker-runtime through LocalStack's gateway: a function's default client reaches the endpoint.

On AWS a Lambda's `boto3.client("sagemaker-runtime")` needs no endpoint setting. Locally every
function gets AWS_ENDPOINT_URL (LocalStack), and LocalStack forwards InvokeEndpoint to the
endpoint server registered for that name (harness/lambda_executor/sagemaker_runtime.py), so the
same code works unchanged. Each error case compares with what AWS answers; sources:

- botocore/data/sagemaker-runtime/*/service-2.json: InvokeEndpoint's errors are ValidationError
  (400), ModelError (424: OriginalStatusCode, OriginalMessage, LogStreamArn), ServiceUnavailable
  (503), InternalFailure (500), InternalDependencyException (530), ModelNotReadyException (429).
- The unknown-endpoint wording as AWS answers it: "An error occurred (ValidationError) when calling
  the InvokeEndpoint operation: Endpoint driving-endpoint of account 127310796078 not found."
  (github.com/aws/amazon-sagemaker-examples issues #293 and #559, the latter answered by a
  SageMaker engineer: the endpoint had been deleted).
"""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from scones.deploy import local as local_target
from scones.harness import localstack as localstack_manager
from scones.harness.endpoint import EndpointServer, free_port
from scones.harness.lambda_executor.names import SAGEMAKER_ENDPOINTS_PATH
from scones.testing import build_stub_model
from support import zip_of

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/scones-test-lambda-role"
ENDPOINT = "gateway-test-endpoint"

# The function as a user writes it: the default client, no endpoint setting anywhere. `invoke` is
# also run in the test process against the endpoint server directly, to compare the two answers.
FUNCTION = '''
import base64
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MODELED_ERROR_FIELDS = ("OriginalStatusCode", "OriginalMessage", "LogStreamArn")


def invoke(client, event):
    arguments = dict(event["arguments"])
    if "body_base64" in event:
        arguments["Body"] = base64.b64decode(event["body_base64"])
    try:
        reply = getattr(client, event.get("operation", "invoke_endpoint"))(**arguments)
    except ClientError as error:
        return {"error": error.response["Error"],
                "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
                "fields": {name: error.response.get(name) for name in MODELED_ERROR_FIELDS}}
    return {"body": reply["Body"].read().decode(), "content_type": reply["ContentType"],
            "variant": reply["InvokedProductionVariant"]}


def handler(event, context):
    # Error cases turn botocore's retries off only to stay quick (ServiceUnavailable is retried).
    config = Config(retries={"total_max_attempts": 1}) if event.get("no_retries") else None
    client = boto3.client("sagemaker-runtime", config=config)
    return {**invoke(client, event), "client_endpoint": client.meta.endpoint_url,
            "endpoint_settings": sorted(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL"))}
'''


def png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def direct_invoke(url: str, event: dict) -> dict:
    """The function's own `invoke`, run here against the endpoint server itself (no gateway)."""
    namespace: dict = {}
    exec(compile(FUNCTION, "function.py", "exec"), namespace)
    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(retries={"total_max_attempts": 1}))
    return namespace["invoke"](client, event)


def gateway_request(localstack, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{localstack.url}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, localstack):
    model = build_stub_model(tmp_path_factory.mktemp("stub-model"))
    with EndpointServer(model, endpoint_name=ENDPOINT) as server:
        localstack_manager.register_endpoint(localstack.url, ENDPOINT, server.url)
        yield server


@pytest.fixture(scope="module")
def function(localstack):
    """One function with the user's code and no environment variables at all."""
    client = boto3.client("lambda", endpoint_url=localstack.url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(read_timeout=120, retries={"max_attempts": 1}))
    name = f"scones-smr-{uuid.uuid4().hex[:8]}"
    client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="function.handler",
                           Code={"ZipFile": zip_of({"function.py": FUNCTION})}, Timeout=60, MemorySize=256)
    client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})

    def call(event: dict) -> dict:
        reply = client.invoke(FunctionName=name, Payload=json.dumps(event))
        result = json.loads(reply["Payload"].read())
        assert "FunctionError" not in reply, result
        return result

    call.configuration = lambda: client.get_function_configuration(FunctionName=name)
    yield call
    client.delete_function(FunctionName=name)


def test_default_client_in_a_function_reaches_the_endpoint(localstack, endpoint, function):
    event = {"arguments": {"EndpointName": ENDPOINT, "ContentType": "image/png", "Accept": "application/json"},
             "body_base64": base64.b64encode(png()).decode()}
    result = function(event)

    assert not function.configuration().get("Environment", {}).get("Variables")
    assert result["endpoint_settings"] == ["AWS_ENDPOINT_URL"]     # LocalStack's, given to every function
    assert result["client_endpoint"].rstrip("/").endswith(f":{localstack.port}")
    assert "error" not in result, result
    assert result["content_type"] == "application/json"
    assert result["variant"] == "AllTraffic"
    probabilities = json.loads(result["body"])
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-5
    direct = direct_invoke(endpoint.url, event)
    assert json.loads(direct["body"]) == probabilities


def test_sagemaker_headers_reach_the_endpoint_server(endpoint, function):
    """X-Amzn-SageMaker-Target-Variant is forwarded: the endpoint server rejects a variant it lacks as AWS does."""
    event = {"arguments": {"EndpointName": ENDPOINT, "ContentType": "image/png", "TargetVariant": "NoSuchVariant"},
             "body_base64": base64.b64encode(png()).decode(), "no_retries": True}
    result = function(event)
    assert result["error"]["Code"] == "ValidationError" and result["status"] == 400
    assert "NoSuchVariant" in result["error"]["Message"]
    assert result["error"] == direct_invoke(endpoint.url, event)["error"]


def test_unknown_endpoint_is_a_validation_error_worded_as_aws(endpoint, function):
    """AWS: "Endpoint <name> of account <account id> not found." (sources in the module docstring)."""
    body = base64.b64encode(png()).decode()
    for operation, arguments in (("invoke_endpoint", {"EndpointName": "no-such-endpoint", "ContentType": "image/png"}),
                                 ("invoke_endpoint_async", {"EndpointName": "no-such-endpoint",
                                                            "InputLocation": "s3://bucket/input.png"})):
        event = {"operation": operation, "arguments": arguments, "no_retries": True}
        if operation == "invoke_endpoint":
            event["body_base64"] = body
        result = function(event)
        assert result["status"] == 400, (operation, result)
        assert result["error"]["Code"] == "ValidationError"
        assert result["error"]["Message"] == f"Endpoint no-such-endpoint of account {local_target.ACCOUNT_ID} not found."


def test_model_failure_keeps_its_model_error_shape(endpoint, function):
    """424 ModelError with OriginalStatusCode/OriginalMessage/LogStreamArn, exactly as the endpoint server sends it."""
    event = {"arguments": {"EndpointName": ENDPOINT, "ContentType": "text/csv"},
             "body_base64": base64.b64encode(b"1,2,3").decode(), "no_retries": True}
    result = function(event)
    assert result["status"] == 424 and result["error"]["Code"] == "ModelError", result
    assert result["fields"]["OriginalStatusCode"] == 500
    assert "Unsupported content type" in result["fields"]["OriginalMessage"]
    assert result["fields"]["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{ENDPOINT}")
    direct = direct_invoke(endpoint.url, event)
    assert (result["status"], result["error"], result["fields"]) == (direct["status"], direct["error"], direct["fields"])


def test_a_registered_endpoint_whose_server_is_down_is_service_unavailable(localstack, function):
    silent = f"http://127.0.0.1:{free_port()}"
    localstack_manager.register_endpoint(localstack.url, "stopped-endpoint", silent)
    event = {"arguments": {"EndpointName": "stopped-endpoint", "ContentType": "image/png"},
             "body_base64": base64.b64encode(png()).decode(), "no_retries": True}
    result = function(event)
    assert result["status"] == 503 and result["error"]["Code"] == "ServiceUnavailable", result
    assert silent in result["error"]["Message"]


def test_only_invoke_endpoint_is_emulated_and_says_so(endpoint, function):
    event = {"operation": "invoke_endpoint_async", "no_retries": True,
             "arguments": {"EndpointName": ENDPOINT, "InputLocation": "s3://bucket/input.png"}}
    result = function(event)
    assert result["status"] == 501, result
    assert "InvokeEndpointAsync is not emulated" in result["error"]["Message"]


def test_an_endpoint_server_restarted_on_its_url_is_reached_without_registering_again(tmp_path, localstack, function):
    port = free_port()
    model = build_stub_model(tmp_path / "model", seed=1)
    event = {"arguments": {"EndpointName": "restarted-endpoint", "ContentType": "image/png"},
             "body_base64": base64.b64encode(png((10, 200, 10))).decode(), "no_retries": True}
    with EndpointServer(model, endpoint_name="restarted-endpoint", port=port) as server:
        localstack_manager.register_endpoint(localstack.url, "restarted-endpoint", server.url)
        before = function(event)
    with EndpointServer(model, endpoint_name="restarted-endpoint", port=port):
        after = function(event)
    assert "error" not in before and "error" not in after, (before, after)
    assert json.loads(after["body"]) == json.loads(before["body"])


def test_registry_route_checks_its_input_and_lists_what_it_serves(localstack, endpoint):
    status, body = gateway_request(localstack, "GET", SAGEMAKER_ENDPOINTS_PATH)
    assert status == 200 and body["endpoints"][ENDPOINT] == endpoint.url

    status, body = gateway_request(localstack, "PUT", f"{SAGEMAKER_ENDPOINTS_PATH}/{ENDPOINT}", b"not json")
    assert status == 400 and '{"url"' in body["message"]
    status, body = gateway_request(localstack, "PUT", f"{SAGEMAKER_ENDPOINTS_PATH}/-bad-name-",
                                   json.dumps({"url": endpoint.url}).encode())
    assert status == 400 and "-bad-name-" in body["message"]
    status, body = gateway_request(localstack, "PUT", f"{SAGEMAKER_ENDPOINTS_PATH}/{ENDPOINT}",
                                   json.dumps({"url": "ftp://somewhere"}).encode())
    assert status == 400 and "ftp://somewhere" in body["message"]
    assert gateway_request(localstack, "GET", SAGEMAKER_ENDPOINTS_PATH)[1]["endpoints"][ENDPOINT] == endpoint.url


def test_deployed_workflow_functions_carry_no_endpoint_url(scones_stack):
    """The workflow's Lambdas reach the endpoint with the standard settings only, locally as on AWS."""
    lambda_client = scones_stack.client("lambda")
    for function_name, arn in scones_stack.function_arns.items():
        variables = lambda_client.get_function_configuration(FunctionName=arn).get("Environment", {}).get("Variables", {})
        assert not [name for name in variables if name.startswith("AWS_ENDPOINT_URL")], (function_name, variables)
    if scones_stack.name == "local":  # `up` told LocalStack where the endpoint is instead
        localstack_url = scones_stack.record["localstack"]["url"]
        with urllib.request.urlopen(f"{localstack_url}{SAGEMAKER_ENDPOINTS_PATH}", timeout=10) as reply:
            served = json.loads(reply.read())["endpoints"]
        assert served[scones_stack.endpoint_name] == scones_stack.record["endpoint"]["url"]
