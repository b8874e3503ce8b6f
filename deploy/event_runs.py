"""Event-driven runs: a photo landing under incoming/ starts the workflow; each finished run writes results/<key>.json.

The wiring, the same on LocalStack (`scones up`) and AWS (`scones deploy`):

  S3 PutObject incoming/x.png --(bucket EventBridge notifications)--> default event bus
    rule <prefix>-photo-landed  (aws.s3 "Object Created", this bucket, key prefix incoming/)
      -> target: the state machine, role <prefix>-events-role, InputTransformer -> {"s3_bucket", "s3_key"}
  Step Functions "Execution Status Change" (SUCCEEDED/FAILED/TIMED_OUT/ABORTED of this machine)
    rule <prefix>-run-finished -> target: Lambda <prefix>-writeResult (resource policy for this rule only)
      -> s3://<bucket>/results/incoming/x.png.json (lambdas/run_results.py)

Every function here is create-or-update, so a second deploy changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from botocore.exceptions import ClientError

from scones.deploy.packaging import FunctionSpec
from scones.deploy.workflow import function_name
from scones.lambdas import config as lambda_config
from scones.lambdas.run_results import DETAIL_TYPE, FINISHED_STATUSES

INTAKE_PREFIX = "incoming/"
RESULTS_PREFIX = lambda_config.DEFAULT_RESULTS_PREFIX
WORKFLOW_TARGET_ID = "workflow"
WRITER_TARGET_ID = "writeResult"
# What the workflow expects (lambdas/events.py ImageLocation), cut out of S3's "Object Created" event
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).
WORKFLOW_INPUT = {
    "InputPathsMap": {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"},
    "InputTemplate": '{"s3_bucket": <bucket>, "s3_key": <key>}',
}
# The notification types S3 keeps beside EventBridge's; PutBucketNotificationConfiguration replaces them all.
NOTIFICATION_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")

RESULT_WRITER = FunctionSpec(
    name="writeResult",
    module="lambdas.write_result",
    environment=(lambda_config.RESULTS_BUCKET, lambda_config.RESULTS_PREFIX),
    timeout=30,
    memory=128,
    description="Scones: write a finished run's result (class or error) to results/ in S3",
)


@dataclass(frozen=True)
class EventRunsNames:
    prefix: str

    @property
    def photo_rule(self) -> str:
        return f"{self.prefix}-photo-landed"

    @property
    def finished_rule(self) -> str:
        return f"{self.prefix}-run-finished"

    @property
    def writer_function(self) -> str:
        return function_name(self.prefix, RESULT_WRITER.name)

    @property
    def writer_permission(self) -> str:
        return f"{self.finished_rule}-invokes"

    @property
    def events_role(self) -> str:
        return f"{self.prefix}-events-role"

    @property
    def writer_role(self) -> str:
        return f"{self.prefix}-results-role"


@dataclass
class EventRunsResources:
    bucket: str | None = None
    notification_enabled_here: bool = False     # False: the bucket sent to EventBridge before; leave it on at destroy
    rules: list[str] = field(default_factory=list)
    writer_function_arn: str | None = None
    intake_prefix: str = INTAKE_PREFIX
    results_prefix: str = RESULTS_PREFIX

    def to_dict(self) -> dict:
        return dict(vars(self), rules=list(self.rules))

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "EventRunsResources":
        return cls(**{key: value for key, value in (data or {}).items() if key in cls.__dataclass_fields__})


def photo_landed_pattern(bucket: str, intake_prefix: str = INTAKE_PREFIX) -> dict:
    return {"source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": intake_prefix}]}}}


def run_finished_pattern(state_machine_arn: str) -> dict:
    return {"source": ["aws.states"], "detail-type": [DETAIL_TYPE],
            "detail": {"stateMachineArn": [state_machine_arn], "status": list(FINISHED_STATUSES)}}


def writer_environment(bucket: str, results_prefix: str = RESULTS_PREFIX) -> dict[str, str]:
    return {lambda_config.RESULTS_BUCKET: bucket, lambda_config.RESULTS_PREFIX: results_prefix}


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def enable_bucket_events(s3, bucket: str) -> bool:
    """Turn on the bucket's EventBridge notifications, keeping its other ones. Returns whether it was off."""
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    if "EventBridgeConfiguration" in current:
        return False
    kept = {kind: current[kind] for kind in NOTIFICATION_KINDS if current.get(kind)}
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration={**kept, "EventBridgeConfiguration": {}})
    return True


def disable_bucket_events(s3, bucket: str) -> None:
    try:
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
    except ClientError as error:
        if _code(error) == "NoSuchBucket":
            return
        raise
    kept = {kind: current[kind] for kind in NOTIFICATION_KINDS if current.get(kind)}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=kept)


def ensure_rule(events, *, name: str, pattern: dict, description: str, target: dict) -> str:
    """PutRule and PutTargets are idempotent upserts; returns the rule's ARN."""
    arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern, sort_keys=True), State="ENABLED",
                          Description=description)["RuleArn"]
    failed = events.put_targets(Rule=name, Targets=[target]).get("FailedEntries") or []
    if failed:
        raise RuntimeError(f"EventBridge refused target {target['Id']} of rule {name}: {failed}")
    return arn


def allow_rule_to_invoke(lambda_client, *, function: str, statement_id: str, rule_arn: str) -> None:
    """The writer's resource policy: events.amazonaws.com may invoke it for this one rule."""
    try:
        lambda_client.add_permission(FunctionName=function, StatementId=statement_id, Action="lambda:InvokeFunction",
                                     Principal="events.amazonaws.com", SourceArn=rule_arn)
    except ClientError as error:
        if _code(error) != "ResourceConflictException":   # the statement is there from an earlier deploy
            raise


