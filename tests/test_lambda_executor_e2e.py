"""The process Lambda executor inside a real LocalStack 4.14: functions from zips, invoked through boto3.

Each environment runs AWS's own runtime interface client (awslambdaric) in a sandbox laid out as
AWS's, so what these tests assert is what AWS does; each test's docstring names the source.
"""
from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from scones.harness.lambda_executor.names import PYTHONS_ENV
from scones.harness.localstack import LocalStack
from support import CHECKOUT, poll, running_localstack, zip_of

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/scones-test-lambda-role"

PROBE = '''
import json, logging, os, sys, time, uuid
ENVIRONMENT_ID = uuid.uuid4().hex  # one per execution environment (PIDs repeat across sandboxes)
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
        "environment": ENVIRONMENT_ID,
        "python": "%d.%d" % sys.version_info[:2],
        "boto3": boto3.__version__,
        "harness_variables": sorted(key for key in os.environ if "SCONES" in key),
        "path0_is_cwd": sys.path[0] == os.getcwd(),
    }

def sleeper(event, context):  # nothing slow to import: only the sleep counts against the timeout
    print("sleeper", event.get("marker", ""))
    time.sleep(event.get("sleep", 0))
    return {"environment": ENVIRONMENT_ID}

def crash(event, context):
    if event.get("crash"):
        print("about to exit")
        os._exit(3)
    return {"environment": ENVIRONMENT_ID}
'''


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    """The module's own LocalStack, whose executor knows no python3.14 interpreter (whatever this
    machine has), so that the missing-interpreter path is always exercised."""
    LocalStack().ensure_venv(progress=False)   # on a fresh machine the runtime venvs come from here
    pythons = LocalStack().lambda_pythons()
    pythons.pop("python3.14", None)
    with running_localstack(tmp_path_factory.mktemp("localstack"), {PYTHONS_ENV: json.dumps(pythons)}) as instance:
        yield instance


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

    def make(code: bytes, handler: str, *, runtime="python3.12", timeout=10, memory=256, env=None,
             layers=(), wait=True) -> str:
        name = f"scones-test-{uuid.uuid4().hex[:8]}"
        lambda_client.create_function(
            FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": code},
            Timeout=timeout, MemorySize=memory, Environment={"Variables": env or {}}, Layers=list(layers),
        )
        created.append(name)
        if wait:
            lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
        return name

    yield make
    for name in created:
        try:
            lambda_client.delete_function(FunctionName=name)
        except lambda_client.exceptions.ClientError as exc:
            # LocalStack 4.14 cannot delete a function whose version failed to prepare (State Failed).
            if "Unable to find version manager" not in str(exc):
                raise


def invoke(lambda_client, name: str, event: dict) -> tuple[dict, str | None, str]:
    reply = lambda_client.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail")
    logs = base64.b64decode(reply.get("LogResult") or b"").decode()
    return json.loads(reply["Payload"].read()), reply.get("FunctionError"), logs


def test_handler_from_the_zip_runs_with_its_environment_and_context(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler", memory=384, timeout=7,
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
    # The runtime hook that runs before awslambdaric (backoff_time_scale.py) leaves what the function sees
    # as `python -m awslambdaric` would: no variable of ours, the task root first on the path.
    assert result["harness_variables"] == [] and result["path0_is_cwd"]


@pytest.mark.parametrize("runtime", ["python3.10", "python3.11", "python3.12", "python3.13"])
def test_each_runtime_runs_on_its_own_python(localstack, lambda_client, make_function, runtime):
    """A pythonX.Y function runs on Python X.Y, never on another version (.ci/run makes sure 3.10-3.13 exist)."""
    assert runtime in localstack.lambda_pythons(), f"no {runtime} interpreter on this machine"
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler", runtime=runtime)
    result, error, _ = invoke(lambda_client, name, {})
    assert error is None, result
    assert result["python"] == runtime.removeprefix("python")


def test_unhandled_exception_has_aws_error_shape(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler")
    result, error, logs = invoke(lambda_client, name, {"fail": "boom"})
    assert error == "Unhandled"
    assert result["errorType"] == "ValueError"
    assert result["errorMessage"] == "probe failed on purpose: boom"
    assert isinstance(result["stackTrace"], list) and result["stackTrace"]
    assert "probe.py" in result["stackTrace"][-1] and "awslambdaric" not in "".join(result["stackTrace"])
    assert "[ERROR] ValueError: probe failed on purpose: boom" in logs


def test_import_error_is_reported_by_the_invoke(lambda_client, make_function):
    """awslambdaric reports a handler module that does not import as Runtime.ImportModuleError."""
    missing = make_function(zip_of({"probe.py": PROBE}), "nosuchmodule.handler")
    result, error, logs = invoke(lambda_client, missing, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ImportModuleError"
    assert result["errorMessage"] == "Unable to import module 'nosuchmodule': No module named 'nosuchmodule'"
    assert "Phase: invoke\tStatus: error\tError Type: Runtime.ImportModuleError" in logs


def test_results_are_marshalled_as_aws_runtime_does(lambda_client, make_function):
    """AWS's Python runtime (awslambdaric's lambda_runtime_marshaller) encodes results with simplejson:
    nested bytes become UTF-8 strings, Decimal becomes a number, top-level bytes are returned raw, and
    a datetime fails with Runtime.MarshalError "Unable to marshal response: Object of type datetime is
    not JSON serializable" (as the original Scones serializer's base64 bytes show on AWS)."""
    code = zip_of({"results.py": (
        "import base64, datetime, decimal\n"
        "def nested_bytes(event, context):\n"
        "    return {'statusCode': 200, 'body': {'image_data': base64.b64encode(b'png bytes')}}\n"
        "def top_level_bytes(event, context):\n"
        "    return b'raw \\xff bytes'\n"
        "def decimal_value(event, context):\n"
        "    return {'price': decimal.Decimal('1.25')}\n"
        "def a_datetime(event, context):\n"
        "    return {'when': datetime.datetime(2026, 12, 2)}\n")})
    nested = make_function(code, "results.nested_bytes")
    result, error, _ = invoke(lambda_client, nested, {})
    assert error is None, result
    assert result == {"statusCode": 200, "body": {"image_data": base64.b64encode(b"png bytes").decode()}}

    top = make_function(code, "results.top_level_bytes")
    reply = lambda_client.invoke(FunctionName=top, Payload=b"{}")
    assert "FunctionError" not in reply
    assert reply["Payload"].read() == b"raw \xff bytes"

    price = make_function(code, "results.decimal_value")
    result, error, _ = invoke(lambda_client, price, {})
    assert error is None and result == {"price": 1.25}

    when = make_function(code, "results.a_datetime")
    result, error, _ = invoke(lambda_client, when, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.MarshalError"
    assert result["errorMessage"] == "Unable to marshal response: Object of type datetime is not JSON serializable"


def test_timeout_kills_the_handler_and_the_next_invoke_starts_fresh(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.sleeper", timeout=2)
    first, error, _ = invoke(lambda_client, name, {})
    assert error is None, first
    result, error, logs = invoke(lambda_client, name, {"sleep": 30, "marker": "slow"})
    assert error == "Unhandled"
    assert result["errorType"] == "Sandbox.Timedout"
    assert result["errorMessage"].endswith("Task timed out after 2.00 seconds")
    assert "sleeper slow" in logs and "Task timed out after 2.00 seconds" in logs
    after, error, _ = invoke(lambda_client, name, {})
    assert error is None, after
    assert after["environment"] != first["environment"]  # the timed-out process was killed; a new one serves


def test_a_process_that_dies_fails_the_invoke_at_once_and_is_replaced(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.crash", timeout=60)
    first, _, _ = invoke(lambda_client, name, {})
    result, error, logs = invoke(lambda_client, name, {"crash": True})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result["errorMessage"]
    assert "about to exit" in logs
    after, error, _ = invoke(lambda_client, name, {})
    assert error is None and after["environment"] != first["environment"]


def _kill_runtime_processes(localstack, function_name: str) -> None:
    """SIGKILL the sandbox of every environment of the function, as the executor ends an idle one to
    make room at its caps (environment_slots.py), and wait until they are gone."""
    import psutil

    def of_function(process: psutil.Process) -> bool:
        try:
            return process.environ().get("AWS_LAMBDA_FUNCTION_NAME") == function_name
        except psutil.Error:
            return False

    doomed = [process for process in psutil.Process(localstack.pid()).children(recursive=True) if of_function(process)]
    assert doomed, f"no running environment of {function_name}"
    for process in doomed:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(doomed, timeout=10)


def test_an_environment_whose_idle_runtime_was_ended_serves_the_next_invoke(localstack, lambda_client, make_function):
    """AWS: Lambda may end an idle execution environment at any time; the function's next invoke is
    still served, after a cold start ("Understanding the Lambda execution environment lifecycle",
    docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html, Shutdown phase and cold
    starts). Here the sandbox of an idle environment is ended while its runtime waits in `next`
    (what the executor does at its environment caps); the request it left waiting took the next
    invocation and every later invoke timed out (issue 25: 32 concurrent executions all failed)."""
    name = make_function(zip_of({"probe.py": PROBE}), "probe.sleeper", timeout=5)
    seen = {invoke(lambda_client, name, {})[0]["environment"]}
    for _ in range(3):   # each ended runtime left one more request waiting: three make a lucky pass unlikely
        _kill_runtime_processes(localstack, name)
        result, error, _ = invoke(lambda_client, name, {"marker": "after"})
        assert error is None, result
        assert result["environment"] not in seen   # a fresh process (cold start) served it
        seen.add(result["environment"])


def test_idle_environments_are_reclaimed_after_30_s_unless_localstack_is_told_otherwise(localstack):
    """The stated idle time (README: "an environment with no invoke for 30 s is stopped";
    executor.IDLE_RECLAIM_MS) is what a LocalStack started without LAMBDA_KEEPALIVE_MS uses. The reclaim
    itself, with a short LAMBDA_KEEPALIVE_MS, is tests/test_lambda_sandbox_e2e.py's."""
    assert "with no invoke for 30 s is stopped" in " ".join((CHECKOUT / "README.md").read_text().split())
    with urllib.request.urlopen(f"{localstack.url}/_scones/executor", timeout=10) as reply:
        assert json.loads(reply.read())["environments"]["idle_reclaim_ms"] == 30_000


def test_a_process_that_dies_while_starting_fails_the_invoke(lambda_client, make_function):
    """AWS: "RequestId: <id> Error: Runtime exited with error: exit status 7" (Runtime.ExitError); what
    init printed is in the function's logs, not in the error."""
    code = zip_of({"dies.py": "import os\nprint('init then exit')\nos._exit(7)\n\ndef handler(event, context):\n    return 1\n"})
    name = make_function(code, "dies.handler")
    result, error, logs = invoke(lambda_client, name, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ExitError"
    assert result["errorMessage"].endswith("Error: Runtime exited with error: exit status 7")
    assert "init then exit" in logs


def test_warm_environment_is_reused(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler")
    pids = {invoke(lambda_client, name, {})[0]["environment"] for _ in range(3)}
    assert len(pids) == 1


def test_concurrent_invokes_get_separate_environments(lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: invoke(lambda_client, name, {"sleep": 1.5}), range(3)))
    assert all(error is None for _, error, _ in results), results
    assert len({result["environment"] for result, _, _ in results}) == 3


def test_logs_reach_cloudwatch_logs(session, localstack, lambda_client, make_function):
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler")
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
    from scones.deploy.packaging import FUNCTIONS, build_zip

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
    code = zip_of({"big.py": "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024) if event.get('big') else len(event.get('pad', ''))\n"})
    name = make_function(code, "big.handler")
    result, error, _ = invoke(lambda_client, name, {"big": True})
    assert error == "Unhandled"
    assert result["errorType"] == "Function.ResponseSizeTooLarge"
    with pytest.raises(lambda_client.exceptions.RequestTooLargeException):
        lambda_client.invoke(FunctionName=name, Payload=json.dumps({"pad": "y" * (6 * 1024 * 1024 + 10)}))
    result, error, _ = invoke(lambda_client, name, {"pad": "y" * 1000})
    assert error is None and result == 1000


def test_concurrent_environments_each_have_their_own_tmp(lambda_client, make_function):
    """On AWS every execution environment has its own /tmp. The original Scones serializer writes
    every image to the literal path /tmp/image.png: eight concurrent invokes must each read back
    their own bytes (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html)."""
    code = zip_of({"tmp_writer.py": (
        "import base64, time\n"
        "def handler(event, context):\n"
        "    with open('/tmp/image.png', 'wb') as f:\n"
        "        f.write(event['marker'].encode())\n"
        "    time.sleep(1.0)  # the others write their own marker meanwhile\n"
        "    with open('/tmp/image.png', 'rb') as f:\n"
        "        return {'body': {'image_data': base64.b64encode(f.read())}}\n")})
    name = make_function(code, "tmp_writer.handler")
    markers = [uuid.uuid4().hex for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda marker: invoke(lambda_client, name, {"marker": marker}), markers))
    assert all(error is None for _, error, _ in results), results
    assert [base64.b64decode(result["body"]["image_data"]).decode() for result, _, _ in results] == markers


def test_the_function_code_is_read_only(lambda_client, make_function):
    """AWS: /var/task (LAMBDA_TASK_ROOT, the working directory) is read-only; writing there raises
    OSError 30 "Read-only file system"."""
    code = zip_of({"writer.py": (
        "import os\n"
        "def handler(event, context):\n"
        "    try:\n"
        "        open(os.path.join(os.environ['LAMBDA_TASK_ROOT'], 'new.txt'), 'w').write('x')\n"
        "    except OSError as exc:\n"
        "        return {'errno': exc.errno, 'error': exc.strerror, 'cwd': os.getcwd(),\n"
        "                'task_root': os.environ['LAMBDA_TASK_ROOT']}\n"
        "    return {'errno': None}\n")})
    result, error, _ = invoke(lambda_client, make_function(code, "writer.handler"), {})
    assert error is None, result
    assert result == {"errno": 30, "error": "Read-only file system", "cwd": "/var/task", "task_root": "/var/task"}


def test_a_handler_imports_a_package_from_a_published_layer(lambda_client, make_function):
    """AWS extracts layers into /opt in order; python/ and python/lib/python3.x/site-packages are on
    the path (https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html)."""
    first = lambda_client.publish_layer_version(
        LayerName=f"scones-test-{uuid.uuid4().hex[:8]}", CompatibleRuntimes=["python3.12"],
        Content={"ZipFile": zip_of({"python/lib/python3.12/site-packages/fake_sdk/__init__.py": "VERSION = 'one'\n",
                                  "python/shared.py": "WHO = 'first layer'\n"})})
    second = lambda_client.publish_layer_version(
        LayerName=f"scones-test-{uuid.uuid4().hex[:8]}", CompatibleRuntimes=["python3.12"],
        Content={"ZipFile": zip_of({"python/shared.py": "WHO = 'second layer'\n"})})
    code = zip_of({"uses_layer.py": (
        "import fake_sdk, shared\n"
        "def handler(event, context):\n"
        "    return {'sdk': fake_sdk.VERSION, 'sdk_path': fake_sdk.__file__, 'shared': shared.WHO}\n")})
    name = make_function(code, "uses_layer.handler",
                         layers=[first["LayerVersionArn"], second["LayerVersionArn"]])
    try:
        result, error, _ = invoke(lambda_client, name, {})
        assert error is None, result
        assert result == {"sdk": "one", "sdk_path": "/opt/python/lib/python3.12/site-packages/fake_sdk/__init__.py",
                          "shared": "second layer"}
    finally:
        for layer in (first, second):
            lambda_client.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])


def test_a_runtime_without_an_interpreter_fails_the_function_clearly(lambda_client, make_function):
    """A pythonX.Y function never runs on another version: without a Python X.Y here the function goes
    to State Failed with a reason naming the missing interpreter (this module's LocalStack has none
    for python3.14)."""
    name = make_function(zip_of({"probe.py": PROBE}), "probe.handler", runtime="python3.14", wait=False)
    configuration = poll(lambda: (lambda c: c if c["State"] != "Pending" else None)(
        lambda_client.get_function_configuration(FunctionName=name)), timeout=30, what="a settled state")
    assert configuration["State"] == "Failed"
    assert "No Python 3.14 interpreter for runtime python3.14" in configuration["StateReason"]


def test_runtimes_aws_no_longer_accepts_are_refused_at_create(lambda_client):
    """AWS refuses CreateFunction for python3.8 (block-create date passed, see harness/lambda_executor/
    runtimes.py for the table) with InvalidParameterValueException and this message."""
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as refused:
        lambda_client.create_function(FunctionName=f"scones-test-{uuid.uuid4().hex[:8]}", Runtime="python3.8",
                                      Role=ROLE, Handler="probe.handler", Code={"ZipFile": zip_of({"probe.py": PROBE})})
    assert refused.value.response["Error"]["Message"] == (
        "The runtime parameter of python3.8 is no longer supported for creating or updating AWS Lambda "
        "functions. We recommend you use a supported runtime while creating or updating functions.")


def test_allocating_past_the_memory_size_fails_as_out_of_memory(lambda_client, make_function):
    """AWS ends a sandbox that exceeds its memory size: errorType Runtime.OutOfMemory, "Runtime exited
    with error: signal: killed", and the next invoke gets a fresh environment. Sources: the error shape
    "RequestId: <id> Error: Runtime exited with error: ..." (AWS re:Post knowledge center,
    lambda-runtime-error), "Error Type: Runtime.OutOfMemory" in the REPORT line and "signal: killed"
    as users see them on AWS (github.com/nasa-gcn/gcn.nasa.gov/pull/3628,
    aws-solutions-library-samples/cloud-intelligence-dashboards-data-collection/issues/201)."""
    code = zip_of({"hog.py": (
        "def handler(event, context):\n"
        "    blocks = [bytearray(16 * 1024 * 1024) for _ in range(event['mib'] // 16)]\n"
        "    return len(blocks)\n")})
    name = make_function(code, "hog.handler", memory=128)
    result, error, _ = invoke(lambda_client, name, {"mib": 32})
    assert error is None and result == 2
    result, error, logs = invoke(lambda_client, name, {"mib": 256})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.OutOfMemory"
    assert result["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")
    assert "Error Type: Runtime.OutOfMemory" in logs
    result, error, _ = invoke(lambda_client, name, {"mib": 32})
    assert error is None and result == 2


def test_an_init_phase_over_ten_seconds_is_cut_and_retried_within_the_timeout(lambda_client, make_function):
    """AWS limits the init phase to 10 s; after that it runs init again inside the invoke, where it
    counts against the function's timeout (here 3 s), so the invoke times out
    (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html#runtimes-lifecycle-ib)."""
    code = zip_of({"slow_init.py": "import time\ntime.sleep(12)\n\ndef handler(event, context):\n    return 'ready'\n"})
    name = make_function(code, "slow_init.handler", timeout=3)
    result, error, logs = invoke(lambda_client, name, {})
    assert error == "Unhandled"
    assert result["errorType"] == "Sandbox.Timedout"
    assert result["errorMessage"].endswith("Task timed out after 3.00 seconds")
    assert "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout" in logs
