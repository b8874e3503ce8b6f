"""Throughput patch for LocalStack 4.14.0: the events AWS services emit reach EventBridge without a client round trip.

Why: Step Functions sends a "Step Functions Execution Status Change" event when an execution starts and when
it ends (`stepfunctions/backend/execution.py::Execution.publish_execution_status_change_event`), and S3 an
"Object Created" event for every write to a bucket with EventBridge notifications on
(`s3/notifications.py::EventBridgeNotifier.notify`). 4.14.0 sends each through an internal botocore client:
the entry is serialised, signed, run through the whole gateway handler chain, parsed back, handled, and the
reply serialised and parsed again. A py-spy profile of LocalStack during Scones executions put 9% of its
GIL time under the status-change sends, only a fifth of it in EventBridge's own PutEvents. Here both
senders hand their entry to EventBridge's provider directly, as the same account and region the client
named, with a request context such as the gateway builds (a fresh X-Ray root); LocalStack's own code still
builds the entries and still logs a failed send. On AWS these events are the services' own, not a PutEvents
call that a caller makes: no IAM policy applies to them (IamChecks let the internal call through before, as an
administrator's), and a fault rule on EventBridge PutEvents (faults_gateway.py), which used to fire for them
too, is now about callers' calls only. EventBridge's delivery to a rule's targets is unchanged: a Lambda
target is still invoked through the gateway, where IAM and fault rules apply.

Pinned: applied only to localstack-core 4.14.0, where both call sites were read; SCONES_SERVICE_EVENTS_IN_PROCESS=0
turns it off. Its status (events handed over) is in GET /_scones/executor.
"""
from __future__ import annotations

from typing import Any

from scones.harness.lambda_executor import pinned
from scones.settings import SERVICE_EVENTS_IN_PROCESS as IN_PROCESS_ENV


class InProcessEvents:
    """The one call the senders make on their events client, `put_events(Entries=...)`, answered by the provider."""

    def __init__(self, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 (botocore's parameter name)
        from localstack.aws.api import RequestContext
        from localstack.http import Request
        from localstack.services.plugins import SERVICE_PLUGINS
        from localstack.utils.aws.arns import get_partition
        from localstack.utils.xray.trace_header import TraceHeader

        provider = SERVICE_PLUGINS.require("events")._provider
        context = RequestContext(Request("POST", "/"))
        context.account_id, context.region, context.partition = self.account_id, self.region, get_partition(self.region)
        context.trace_context["aws_trace_header"] = TraceHeader.from_header_str(None).ensure_root_exists()
        result = provider.put_events(context, Entries)
        with PATCH.lock:
            PATCH.state["events"] += len(Entries)
        return result


class _ClientsWithInProcessEvents:
    """What `connect_to(...)` returns, but its `.events` is InProcessEvents for the same account and region."""

    def __init__(self, clients: Any, account_id: str, region: str) -> None:
        self._clients = clients
        self.events = InProcessEvents(account_id, region)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clients, name)


def _install() -> None:
    from localstack.constants import AWS_REGION_US_EAST_1, DEFAULT_AWS_ACCOUNT_ID
    from localstack.services.s3 import notifications
    from localstack.services.stepfunctions.backend.execution import Execution

    Execution._get_events_client = lambda execution: InProcessEvents(execution.account_id, execution.region_name)
    connect_to = notifications.connect_to

    def connect_to_with_in_process_events(**kwargs: Any) -> Any:
        account_id = kwargs.get("aws_access_key_id") or DEFAULT_AWS_ACCOUNT_ID
        region = kwargs.get("region_name") or AWS_REGION_US_EAST_1
        return _ClientsWithInProcessEvents(connect_to(**kwargs), account_id, region)

    notifications.connect_to = connect_to_with_in_process_events


PATCH = pinned.Patch("service events to EventBridge in process", IN_PROCESS_ENV, _install, events=0)
apply = PATCH.apply
status = PATCH.status
