"""`scones deploy --target aws` against moto: the endpoint's autoscaling, classifyImage's reserved concurrency,
and the scheduled drift monitor (function, schedule, alarms, topic, role), each least-privilege; `--dry-run`
lists them and `scones destroy` leaves none.

AWS sources for the shapes asserted: SageMaker endpoint autoscaling registers ResourceId
"endpoint/<endpoint>/variant/<variant>" with ScalableDimension "sagemaker:variant:DesiredInstanceCount" and a
TargetTrackingScaling policy on the predefined metric SageMakerVariantInvocationsPerInstance
(https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-code-define.html); reserved
concurrency is PutFunctionConcurrency (botocore lambda/2015-03-31 service model); a rule that invokes a
function needs a lambda:InvokeFunction permission conditioned on the rule's ARN
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html)."""
from __future__ import annotations

import json
import re

import pytest
from test_deploy_aws import ACCOUNT, REGION, inventory, moto_aws, realistic_session, run_deploy, staged, statements  # noqa: F401
from test_monitor_capture import baseline_from, synthetic_test_set

from scones.deploy import aws, resources
from scones.deploy.aws import DeployOptions
from scones.deploy.scaling import ScalingOptions

ENDPOINT = "sct-classifier"
RESOURCE_ID = f"endpoint/{ENDPOINT}/variant/AllTraffic"
BUCKET = f"sct-data-{REGION}-{ACCOUNT}"


@pytest.fixture
def baseline_file(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline_from(*synthetic_test_set(seed=3))))
    return path


@pytest.fixture
def options(tmp_path, staged, baseline_file):  # noqa: F811
    return DeployOptions(region=REGION, prefix="sct", data_dir=staged, state_dir=tmp_path / "state",
                         scaling=ScalingOptions(min_instances=1, max_instances=3, target_invocations=70),
                         baseline=baseline_file)


@pytest.fixture
def session(moto_aws):  # noqa: F811
    return realistic_session()


def operations_inventory(session) -> dict:
    autoscaling = session.client("application-autoscaling")
    events = session.client("events")
    return {
        "scalable_targets": [t["ResourceId"] for t in autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]],
        "scaling_policies": [p["PolicyName"] for p in autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]],
        "schedule_rules": [r["Name"] for r in events.list_rules(NamePrefix="sct-")["Rules"] if "ScheduleExpression" in r],
        "alarms": sorted(a["AlarmName"] for a in session.client("cloudwatch").describe_alarms()["MetricAlarms"]),
        "topics": [t["TopicArn"] for t in session.client("sns").list_topics()["Topics"]],
        "monitor_function": [f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]
                             if f["FunctionName"] == "sct-monitorDrift"],
    }


def test_deploy_scales_the_endpoint_and_runs_a_drift_monitor_then_destroy_leaves_none(options, session):
    record = run_deploy(options, session)

    # target tracking on the production variant
    autoscaling = session.client("application-autoscaling")
    target, = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["ScalableDimension"]) == (RESOURCE_ID, "sagemaker:variant:DesiredInstanceCount")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    policy, = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID)["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and tracking["TargetValue"] == 70
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"

    # classifyImage may not call the endpoint more than 5 per instance at the most at once
    lambda_client = session.client("lambda")
    assert lambda_client.get_function_concurrency(FunctionName="sct-classifyImage")["ReservedConcurrentExecutions"] == 15

    # the monitor function, its environment, and the baseline beside the capture
    monitor = lambda_client.get_function_configuration(FunctionName="sct-monitorDrift")
    variables = monitor["Environment"]["Variables"]
    assert variables["CAPTURE_S3_URI"] == f"s3://{BUCKET}/data_capture/{ENDPOINT}/"
    assert variables["MONITOR_S3_URI"] == f"s3://{BUCKET}/monitoring/{ENDPOINT}/"
    assert monitor["Handler"] == "lambdas.drift_monitor.lambda_handler" and monitor["Timeout"] == 300
    assert monitor["Role"] == resources.role_arn(record, "monitor")
    stored = session.client("s3").get_object(Bucket=BUCKET, Key=f"monitoring/{ENDPOINT}/baseline.json")["Body"].read()
    assert json.loads(stored) == json.loads(options.baseline.read_text())

    # hourly schedule -> the function, which only this rule may invoke
    events = session.client("events")
    rule = events.describe_rule(Name="sct-monitor-schedule")
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule="sct-monitor-schedule")["Targets"]] == [monitor["FunctionArn"]]
    statement, = json.loads(lambda_client.get_policy(FunctionName="sct-monitorDrift")["Policy"])["Statement"]
    assert statement["Principal"]["Service"] == "events.amazonaws.com"
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]

    # two alarms on the published metrics, notifying the topic the user subscribes to
    topic = record["outputs"]["monitor_topic_arn"]
    assert topic.endswith(":sct-monitor-alarms")
    alarms = {a["AlarmName"]: a for a in session.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {"sct-drift", "sct-below-threshold"}
    drift, share = alarms["sct-drift"], alarms["sct-below-threshold"]
    assert (drift["MetricName"], drift["ComparisonOperator"], drift["Threshold"]) == ("DriftPValue", "LessThanThreshold", 0.01)
    assert (share["MetricName"], share["ComparisonOperator"], share["Threshold"]) == ("ShareBelowThreshold", "GreaterThanThreshold", 0.5)
    for alarm in alarms.values():
        assert alarm["Namespace"] == "Scones/Monitor" and alarm["Dimensions"] == [{"Name": "EndpointName", "Value": ENDPOINT}]
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "ignore"

    # the monitor's role: this endpoint's capture and its own prefix, its namespace, its logs
    granted = statements(session, "sct-monitor-role")
    assert granted["ReadCapture"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/data_capture/{ENDPOINT}/*",
                                                  f"arn:aws:s3:::{BUCKET}/monitoring/{ENDPOINT}/*"]
    assert granted["WriteMonitoring"]["Resource"] == f"arn:aws:s3:::{BUCKET}/monitoring/{ENDPOINT}/*"
    assert granted["ListCaptureAndMonitoring"]["Condition"]["StringLike"]["s3:prefix"] == [
        f"data_capture/{ENDPOINT}/*", f"monitoring/{ENDPOINT}/*"]
    assert granted["PublishMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Scones/Monitor"}}
    assert all("/aws/lambda/sct-monitorDrift" in arn for arn in granted["OwnLogs"]["Resource"])
    assert set(granted) == {"ListCaptureAndMonitoring", "ReadCapture", "WriteMonitoring", "PublishMetrics", "OwnLogs"}

    # status --target aws reads it all back from the record
    from scones.deploy import aws_operations
    described = aws_operations.describe(session, record)
    assert described["autoscaling"]["min_instances"] == 1 and described["autoscaling"]["max_instances"] == 3
    assert described["autoscaling"]["classifier_concurrency"] == 15
    assert {a["name"] for a in described["monitor"]["alarms"]} == {"sct-drift", "sct-below-threshold"}

    deleted = aws.destroy(state_dir=options.state_dir, session=session)
    assert any(f"scalable target {RESOURCE_ID}" in what for what in deleted) and "CloudWatch alarm sct-drift" in deleted
    assert operations_inventory(session) == {key: [] for key in operations_inventory(session)}
    assert inventory(session)["roles"] == []


def test_redeploy_changes_no_operations_resource(options, session):
    run_deploy(options, session)
    before = operations_inventory(session)
    messages: list[str] = []
    run_deploy(options, session, messages)
    assert operations_inventory(session) == before
    assert "Lambda function sct-monitorDrift: unchanged" in messages
    assert "IAM role sct-monitor-role: unchanged" in messages


def test_dry_run_lists_scaling_and_monitor_and_creates_nothing(options, session):
    text = "\n".join(aws.plan(options, session=session))
    assert f"autoscaling {RESOURCE_ID}: 1-3 instances" in text and "SageMakerVariantInvocationsPerInstance" in text
    assert "reserved concurrency of sct-classifyImage: 15" in text
    assert "Lambda function sct-monitorDrift" in text and "EventBridge rule sct-monitor-schedule on rate(1 hour)" in text
    assert "CloudWatch alarm sct-drift: DriftPValue LessThanThreshold 0.01" in text and "SNS topic sct-monitor-alarms" in text
    assert "IAM role sct-monitor-role" in text
    assert operations_inventory(session) == {key: [] for key in operations_inventory(session)}


@pytest.mark.parametrize("scaling, message", [
    (ScalingOptions(min_instances=3, max_instances=2), "--min-instances (3) <= --max-instances (2)"),
    (ScalingOptions(target_invocations=0), "--target-invocations must be above 0"),
])
def test_bad_scaling_options_are_refused_before_anything_is_created(options, session, scaling, message):
    options.scaling = scaling
    with pytest.raises(aws.DeployError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_deploy(options, session)
    assert inventory(session)["buckets"] == []


def test_no_reserved_concurrency_with_zero(options, session):
    options.scaling = ScalingOptions(classifier_concurrency=0)
    run_deploy(options, session)
    reply = session.client("lambda").get_function_concurrency(FunctionName="sct-classifyImage")
    assert "ReservedConcurrentExecutions" not in reply


def test_status_target_aws_shows_autoscaling_alarm_states_and_monitor_runs(options, session, monkeypatch):
    from click.testing import CliRunner

    from scones.harness.cli import main

    run_deploy(options, session)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7MOTOXYZ")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret")
    result = CliRunner().invoke(main, ["status", "--target", "aws", "--state-dir", str(options.state_dir)])
    assert result.exit_code == 0, result.output
    assert f"autoscaling {RESOURCE_ID}: 1-3 instances" in result.output
    assert "sct-invocations-per-instance (target 70)" in result.output and "reserved concurrency 15" in result.output
    # (a new alarm is INSUFFICIENT_DATA on AWS, OK in moto: the state itself is not asserted)
    assert re.search(r"alarm sct-drift: [A-Z_]+ \(DriftPValue LessThanThreshold 0.01\)", result.output)
    assert "no monitor run yet" in result.output
