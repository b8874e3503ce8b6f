"""IAM enforced on a real LocalStack 4.14 (harness/iam/gateway.py): a function runs with its execution role's
session, and what the role's policy (deploy/iam.py's, created in LocalStack's IAM) does not allow is denied as
AWS denies it. Each test's docstring names its AWS source."""
from __future__ import annotations

import dataclasses
import json
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config

from scones.deploy import iam
from scones.deploy.local import ACCOUNT_ID
from scones.harness.iam.names import DENIALS_PATH, MODE_ENV
from support import poll, running_localstack, zip_of

pytestmark = pytest.mark.e2e

BUCKET = "scones-iam-test"
FUNCTION = "serializeImageData"
ROLE = "scones-iam-test-lambda-role"

READER = '''
import json, os, boto3
from botocore.exceptions import ClientError

def handler(event, context):
    out = {"identity": boto3.client("sts").get_caller_identity()["Arn"],
           "key_id_is_session": os.environ["AWS_ACCESS_KEY_ID"] != "test" and bool(os.environ.get("AWS_SESSION_TOKEN"))}
    s3 = boto3.client("s3")
    for name, call in (("allowed", lambda: s3.get_object(Bucket=event["bucket"], Key=event["allowed"])),
                       ("outside", lambda: s3.put_object(Bucket=event["bucket"], Key=event["outside"], Body=b"x")),
                       ("missing", lambda: s3.get_object(Bucket=event["bucket"], Key=event["missing"]))):
        try:
            call()
            out[name] = "ok"
        except ClientError as error:
            out[name] = {"code": error.response["Error"]["Code"], "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
                         "message": error.response["Error"].get("Message", "")}
    return out
'''


def _clients(url: str):
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    config = Config(read_timeout=120, retries={"max_attempts": 1})
    return {name: session.client(name, endpoint_url=url, config=config) for name in ("iam", "s3", "lambda", "logs")}


def _scope() -> iam.Scope:
    return iam.Scope(partition="aws", region="us-east-1", account_id=ACCOUNT_ID, prefix="scones", bucket=BUCKET,
                     endpoint_name="scones-endpoint", function_names=(FUNCTION,), image_repositories=())


def _deploy(url: str) -> dict:
    clients = _clients(url)
    arn, _ = iam.ensure_role(clients["iam"], name=ROLE, trust=iam.trust_policy(iam.TRUSTED_SERVICE["lambda"]),
                             policy=iam.lambda_policy(_scope()), tags={"scones:prefix": "scones"})
    clients["s3"].create_bucket(Bucket=BUCKET)
    clients["s3"].put_object(Bucket=BUCKET, Key="images/a.png", Body=b"png")
    clients["lambda"].create_function(FunctionName=FUNCTION, Runtime="python3.12", Role=arn, Handler="reader.handler",
                                      Code={"ZipFile": zip_of({"reader.py": READER})}, Timeout=30)
    clients["lambda"].get_waiter("function_active_v2").wait(FunctionName=FUNCTION, WaiterConfig={"Delay": 0.5})
    return clients


def _run(clients) -> dict:
    event = {"bucket": BUCKET, "allowed": "images/a.png", "outside": f"results/{uuid.uuid4().hex}.json",
             "missing": "images/not-there.png"}
    reply = clients["lambda"].invoke(FunctionName=FUNCTION, Payload=json.dumps(event))
    result = json.loads(reply["Payload"].read())
    assert "FunctionError" not in reply, result
    return {**result, "event": event}


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory):
    with running_localstack(tmp_path_factory.mktemp("localstack-iam")) as instance:
        yield instance, _deploy(instance.url)


def test_function_calls_with_its_role_session_and_is_denied_outside_its_policy(enforcing):
    """Lambda's execution role (docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html): the
    function's credentials are a session of its role, named after the function
    (arn:aws:sts::<account>:assumed-role/<role>/<function>). Outside the policy, S3 answers 403 AccessDenied with
    IAM's message (IAM User Guide, troubleshoot_access-denied.html; S3 quotes the resource). deploy/iam.py's
    Lambda policy allows s3:ListBucket on the bucket, so a missing key answers 404 NoSuchKey (Amazon S3 API
    Reference, GetObject, Permissions: "If you have the s3:ListBucket permission on the bucket, Amazon S3
    returns an HTTP status code 404 Not Found error")."""
    instance, clients = enforcing
    result = _run(clients)
    session = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{ROLE}/{FUNCTION}"
    assert result["identity"] == session and result["key_id_is_session"]
    assert result["allowed"] == "ok"
    outside = f"arn:aws:s3:::{BUCKET}/{result['event']['outside']}"
    assert result["outside"] == {
        "code": "AccessDenied", "status": 403,
        "message": f'User: {session} is not authorized to perform: s3:PutObject on resource: "{outside}" '
                   "because no identity-based policy allows the s3:PutObject action"}
    assert result["missing"]["code"] == "NoSuchKey" and result["missing"]["status"] == 404
    with urllib.request.urlopen(f"{instance.url}{DENIALS_PATH}") as reply:
        denials = json.loads(reply.read())
    assert denials["mode"] == "enforce"
    assert ("s3:PutObject", ROLE) in {(d["action"], d["role"]) for d in denials["denials"]}


def test_user_credentials_stay_an_administrators(enforcing):
    """The issue: requests with the user's own credentials (CLI, tests, notebooks) stay allowed."""
    _, clients = enforcing
    clients["s3"].put_object(Bucket=BUCKET, Key="results/by-the-user.json", Body=b"{}")
    with pytest.raises(clients["s3"].exceptions.NoSuchKey):
        clients["s3"].get_object(Bucket=BUCKET, Key="images/not-there.png")


def test_without_list_bucket_a_missing_key_is_access_denied_at_once(enforcing):
    """Amazon S3 API Reference, GetObject, Permissions: "If you don't have the s3:ListBucket permission, Amazon S3
    returns an HTTP status code 403 Access Denied error" for a key that does not exist. IAM evaluates the role's
    current policies on each request (eventual consistency aside): removing the statement takes effect at once."""
    _, clients = enforcing
    policy = iam.lambda_policy(_scope())
    without = {**policy, "Statement": [s for s in policy["Statement"] if s["Action"] != "s3:ListBucket"]}
    clients["iam"].put_role_policy(RoleName=ROLE, PolicyName=iam.POLICY_NAME, PolicyDocument=json.dumps(without))
    try:
        result = _run(clients)
    finally:
        clients["iam"].put_role_policy(RoleName=ROLE, PolicyName=iam.POLICY_NAME, PolicyDocument=json.dumps(policy))
    assert result["missing"]["code"] == "AccessDenied" and result["missing"]["status"] == 403
    assert result["missing"]["message"].endswith(
        f'on resource: "arn:aws:s3:::{BUCKET}" because no identity-based policy allows the s3:ListBucket action')


def test_report_mode_lets_through_and_lists(tmp_path):
    """SCONES_IAM=report: what would be denied is listed and let through."""
    with running_localstack(tmp_path, {MODE_ENV: "report"}) as instance:
        clients = _deploy(instance.url)
        result = _run(clients)
        assert result["outside"] == "ok"
        with urllib.request.urlopen(f"{instance.url}{DENIALS_PATH}") as reply:
            denials = json.loads(reply.read())
        assert denials["mode"] == "report"
        assert any(d["action"] == "s3:PutObject" and not d["enforced"] for d in denials["denials"])


def test_a_statement_removed_from_deploy_iam_fails_the_real_function_naming_the_action(enforcing):
    """The issue's must-show: serializeImageData (the project's own code and zip) under deploy/iam.py's Lambda
    policy reads its image and reports a missing one as missing (Amazon S3 API Reference, GetObject, Permissions:
    404 with s3:ListBucket, 403 without); with the ReadImages statement removed, the same call fails and the error the
    workflow would show names s3:GetObject, worded as IAM words it (troubleshoot_access-denied.html)."""
    from scones.deploy.packaging import build_zip, function_spec

    _, clients = enforcing
    spec = function_spec("serializeImageData")
    name, role = f"serializeImageData-{uuid.uuid4().hex[:6]}", f"scones-iam-test-{uuid.uuid4().hex[:6]}"
    # Its own log group too: LocalStack's Lambda writes the function's log with the function's role, as AWS does.
    full = iam.lambda_policy(dataclasses.replace(_scope(), function_names=(name,)))
    without = {**full, "Statement": [s for s in full["Statement"] if s["Sid"] != "ReadImages"]}
    arn, _ = iam.ensure_role(clients["iam"], name=role, trust=iam.trust_policy(iam.TRUSTED_SERVICE["lambda"]),
                             policy=full, tags={"scones:prefix": "scones"})
    clients["lambda"].create_function(FunctionName=name, Runtime=spec.runtime, Role=arn, Handler=spec.handler,
                                      Code={"ZipFile": build_zip(spec)}, Timeout=30)
    clients["lambda"].get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
    event = json.dumps({"s3_bucket": BUCKET, "s3_key": "images/a.png"})

    def invoke(payload: str = event) -> tuple[dict, str | None]:
        reply = clients["lambda"].invoke(FunctionName=name, Payload=payload)
        return json.loads(reply["Payload"].read()), reply.get("FunctionError")

    result, error = invoke()
    # The object is not a real PNG: reading it was allowed, the handler then refuses its bytes.
    assert error == "Unhandled" and result["errorType"] == "NotAnImage", result
    # A missing image is reported as missing: the policy allows s3:ListBucket, so S3 answers 404 NoSuchKey.
    result, error = invoke(json.dumps({"s3_bucket": BUCKET, "s3_key": "images/not-there.png"}))
    assert error == "Unhandled" and result["errorType"] == "ImageNotFound", result
    # Without it, S3 answers 403 (GetObject, Permissions), as AWS would, and the handler says what that may mean.
    no_listing = {**full, "Statement": [s for s in full["Statement"] if s["Sid"] != "TellMissingImages"]}
    clients["iam"].put_role_policy(RoleName=role, PolicyName=iam.POLICY_NAME, PolicyDocument=json.dumps(no_listing))
    result, error = invoke(json.dumps({"s3_bucket": BUCKET, "s3_key": "images/not-there.png"}))
    assert error == "Unhandled" and result["errorType"] == "ImageReadFailed", result
    assert "s3:ListBucket" in result["errorMessage"] and "does not exist" in result["errorMessage"]
    clients["iam"].put_role_policy(RoleName=role, PolicyName=iam.POLICY_NAME, PolicyDocument=json.dumps(without))
    result, error = invoke()
    assert error == "Unhandled" and result["errorType"] == "ImageReadFailed", result
    assert (f"is not authorized to perform: s3:GetObject on resource: \"arn:aws:s3:::{BUCKET}/images/a.png\" "
            "because no identity-based policy allows the s3:GetObject action") in result["errorMessage"]
    assert f"assumed-role/{role}/{name}" in result["errorMessage"]
    # and the function's own log says so, where AWS's Python runtime writes an unhandled error ([ERROR] line).
    denial = "is not authorized to perform: s3:GetObject"
    logs = clients["logs"]

    def logged() -> bool | None:
        try:   # the log group appears with the function's first log batch, as on AWS: not at once
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        return any(denial in event["message"] for event in events) or None

    poll(logged, timeout=30, what="the denial in the function's log")


def test_the_bucket_policy_counts_allow_and_deny(enforcing):
    """reference_policies_evaluation-logic_policy-eval-basics.html: within one account a resource-based policy's
    Allow suffices although no identity-based policy allows; an explicit Deny in either denies, worded "with an
    explicit deny in a resource-based policy" (troubleshoot_access-denied.html)."""
    _, clients = enforcing
    role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "RoleWritesResults", "Effect": "Allow", "Principal": {"AWS": role_arn}, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/results/*"},
        {"Sid": "NobodyReadsImages", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/images/*"},
    ]}
    clients["s3"].put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    try:
        result = _run(clients)
    finally:
        clients["s3"].delete_bucket_policy(Bucket=BUCKET)
    assert result["outside"] == "ok"
    assert result["allowed"]["code"] == "AccessDenied" and result["allowed"]["status"] == 403
    assert result["allowed"]["message"].endswith("with an explicit deny in a resource-based policy")


def test_the_workflow_role_may_invoke_only_its_functions(enforcing):
    """deploy/iam.py states_policy: Step Functions calls Lambda with its role's session (Step Functions developer
    guide, "How Step Functions works with IAM": the state machine's execution role), so a Task on a function the
    role does not name fails the execution, and the cause names lambda:InvokeFunction."""
    _, clients = enforcing
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    sfn = session.client("stepfunctions", endpoint_url=clients["s3"].meta.endpoint_url)
    role = f"scones-iam-test-states-{uuid.uuid4().hex[:6]}"
    scope = _scope()   # names FUNCTION only
    arn, _ = iam.ensure_role(clients["iam"], name=role, trust=iam.trust_policy(iam.TRUSTED_SERVICE["states"]),
                             policy=iam.states_policy(scope), tags={"scones:prefix": "scones"})
    other = f"notInThePolicy-{uuid.uuid4().hex[:6]}"
    clients["lambda"].create_function(FunctionName=other, Runtime="python3.12", Role=arn, Handler="echo.handler",
                                      Code={"ZipFile": zip_of({"echo.py": "def handler(event, context):\n    return event\n"})})
    clients["lambda"].get_waiter("function_active_v2").wait(FunctionName=other, WaiterConfig={"Delay": 0.5})

    def run(function: str) -> dict:
        definition = {"StartAt": "Call", "States": {"Call": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
            "Parameters": {"FunctionName": scope.function_arn(function), "Payload.$": "$"}}}}
        machine = sfn.create_state_machine(name=f"iam-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition),
                                           roleArn=arn)["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({
            "bucket": BUCKET, "allowed": "images/a.png", "outside": "results/x.json", "missing": "images/none.png"}))
        return poll(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
            sfn.describe_execution(executionArn=execution["executionArn"])), timeout=60, what="the execution to end")

    assert run(FUNCTION)["status"] == "SUCCEEDED"
    failed = run(other)
    assert failed["status"] == "FAILED"
    history = sfn.get_execution_history(executionArn=failed["executionArn"])["events"]
    causes = " ".join(json.dumps(event, default=str) for event in history)
    assert f"assumed-role/{role}/" in causes and "lambda:InvokeFunction" in causes, causes[-2000:]


def test_denials_are_listed_for_status_the_report_and_the_pytest_summary(enforcing, tmp_path):
    """The issue: a denial is listed where a user looks. `scones status` and the pytest plugin's summary print
    denials.summary_lines of what LocalStack's gateway recorded; the report has an "IAM checks" section."""
    from types import SimpleNamespace

    from scones.deploy.local import local_session
    from scones.harness import pytest_plugin, report
    from scones.harness.iam import denials

    instance, clients = enforcing
    _run(clients)   # one s3:PutObject outside the policy, denied
    lines = denials.summary_lines(denials.fetch(instance.url))
    assert lines[0].startswith("IAM checks: enforce, ") and "denied" in lines[0]
    assert any("s3 PutObject" in line and "is not authorized to perform: s3:PutObject" in line for line in lines[1:])

    target = SimpleNamespace(name="local", session=local_session(instance.url))
    section = report._iam(target)
    assert section is not None and section["mode"] == "enforce"
    page = report.render_report({
        "generated_at": "now", "target": "local", "state_machine_arn": None, "evaluation": None,
        "evaluation_path": None, "monitoring": None, "plots": {}, "drift_caption": None, "definition_svg": None,
        "executions": [], "missing_outcomes": [], "outcome_style": report.OUTCOME_STYLE, "operations": None,
        "coverage": None, "iam": section})
    assert 'id="iam-denials"' in page and "s3:PutObject" in page and ROLE in page

    config = SimpleNamespace(stash={})
    pytest_plugin._remember_iam_denials(config, target)
    written: list[str] = []
    reporter = SimpleNamespace(section=lambda title, **markup: written.append(f"== {title}"),
                               write_line=written.append)
    pytest_plugin.pytest_terminal_summary(reporter, 0, config)
    assert written[0] == "== scones IAM" and written[1].startswith("IAM checks: enforce")
    assert any("s3:PutObject" in line for line in written[2:])


def test_status_lines_say_when_the_checks_are_off_or_unreadable():
    """SCONES_IAM=off answers 404 on the denials route (the checks are not installed); no answer at all is said."""
    from scones.harness.iam import denials

    assert denials.summary_lines({"mode": "off", "denials": []})[0].startswith("IAM checks: off")
    assert denials.summary_lines(None)[0].startswith("IAM checks: cannot be read")
    assert denials.summary_lines({"mode": "report", "denials": []}) == ["IAM checks: report, nothing denied"]


def test_create_model_reads_the_model_data_as_its_execution_role(enforcing):
    """SageMaker reads a model's ModelDataUrl with the model's ExecutionRoleArn (SageMaker Developer Guide,
    sagemaker-roles.html, "CreateModel API: Execution Role Permissions": s3:GetObject on the model's bucket), so a
    role that may not read it gets CreateModel's "Could not find model data at s3://..." (aws-ia/ecs-blueprints#223),
    and deploy/iam.py's SageMaker role, which may, gets the model. SageMaker's session of an execution role is
    named "SageMaker" (AWS's own denial "assumed-role/AmazonSageMaker-ExecutionRole-.../SageMaker is not
    authorized to perform ...", quoted in wpilibsuite/DetectCoral#20)."""
    _, clients = enforcing
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    sagemaker = session.client("sagemaker", endpoint_url=clients["s3"].meta.endpoint_url)
    clients["s3"].put_object(Bucket=BUCKET, Key="models/m/model.tar.gz", Body=b"weights")
    url = f"s3://{BUCKET}/models/m/model.tar.gz"
    suffix = uuid.uuid4().hex[:6]
    trust = iam.trust_policy(iam.TRUSTED_SERVICE["sagemaker"])
    policy = iam.sagemaker_policy(dataclasses.replace(_scope(), image_repositories=("763104351884:pytorch-inference",)))
    allowed, _ = iam.ensure_role(clients["iam"], name=f"scones-iam-test-sm-{suffix}", trust=trust, policy=policy,
                                 tags={"scones:prefix": "scones"})
    others = {**policy, "Statement": [s for s in policy["Statement"] if s["Sid"] != "BucketObjects"]}
    refused, _ = iam.ensure_role(clients["iam"], name=f"scones-iam-test-sm-no-s3-{suffix}", trust=trust,
                                 policy=others, tags={"scones:prefix": "scones"})
    container = {"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
                 "ModelDataUrl": url}

    with pytest.raises(sagemaker.exceptions.ClientError, match=f"Could not find model data at {url}"):
        sagemaker.create_model(ModelName=f"refused-{suffix}", ExecutionRoleArn=refused, PrimaryContainer=container)
    sagemaker.create_model(ModelName=f"allowed-{suffix}", ExecutionRoleArn=allowed, PrimaryContainer=container)

    with urllib.request.urlopen(f"{clients['s3'].meta.endpoint_url}{DENIALS_PATH}") as reply:
        denials = json.loads(reply.read())["denials"]
    assert any(d["principal"].endswith(f"/scones-iam-test-sm-no-s3-{suffix}/SageMaker") and d["action"] == "s3:GetObject"
               for d in denials), denials[-3:]
