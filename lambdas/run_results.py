"""The result of one workflow run as a dispatcher reads it: one JSON object per photo under results/.

A finished execution reaches writeResult as EventBridge's "Step Functions Execution Status
Change" event (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html): its detail
carries the execution's status, its input and output as JSON strings (each left out, with
inputDetails/outputDetails {"included": false}, when the event would pass EventBridge's size
limit), and error and cause for a failed run. RunResult is that event's typed view and the
record written; result_key() says where the record of a photo lies. Nothing here knows the target.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidInput
from .events import ImageLocation, ImageState, best_class

DETAIL_TYPE = "Step Functions Execution Status Change"
FINISHED_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
RESULT_SUFFIX = ".json"


def result_key(results_prefix: str, photo_key: str) -> str:
    """Where the result of the photo at `photo_key` lies: results/incoming/a.png -> results/incoming/a.png.json."""
    return f"{results_prefix}{photo_key}{RESULT_SUFFIX}"


@dataclass(frozen=True)
class ExecutionFinished:
    """The detail of a Step Functions status-change event, for a run that has ended."""

    execution_arn: str
    status: str
    start_date: int | str | None    # AWS: epoch milliseconds; LocalStack 4.14: ISO 8601 text
    stop_date: int | str | None
    input: str | None               # JSON text; None when the event left it out
    output: str | None
    error: str | None
    cause: str | None

    @classmethod
    def from_event(cls, event: Any) -> "ExecutionFinished":
        if not isinstance(event, dict) or event.get("detail-type") != DETAIL_TYPE or not isinstance(event.get("detail"), dict):
            raise InvalidInput(f"expected an EventBridge {DETAIL_TYPE!r} event, got {json.dumps(event, default=str)[:300]}")
        detail = event["detail"]
        if not detail.get("executionArn"):
            raise InvalidInput(f"the {DETAIL_TYPE!r} event has no detail.executionArn (fields: {sorted(detail)})")
        return cls(
            execution_arn=detail["executionArn"],
            status=str(detail.get("status", "")),
            start_date=detail.get("startDate"),
            stop_date=detail.get("stopDate"),
            input=detail.get("input") if _included(detail, "inputDetails") else None,
            output=detail.get("output") if _included(detail, "outputDetails") else None,
            error=detail.get("error"),
            cause=detail.get("cause"),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def with_payloads(self, input_text: str | None, output_text: str | None) -> "ExecutionFinished":
        """The same run with input/output the event left out, as DescribeExecution returned them."""
        return ExecutionFinished(self.execution_arn, self.status, self.start_date, self.stop_date,
                                 self.input if self.input is not None else input_text,
                                 self.output if self.output is not None else output_text,
                                 self.error, self.cause)

    @property
    def needs_payloads(self) -> bool:
        return self.input is None or (self.status == "SUCCEEDED" and self.output is None)


def _included(detail: dict, details_field: str) -> bool:
    details = detail.get(details_field)
    return not isinstance(details, dict) or details.get("included", True) is not False


@dataclass(frozen=True)
class RunResult:
    """One workflow run's result. Its record fields (RECORD_FIELDS) are what a dispatcher reads for one photo:
    the class or the error, and which run decided it. The harness, which runs executions and reads their history
    (harness/executions.py), fills the fields after them too; those are never written to the record."""

    s3_bucket: str | None
    s3_key: str
    status: str                                 # SUCCEEDED, FAILED, TIMED_OUT or ABORTED (the harness: or NOT_STARTED...)
    predicted_class: str | None = None          # "bicycle" / "motorcycle" when SUCCEEDED
    confidence: float | None = None
    inferences: list[float] | None = None       # one probability per class, in CLASSES order
    error: str | None = None                    # e.g. "ThresholdConfidenceNotMet"
    message: str | None = None                  # the error's message, taken from the cause when not given
    cause: str | None = None                    # as Step Functions reported it; for a Lambda error, a JSON document
    execution_arn: str = ""
    started_at: str | None = None               # ISO 8601, UTC
    stopped_at: str | None = None
    # What the harness read of the run (not in the record):
    duration: float | None = None               # seconds, startDate -> stopDate as the service reports them
    wall_duration: float | None = None          # seconds, start_execution call -> terminal status seen by the harness
    failed_state: str | None = None
    state_durations: dict[str, float] = field(default_factory=dict)   # state name -> seconds
    event_types: list[str] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None

    def __post_init__(self) -> None:
        if self.message is None and self.cause is not None:
            object.__setattr__(self, "message", error_message(self.cause))  # frozen: set once, here

    @classmethod
    def from_execution(cls, run: ExecutionFinished) -> "RunResult":
        if run.input is None:
            raise InvalidInput(f"execution {run.execution_arn}: its input is unknown, so its photo is unknown")
        location = ImageLocation.from_event(_json(run.input, f"the input of execution {run.execution_arn}"))
        predicted = confidence = inferences = None
        if run.status == "SUCCEEDED":
            state = ImageState.from_event(_json(run.output, f"the output of execution {run.execution_arn}"),
                                          require_inferences=True)
            inferences = state.inferences
            predicted, confidence = best_class(inferences)
        return cls(
            s3_bucket=location.s3_bucket, s3_key=location.s3_key, status=run.status,
            predicted_class=predicted, confidence=confidence, inferences=inferences,
            error=run.error, message=error_message(run.cause), cause=run.cause,
            execution_arn=run.execution_arn,
            started_at=iso_date(run.start_date), stopped_at=iso_date(run.stop_date),
        )

    @property
    def key(self) -> str:
        return self.s3_key

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def cause_details(self) -> dict[str, Any] | None:
        """The cause parsed, when it is a Lambda's error document ({"errorType", "errorMessage", "stackTrace",
        "requestId"}, as the Lambda integration passes it on); None for a plain-text cause or none."""
        return lambda_error_document(self.cause)

    @property
    def error_message(self) -> str | None:
        """What a test wants to read: the Lambda's errorMessage, else the plain-text cause itself."""
        return error_message(self.cause)

    @property
    def stack_trace(self) -> list[str]:
        """The raising Lambda's stack trace lines (empty when the cause carries none)."""
        return list((self.cause_details or {}).get("stackTrace") or [])

    def to_json(self) -> str:
        """The record written for the photo: the record fields, with predicted_class as "class"."""
        record = {name: value for name, value in asdict(self).items() if name in RECORD_FIELDS}
        record["class"] = record.pop("predicted_class")
        return json.dumps(record, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunResult":
        record = json.loads(text)
        record["predicted_class"] = record.pop("class")
        return cls(**record)

    def to_dict(self) -> dict[str, Any]:
        """The harness's view (`scones run --json`): the run keyed by "key", its history's figures and the cause
        read both ways."""
        document = {name: value for name, value in asdict(self).items() if name not in HARNESS_LEAVES_OUT}
        return {"key": self.s3_key, **document, "error_message": self.error_message, "cause_details": self.cause_details}


RECORD_FIELDS = ("s3_bucket", "s3_key", "status", "predicted_class", "confidence", "inferences", "error", "message",
                 "cause", "execution_arn", "started_at", "stopped_at")
# Record fields the harness's to_dict leaves out: the key comes first as "key", the message as "error_message".
HARNESS_LEAVES_OUT = ("s3_bucket", "s3_key", "message")


def _json(text: str | None, what: str) -> Any:
    if text is None:
        raise InvalidInput(f"{what} is missing")
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{what} is not JSON ({error}): {text!r:.200}") from None


def lambda_error_document(cause: str | None) -> dict[str, Any] | None:
    """A Lambda error's cause parsed: the runtime's JSON {"errorMessage", "errorType", "stackTrace", "requestId"},
    as Step Functions' Lambda integration passes it on; None for a plain-text cause or none."""
    try:
        document = json.loads(cause) if cause else None
    except ValueError:
        return None
    return document if isinstance(document, dict) and "errorMessage" in document else None


def error_message(cause: str | None) -> str | None:
    """What a reader wants of a cause: the Lambda's errorMessage, else the plain-text cause itself."""
    document = lambda_error_document(cause)
    return str(document["errorMessage"]) if document else cause


def iso_date(date: Any) -> str | None:
    """A run's date as ISO 8601 UTC with milliseconds. The status-change event has epoch milliseconds on AWS
    (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html), ISO text on LocalStack 4.14;
    DescribeExecution a datetime, as botocore parses it."""
    if isinstance(date, datetime):
        moment = date if date.tzinfo else date.replace(tzinfo=timezone.utc)
    elif isinstance(date, str):
        try:
            moment = datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    elif isinstance(date, (int, float)) and not isinstance(date, bool):
        moment = datetime.fromtimestamp(date / 1000, tz=timezone.utc)
    else:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
