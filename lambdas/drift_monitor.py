"""monitorDrift: the scheduled drift monitor. Reads the capture files that landed since its last run,
runs `scones monitor`'s tests on their records (lambdas/drift.py), publishes CloudWatch metrics and
leaves a run summary and its state beside the baseline.

Triggered by an EventBridge schedule rule (a "Scheduled Event") or invoked directly
(`scones monitor --scheduled` sends {"source": "scones.cli"}); both run the same way.

Under MONITOR_S3_URI (s3://bucket/monitoring/ENDPOINT/):
  baseline.json           the served model's training baseline (the deploy puts it there)
  state.json              the capture keys of the last LOOKBACK_HOURS already read, per variant
  runs/<time>-<id>.json   one summary per run
Capture files are keyed VARIANT/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl. Several instances write at once,
so a file can land after a later-named one: each run lists from LOOKBACK_HOURS before the newest key it
has read, and skips the keys it remembers.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from . import clients, config
from .capture_records import CaptureProblem, CaptureRecord, parse_lines
from .drift import DEFAULT_ALPHA, check_drift, checked_baseline, class_counts
from .errors import InvalidConfiguration

LOOKBACK_HOURS = 2
READERS = 8                    # parallel GetObject calls
PROBLEMS_KEPT = 20             # malformed lines named in a run summary (all are counted)
BASELINE_FILE = "baseline.json"
STATE_FILE = "state.json"
RUNS_FOLDER = "runs/"
DEFAULT_NAMESPACE = "Scones/Monitor"
# The metrics one run publishes (dimension EndpointName); p-values only when the drift tests ran.
RECORDS_METRIC = "CaptureRecords"
SHARE_BELOW_METRIC = "ShareBelowThreshold"
BALANCE_P_METRIC = "ClassBalancePValue"
CONFIDENCE_P_METRIC = "ConfidencePValue"
DRIFT_P_METRIC = "DriftPValue"            # the smaller of the two: the drift alarm watches it
# High resolution, so an alarm may use a 10 s or 30 s period (the local stack's) as well as AWS's minutes.
STORAGE_RESOLUTION_S = 1
# CloudWatch rejects values of magnitude below 8.515920e-109 (PutMetricData, MetricDatum.Value); a p-value
# of a collapsed capture goes far lower, so it is published as this floor (still far below any alpha).
P_VALUE_FLOOR = 1e-100

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def split_s3_uri(uri: str, name: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise InvalidConfiguration(f"{name}={uri!r} in the function's environment is not an s3://bucket/prefix/ URI")
    return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class MonitorSettings:
    endpoint_name: str
    capture_bucket: str
    capture_prefix: str          # ".../ENDPOINT/" holding VARIANT/ folders
    monitor_bucket: str
    monitor_prefix: str
    namespace: str
    threshold: float
    alpha: float

    @classmethod
    def from_environment(cls) -> "MonitorSettings":
        def required(name: str) -> str:
            value = os.environ.get(name, "").strip()
            if not value:
                raise InvalidConfiguration(f"{name} is not set in the function's environment")
            return value

        capture_bucket, capture_prefix = split_s3_uri(required(config.CAPTURE_S3_URI), config.CAPTURE_S3_URI)
        monitor_bucket, monitor_prefix = split_s3_uri(required(config.MONITOR_S3_URI), config.MONITOR_S3_URI)
        raw_alpha = os.environ.get(config.DRIFT_ALPHA, "").strip() or str(DEFAULT_ALPHA)
        try:
            alpha = float(raw_alpha)
        except ValueError:
            raise InvalidConfiguration(f"{config.DRIFT_ALPHA}={raw_alpha!r} in the function's environment is not a number") from None
        return cls(config.endpoint_name(), capture_bucket, capture_prefix, monitor_bucket, monitor_prefix,
                   os.environ.get(config.METRIC_NAMESPACE, "").strip() or DEFAULT_NAMESPACE, config.threshold(), alpha)


@dataclass(frozen=True)
class Trigger:
    """Who started the run: the schedule rule (its ARN) or a direct invoke."""

    source: str
    rule: str | None

    @classmethod
    def from_event(cls, event: Any) -> "Trigger":
        if not isinstance(event, dict):
            return cls("direct invoke", None)
        resources = event.get("resources") if isinstance(event.get("resources"), list) else []
        return cls(str(event.get("source") or "direct invoke"), resources[0] if resources else None)


def lambda_handler(event, context):
    trigger = Trigger.from_event(event)
    run_id = getattr(context, "aws_request_id", None) or "manual"
    summary = run(MonitorSettings.from_environment(), trigger, run_id, datetime.now(timezone.utc))
    logger.info("monitor run %s: %s records, drift %s", run_id, summary["records"], summary["drift"]["status"])
    return summary


# --- the run -------------------------------------------------------------------------------

def run(settings: MonitorSettings, trigger: Trigger, run_id: str, now: datetime) -> dict[str, Any]:
    s3 = clients.s3()
    state = _read_json(s3, settings.monitor_bucket, settings.monitor_prefix + STATE_FILE) or {"seen": {}}
    new_keys, seen = new_capture_keys(s3, settings, state.get("seen") or {})
    records, problems = read_records(s3, settings.capture_bucket, new_keys)
    baseline_uri = f"s3://{settings.monitor_bucket}/{settings.monitor_prefix}{BASELINE_FILE}"
    baseline = _read_json(s3, settings.monitor_bucket, settings.monitor_prefix + BASELINE_FILE)
    baseline = checked_baseline(baseline, baseline_uri) if baseline is not None else None
    drift = check_drift(records, baseline, alpha=settings.alpha)
    if baseline is None:
        drift["reason"] = f"no baseline at {baseline_uri}"
    classes = list(baseline["classes"]) if baseline else list(config.CLASSES)
    below = sum(1 for record in records if record.max_confidence < settings.threshold)
    summary = {
        "run_id": run_id,
        "run_at": now.isoformat(timespec="seconds"),
        "trigger": trigger.source,
        "rule": trigger.rule,
        "endpoint_name": settings.endpoint_name,
        "capture": f"s3://{settings.capture_bucket}/{settings.capture_prefix}",
        "baseline": baseline_uri if baseline else None,
        "files": len(new_keys),
        "records": len(records),
        "malformed_lines": len(problems),
        "problems": [str(problem) for problem in problems[:PROBLEMS_KEPT]],
        "class_counts": class_counts(records, classes),
        "threshold": settings.threshold,
        "below_threshold": below,
        "share_below_threshold": below / len(records) if records else None,
        "drift": drift,
    }
    summary["metrics"] = publish_metrics(clients.cloudwatch(), settings, summary, now)
    # The state moves on only once the metrics are out: a failed run reads the same files again.
    s3.put_object(Bucket=settings.monitor_bucket, Key=f"{settings.monitor_prefix}{RUNS_FOLDER}{now:%Y%m%dT%H%M%SZ}-{run_id}.json",
                  Body=json.dumps(summary, indent=2).encode(), ContentType="application/json")
    s3.put_object(Bucket=settings.monitor_bucket, Key=settings.monitor_prefix + STATE_FILE,
                  Body=json.dumps({"seen": seen, "last_run": summary["run_at"]}).encode(), ContentType="application/json")
    return summary


def _read_json(s3, bucket: str, key: str) -> Any:
    """The object's JSON, or None where there is no such object.

    Listed first: the function's role may list only its own prefixes, and without s3:ListBucket on the
    whole bucket S3 answers GetObject of a missing key with 403, not 404.
    """
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    if not listed or listed[0]["Key"] != key:
        return None
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return json.loads(body)
    except ValueError as error:
        raise ValueError(f"s3://{bucket}/{key} is not valid JSON ({error})") from None


def key_hour(key: str, variant_prefix: str) -> datetime | None:
    """The hour folder of a capture key (VARIANT/YYYY/MM/DD/HH/file), or None for a key not laid out so."""
    parts = key[len(variant_prefix):].split("/")
    try:
        if len(parts) != 5:
            return None
        year, month, day, hour = (int(part) for part in parts[:4])
        return datetime(year, month, day, hour, tzinfo=timezone.utc)
    except ValueError:
        return None


def new_capture_keys(s3, settings: MonitorSettings, seen: dict[str, list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """The capture keys not read before, and the state to remember: per variant, the keys of the lookback window."""
    paginator = s3.get_paginator("list_objects_v2")
    variants = [common["Prefix"] for page in paginator.paginate(Bucket=settings.capture_bucket,
                                                                Prefix=settings.capture_prefix, Delimiter="/")
                for common in page.get("CommonPrefixes", [])]
    new_keys: list[str] = []
    remembered: dict[str, list[str]] = {}
    for variant_prefix in variants:
        variant = variant_prefix[len(settings.capture_prefix):].rstrip("/")
        known = set(seen.get(variant) or [])
        hours = [hour for hour in (key_hour(key, variant_prefix) for key in known) if hour]
        listing = {"Bucket": settings.capture_bucket, "Prefix": variant_prefix}
        if hours:
            listing["StartAfter"] = f"{variant_prefix}{max(hours) - timedelta(hours=LOOKBACK_HOURS):%Y/%m/%d/%H}"
        listed = [item["Key"] for page in paginator.paginate(**listing) for item in page.get("Contents", [])
                  if item["Key"].endswith(".jsonl")]
        fresh = [key for key in listed if key not in known]
        new_keys += fresh
        window = known | set(fresh)
        newest = max((hour for hour in (key_hour(key, variant_prefix) for key in window) if hour), default=None)
        remembered[variant] = sorted(key for key in window
                                     if newest is None or (key_hour(key, variant_prefix) or newest) >= newest - timedelta(hours=LOOKBACK_HOURS))
    return new_keys, remembered


def read_records(s3, bucket: str, keys: list[str]) -> tuple[list[CaptureRecord], list[CaptureProblem]]:
    records: list[CaptureRecord] = []
    problems: list[CaptureProblem] = []

    def fetch(key: str) -> str:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")

    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="capture-read") as pool:
        for key, body in zip(keys, pool.map(fetch, keys)):
            parse_lines(body.splitlines(), f"s3://{bucket}/{key}", records, problems)
    return records, problems


def publish_metrics(cloudwatch, settings: MonitorSettings, summary: dict[str, Any], now: datetime) -> dict[str, float]:
    """PutMetricData of this run's figures; returns what was published."""
    values = {RECORDS_METRIC: float(summary["records"])}
    if summary["share_below_threshold"] is not None:
        values[SHARE_BELOW_METRIC] = float(summary["share_below_threshold"])
    tests = summary["drift"].get("tests") or {}
    if tests:
        values[BALANCE_P_METRIC] = max(P_VALUE_FLOOR, tests["class_balance"]["p_value"])
        values[CONFIDENCE_P_METRIC] = max(P_VALUE_FLOOR, tests["confidence_distribution"]["p_value"])
        values[DRIFT_P_METRIC] = min(values[BALANCE_P_METRIC], values[CONFIDENCE_P_METRIC])
    dimensions = [{"Name": "EndpointName", "Value": settings.endpoint_name}]
    cloudwatch.put_metric_data(Namespace=settings.namespace, MetricData=[
        {"MetricName": name, "Dimensions": dimensions, "Timestamp": now, "Value": value,
         "Unit": "Count" if name == RECORDS_METRIC else "None", "StorageResolution": STORAGE_RESOLUTION_S}
        for name, value in values.items()
    ])
    return values
