"""One SageMaker data-capture line -> a typed record, or an error saying what is wrong with it.

Shared by `scones monitor` (harness/monitor.py) and the scheduled monitor function
(lambdas/drift_monitor.py). A record is one JSON object per line (SageMaker appends many records to
one file): {"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata":
{"eventId", "inferenceTime"}, "eventVersion": "0"}; the output's data is the endpoint's JSON (or CSV)
list of class probabilities, in the encoding the record names (JSON, CSV or BASE64), checked as the
workflow checks its inferences (lambdas/events.parse_inferences).
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from .errors import InvalidInferences
from .events import best_index, parse_inferences


@dataclass
class CaptureRecord:
    event_id: str
    inference_time: datetime
    probabilities: list[float]
    predicted_index: int
    max_confidence: float
    input_content_type: str | None
    input_bytes: int | None
    file: str
    line: int


@dataclass
class CaptureProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class MalformedRecord(ValueError):
    pass


def _decode(section: dict[str, Any], what: str) -> str:
    """The text of a captured input/output section, whatever its encoding."""
    if not isinstance(section, dict) or "data" not in section:
        raise MalformedRecord(f"{what} has no data")
    data = section["data"]
    encoding = str(section.get("encoding", "JSON")).upper()
    if not isinstance(data, str):
        raise MalformedRecord(f"{what}.data is {type(data).__name__}, not a string")
    if encoding == "BASE64":
        try:
            return base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise MalformedRecord(f"{what}.data is not base64 of UTF-8 text ({error})") from None
    return data


def parse_probabilities(section: dict[str, Any]) -> list[float]:
    text = _decode(section, "endpointOutput")
    encoding = str(section.get("encoding", "JSON")).upper()
    try:
        if encoding == "CSV":
            values: Any = [float(part) for part in text.replace("\n", ",").split(",") if part.strip()]
        else:
            values = json.loads(text)
    except ValueError as error:
        raise MalformedRecord(f"endpointOutput.data {text[:60]!r} is not a list of numbers ({error})") from None
    if isinstance(values, dict):  # tolerate {"predictions": [...]}-style bodies
        values = values.get("predictions", values.get("probabilities"))
    try:
        return parse_inferences(values, source=f"endpointOutput.data {text[:60]!r}")
    except InvalidInferences as error:
        raise MalformedRecord(str(error)) from None


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise MalformedRecord("eventMetadata.inferenceTime is missing")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRecord(f"eventMetadata.inferenceTime {value!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_record(text: str, file: str, line: int) -> CaptureRecord:
    """One capture line -> a record; raises MalformedRecord saying what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedRecord(f"not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(document, dict):
        raise MalformedRecord(f"a JSON {type(document).__name__}, not a capture record object")
    capture = document.get("captureData")
    if not isinstance(capture, dict):
        raise MalformedRecord("no captureData object")
    if "endpointOutput" not in capture:
        raise MalformedRecord("captureData has no endpointOutput")
    probabilities = parse_probabilities(capture["endpointOutput"])
    metadata = document.get("eventMetadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedRecord("eventMetadata is not an object")
    inference_time = parse_time(metadata.get("inferenceTime"))
    endpoint_input = capture.get("endpointInput")
    if not isinstance(endpoint_input, dict):
        endpoint_input = {}
    input_bytes = None
    if isinstance(endpoint_input.get("data"), str):
        data = endpoint_input["data"]
        input_bytes = len(data) * 3 // 4 if str(endpoint_input.get("encoding")).upper() == "BASE64" else len(data)
    best = best_index(probabilities)
    return CaptureRecord(
        event_id=str(metadata.get("eventId", "")),
        inference_time=inference_time,
        probabilities=probabilities,
        predicted_index=best,
        max_confidence=probabilities[best],
        input_content_type=endpoint_input.get("observedContentType"),
        input_bytes=input_bytes,
        file=file,
        line=line,
    )


def parse_lines(lines: Iterable[str], file: str, records: list[CaptureRecord], problems: list[CaptureProblem]) -> None:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            records.append(parse_record(text, file, number))
        except MalformedRecord as error:
            problems.append(CaptureProblem(file, number, str(error)))
