"""Typed views of the events the three functions receive, and the envelope they return.

Workflow input (first state): {"s3_bucket": B, "s3_key": K}; the original project's test
cases also send "image_data": "", which is accepted and ignored.
Between states (Step Functions Lambda invoke, Payload.$ "$", OutputPath $.Payload):
{"statusCode": 200, "body": {"s3_bucket", "s3_key", "image_data", "inferences"}}.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .config import CLASSES
from .errors import InvalidInferences, InvalidInput

# softmax outputs sum to 1 up to float error; endpoints that round to 4 places stay within this.
_SUM_TOLERANCE = 1e-3


def _require_mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}: {value!r:.200}")
    return value


def _require_text(source: dict, name: str, what: str) -> str:
    if name not in source:
        raise InvalidInput(f"{what} has no {name!r} (fields present: {sorted(source)})")
    value = source[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{what} field {name!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} field {name!r} is empty")
    return value


@dataclass(frozen=True)
class ImageLocation:
    """The workflow input: where the image lies in S3."""

    s3_bucket: str
    s3_key: str

    @classmethod
    def from_event(cls, event: Any) -> "ImageLocation":
        event = _require_mapping(event, "the workflow input")
        return cls(
            s3_bucket=_require_text(event, "s3_bucket", "the workflow input"),
            s3_key=_require_text(event, "s3_key", "the workflow input"),
        )

    @property
    def uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_key}"


@dataclass(frozen=True)
class ImageState:
    """The state passed between the functions (the envelope's body)."""

    s3_bucket: str
    s3_key: str
    image_data: str
    inferences: list[float] = field(default_factory=list)

    @classmethod
    def from_event(cls, event: Any, *, require_inferences: bool = False) -> "ImageState":
        event = _require_mapping(event, "the event")
        if "body" not in event:
            raise InvalidInput(
                "the event has no 'body': expected the previous state's output "
                f"{{'statusCode': 200, 'body': {{...}}}}, got fields {sorted(event)}"
            )
        body = _require_mapping(event["body"], "the event's 'body'")
        what = "the event's 'body'"
        state = cls(
            s3_bucket=_require_text(body, "s3_bucket", what),
            s3_key=_require_text(body, "s3_key", what),
            image_data=_require_text(body, "image_data", what),
        )
        location = f"s3://{state.s3_bucket}/{state.s3_key}"
        if require_inferences:
            if "inferences" not in body:
                raise InvalidInferences(f"the event's 'body' for {location} has no 'inferences'")
            inferences = parse_inferences(body["inferences"], source=f"the inferences for {location}")
            state = ImageState(state.s3_bucket, state.s3_key, state.image_data, inferences)
        return state

    @property
    def uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_key}"

    def image_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.image_data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"'image_data' for {self.uri} is not valid base64: {exc}") from None

    def with_inferences(self, inferences: list[float]) -> "ImageState":
        return ImageState(self.s3_bucket, self.s3_key, self.image_data, list(inferences))

    def to_envelope(self) -> dict:
        return envelope(
            {
                "s3_bucket": self.s3_bucket,
                "s3_key": self.s3_key,
                "image_data": self.image_data,
                "inferences": list(self.inferences),
            }
        )


def envelope(body: dict) -> dict:
    return {"statusCode": 200, "body": body}


def parse_inferences(value: Any, *, source: str) -> list[float]:
    """Check that value is one probability per class and return it as a list of floats.

    Accepts a JSON string holding the list (the original project's classifyImage stored the
    endpoint's raw text) and a batch of exactly one row ([[p0, p1]]).
    """
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidInferences(f"{source} are not JSON: {value!r:.200}") from None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if not isinstance(value, list):
        raise InvalidInferences(f"{source} must be a list of {len(CLASSES)} probabilities, got {value!r:.200}")
    if len(value) != len(CLASSES):
        raise InvalidInferences(
            f"{source} must hold {len(CLASSES)} probabilities (one per class: {', '.join(CLASSES)}), "
            f"got {len(value)}: {value!r:.200}"
        )
    numbers = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise InvalidInferences(f"{source}: item {index} is not a finite number: {item!r}")
        if not 0.0 <= item <= 1.0:
            raise InvalidInferences(f"{source}: item {index} = {item} is not a probability in [0, 1]")
        numbers.append(float(item))
    total = sum(numbers)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise InvalidInferences(f"{source} do not sum to 1 (sum {total:.6g}): {numbers}")
    return numbers


def inferences_of(payload: Any) -> list[float] | None:
    """The inferences a workflow envelope holds (JSON text or parsed; the envelope, or its body), checked by
    parse_inferences; None when it holds none yet (no 'inferences', or the empty list serializeImageData sends)."""
    payload = _json_or_none(payload)
    if not isinstance(payload, dict):
        return None
    body = _json_or_none(payload.get("body", payload))
    value = body.get("inferences") if isinstance(body, dict) else None
    if value is None or value == [] or value == "[]":
        return None
    return parse_inferences(value, source="the workflow's inferences")


def _json_or_none(value: Any) -> Any:
    if isinstance(value, (str, bytes, bytearray)):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def best_index(inferences: list[float]) -> int:
    """The index of the most probable class (ties: the first), the one place the prediction is picked."""
    return max(range(len(inferences)), key=inferences.__getitem__)


def best_class(inferences: list[float]) -> tuple[str, float]:
    """The class the workflow predicts from one probability per class, and its probability."""
    best = best_index(inferences)
    return CLASSES[best], float(inferences[best])
