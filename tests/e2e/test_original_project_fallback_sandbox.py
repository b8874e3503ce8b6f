"""The published original, ten executions at once, on the sandbox a machine without bubblewrap gets.

Its serializer writes every image to the literal path /tmp/image.png. On AWS each execution
environment has its own /tmp (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html),
so ten concurrent executions each classify their own image. A machine set up only by the README's
commands has no bubblewrap; there the executor builds the sandbox from util-linux, forced here
with SCONES_LAMBDA_SANDBOX=unshare in a LocalStack of the test's own that reaches the session's
endpoint server (tests/e2e/test_original_project.py runs the same on the session's stack).
"""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template

import boto3
import pytest
from e2e_helpers import CLASSES

from scones.harness.lambda_executor import sandbox
from scones.harness.localstack import register_endpoint
from support import poll, running_localstack, zip_of

pytestmark = pytest.mark.e2e

ORIGINAL = Path(__file__).resolve().parent.parent / "original_project"
FUNCTIONS = ("serializeImageData", "classifyImage", "filterInferences")
ROLE = "arn:aws:iam::000000000000:role/scones-original-role"


@pytest.fixture(scope="module")
def fallback_stack(scones_stack, tmp_path_factory):
    if scones_stack.name != "local":
        pytest.skip("starts a LocalStack of its own: a local-target test")
    endpoint_url = scones_stack.record["endpoint"]["url"]
    with running_localstack(tmp_path_factory.mktemp("localstack-unshare"), {sandbox.SWITCH: "unshare"}) as instance:
        register_endpoint(instance.url, scones_stack.endpoint_name, endpoint_url)
        yield boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"), instance


@pytest.fixture(scope="module")
def confident_keys(data_dir, classify, threshold):
    """Five test images per class that the model gets right above the threshold: (path, key, class)."""
    chosen = []
    for index, class_name in enumerate(CLASSES):
        found = [path for path in sorted((data_dir / "test" / class_name).glob("*.png"))
                 if (lambda inferences: max(inferences) >= threshold and inferences[index] == max(inferences))(
                     classify(path.read_bytes()))][:5]
        assert len(found) == 5, f"fewer than 5 {class_name} test images above {threshold}"
        chosen += [(path, f"test/{class_name}/{path.name}", class_name) for path in found]
    return chosen


def test_ten_concurrent_originals_each_classify_their_own_image(fallback_stack, confident_keys, scones_stack):
    session, localstack = fallback_stack
    s3 = session.client("s3", endpoint_url=localstack.url)
    lambda_client = session.client("lambda", endpoint_url=localstack.url)
    stepfunctions = session.client("stepfunctions", endpoint_url=localstack.url)
    bucket = f"scones-original-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for path, key, _ in confident_keys:
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    arns = {}
    for function in FUNCTIONS:
        code = Template((ORIGINAL / f"{function}.py").read_text()).safe_substitute(endpoint_name=scones_stack.endpoint_name)
        arns[function] = lambda_client.create_function(
            FunctionName=f"original-{function}", Runtime="python3.12", Role=ROLE,
            Handler="lambda_function.lambda_handler", Code={"ZipFile": zip_of({"lambda_function.py": code})},
            Timeout=30, MemorySize=128)["FunctionArn"]
    for arn in arns.values():
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=arn, WaiterConfig={"Delay": 0.5})
    definition = Template((ORIGINAL / "state_machine.json").read_text()).safe_substitute(arns)
    machine = stepfunctions.create_state_machine(name="original", definition=definition, roleArn=ROLE)["stateMachineArn"]

    def run(key: str) -> dict:
        execution = stepfunctions.start_execution(
            stateMachineArn=machine, name=uuid.uuid4().hex,
            input=json.dumps({"image_data": "", "s3_bucket": bucket, "s3_key": key}))["executionArn"]
        return poll(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
            stepfunctions.describe_execution(executionArn=execution)), timeout=180, interval=0.2,
            what=f"execution {execution}")

    with ThreadPoolExecutor(max_workers=len(confident_keys)) as pool:
        described = list(pool.map(lambda item: run(item[1]), confident_keys))

    for (_, key, class_name), execution in zip(confident_keys, described):
        assert execution["status"] == "SUCCEEDED", (key, execution.get("error"), execution.get("cause"))
        event = json.loads(json.loads(execution["output"])["body"])
        assert event["body"]["s3_key"] == key
        inferences = json.loads(event["body"]["inferences"])
        assert CLASSES[inferences.index(max(inferences))] == class_name, (key, inferences)
