"""The published original of this workflow, deployed unchanged but for its endpoint name and ARNs.

tests/original_project/ holds its three Lambdas and its state machine as students deploy them. On
AWS they work, so they must work here:
- serializeImageData returns `base64.b64encode(...)`, bytes, inside its result: AWS's Python
  runtime (awslambdaric, simplejson) writes nested bytes as a UTF-8 string;
- it writes every image to the literal path /tmp/image.png: each AWS execution environment has its
  own /tmp, so concurrent executions never read each other's image;
- classifyImage calls `boto3.client('runtime.sagemaker')` with no endpoint settings: the function's
  default configuration reaches the endpoint;
- filterInferences raises a plain Exception below the threshold: the execution fails with error
  "Exception".
The roles come from the deployed stack's own functions and state machine, so the test needs
nothing target-specific.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from string import Template

import pytest
from e2e_helpers import CLASSES

from support import poll, zip_of

pytestmark = pytest.mark.e2e

ORIGINAL = Path(__file__).resolve().parent.parent / "original_project"
FUNCTIONS = ("serializeImageData", "classifyImage", "filterInferences")


@pytest.fixture(scope="module")
def original_workflow(scones_stack, lambda_client, stepfunctions_client):
    """The original three functions and state machine under unique names; removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    ours = lambda_client.get_function_configuration(FunctionName=scones_stack.function_arns["classifyImage"])
    machine = stepfunctions_client.describe_state_machine(stateMachineArn=scones_stack.state_machine_arn)
    arns: dict[str, str] = {}
    try:
        for function in FUNCTIONS:
            code = Template((ORIGINAL / f"{function}.py").read_text()).safe_substitute(
                endpoint_name=scones_stack.endpoint_name)
            arns[function] = lambda_client.create_function(
                FunctionName=f"original-{suffix}-{function}", Runtime="python3.12", Role=ours["Role"],
                Handler="lambda_function.lambda_handler", Code={"ZipFile": zip_of({"lambda_function.py": code})},
                Timeout=30, MemorySize=128)["FunctionArn"]
        for arn in arns.values():
            lambda_client.get_waiter("function_active_v2").wait(FunctionName=arn, WaiterConfig={"Delay": 0.5})
        definition = Template((ORIGINAL / "state_machine.json").read_text()).safe_substitute(arns)
        state_machine_arn = stepfunctions_client.create_state_machine(
            name=f"original-{suffix}", definition=definition, roleArn=machine["roleArn"])["stateMachineArn"]
        yield state_machine_arn
        stepfunctions_client.delete_state_machine(stateMachineArn=state_machine_arn)
    finally:
        for arn in arns.values():
            lambda_client.delete_function(FunctionName=arn)


def _run(stepfunctions_client, state_machine_arn: str, bucket: str, key: str) -> dict:
    execution = stepfunctions_client.start_execution(
        stateMachineArn=state_machine_arn, name=uuid.uuid4().hex,
        input=json.dumps({"image_data": "", "s3_bucket": bucket, "s3_key": key}))["executionArn"]
    return poll(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        stepfunctions_client.describe_execution(executionArn=execution)), timeout=120, interval=0.1,
        what=f"execution {execution}")


@pytest.fixture(scope="module")
def confident_keys(data_dir, classify, threshold):
    """Five test images per class that the model gets right above the threshold: (key, class)."""
    chosen = []
    for index, class_name in enumerate(CLASSES):
        found = 0
        for path in sorted((data_dir / "test" / class_name).glob("*.png")):
            inferences = classify(path.read_bytes())
            if max(inferences) >= threshold and inferences[index] == max(inferences):
                chosen.append((f"test/{class_name}/{path.name}", class_name))
                found += 1
                if found == 5:
                    break
        assert found == 5, f"fewer than 5 {class_name} test images above {threshold}"
    return chosen


def test_the_original_workflow_classifies_ten_concurrent_images_each_as_its_own(
        original_workflow, confident_keys, scones_stack, stepfunctions_client):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(confident_keys)) as pool:
        described = list(pool.map(
            lambda item: _run(stepfunctions_client, original_workflow, scones_stack.bucket, item[0]), confident_keys))

    for (key, class_name), execution in zip(confident_keys, described):
        assert execution["status"] == "SUCCEEDED", (key, execution.get("error"), execution.get("cause"))
        event = json.loads(json.loads(execution["output"])["body"])
        assert event["body"]["s3_key"] == key
        inferences = json.loads(event["body"]["inferences"])
        assert CLASSES[inferences.index(max(inferences))] == class_name, (key, inferences)


def test_the_original_threshold_failure_fails_the_execution(original_workflow, scones_stack, stepfunctions_client,
                                                            upload_image, unsure_image):
    body, _ = unsure_image
    key = upload_image(body, name="original-unsure")

    execution = _run(stepfunctions_client, original_workflow, scones_stack.bucket, key)

    assert execution["status"] == "FAILED"
    assert execution["error"] == "Exception"
    assert "THRESHOLD_CONFIDENCE_IS_NOT_MET" in execution["cause"]
