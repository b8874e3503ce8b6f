"""One plan for every target (deploy/planner.py): the AWS and local plans of one configuration compared resource by
resource; `--dry-run` prints the very plan deploy runs; a deploy killed with SIGKILL midway is destroyed whole
(moto server); and the local plan run against a real LocalStack, then destroyed to nothing.

AWS behaviour the moto parts rely on, each from botocore's service models and AWS's API references: CreateRole,
CreateFunction, CreateStateMachine, PutRule, PutMetricAlarm and CreateTopic are what DeleteRole, DeleteFunction,
DeleteStateMachine, DeleteRule, DeleteAlarms and DeleteTopic undo; DeleteAlarms with an absent name is no error
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DeleteAlarms.html).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_deploy_aws import ACCOUNT, REGION, inventory, moto_aws, options, realistic_session, session, staged  # noqa: F401

from scones.deploy import aws, executor, planner, resources
from scones.deploy import local as local_target
from scones.deploy import record as records
from scones.deploy.aws import Context, DeployOptions
from scones.deploy.scaling import ScalingOptions

PREFIX, BUCKET, ENDPOINT = "scones", "scones-local", "scones-classifier"


def aws_plan(data_dir: Path, model_data: str) -> list[resources.Resource]:
    """The AWS plan for the local stack's configuration (same names, region and account, so ARNs compare)."""
    options = DeployOptions(region=local_target.REGION, bucket=BUCKET, prefix=PREFIX, endpoint_name=ENDPOINT,
                            model_data=model_data, data_dir=data_dir)
    context = Context(session=None, region=local_target.REGION, account_id=local_target.ACCOUNT_ID,  # type: ignore[arg-type]
                      partition="aws", bucket=BUCKET)
    return planner.plan(aws.target_for(context, options))


def local_plan(data_dir: Path, model_dir: Path, sagemaker: str) -> list[resources.Resource]:
    config = local_target.LocalConfig(localstack_url="http://127.0.0.1:4566", endpoint_url="http://127.0.0.1:8080",
                                      data_dir=data_dir, model_dir=model_dir, sagemaker=sagemaker,
                                      register_endpoint=lambda *args: None, restore_capture=lambda s3: None)
    return planner.plan(config.target())


def comparable(resource: resources.Resource, artifact_uri: str) -> dict:
    """A resource's fields, with the uploaded artifact's Ref written as the URI it stands for."""

    def plain(value):
        if isinstance(value, resources.Ref):
            return artifact_uri if value.id == "model-artifact" else str(value)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    fields = {item.name: plain(getattr(resource, item.name)) for item in dataclasses.fields(resource)}
    fields["after"] = tuple(i for i in resource.after if i != "model-artifact")
    return fields


def differences(aws_resources, local_resources, artifact_uri: str) -> set[str]:
    ours = {resource.id: resource for resource in aws_resources}
    theirs = {resource.id: resource for resource in local_resources}
    differing = set(ours) ^ set(theirs)
    for plan_id in set(ours) & set(theirs):
        if comparable(ours[plan_id], artifact_uri) != comparable(theirs[plan_id], artifact_uri):
            differing.add(plan_id)
    return differing


def documented(plan_id: str) -> bool:
    return any(fnmatch.fnmatch(plan_id, pattern) for pattern in local_target.LOCAL_DIFFERENCES)


@pytest.mark.parametrize("sagemaker, route_only", [
    ("api", set()),
    ("route", {"model", "endpoint-config", "endpoint", "log-group/endpoint", "autoscaling", "endpoint-route"}),
])
def test_the_local_plan_differs_from_the_aws_plan_only_where_documented(staged, tmp_path, sagemaker, route_only):  # noqa: F811
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.tar.gz").write_bytes(b"weights")
    (model_dir / "baseline.json").write_text("{}")
    artifact_uri = f"s3://{BUCKET}/models/{PREFIX}/model.tar.gz"

    found = differences(aws_plan(staged, artifact_uri), local_plan(staged, model_dir, sagemaker), artifact_uri)

    # the roles and their policies are the same: deploy/iam.py's, made in LocalStack's IAM
    assert found == {"dataset", "capture-restore", "model-artifact", "alarm/drift", "alarm/below-threshold",
                             "baseline"} - ({"model-artifact"} if sagemaker == "route" else set()) | route_only
    assert all(documented(plan_id) for plan_id in found), [p for p in found if not documented(p)]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"`{pattern}`" in readme for pattern in local_target.LOCAL_DIFFERENCES)


def test_dry_run_prints_the_plan_that_deploy_executes(options, session, monkeypatch):  # noqa: F811
    dry_run = aws.plan(options, session=session)
    executed: list[list[str]] = []
    real_execute = executor.execute

    def recording(plan, *args, **kwargs):
        executed.append(planner.describe(plan))
        return real_execute(plan, *args, **kwargs)

    monkeypatch.setattr(executor, "execute", recording)
    record = aws.deploy(options, session=session, sleep=lambda _: None)
    assert dry_run[3:] == executed[0]
    made = {(entry["kind"], entry["name"]) for entry in record["resources"]}
    planned = [line.split("] ", 1)[1].split(":", 1)[0] for line in dry_run[3:]]
    assert len(planned) == len(set(planned)) and len(made) >= 30
    assert record["steps_done"] == list(planner.STEPS)


KILLED_DEPLOY = textwrap.dedent("""
    import sys
    from pathlib import Path
    import boto3
    from scones.deploy import aws, executor, planner, resources
    from scones.deploy import record as records

    url, state, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    session = boto3.Session(aws_access_key_id="AKIAIOSFODNN7MOTOXYZ", aws_secret_access_key="s" * 40,
                            region_name="{region}")
    class Moto(boto3.Session):
        def client(self, service, *args, **kwargs):
            return session.client(service, endpoint_url=url, region_name="{region}")
    options = aws.DeployOptions(region="{region}", prefix="sct", data_dir=data, model_data="s3://elsewhere/model.tar.gz")
    context = aws.Context(Moto(), "{region}", "{account}", "aws", "sct-data")
    path = records.aws_record_path(state)
    record = records.new_record(region="{region}", account_id="{account}", prefix="sct", bucket="sct-data",
                                endpoint_name="sct-classifier")
    real_ensure = resources.Function.ensure
    def ensure(self, run, entry):
        if self.id == "function/monitorDrift":
            print("killing me", flush=True)
            import time
            time.sleep(600)          # the test's SIGKILL lands here, with the function recorded, not made
        return real_ensure(self, run, entry)
    resources.Function.ensure = ensure
    run = resources.Run(Moto(), region="{region}", save=lambda: records.save_record(path, record), sleep=lambda s: None)
    executor.execute(planner.plan(aws.target_for(context, options)), run, record, max_workers=1)
""").format(region=REGION, account=ACCOUNT)


def test_destroy_after_a_deploy_killed_with_sigkill_leaves_nothing(tmp_path, staged, moto_server, monkeypatch):  # noqa: F811
    """SIGKILL runs no handler and no finally: only what was recorded before each create lets destroy find it."""
    script = tmp_path / "deploy.py"
    script.write_text(KILLED_DEPLOY)
    state = tmp_path / "state"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    child = subprocess.Popen([sys.executable, str(script), moto_server, str(state), str(staged)],
                             stdout=subprocess.PIPE, text=True, env=environment)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "killing me"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    record = records.read_record(records.aws_record_path(state))
    assert record is not None and any(e["id"] == "function/monitorDrift" for e in record["resources"])

    moto = realistic_session()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    assert inventory(moto)["functions"], "the deploy made functions before it was killed"
    run = resources.Run(moto, region=REGION, save=lambda: records.save_record(records.aws_record_path(state), record))
    executor.destroy(record, run)
    assert record["resources"] == []
    left = inventory(moto)
    assert all(not values for values in left.values()), left
    assert moto.client("events").list_rules()["Rules"] == []
    assert moto.client("sns").list_topics()["Topics"] == []


# --- the local plan on a real LocalStack --------------------------------------------------------------------

def local_inventory(session) -> dict:
    events = session.client("events")
    return {
        "functions": sorted(f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]),
        "state_machines": [m["name"] for m in session.client("stepfunctions").list_state_machines()["stateMachines"]],
        "rules": sorted(r["Name"] for r in events.list_rules()["Rules"]),
        "alarms": sorted(a["AlarmName"] for a in session.client("cloudwatch").describe_alarms()["MetricAlarms"]),
        "topics": [t["TopicArn"] for t in session.client("sns").list_topics()["Topics"]],
        "buckets": [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]],
    }


def test_the_local_plan_deploys_into_localstack_and_destroy_leaves_nothing(localstack, staged, tmp_path):  # noqa: F811
    """The non-SageMaker part of the local plan for real (route mode: the endpoint server's registration stands in
    for the SageMaker resources until the local control plane answers)."""
    registered: list[tuple[str, str, str]] = []
    restored: list[object] = []
    config = local_target.LocalConfig(
        localstack_url=localstack.url, endpoint_url="http://127.0.0.1:9", data_dir=staged,
        register_endpoint=lambda *args: registered.append(args), restore_capture=lambda s3: restored.append(s3))
    messages: list[str] = []
    deployed = local_target.deploy_local_stack(config, state_dir=tmp_path, progress=messages.append)

    session = local_target.local_session(localstack.url)
    made = local_inventory(session)
    assert made["functions"] == sorted(f"scones-{name}" for name in
                                       ("serializeImageData", "classifyImage", "filterInferences", "writeResult",
                                        "monitorDrift"))
    assert made["state_machines"] == ["scones-workflow"]
    assert made["rules"] == ["scones-monitor-schedule", "scones-photo-landed", "scones-run-finished"]
    assert made["alarms"] == ["scones-below-threshold", "scones-drift"] and len(made["topics"]) == 1
    assert registered == [(localstack.url, ENDPOINT, "http://127.0.0.1:9")] and len(restored) == 1
    assert deployed.outputs.state_machine_arn.endswith(":stateMachine:scones-workflow")
    assert deployed.details["monitor"]["topic_arn"] == made["topics"][0]
    reserved = session.client("lambda").get_function_concurrency(FunctionName="scones-classifyImage")
    assert reserved["ReservedConcurrentExecutions"] == ScalingOptions().resolved_concurrency() == 20
    assert session.client("s3").head_object(Bucket=BUCKET, Key="test/bicycle/bicycle_0.png")

    again: list[str] = []
    local_target.deploy_local_stack(config, state_dir=tmp_path, progress=again.append)
    assert local_inventory(session) == made
    assert all(m.endswith("unchanged") for m in again if m.startswith(("Lambda function", "state machine"))), again

    deleted = local_target.destroy_local_stack(localstack_url=localstack.url, state_dir=tmp_path)
    assert f"bucket {BUCKET} and its objects" in deleted
    assert local_inventory(session) == {key: [] for key in made}
    assert not records.local_deploy_record_path(tmp_path).exists()


def test_deploy_and_destroy_target_local_need_a_running_local_stack(tmp_path):
    from click.testing import CliRunner

    from scones.harness.cli import main

    for command in (["deploy", "--target", "local", "--dry-run"], ["destroy", "--target", "local", "--yes"]):
        result = CliRunner().invoke(main, [*command, "--state-dir", str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert "no local stack recorded at" in result.output and "`scones up` starts one" in result.output
        assert "Traceback" not in result.output
