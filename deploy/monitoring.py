"""The drift monitor that runs itself, the same on LocalStack (`scones up`) and AWS (`scones deploy`):

  EventBridge rule <prefix>-monitor-schedule (ScheduleExpression, hourly by default)
    -> Lambda <prefix>-monitorDrift (lambdas/drift_monitor.py; resource policy for this rule only)
       reads the capture files new since its last run, runs `scones monitor`'s tests against the
       baseline in s3://<bucket>/monitoring/<endpoint>/baseline.json, publishes CloudWatch metrics
       (namespace Scones/Monitor, dimension EndpointName), writes runs/<time>.json and state.json there
  CloudWatch alarms, each notifying SNS topic <prefix>-monitor-alarms (subscribe to it) on ALARM and OK:
    <prefix>-drift            DriftPValue (the smaller p-value) < alpha
    <prefix>-below-threshold  ShareBelowThreshold > limit
  Both treat missing data as "ignore": between runs an alarm keeps the last run's verdict.

Every function here is create-or-update, so a second deploy changes nothing.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import boto3
from botocore.exceptions import ClientError

from scones import contract
from scones.deploy.event_runs import allow_rule_to_invoke
from scones.deploy.packaging import FunctionSpec, build_zip
from scones.deploy.waiting import DeployError, Progress
from scones.deploy.workflow import ensure_function, function_name
from scones.lambdas import config as lambda_config
from scones.lambdas import drift_monitor
from scones.lambdas.drift import DEFAULT_ALPHA

DEFAULT_SCHEDULE = "rate(1 hour)"
MONITOR_PREFIX = "monitoring/"
CAPTURE_PREFIX = contract.CAPTURE_PREFIX + "/"
DEFAULT_SHARE_BELOW_LIMIT = 0.5     # the test set's share below 0.93 is about a quarter (DESIGN.md section 6)
# AWS evaluates an alarm every minute over its period; 5 minutes sees each run's datapoint soon after it lands.
DEFAULT_ALARM_PERIOD_S = 300
# LocalStack 4.14 evaluates an alarm every Period x EvaluationPeriods seconds (cloudwatch/alarm_scheduler.py):
# 10 s (a high-resolution period, valid on AWS too: the metrics are published at 1 s resolution).
LOCAL_ALARM_PERIOD_S = 10
SCHEDULE_TARGET_ID = "monitorDrift"
SCHEDULE_STATEMENT_ID = "scones-monitor-schedule"
RUNS_SHOWN = 5

MONITOR_FUNCTION = FunctionSpec(
    name="monitorDrift",
    module="lambdas.drift_monitor",
    environment=(lambda_config.ENDPOINT_NAME, lambda_config.THRESHOLD, lambda_config.CAPTURE_S3_URI,
                 lambda_config.MONITOR_S3_URI, lambda_config.METRIC_NAMESPACE, lambda_config.DRIFT_ALPHA),
    # benchmarks/drift_monitor.py: 10,000 records take about 2 s and 60 MiB here; room for ten times that.
    timeout=300,
    memory=512,
    description="Scones: scheduled drift check of the endpoint's new capture records, published to CloudWatch",
)


@dataclass(frozen=True)
class MonitorNames:
    prefix: str

    @property
    def function(self) -> str:
        return function_name(self.prefix, MONITOR_FUNCTION.name)

    @property
    def rule(self) -> str:
        return f"{self.prefix}-monitor-schedule"

    @property
    def topic(self) -> str:
        return f"{self.prefix}-monitor-alarms"

    @property
    def drift_alarm(self) -> str:
        return f"{self.prefix}-drift"

    @property
    def share_alarm(self) -> str:
        return f"{self.prefix}-below-threshold"

    @property
    def role(self) -> str:
        return f"{self.prefix}-monitor-role"


@dataclass(frozen=True)
class MonitorSettings:
    prefix: str
    bucket: str
    endpoint_name: str
    threshold: float
    alpha: float = DEFAULT_ALPHA
    schedule: str = DEFAULT_SCHEDULE
    share_below_limit: float = DEFAULT_SHARE_BELOW_LIMIT
    alarm_period_s: int = DEFAULT_ALARM_PERIOD_S

    @property
    def names(self) -> MonitorNames:
        return MonitorNames(self.prefix)

    @property
    def capture_prefix(self) -> str:
        return f"{CAPTURE_PREFIX}{self.endpoint_name}/"

    @property
    def monitor_prefix(self) -> str:
        return f"{MONITOR_PREFIX}{self.endpoint_name}/"

    def environment(self) -> dict[str, str]:
        return {
            lambda_config.ENDPOINT_NAME: self.endpoint_name,
            lambda_config.THRESHOLD: str(self.threshold),
            lambda_config.CAPTURE_S3_URI: f"s3://{self.bucket}/{self.capture_prefix}",
            lambda_config.MONITOR_S3_URI: f"s3://{self.bucket}/{self.monitor_prefix}",
            lambda_config.METRIC_NAMESPACE: drift_monitor.DEFAULT_NAMESPACE,
            lambda_config.DRIFT_ALPHA: str(self.alpha),
        }

    def alarms(self, topic_arn: str) -> list[dict[str, Any]]:
        """PutMetricAlarm requests: simple single-metric alarms (what LocalStack 4.14 evaluates, and AWS)."""
        common = {
            "Namespace": drift_monitor.DEFAULT_NAMESPACE,
            "Dimensions": [{"Name": "EndpointName", "Value": self.endpoint_name}],
            "Period": self.alarm_period_s,
            "EvaluationPeriods": 1,
            "TreatMissingData": "ignore",
            "ActionsEnabled": True,
            "AlarmActions": [topic_arn],
            "OKActions": [topic_arn],
        }
        return [
            {**common, "AlarmName": self.names.drift_alarm, "MetricName": drift_monitor.DRIFT_P_METRIC,
             "Statistic": "Minimum", "ComparisonOperator": "LessThanThreshold", "Threshold": self.alpha,
             "AlarmDescription": f"Scones: a drift test of {self.endpoint_name}'s new capture failed "
                                 f"(p-value < {self.alpha}; class balance or confidence vs the training baseline)"},
            {**common, "AlarmName": self.names.share_alarm, "MetricName": drift_monitor.SHARE_BELOW_METRIC,
             "Statistic": "Maximum", "ComparisonOperator": "GreaterThanThreshold", "Threshold": self.share_below_limit,
             "AlarmDescription": f"Scones: more than {self.share_below_limit:.0%} of {self.endpoint_name}'s new answers "
                                 f"were below the threshold {self.threshold}"},
        ]


@dataclass
class MonitorResources:
    function_arn: str | None = None
    rule_arn: str | None = None
    topic_arn: str | None = None
    alarms: list[str] = field(default_factory=list)
    monitor_s3_uri: str | None = None
    schedule: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "MonitorResources":
        return cls(**{key: value for key, value in (data or {}).items() if key in cls.__dataclass_fields__})


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


# --- the baseline -------------------------------------------------------------------------------

def baseline_from_training_output(s3, model_data: str) -> dict | None:
    """baseline.json from the training job's output.tar.gz beside model.tar.gz (train.py writes it to
    SM_OUTPUT_DATA_DIR, which SageMaker uploads as <job>/output/output.tar.gz), or None where there is none."""
    if not model_data.startswith("s3://") or not model_data.endswith("/model.tar.gz"):
        return None
    bucket, _, key = model_data[5:].partition("/")
    try:
        body = s3.get_object(Bucket=bucket, Key=key[: -len("model.tar.gz")] + "output.tar.gz")["Body"].read()
    except ClientError as error:
        if _code(error) in ("NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "403"):
            return None
        raise
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.rsplit("/", 1)[-1] == "baseline.json":
                extracted = archive.extractfile(member)   # a regular file's member always has one
                return json.loads(extracted.read()) if extracted else None
    return None


def upload_baseline(s3, settings: MonitorSettings, baseline: dict) -> str:
    key = settings.monitor_prefix + drift_monitor.BASELINE_FILE
    s3.put_object(Bucket=settings.bucket, Key=key, Body=json.dumps(baseline).encode(), ContentType="application/json")
    return f"s3://{settings.bucket}/{key}"


# --- deploy and destroy -------------------------------------------------------------------------

def deploy_monitor(
    session: boto3.Session,
    settings: MonitorSettings,
    *,
    role_arn: str,
    baseline: dict | None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_change: Callable[[MonitorResources], None] | None = None,
) -> MonitorResources:
    """The function, its schedule, the topic and the two alarms; the baseline beside the capture."""
    say = progress or (lambda message: None)
    names = settings.names
    made = MonitorResources(monitor_s3_uri=f"s3://{settings.bucket}/{settings.monitor_prefix}", schedule=settings.schedule)
    remember = on_change or (lambda resources: None)
    if baseline is not None:
        say(f"monitor baseline: {upload_baseline(session.client('s3'), settings, baseline)}")
    else:
        say(f"monitor baseline: none given; the monitor publishes records and share below threshold only "
            f"until s3://{settings.bucket}/{settings.monitor_prefix}{drift_monitor.BASELINE_FILE} exists")
    lambda_client = session.client("lambda")
    made.function_arn, action = ensure_function(
        lambda_client, name=names.function, spec=MONITOR_FUNCTION, zip_bytes=build_zip(MONITOR_FUNCTION),
        role_arn=role_arn, environment=settings.environment(), progress=progress, sleep=sleep)
    say(f"Lambda function {names.function}: {action}")
    remember(made)
    made.topic_arn = session.client("sns").create_topic(Name=names.topic)["TopicArn"]
    remember(made)
    events = session.client("events")
    made.rule_arn = events.put_rule(Name=names.rule, ScheduleExpression=settings.schedule, State="ENABLED",
                                    Description=f"Scones: run {names.function} on {settings.schedule}")["RuleArn"]
    remember(made)
    allow_rule_to_invoke(lambda_client, function=names.function, statement_id=SCHEDULE_STATEMENT_ID, rule_arn=made.rule_arn)
    failed = events.put_targets(Rule=names.rule, Targets=[{"Id": SCHEDULE_TARGET_ID, "Arn": made.function_arn}]).get("FailedEntries")
    if failed:
        raise DeployError(f"EventBridge refused target {SCHEDULE_TARGET_ID} of rule {names.rule}: {failed}")
    say(f"EventBridge rule {names.rule}: {settings.schedule} -> {names.function}")
    cloudwatch = session.client("cloudwatch")
    for alarm in settings.alarms(made.topic_arn):
        cloudwatch.put_metric_alarm(**alarm)
        if alarm["AlarmName"] not in made.alarms:
            made.alarms.append(alarm["AlarmName"])
        remember(made)
        say(f"CloudWatch alarm {alarm['AlarmName']}: {alarm['MetricName']} {alarm['ComparisonOperator']} "
            f"{alarm['Threshold']} -> SNS {names.topic}")
    return made


def destroy_monitor(session: boto3.Session, resources: MonitorResources, prefix: str,
                    progress: Progress | None = None) -> list[str]:
    """Rule first (nothing starts a run of a function being deleted), then function, alarms, topic."""
    say = progress or (lambda message: None)
    names = MonitorNames(prefix)
    deleted: list[str] = []

    def gone(what: str) -> None:
        deleted.append(what)
        say(f"deleted {what}")

    def tolerate_missing(call: Callable[[], Any], *codes: str) -> bool:
        try:
            call()
            return True
        except ClientError as error:
            if _code(error) not in ("ResourceNotFoundException", "NotFound", *codes):
                raise
            return False

    if resources.rule_arn:
        events = session.client("events")

        def delete_rule() -> None:
            targets = [target["Id"] for target in events.list_targets_by_rule(Rule=names.rule).get("Targets", [])]
            if targets:
                events.remove_targets(Rule=names.rule, Ids=targets)
            events.delete_rule(Name=names.rule)

        if tolerate_missing(delete_rule):
            gone(f"EventBridge rule {names.rule}")
    if resources.function_arn and tolerate_missing(lambda: session.client("lambda").delete_function(FunctionName=names.function)):
        gone(f"Lambda function {resources.function_arn}")
    if resources.alarms:
        session.client("cloudwatch").delete_alarms(AlarmNames=list(resources.alarms))   # absent names are no error
        for alarm in resources.alarms:
            gone(f"CloudWatch alarm {alarm}")
    if resources.topic_arn and tolerate_missing(lambda: session.client("sns").delete_topic(TopicArn=resources.topic_arn)):
        gone(f"SNS topic {resources.topic_arn}")
    return deleted


# --- using it -----------------------------------------------------------------------------------

class MonitorRunFailed(DeployError):
    """The monitor function ran and raised; the message carries its error."""


def run_now(session: boto3.Session, prefix: str) -> dict[str, Any]:
    """Invoke the deployed monitor function as its schedule does, wait, and return its run summary."""
    name = MonitorNames(prefix).function
    try:
        reply = session.client("lambda").invoke(FunctionName=name, InvocationType="RequestResponse",
                                                Payload=json.dumps({"source": "scones.cli", "detail-type": "Manual run"}))
    except ClientError as error:
        if _code(error) == "ResourceNotFoundException":
            raise DeployError(f"no monitor function {name} is deployed: `scones up` (or `scones deploy`) deploys it") from None
        raise
    body = json.loads(reply["Payload"].read() or b"null")
    if reply.get("FunctionError"):
        failure = body if isinstance(body, dict) else {}
        raise MonitorRunFailed(f"{name} failed: {failure.get('errorType', 'error')}: {failure.get('errorMessage', body)}")
    return body


def _latest_runs(s3, monitor_s3_uri: str, count: int) -> list[dict[str, Any]]:
    bucket, _, prefix = monitor_s3_uri[5:].partition("/")
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + drift_monitor.RUNS_FOLDER) for item in page.get("Contents", [])]
    runs = []
    for key in sorted(keys)[-count:][::-1]:   # keys start with the run's UTC time: newest first
        summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        tests = summary.get("drift", {}).get("tests") or {}
        runs.append({
            "run_at": summary.get("run_at"), "trigger": summary.get("trigger"), "records": summary.get("records"),
            "share_below_threshold": summary.get("share_below_threshold"),
            "drift": summary.get("drift", {}).get("status"),
            "p_values": {name: test["p_value"] for name, test in tests.items()},
            "summary": f"s3://{bucket}/{key}",
        })
    return runs


def describe_monitor(session: boto3.Session, resources: MonitorResources, runs: int = RUNS_SHOWN) -> dict[str, Any]:
    """Schedule, alarm states and the latest runs, for `scones status` and `scones report`."""
    alarms = []
    if resources.alarms:
        for alarm in session.client("cloudwatch").describe_alarms(AlarmNames=list(resources.alarms))["MetricAlarms"]:
            alarms.append({"name": alarm["AlarmName"], "state": alarm["StateValue"], "metric": alarm["MetricName"],
                           "comparison": alarm["ComparisonOperator"], "threshold": alarm["Threshold"],
                           "reason": alarm.get("StateReason"), "updated": str(alarm.get("StateUpdatedTimestamp", ""))})
    return {
        "function_arn": resources.function_arn,
        "schedule": resources.schedule,
        "rule_arn": resources.rule_arn,
        "topic_arn": resources.topic_arn,
        "alarms": alarms,
        "runs": _latest_runs(session.client("s3"), resources.monitor_s3_uri, runs) if resources.monitor_s3_uri else [],
    }
