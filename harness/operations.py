"""What runs the stack for real, as `scones status` and `scones report` show it: the endpoint's autoscaling
(AWS only), the drift monitor's schedule, its alarms' states and its latest runs. Read from the target's
record and the services it names (deploy/aws_operations.py, deploy/monitoring.py)."""
from __future__ import annotations

from typing import Any

# Route mode (and compose): the endpoint server the stack starts is no SageMaker endpoint, so nothing scales it.
LOCAL_SCALING_NOTE = "none (route mode: the endpoint server the stack starts is not a SageMaker endpoint)"


def describe(target) -> dict[str, Any]:
    """{"autoscaling": {...} | None, "monitor": {...} | None, "note": str | None} for a loaded target.

    Local: the autoscaling the plan registered with the local Application Auto Scaling (api mode, README:
    stored, not acted on), read from the plan's record beside the stack's."""
    from scones.deploy import aws_operations, monitoring
    from scones.deploy import record as records

    record = getattr(target, "record", None) or {}
    if getattr(target, "name", None) == "aws" and record:
        return {**aws_operations.describe(target.session, record), "note": None}
    monitor = record.get("monitor")
    described = {"autoscaling": None, "note": LOCAL_SCALING_NOTE,
                 "monitor": monitoring.describe_monitor(target.session, monitoring.MonitorResources.from_dict(monitor))
                 if monitor else None}
    record_path = getattr(target, "record_path", None)
    deployed = records.read_record(records.local_deploy_record_path(record_path.parent.parent)) if record_path else None
    scaled = aws_operations.describe_autoscaling(target.session, deployed) if deployed else None
    if scaled is not None:
        described.update(autoscaling=scaled, note=None)
    return described


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def lines(description: dict[str, Any]) -> list[str]:
    """The description as indented lines for the terminal."""
    out = []
    scaling = description.get("autoscaling")
    if scaling:
        policies = ", ".join(f"{p['name']} (target {p['target']:g})" for p in scaling["policies"]) or "no policy"
        out.append(f"autoscaling {scaling['resource_id']}: {scaling['min_instances']}-{scaling['max_instances']} "
                   f"instances, now {scaling['current_instances']}; {policies}; classifyImage reserved concurrency "
                   f"{scaling['classifier_concurrency'] or 'none'}")
    else:
        out.append(f"autoscaling: {description.get('note') or 'not deployed'}")
    monitor = description.get("monitor")
    if not monitor:
        out.append("drift monitor: not deployed")
        return out
    out.append(f"drift monitor: {monitor['schedule']} -> {monitor['function_arn']}; alarms notify {monitor['topic_arn']}")
    for alarm in monitor["alarms"]:
        out.append(f"  alarm {alarm['name']}: {alarm['state']} ({alarm['metric']} {alarm['comparison']} {alarm['threshold']:g})")
    if not monitor["runs"]:
        out.append("  no monitor run yet (`scones monitor --scheduled` runs one now)")
    for run in monitor["runs"]:
        p_values = ", ".join(f"{name} p={value:.3g}" for name, value in run["p_values"].items())
        out.append(f"  run {run['run_at']} ({run['trigger']}): {run['records']} records, below threshold "
                   f"{_share(run['share_below_threshold'])}, drift {run['drift']}" + (f" ({p_values})" if p_values else ""))
    return out
