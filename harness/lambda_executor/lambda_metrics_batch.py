"""Throughput patch for LocalStack 4.14.0 Lambda: its CloudWatch metrics recorded in batches, off the invoke path.

Why: after every invoke 4.14.0 records AWS/Lambda `Invocations` (and `Errors` after a function
error) with one PutMetricData call per datum (`invocation/metrics.py` ->
`utils/cloudwatch/cloudwatch_util.py::publish_lambda_metric`): a request through an internal
botocore client and LocalStack's gateway, then `CloudwatchDatabase.add_metric_data` opens SQLite,
inserts one row and commits. py-spy put ~9% of LocalStack's CPU there during concurrent executions.
Here an invoke only appends (account, region, function, metric, second) to a list; one thread sends,
every FLUSH_S, one PutMetricData per account and region with all of them: data of the same
function, metric and second become one datum `Values [1], Counts [n]` (at most 1000 data a call,
AWS's limit). CloudWatch stores the same rows as before (its database keeps whole seconds and
inserts a value Counts times), so GetMetricStatistics and GetMetricData answer the same sums; they
arrive within FLUSH_S, where AWS's own Lambda metrics take about a minute.

The datum's timestamp is the invoke's end (4.14.0 took it when its metric thread ran, a little later).

Pinned: applied only to localstack-core 4.14.0, where `version_manager`'s calls of
record_cw_metric_invocation / record_cw_metric_error were read; SCONES_LAMBDA_METRICS_BATCH=0
turns it off (e.g. to measure the difference). Its status is in GET /_scones/executor.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import Counter

from scones.harness.lambda_executor import pinned
from scones.settings import LAMBDA_METRICS_BATCH as METRICS_BATCH_ENV

LOG = logging.getLogger(__name__)

FLUSH_S = 1.0
MAX_DATA_PER_CALL = 1000  # AWS: "Each PutMetricData request is limited to ... 1000 metrics"
NAMESPACE = "AWS/Lambda"

# (account, region, function name, metric name, unix second) -> how many
_pending: Counter[tuple[str, str, str, str, int]] = Counter()
_wake = threading.Condition()


def record(function_name: str, account_id: str, region_name: str, *metrics: str) -> None:
    """Count one datum of value 1 for each of `metrics`, at this second; sent by the flush thread."""
    second = int(time.time())
    with _wake:
        for metric in metrics:
            _pending[(account_id, region_name, function_name, metric, second)] += 1
            PATCH.state["recorded"] += 1
        _wake.notify()


def record_invocation(function_name: str, account_id: str, region_name: str) -> None:
    record(function_name, account_id, region_name, "Invocations")


def record_error(function_name: str, account_id: str, region_name: str) -> None:
    record(function_name, account_id, region_name, "Invocations", "Errors")


def metric_data(counts: dict[tuple[str, str, str, str, int], int]) -> dict[tuple[str, str], list[dict]]:
    """The PutMetricData data of each (account, region), one datum per function, metric and second."""
    calls: dict[tuple[str, str], list[dict]] = {}
    for (account, region, function, metric, second), count in sorted(counts.items(), key=lambda item: item[0][4]):
        calls.setdefault((account, region), []).append({
            "MetricName": metric,
            "Dimensions": [{"Name": "FunctionName", "Value": function}],
            "Timestamp": datetime.datetime.fromtimestamp(second, tz=datetime.UTC),
            "Values": [1.0],
            "Counts": [float(count)],
        })
    return calls


def flush() -> int:
    """Send what is pending now; the number of PutMetricData calls made."""
    from localstack.aws.connect import connect_to
    from localstack.utils.bootstrap import is_api_enabled

    with _wake:
        taken = dict(_pending)
        _pending.clear()
    if not taken or not is_api_enabled("cloudwatch"):
        return 0
    calls = 0
    for (account, region), data in metric_data(taken).items():
        client = connect_to(aws_access_key_id=account, region_name=region).cloudwatch
        for start in range(0, len(data), MAX_DATA_PER_CALL):
            try:
                client.put_metric_data(Namespace=NAMESPACE, MetricData=data[start:start + MAX_DATA_PER_CALL])
                calls += 1
            except Exception as exc:  # as 4.14.0's: a metric that cannot be stored must not stop the next ones
                LOG.info("Unable to put Lambda metric data to CloudWatch: %s", exc)
    with PATCH.lock:
        PATCH.state["calls"] += calls
    return calls


def _flush_loop() -> None:
    while True:
        with _wake:
            while not _pending:
                _wake.wait()
        time.sleep(FLUSH_S)  # gathers what the next second's invokes add
        try:
            flush()
        except Exception as exc:
            LOG.warning("Flushing Lambda metrics failed: %s", exc)


def _install() -> None:
    from localstack.services.lambda_.invocation import version_manager

    version_manager.record_cw_metric_invocation = record_invocation
    version_manager.record_cw_metric_error = record_error
    threading.Thread(target=_flush_loop, name="scones-lambda-metrics-batch", daemon=True).start()


PATCH = pinned.Patch("Lambda metrics batch (CloudWatch data sent once a second)", METRICS_BATCH_ENV, _install,
                     recorded=0, calls=0)
apply = PATCH.apply


def status() -> dict:
    return PATCH.status()
