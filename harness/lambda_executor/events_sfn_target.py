"""Fix for LocalStack 4.14.0 EventBridge: a Step Functions target with an InputTransformer.

Why: 4.14.0's `services/events/target.py::StatesTargetSender.send_event` names the execution
`event["id"]` of the event *after* the target's Input/InputPath/InputTransformer changed it. The
workflow's input {"s3_bucket", "s3_key"} has no "id", so every delivery fails with KeyError
('TargetDeliveryFailure ... Failed to deliver to target ...: 'id'' in LocalStack's log) and no
execution starts. AWS starts the execution with the transformed input
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html).
The patch keeps 4.14.0's own naming, the id of the event that matched, whatever the input.

Pinned like the other patches (pinned.py): applied only to localstack-core 4.14.0;
SCONES_EVENTS_SFN_TARGET_PATCH=0 turns it off.
"""
from __future__ import annotations

import threading

from scones.harness.lambda_executor import pinned
from scones.settings import EVENTS_SFN_TARGET_PATCH as EVENTS_SFN_TARGET_ENV

_matched = threading.local()   # the event being delivered; process_event calls send_event in its own thread


def _install() -> None:
    from localstack.services.events.target import StatesTargetSender
    from localstack.services.events.utils import to_json_str

    original_process_event = StatesTargetSender.process_event

    def process_event(self, event, trace_header):
        _matched.event_id = event.get("id") if isinstance(event, dict) else None
        try:
            return original_process_event(self, event, trace_header)
        finally:
            _matched.event_id = None

    def send_event(self, event, trace_header):
        self.service = "stepfunctions"
        self.client.start_execution(stateMachineArn=self.target["Arn"], name=_matched.event_id,
                                    input=to_json_str(event))

    StatesTargetSender.process_event = process_event
    StatesTargetSender.send_event = send_event


PATCH = pinned.Patch("EventBridge Step Functions target fix (transformed input, execution named after the event)",
                     EVENTS_SFN_TARGET_ENV, _install)
apply = PATCH.apply
status = PATCH.status


def apply_in_background() -> None:
    """apply() off the caller's thread: importing EventBridge's targets takes about a second here, which must
    not delay the first Lambda call; `scones up` creates the rules after its functions, by which time it landed."""
    threading.Thread(target=apply, name="scones-events-sfn-target", daemon=True).start()

