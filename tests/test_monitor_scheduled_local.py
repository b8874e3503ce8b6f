"""The drift monitor that runs itself, on LocalStack: deployed by the code `scones up` uses
(deploy/monitoring.py), triggered as `scones monitor --scheduled` triggers it, it reads only the capture
that is new since its last run, publishes CloudWatch metrics, and its alarm goes to ALARM on a drifted
capture (one class only, as in tests/test_monitor_capture.py).

LocalStack 4.14 evaluates simple metric alarms on a timer every Period x EvaluationPeriods seconds and
publishes to the SNS topic of their actions (localstack/services/cloudwatch/alarm_scheduler.py,
provider_v2.py set_alarm_state); its EventBridge runs ScheduleExpression rules with a job scheduler
(services/events/provider.py _get_scheduled_rule_job_function), sending AWS's "Scheduled Event".
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from test_monitor_capture import answers_for, baseline_from, capture_line, synthetic_test_set

from scones.deploy import iam, monitoring
from scones.deploy import local as local_target
from scones.harness.iam.denials import fetch
from scones.lambdas import drift_monitor
from support import poll, running_localstack

ALARM_DEADLINE_S = 6 * monitoring.LOCAL_ALARM_PERIOD_S   # LocalStack evaluates once a period


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    with running_localstack(tmp_path_factory.mktemp("localstack")) as instance:
        yield instance


def monitor_role(session, settings: monitoring.MonitorSettings) -> str:
    """The monitor's own role of deploy/iam.py, in LocalStack's IAM, so the gateway checks every call it makes."""
    scope = iam.Scope(partition="aws", region=local_target.REGION, account_id=local_target.ACCOUNT_ID,
                      prefix=settings.prefix, bucket=settings.bucket, endpoint_name=settings.endpoint_name,
                      function_names=(), image_repositories=())
    policy = iam.monitor_policy(scope, function=settings.names.function, capture_prefix=settings.capture_prefix,
                                monitor_prefix=settings.monitor_prefix, namespace=drift_monitor.DEFAULT_NAMESPACE)
    arn, _ = iam.ensure_role(session.client("iam"), name=settings.names.role, policy=policy,
                             trust=iam.trust_policy("lambda.amazonaws.com"), tags={"scones:prefix": settings.prefix})
    return arn


@pytest.fixture
def deployed(localstack):
    """A monitor of its own (unique prefix, bucket and endpoint name), destroyed afterwards."""
    session = local_target.local_session(localstack.url)
    prefix = f"mon{uuid.uuid4().hex[:6]}"
    settings = monitoring.MonitorSettings(prefix=prefix, bucket=f"{prefix}-bucket", endpoint_name=f"{prefix}-classifier",
                                          threshold=0.93, alarm_period_s=monitoring.LOCAL_ALARM_PERIOD_S)
    session.client("s3").create_bucket(Bucket=settings.bucket)
    made = monitoring.deploy_monitor(session, settings, role_arn=monitor_role(session, settings),
                                     baseline=baseline_from(*synthetic_test_set(seed=5)))
    yield session, settings, made
    monitoring.destroy_monitor(session, made, prefix)


def put_capture(session, settings, answers: list[list[float]], start: datetime, per_file: int = 10) -> None:
    """Capture files as SageMaker writes them: VARIANT/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl, many records each."""
    s3 = session.client("s3")
    for index in range(0, len(answers), per_file):
        moment = start + timedelta(minutes=index // per_file)
        key = (f"{settings.capture_prefix}AllTraffic/{moment:%Y/%m/%d/%H}/{moment:%M-%S}-000-{uuid.uuid4()}.jsonl")
        lines = [capture_line(p, moment + timedelta(seconds=k)) for k, p in enumerate(answers[index:index + per_file])]
        s3.put_object(Bucket=settings.bucket, Key=key, Body="\n".join(lines).encode() + b"\n")


def alarm_state(session, name: str) -> str:
    return session.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_a_drifted_capture_makes_the_scheduled_monitor_fail_its_metric_and_the_alarm_go_to_alarm(deployed, localstack):
    session, settings, made = deployed
    names = settings.names
    now = datetime.now(timezone.utc).replace(microsecond=0)

    # an hour of answers like the test set's: the run passes and the drift alarm settles on OK
    put_capture(session, settings, answers_for(*synthetic_test_set(seed=8, n=80)), now - timedelta(hours=1))
    healthy = monitoring.run_now(session, settings.prefix)
    assert healthy["records"] == 80 and healthy["drift"]["status"] == "pass", healthy["drift"]
    poll(lambda: alarm_state(session, names.drift_alarm) == "OK", ALARM_DEADLINE_S, 0.5, "the drift alarm to be OK")

    # then the endpoint answers one class only, always sure of it
    put_capture(session, settings, [[0.999, 0.001]] * 60, now)
    drifted = monitoring.run_now(session, settings.prefix)
    assert drifted["records"] == 60, "a run reads only the records that landed since the last one"
    assert drifted["drift"]["status"] == "fail"
    assert drifted["drift"]["tests"]["class_balance"]["capture_share"]["bicycle"] == 1.0
    assert drifted["metrics"]["DriftPValue"] < settings.alpha

    published = session.client("cloudwatch").get_metric_statistics(
        Namespace="Scones/Monitor", MetricName="DriftPValue", Statistics=["Minimum"],
        Dimensions=[{"Name": "EndpointName", "Value": settings.endpoint_name}],
        StartTime=now - timedelta(minutes=5), EndTime=datetime.now(timezone.utc) + timedelta(minutes=1), Period=60)
    assert min(point["Minimum"] for point in published["Datapoints"]) < settings.alpha
    poll(lambda: alarm_state(session, names.drift_alarm) == "ALARM", ALARM_DEADLINE_S, 0.5, "the drift alarm to fire")

    # nothing new: the next run reads nothing, and the alarm keeps the last verdict (missing data ignored)
    assert monitoring.run_now(session, settings.prefix)["records"] == 0
    described = monitoring.describe_monitor(session, made)
    assert [run["drift"] for run in described["runs"][:3]] == ["skipped", "fail", "pass"]
    assert {alarm["name"]: alarm["state"] for alarm in described["alarms"]}[names.drift_alarm] == "ALARM"
    # every call the monitor made was checked against its own role of deploy/iam.py (harness/iam), and allowed
    assert [d["message"] for d in fetch(localstack.url)["denials"] if d["role"] == names.role] == []


def test_scones_monitor_scheduled_runs_the_deployed_function_of_the_recorded_stack(deployed, localstack, tmp_path):
    from click.testing import CliRunner

    from scones.deploy.record import local_record_path, write_record
    from scones.harness.cli import main

    session, settings, made = deployed
    put_capture(session, settings, [[0.2, 0.8]] * 30, datetime.now(timezone.utc))   # sure of nothing
    write_record(local_record_path(tmp_path), {
        "target": "local", "prefix": settings.prefix, "monitor": made.to_dict(),
        "outputs": {"region": local_target.REGION, "bucket": settings.bucket, "state_machine_arn": "-",
                    "function_arns": {}, "endpoint_name": settings.endpoint_name,
                    "capture_s3_uri": f"s3://{settings.bucket}/data_capture", "endpoint_urls": {"default": localstack.url}}})
    result = CliRunner().invoke(main, ["monitor", "--scheduled", "--fail-on-drift", "--state-dir", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert "30 new records in 3 files" in result.output and "below threshold 0.93: 30 (100.0%)" in result.output
    assert "drift FAIL" in result.output and "ShareBelowThreshold=1" in result.output
    poll(lambda: alarm_state(session, settings.names.share_alarm) == "ALARM", ALARM_DEADLINE_S, 0.5,
         "the below-threshold alarm to fire")


def test_the_monitor_runs_on_an_hourly_schedule_rule(deployed):
    session, settings, made = deployed
    events = session.client("events")
    rule = events.describe_rule(Name=settings.names.rule)
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=settings.names.rule)["Targets"]] == [made.function_arn]
    alarm = session.client("cloudwatch").describe_alarms(AlarmNames=[settings.names.drift_alarm])["MetricAlarms"][0]
    assert alarm["AlarmActions"] == [made.topic_arn]
