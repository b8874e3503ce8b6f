"""The running-it-for-real part of an AWS deploy (deploy/aws.py calls these): the endpoint's autoscaling and
classifyImage's reserved concurrency (deploy/scaling.py, end of step 4/5), and the drift monitor with its
role, schedule, alarms and topic (deploy/monitoring.py, end of step 5). Each is recorded in the deploy
record as soon as it exists, so `scones destroy` removes it, and `scones status --target aws` and
`scones report` describe it from there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scones.deploy import iam as iam_roles
from scones.deploy import monitoring, scaling
from scones.deploy.waiting import DeployError, Progress
from scones.deploy.workflow import function_name
from scones.lambdas import drift_monitor
from scones.lambdas.drift import checked_baseline

if TYPE_CHECKING:
    from scones.deploy.aws import Context, DeployOptions

CLASSIFIER = "classifyImage"


def monitor_settings(options: "DeployOptions", bucket: str) -> monitoring.MonitorSettings:
    return monitoring.MonitorSettings(
        prefix=options.prefix, bucket=bucket, endpoint_name=options.resolved_endpoint_name(),
        threshold=options.threshold, alpha=options.drift_alpha, schedule=options.monitor_schedule,
        share_below_limit=options.share_below_limit, alarm_period_s=options.alarm_period_s)


def _baseline_file(path) -> dict:
    try:
        return checked_baseline(json.loads(Path(path).read_text()), str(path))
    except FileNotFoundError:
        raise DeployError(f"--baseline {path} does not exist (training writes baseline.json: `scones train`)") from None
    except json.JSONDecodeError as error:
        raise DeployError(f"--baseline {path} is not valid JSON ({error})") from None


def plan_lines(options: "DeployOptions", bucket: str) -> list[str]:
    source = (str(options.baseline) if options.baseline
              else "baseline.json from the training job's output.tar.gz beside the model")
    return [*scaling.plan_lines(options.prefix, options.resolved_endpoint_name(), function_name(options.prefix, CLASSIFIER),
                                options.scaling),
            *monitoring.plan_lines(monitor_settings(options, bucket), source)]


def ensure_autoscaling(session, context: "Context", options: "DeployOptions", record: dict, save, progress: Progress | None) -> None:
    """Target tracking on the endpoint's variant (step 4, once the endpoint is InService)."""
    made = scaling.ensure_autoscaling(session.client("application-autoscaling", region_name=context.region),
                                      prefix=options.prefix, endpoint_name=options.resolved_endpoint_name(),
                                      options=options.scaling, progress=progress)
    previous = scaling.ScalingResources.from_dict(record["resources"].get("autoscaling"))
    if previous:
        made.classifier_function, made.classifier_concurrency = previous.classifier_function, previous.classifier_concurrency
    record["resources"]["autoscaling"] = made.to_dict()
    save()


def ensure_classifier_concurrency(session, context: "Context", options: "DeployOptions", record: dict, save,
                                  progress: Progress | None) -> None:
    """Reserved concurrency on classifyImage (step 5, once it exists)."""
    name = function_name(options.prefix, CLASSIFIER)
    reserved = scaling.reserve_classifier_concurrency(session.client("lambda", region_name=context.region), name,
                                                      options.scaling.resolved_concurrency(), progress)
    autoscaling = record["resources"].get("autoscaling") or {}
    autoscaling.update(classifier_function=name, classifier_concurrency=reserved)
    record["resources"]["autoscaling"] = autoscaling
    save()


def ensure_monitor(session, context: "Context", options: "DeployOptions", record: dict, scope: iam_roles.Scope, save,
                   progress: Progress | None, sleep) -> None:
    """The monitor's role, then its function, schedule, topic and alarms (step 5)."""
    resources = record["resources"]
    settings = monitor_settings(options, context.bucket)
    names = settings.names
    iam = session.client("iam", region_name=context.region)

    def record_role() -> None:   # before CreateRole, so a killed deploy still destroys it
        resources["roles"]["monitor"] = {"name": names.role, "arn": None}
        save()

    policy = iam_roles.monitor_policy(scope, function=names.function, capture_prefix=settings.capture_prefix,
                                      monitor_prefix=settings.monitor_prefix, namespace=drift_monitor.DEFAULT_NAMESPACE)
    arn, _ = iam_roles.ensure_role(iam, name=names.role, trust=iam_roles.trust_policy("lambda.amazonaws.com"),
                                   policy=policy, tags={"scones:prefix": options.prefix}, progress=progress,
                                   before_create=record_role)
    resources["roles"]["monitor"] = {"name": names.role, "arn": arn}
    log_group = f"/aws/lambda/{names.function}"
    if log_group not in resources["log_groups"]:
        resources["log_groups"].append(log_group)
    save()
    baseline: dict | None
    if options.baseline:
        baseline = _baseline_file(options.baseline)
    else:
        baseline = monitoring.baseline_from_training_output(session.client("s3", region_name=context.region),
                                                            resources.get("model_data") or "")

    def remember(made: monitoring.MonitorResources) -> None:
        resources["monitor"] = made.to_dict()
        save()

    made = monitoring.deploy_monitor(session, settings, role_arn=arn, baseline=baseline, progress=progress,
                                     sleep=sleep, on_change=remember)
    remember(made)
    record["outputs"]["monitor_topic_arn"] = made.topic_arn


def destroy(session, record: dict, say: Progress) -> list[str]:
    """Monitor first (its schedule must not start a run mid-destroy), then the endpoint's autoscaling."""
    resources = record["resources"]
    deleted: list[str] = []
    if resources.get("monitor"):
        deleted += monitoring.destroy_monitor(session, monitoring.MonitorResources.from_dict(resources["monitor"]),
                                              record["prefix"], progress=say)
        resources["monitor"] = None
    autoscaling = scaling.ScalingResources.from_dict(resources.get("autoscaling"))
    if autoscaling:
        deleted += scaling.remove_autoscaling(session.client("application-autoscaling", region_name=record["region"]),
                                              autoscaling, progress=say)
        resources["autoscaling"] = None
    return deleted


def describe(session, record: dict) -> dict[str, Any]:
    """Autoscaling settings, alarm states and the latest monitor runs of a deployed stack."""
    resources = record.get("resources") or {}
    region = record["region"]
    autoscaling = scaling.ScalingResources.from_dict(resources.get("autoscaling"))
    monitor = resources.get("monitor")
    return {
        "autoscaling": scaling.describe_autoscaling(session.client("application-autoscaling", region_name=region),
                                                    session.client("sagemaker", region_name=region), autoscaling)
        if autoscaling else None,
        "monitor": monitoring.describe_monitor(session, monitoring.MonitorResources.from_dict(monitor)) if monitor else None,
    }
