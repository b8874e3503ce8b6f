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
It runs with the roles its authors used, not ours (the IAM checks hold it to them locally, AWS on AWS): the
starter notebook (udacity/udacity-nd009t-C2-Developing-ML-Workflow, project/starter.ipynb) has each Lambda
created with "the same permissions as the SageMaker role you created earlier", the notebook's execution role
(`sagemaker.get_execution_role()`), whose policy is the AWS managed AmazonSageMakerFullAccess; the data live in
the SageMaker SDK's default bucket, sagemaker-<region>-<account> (Session.default_bucket), which that policy's
object statements (arn:aws:s3:::*sagemaker*) cover; the state machine gets the role the Step Functions console
creates, lambda:InvokeFunction on the functions it chains.
"""
from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path
from string import Template

import pytest
from e2e_helpers import CLASSES

from support import poll, zip_of

pytestmark = pytest.mark.e2e

ORIGINAL = Path(__file__).resolve().parent.parent / "original_project"
FUNCTIONS = ("serializeImageData", "classifyImage", "filterInferences")


SAGEMAKER_FULL_ACCESS = "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
LAMBDA_BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def _trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


@pytest.fixture(scope="module")
def authors_bucket(scones_stack):
    """The SageMaker SDK's default bucket (sagemaker-<region>-<account>), where the original's data live."""
    account = scones_stack.client("sts").get_caller_identity()["Account"]
    bucket = f"sagemaker-{scones_stack.region}-{account}"
    s3 = scones_stack.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket, **({} if scones_stack.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": scones_stack.region}}))
    return bucket


@pytest.fixture(scope="module")
def copy_to_authors_bucket(scones_stack, authors_bucket):
    """copy(key) -> key: an object of the stack's bucket copied to the authors' bucket (deleted afterwards)."""
    s3, copied = scones_stack.client("s3"), []

    def copy(key: str) -> str:
        s3.copy_object(Bucket=authors_bucket, Key=key, CopySource={"Bucket": scones_stack.bucket, "Key": key})
        copied.append(key)
        return key

    yield copy
    for key in copied:
        s3.delete_object(Bucket=authors_bucket, Key=key)


@pytest.fixture(scope="module")
def original_workflow(scones_stack, lambda_client, stepfunctions_client):
    """The original three functions and state machine under unique names, with the authors' roles; all removed
    afterwards."""
    suffix = uuid.uuid4().hex[:8]
    iam = scones_stack.client("iam")
    function_role, machine_role = f"original-{suffix}-lambda", f"original-{suffix}-states"
    account = scones_stack.client("sts").get_caller_identity()["Account"]
    names = {function: f"original-{suffix}-{function}" for function in FUNCTIONS}
    function_arns = [f"arn:aws:lambda:{scones_stack.region}:{account}:function:{name}" for name in names.values()]
    arns: dict[str, str] = {}
    try:
        role_arn = iam.create_role(RoleName=function_role, AssumeRolePolicyDocument=_trust("lambda.amazonaws.com"))["Role"]["Arn"]
        for policy in (SAGEMAKER_FULL_ACCESS, LAMBDA_BASIC_EXECUTION):
            iam.attach_role_policy(RoleName=function_role, PolicyArn=policy)
        machine_role_arn = iam.create_role(RoleName=machine_role,
                                           AssumeRolePolicyDocument=_trust("states.amazonaws.com"))["Role"]["Arn"]
        iam.put_role_policy(RoleName=machine_role, PolicyName="LambdaInvokeScopedAccessPolicy", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                                                    "Resource": function_arns + [f"{arn}:*" for arn in function_arns]}]}))
        for function in FUNCTIONS:
            code = Template((ORIGINAL / f"{function}.py").read_text()).safe_substitute(
                endpoint_name=scones_stack.endpoint_name)
            arns[function] = poll(partial(_create_function, lambda_client, names[function], role_arn, code),
                                  timeout=60, what=f"Lambda to accept the new role for {names[function]}")
        for arn in arns.values():
            lambda_client.get_waiter("function_active_v2").wait(FunctionName=arn, WaiterConfig={"Delay": 0.5})
        definition = Template((ORIGINAL / "state_machine.json").read_text()).safe_substitute(arns)
        state_machine_arn = stepfunctions_client.create_state_machine(
            name=f"original-{suffix}", definition=definition, roleArn=machine_role_arn)["stateMachineArn"]
        yield state_machine_arn
        stepfunctions_client.delete_state_machine(stateMachineArn=state_machine_arn)
    finally:
        for arn in arns.values():
            lambda_client.delete_function(FunctionName=arn)
        for policy in (SAGEMAKER_FULL_ACCESS, LAMBDA_BASIC_EXECUTION):
            _ignoring_missing(partial(iam.detach_role_policy, RoleName=function_role, PolicyArn=policy))
        _ignoring_missing(partial(iam.delete_role_policy, RoleName=machine_role, PolicyName="LambdaInvokeScopedAccessPolicy"))
        for role in (function_role, machine_role):
            _ignoring_missing(partial(iam.delete_role, RoleName=role))


def _create_function(lambda_client, name: str, role_arn: str, code: str) -> str | None:
    """The function's ARN, or None while Lambda cannot assume a role just created (IAM is eventually consistent)."""
    try:
        return lambda_client.create_function(
            FunctionName=name, Runtime="python3.12", Role=role_arn, Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zip_of({"lambda_function.py": code})}, Timeout=30, MemorySize=128)["FunctionArn"]
    except lambda_client.exceptions.InvalidParameterValueException as error:
        if "cannot be assumed" in str(error):
            return None
        raise


def _ignoring_missing(call) -> None:
    try:
        call()
    except Exception as error:   # NoSuchEntity: the fixture stopped before making it
        if "NoSuchEntity" not in str(error):
            raise


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
        original_workflow, confident_keys, authors_bucket, copy_to_authors_bucket, stepfunctions_client):
    from concurrent.futures import ThreadPoolExecutor

    for key, _ in confident_keys:
        copy_to_authors_bucket(key)
    with ThreadPoolExecutor(max_workers=len(confident_keys)) as pool:
        described = list(pool.map(
            lambda item: _run(stepfunctions_client, original_workflow, authors_bucket, item[0]), confident_keys))

    for (key, class_name), execution in zip(confident_keys, described):
        assert execution["status"] == "SUCCEEDED", (key, execution.get("error"), execution.get("cause"))
        event = json.loads(json.loads(execution["output"])["body"])
        assert event["body"]["s3_key"] == key
        inferences = json.loads(event["body"]["inferences"])
        assert CLASSES[inferences.index(max(inferences))] == class_name, (key, inferences)


def test_the_original_threshold_failure_fails_the_execution(original_workflow, authors_bucket, copy_to_authors_bucket,
                                                            stepfunctions_client, upload_image, unsure_image):
    body, _ = unsure_image
    key = copy_to_authors_bucket(upload_image(body, name="original-unsure"))

    execution = _run(stepfunctions_client, original_workflow, authors_bucket, key)

    assert execution["status"] == "FAILED"
    assert execution["error"] == "Exception"
    assert "THRESHOLD_CONFIDENCE_IS_NOT_MET" in execution["cause"]


def test_the_authors_role_may_not_read_a_bucket_outside_its_policy(original_workflow, confident_keys, scones_stack,
                                                                  stepfunctions_client):
    """AmazonSageMakerFullAccess allows s3:GetObject only on buckets named *sagemaker* (or objects tagged
    SageMaker=true): the same workflow pointed at the stack's own bucket fails in serializeImageData with S3's 403
    (download_file's HeadObject), as on AWS, now that the authors' role is what the calls are checked against."""
    assert "sagemaker" not in scones_stack.bucket.lower()
    key, _ = confident_keys[0]

    execution = _run(stepfunctions_client, original_workflow, scones_stack.bucket, key)

    assert execution["status"] == "FAILED"
    assert "403" in execution["cause"] and "HeadObject" in execution["cause"], execution["cause"]
