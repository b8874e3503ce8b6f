"""What runs a deployed AWS stack, read back from its record for `scones status --target aws` and `scones report`:
the endpoint's autoscaling and classifyImage's reserved concurrency (deploy/scaling.py), and the drift monitor's
schedule, alarms and latest runs (deploy/monitoring.py). The plan (deploy/planner.py) makes them."""
from __future__ import annotations

from typing import Any

from scones.deploy import monitoring, scaling
from scones.deploy import resources as r
from scones.deploy.planner import CLASSIFIER


def describe(session, record: dict) -> dict[str, Any]:
    """Autoscaling settings, alarm states and the latest monitor runs of a deployed stack."""
    outputs = record.get("outputs") or {}
    monitored = bool(r.entries(record, "alarm")) or r.entry_with_id(record, "function/monitorDrift") is not None
    monitor = r.monitor_resources(record, outputs.get("bucket", ""), outputs.get("endpoint_name", "")) if monitored else None
    return {
        "autoscaling": describe_autoscaling(session, record),
        "monitor": monitoring.describe_monitor(session, monitor) if monitor else None,
    }


def describe_autoscaling(session, record: dict) -> dict[str, Any] | None:
    """The endpoint's autoscaling as the record's plan registered it (None: none registered)."""
    region = record["region"]
    autoscaling = scaling.ScalingResources.from_dict(next(iter(r.entries(record, "autoscaling")), None))
    if autoscaling is None:
        return None
    classifier = next((e["name"] for e in r.entries(record, "function") if e["name"].endswith(f"-{CLASSIFIER}")), None)
    if classifier:
        reserved = session.client("lambda", region_name=region).get_function_concurrency(FunctionName=classifier)
        autoscaling.classifier_function = classifier
        autoscaling.classifier_concurrency = reserved.get("ReservedConcurrentExecutions", 0)
    return scaling.describe_autoscaling(session.client("application-autoscaling", region_name=region),
                                        session.client("sagemaker", region_name=region), autoscaling)
