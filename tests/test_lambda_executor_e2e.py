"""The process Lambda executor inside a real LocalStack 4.14: functions from zips, invoked through boto3."""
from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from support import poll


pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/scones-test-lambda-role"

PROBE = '''
import json, logging, os, sys, time
logger = logging.getLogger()
logger.setLevel(logging.INFO)

def handler(event, context):
    print("probe-print", event.get("marker", ""))
    logger.info("probe-log %s", event.get("marker", ""))
    if event.get("fail"):
        raise ValueError("probe failed on purpose: " + event["fail"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    import boto3  # every runtime venv has it, as AWS's runtimes do
    return {
        "env": os.environ.get("PROBE_VALUE"),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "pid": os.getpid(),
        "python": "%d.%d" % sys.version_info[:2],
        "boto3": boto3.__version__,
    }

def sleeper(event, context):  # nothing slow to import: only the sleep counts against the timeout
    print("sleeper", event.get("marker", ""))
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}

def crash(event, context):
    if event.get("crash"):
        print("about to exit")
        os._exit(3)
    return {"pid": os.getpid()}

def returns_bytes(event, context):
    return b"not json"
'''


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def session(localstack):
    return boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")


@pytest.fixture(scope="module")
def lambda_client(session, localstack):
    from botocore.config import Config
    return session.client("lambda", endpoint_url=localstack.url,
                          config=Config(read_timeout=120, retries={"max_attempts": 1}))


@pytest.fixture
def make_function(lambda_client):
    """Creates functions with unique names, waits until Active, deletes them afterwards."""
    created = []

    def make(code: bytes, handler: str, *, runtime="python3.12", timeout=10, memory=256, env=None) -> str:
        name = f"scones-test-{uuid.uuid4().hex[:8]}"
        lambda_client.create_function(
            FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": code},
            Timeout=timeout, MemorySize=memory, Environment={"Variables": env or {}},
        )
        created.append(name)
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
        return name

    yield make
    for name in created:
        lambda_client.delete_function(FunctionName=name)


def invoke(lambda_client, name: str, event: dict) -> tuple[dict, str | None, str]:
    reply = lambda_client.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail")
    logs = base64.b64decode(reply.get("LogResult") or b"").decode()
    return json.loads(reply["Payload"].read()), reply.get("FunctionError"), logs


def test_handler_from_the_zip_runs_with_its_environment_and_context(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler", memory=384, timeout=7,
                         env={"PROBE_VALUE": "from-the-function-config"})
    result, error, logs = invoke(lambda_client, name, {"marker": "m1"})
    assert error is None, result
    assert result["env"] == "from-the-function-config"
    assert result["function_name"] == name
    assert int(result["memory_limit_in_mb"]) == 384
    assert 0 < result["remaining_ms"] <= 7000
    assert result["python"] == "3.12"
    assert "probe-print m1" in logs and "[INFO]" in logs and "probe-log m1" in logs
    assert f"REPORT RequestId: {result['aws_request_id']}" in logs


def test_runtime_picks_a_matching_python(localstack, lambda_client, make_function):
    if "python3.11" not in localstack.lambda_pythons():
        pytest.skip("no Python 3.11 on this machine")
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler", runtime="python3.11")
    result, error, _ = invoke(lambda_client, name, {})
    assert error is None, result
    assert result["python"] == "3.11"


def test_unhandled_exception_has_aws_error_shape(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler")
    result, error, logs = invoke(lambda_client, name, {"fail": "boom"})
    assert error == "Unhandled"
    assert result["errorType"] == "ValueError"
    assert result["errorMessage"] == "probe failed on purpose: boom"
    assert isinstance(result["stackTrace"], list) and result["stackTrace"]
    assert "probe.py" in result["stackTrace"][-1] and "bootstrap.py" not in "".join(result["stackTrace"])
    assert "[ERROR] ValueError: probe failed on purpose: boom" in logs


def test_import_error_and_unserialisable_result(lambda_client, make_function):
    missing = make_function(_zip({"probe.py": PROBE}), "nosuchmodule.handler")
    result, error, _ = invoke(lambda_client, missing, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ImportModuleError"
    assert "nosuchmodule" in result["errorMessage"]

    marshal = make_function(_zip({"probe.py": PROBE}), "probe.returns_bytes")
    result, error, _ = invoke(lambda_client, marshal, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.MarshalError"


def test_timeout_kills_the_handler_and_the_next_invoke_starts_fresh(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.sleeper", timeout=2)
    first, error, _ = invoke(lambda_client, name, {})
    assert error is None, first
    result, error, logs = invoke(lambda_client, name, {"sleep": 30, "marker": "slow"})
    assert error == "Unhandled"
    assert result["errorType"] == "Sandbox.Timedout"
    assert result["errorMessage"].endswith("Task timed out after 2.00 seconds")
    assert "sleeper slow" in logs and "Task timed out after 2.00 seconds" in logs
    after, error, _ = invoke(lambda_client, name, {})
    assert error is None, after
    assert after["pid"] != first["pid"]  # the timed-out process was killed; a new one serves


def test_a_process_that_dies_fails_the_invoke_at_once_and_is_replaced(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.crash", timeout=60)
    first, _, _ = invoke(lambda_client, name, {})
    result, error, logs = invoke(lambda_client, name, {"crash": True})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result["errorMessage"]
    assert "about to exit" in logs
    after, error, _ = invoke(lambda_client, name, {})
    assert error is None and after["pid"] != first["pid"]


def test_a_process_that_dies_while_starting_fails_the_invoke(lambda_client, make_function):
    code = _zip({"dies.py": "import os\nprint('init then exit')\nos._exit(7)\n\ndef handler(event, context):\n    return 1\n"})
    name = make_function(code, "dies.handler")
    result, error, _ = invoke(lambda_client, name, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ExitError"
    assert "exit status 7" in result["errorMessage"] and "init then exit" in result["errorMessage"]


def test_warm_environment_is_reused(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler")
    pids = {invoke(lambda_client, name, {})[0]["pid"] for _ in range(3)}
    assert len(pids) == 1


def test_concurrent_invokes_get_separate_environments(lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: invoke(lambda_client, name, {"sleep": 1.5}), range(3)))
    assert all(error is None for _, error, _ in results), results
    assert len({result["pid"] for result, _, _ in results}) == 3


def test_logs_reach_cloudwatch_logs(session, localstack, lambda_client, make_function):
    name = make_function(_zip({"probe.py": PROBE}), "probe.handler")
    marker = uuid.uuid4().hex
    invoke(lambda_client, name, {"marker": marker})
    logs = session.client("logs", endpoint_url=localstack.url)

    def found():
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return False
        return [event["message"] for event in events if marker in event["message"]]

    messages = poll(found, timeout=30, what=f"log lines with {marker} in /aws/lambda/{name}")
    assert any(message.startswith("probe-print") for message in messages)


def test_project_lambda_zip_runs(lambda_client, make_function):
    from deploy.packaging import FUNCTIONS, build_zip

    spec = next(spec for spec in FUNCTIONS if spec.name == "filterInferences")
    name = make_function(build_zip(spec), spec.handler, runtime=spec.runtime, env={"THRESHOLD": "0.93"})
    body = {"s3_bucket": "b", "s3_key": "test/bicycle/x.png", "image_data": "aGk="}
    result, error, _ = invoke(lambda_client, name, {"statusCode": 200, "body": {**body, "inferences": [0.97, 0.03]}})
    assert error is None, result
    assert result["body"]["inferences"] == [0.97, 0.03]
    result, error, _ = invoke(lambda_client, name, {"statusCode": 200, "body": {**body, "inferences": [0.6, 0.4]}})
    assert error == "Unhandled"
    assert result["errorType"] == "ThresholdConfidenceNotMet"


def test_payload_limits_bite_as_on_aws(lambda_client, make_function):
    code = _zip({"big.py": "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024) if event.get('big') else len(event.get('pad', ''))\n"})
    name = make_function(code, "big.handler")
    result, error, _ = invoke(lambda_client, name, {"big": True})
    assert error == "Unhandled"
    assert result["errorType"] == "Function.ResponseSizeTooLarge"
    with pytest.raises(lambda_client.exceptions.RequestTooLargeException):
        lambda_client.invoke(FunctionName=name, Payload=json.dumps({"pad": "y" * (6 * 1024 * 1024 + 10)}))
    result, error, _ = invoke(lambda_client, name, {"pad": "y" * 1000})
    assert error is None and result == 1000
