"""Throughput patch for LocalStack 4.14.0 Lambda: function logs shipped to CloudWatch Logs in batches.

Why: 4.14.0's `invocation/logs.py::LogHandler` (one thread per function version) makes one
PutLogEvents call per invocation through an internal botocore client and LocalStack's gateway:
~6% of LocalStack's CPU (py-spy) during concurrent executions, most of it the request's round trip,
not the storing. Here the handler's thread takes every invocation's logs that arrived within
LINGER_S of the first and sends them with one PutLogEvents per log stream (split at AWS's limits:
10,000 events and 1,048,576 bytes, each event's UTF-8 size plus 26), in the order they came.
What reaches CloudWatch Logs is what 4.14.0 sent: the same groups and streams (created the same
way when missing), the same lines, empty lines dropped; each line's timestamp is when its
invocation's logs were handed over (4.14.0 stamped them when its thread sent them), so they arrive
at most LINGER_S later, where AWS's take seconds.

Pinned: applied only to localstack-core 4.14.0, where LogHandler was read; SCONES_LAMBDA_LOGS_BATCH=0
turns it off (e.g. to measure the difference). Its status is in GET /_scones/executor.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Any

from scones.harness.lambda_executor import pinned
from scones.settings import LAMBDA_LOGS_BATCH as LOGS_BATCH_ENV

LOG = logging.getLogger(__name__)

LINGER_S = 2.0   # AWS delivers a function's logs to CloudWatch Logs seconds after the invoke
MAX_EVENTS = 10_000          # AWS PutLogEvents: "The maximum number of log events in a batch is 10,000"
MAX_BATCH_BYTES = 1_048_576  # "... the sum of all event messages in UTF-8, plus 26 bytes for each log event"
EVENT_OVERHEAD_BYTES = 26


def log_events(logs: str, timestamp_ms: int) -> list[dict[str, Any]]:
    """As 4.14.0: one event per non-empty line, its newline kept."""
    return [{"timestamp": timestamp_ms, "message": line + "\n"} for line in logs.split("\n") if line]


def batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`events` in order, cut into PutLogEvents calls within AWS's count and size limits."""
    calls: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        event_size = len(event["message"].encode()) + EVENT_OVERHEAD_BYTES
        if current and (len(current) >= MAX_EVENTS or size + event_size > MAX_BATCH_BYTES):
            calls.append(current)
            current, size = [], 0
        current.append(event)
        size += event_size
    if current:
        calls.append(current)
    return calls


def _stamped(item: Any) -> tuple[Any, int]:
    """(LogItem, ms) from the queue; a bare LogItem (queued before the patch) is stamped now."""
    if isinstance(item, tuple):
        return item
    return item, int(time.time() * 1000)


def _install() -> None:
    from localstack.aws.connect import connect_to
    from localstack.services.lambda_.invocation import logs
    from localstack.utils.aws.client_types import ServicePrincipal
    from localstack.utils.bootstrap import is_api_enabled

    def add_logs(self, log_item) -> None:
        if not is_api_enabled("logs"):
            return
        self.log_queue.put((log_item, int(time.time() * 1000)))

    def put(logs_client, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        try:
            logs_client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
        except logs_client.exceptions.ResourceNotFoundException:
            # as 4.14.0: create the group (if missing) and the stream, then send again
            try:
                logs_client.create_log_group(logGroupName=group)
            except logs_client.exceptions.ResourceAlreadyExistsException:
                pass
            logs_client.create_log_stream(logGroupName=group, logStreamName=stream)
            logs_client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    def run_log_loop(self, *args, **kwargs) -> None:
        logs_client = connect_to.with_assumed_role(region_name=self.region, role_arn=self.role_arn,
                                                   service_principal=ServicePrincipal.lambda_).logs
        stopping = False
        while not stopping and not self._shutdown_event.is_set():
            first = self.log_queue.get()
            if first is logs.QUEUE_SHUTDOWN:
                return
            taken = [_stamped(first)]
            deadline = time.monotonic() + LINGER_S
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.log_queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is logs.QUEUE_SHUTDOWN:
                    stopping = True   # send what was taken first
                    break
                taken.append(_stamped(item))
            streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for log_item, stamp in taken:
                streams.setdefault((log_item.log_group, log_item.log_stream), []).extend(log_events(log_item.logs, stamp))
            for (group, stream), events in streams.items():
                for call in batches(events):
                    try:
                        put(logs_client, group, stream, call)
                        with PATCH.lock:
                            PATCH.state["calls"] += 1
                    except Exception as exc:
                        LOG.warning("Error saving logs to group %s in region %s: %s", group, self.region, exc)
            with PATCH.lock:
                PATCH.state["invocations"] += len(taken)

    logs.LogHandler.add_logs = add_logs
    logs.LogHandler.run_log_loop = run_log_loop


PATCH = pinned.Patch("Lambda logs batch (one PutLogEvents per stream per batch)", LOGS_BATCH_ENV, _install,
                     invocations=0, calls=0)
apply = PATCH.apply


def status() -> dict:
    return PATCH.status()
