"""The event-driven runs of `scones deploy --target aws` against moto: the rules, their targets, the writer
function, the bucket's notifications and two least-privilege roles; `destroy` leaves none; `--dry-run` lists them.

What AWS asks for, and the test checks:
- S3 sends a bucket's events to EventBridge once its notification configuration holds
  "EventBridgeConfiguration": {} (https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-event-notifications-eventbridge.html),
  and PutBucketNotificationConfiguration replaces the whole configuration, so other notifications must be sent again.
- A rule starting a state machine needs a role EventBridge can assume with states:StartExecution
  (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-identity-based.html); a rule invoking a
  Lambda function needs the function's resource policy to allow events.amazonaws.com for that rule's ARN
  (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html).

moto 5.2.5 stores EventBridgeConfiguration but leaves it out of GetBucketNotificationConfiguration's
reply (AWS returns it), so sends_to_eventbridge() reads moto's own model.
"""
from __future__ import annotations

import json

import pytest
from test_deploy_aws import ACCOUNT, REGION, inventory, moto_aws, options, role_arn, run_deploy, session, staged, statements  # noqa: F401 (fixtures below)  # noqa: F401

from scones.deploy import aws
from scones.deploy.event_runs import INTAKE_PREFIX, WORKFLOW_INPUT

BUCKET = f"sct-data-{REGION}-{ACCOUNT}"


def sends_to_eventbridge(bucket: str = BUCKET) -> bool:
    from moto.s3.models import s3_backends

    configuration = s3_backends[ACCOUNT]["aws"].get_bucket(bucket).notification_configuration
    return configuration is not None and configuration.event_bridge is not None


def rules(session) -> dict[str, dict]:
    events = session.client("events")
    found = {}
    for rule in events.list_rules(NamePrefix="sct-")["Rules"]:
        if "EventPattern" not in rule:   # the drift monitor's schedule rule (deploy/monitoring.py)
            continue
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        found[rule["Name"]] = {"pattern": json.loads(rule["EventPattern"]), "arn": rule["Arn"], "targets": targets}
    return found


def test_deploy_wires_photos_to_the_workflow_and_runs_to_results(options, session):
    record = run_deploy(options, session)
    outputs = record["outputs"]
    machine_arn = outputs["state_machine_arn"]
    assert outputs["intake_s3_uri"] == f"s3://{BUCKET}/{INTAKE_PREFIX}"
    assert outputs["results_s3_uri"] == f"s3://{BUCKET}/results/"

    found = rules(session)
    assert set(found) == {"sct-photo-landed", "sct-run-finished"}
    landed = found["sct-photo-landed"]
    assert landed["pattern"] == {"source": ["aws.s3"], "detail-type": ["Object Created"],
                                 "detail": {"bucket": {"name": [BUCKET]}, "object": {"key": [{"prefix": "incoming/"}]}}}
    [workflow] = landed["targets"]
    assert workflow["Arn"] == machine_arn
    assert workflow["RoleArn"] == role_arn(record, "events")
    assert workflow["InputTransformer"] == WORKFLOW_INPUT

    finished = found["sct-run-finished"]
    assert finished["pattern"]["source"] == ["aws.states"]
    assert finished["pattern"]["detail"] == {"stateMachineArn": [machine_arn],
                                             "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]}
    [writer] = finished["targets"]
    lambda_client = session.client("lambda")
    function = lambda_client.get_function_configuration(FunctionName="sct-writeResult")
    assert writer["Arn"] == function["FunctionArn"]
    assert function["Handler"] == "lambdas.write_result.lambda_handler"
    assert function["Role"] == role_arn(record, "results")
    assert function["Environment"]["Variables"] == {"RESULTS_BUCKET": BUCKET, "RESULTS_PREFIX": "results/"}
    [grant] = json.loads(lambda_client.get_policy(FunctionName="sct-writeResult")["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == finished["arn"]

    assert sends_to_eventbridge()


def test_the_two_roles_may_do_only_their_one_job(options, session):
    record = run_deploy(options, session)
    machine_arn = record["outputs"]["state_machine_arn"]
    iam = session.client("iam")

    events = statements(session, "sct-events-role")
    assert events == {"StartWorkflow": {"Sid": "StartWorkflow", "Effect": "Allow", "Action": "states:StartExecution",
                                        "Resource": machine_arn}}
    trust = iam.get_role(RoleName="sct-events-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}

    writer = statements(session, "sct-results-role")
    assert set(writer) == {"WriteResults", "ReadRunPayloads", "OwnLogs"}
    assert writer["WriteResults"]["Action"] == "s3:PutObject"
    assert writer["WriteResults"]["Resource"] == f"arn:aws:s3:::{BUCKET}/results/*"
    assert writer["ReadRunPayloads"]["Resource"] == f"arn:aws:states:{REGION}:{ACCOUNT}:execution:sct-workflow:*"
    assert all("/aws/lambda/sct-writeResult" in arn for arn in writer["OwnLogs"]["Resource"])
    trust = iam.get_role(RoleName="sct-results-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_the_bucket_keeps_the_notifications_it_had(options, session):
    s3, sns = session.client("s3"), session.client("sns")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    topic = sns.create_topic(Name="someone-elses-topic")["TopicArn"]
    theirs = [{"Id": "theirs", "TopicArn": topic, "Events": ["s3:ObjectRemoved:*"]}]
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"TopicConfigurations": theirs},
                                             SkipDestinationValidation=True)

    run_deploy(options, session)
    configured = s3.get_bucket_notification_configuration(Bucket=BUCKET)
    assert sends_to_eventbridge() and configured["TopicConfigurations"][0]["Id"] == "theirs"

    aws.destroy(state_dir=options.state_dir, session=session)
    configured = s3.get_bucket_notification_configuration(Bucket=BUCKET)
    assert not sends_to_eventbridge() and configured["TopicConfigurations"][0]["Id"] == "theirs"


def test_redeploy_changes_nothing_and_destroy_leaves_none(options, session):
    run_deploy(options, session)
    before = rules(session)
    messages: list[str] = []
    run_deploy(options, session, messages)
    assert rules(session) == before
    assert "Lambda function sct-writeResult: unchanged" in messages
    assert "IAM role sct-events-role: unchanged" in messages and "IAM role sct-results-role: unchanged" in messages

    deleted = aws.destroy(state_dir=options.state_dir, session=session)

    assert {"EventBridge rule sct-photo-landed", "EventBridge rule sct-run-finished"} <= set(deleted)
    assert session.client("events").list_rules(NamePrefix="sct-")["Rules"] == []
    left = inventory(session)
    assert left["functions"] == [] and left["roles"] == []
    assert not sends_to_eventbridge()


def test_dry_run_lists_the_event_wiring_and_creates_nothing(options, session):
    text = "\n".join(aws.plan(options, session=session))

    assert "rule/photo-landed: EventBridge rule sct-photo-landed on" in text and f'"prefix": "{INTAKE_PREFIX}"' in text
    assert "-> <arn of state-machine> (role <arn of role/events>)" in text
    assert "role/events: IAM role sct-events-role for events.amazonaws.com (inline policy: StartWorkflow)" in text
    assert "IAM role sct-results-role for lambda.amazonaws.com (inline policy: WriteResults, ReadRunPayloads, OwnLogs)" in text
    assert "function/writeResult: Lambda function sct-writeResult" in text and f"RESULTS_BUCKET={BUCKET}" in text
    assert "rule/run-finished: EventBridge rule sct-run-finished" in text and "-> <arn of function/writeResult>" in text
    assert f"bucket-events: bucket {BUCKET} sends its events to EventBridge" in text
    assert session.client("events").list_rules()["Rules"] == []


@pytest.mark.parametrize("interrupted_at", ["put_rule", "put_bucket_notification_configuration"])
def test_a_deploy_killed_midway_is_still_destroyed(options, session, monkeypatch, interrupted_at):
    from botocore.client import BaseClient

    calls = {"seen": 0}
    original = BaseClient._make_api_call

    def crash_on(self, operation, params):
        if operation == "".join(part.title() for part in interrupted_at.split("_")):
            calls["seen"] += 1
            if calls["seen"] == 2 or interrupted_at.startswith("put_bucket"):
                raise KeyboardInterrupt
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", crash_on)
    with pytest.raises(KeyboardInterrupt):
        run_deploy(options, session)
    monkeypatch.setattr(BaseClient, "_make_api_call", original)

    aws.destroy(state_dir=options.state_dir, session=session)
    assert session.client("events").list_rules()["Rules"] == []
    assert inventory(session)["functions"] == [] and inventory(session)["roles"] == []
