"""Model Monitor data capture: the records an endpoint with DataCaptureConfig writes to S3.

Each sampled invocation becomes one JSON line
    {"captureData": {"endpointInput": {...}, "endpointOutput": {...}},
     "eventMetadata": {"eventId": uuid, "inferenceTime": "YYYY-MM-DDTHH:MM:SSZ"},
     "eventVersion": "0"}
and lines are written in batches to
    s3://<DestinationS3Uri>/<EndpointName>/<VariantName>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl
through boto3's put_object, so the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL settings decide
whether that is LocalStack, moto or real S3.

The request path only appends to a bounded in-memory buffer (never blocks, never raises); a
background thread wakes every flush interval (or when a batch's worth is waiting), encodes, uploads, retrying with backoff while S3 is unreachable.
close() drains everything still buffered, so a clean shutdown loses nothing.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import random
import threading
from collections import deque
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger("scones.capture")

# What the SageMaker Python SDK's DataCaptureConfig sends when the caller names no lists.
DEFAULT_CSV_CONTENT_TYPES = ("text/csv",)
DEFAULT_JSON_CONTENT_TYPES = ("application/json",)


@dataclass(frozen=True)
class CaptureConfig:
    """The fields of an endpoint config's DataCaptureConfig that shape what gets written."""

    destination_s3_uri: str
    sampling_percentage: float = 100.0
    capture_input: bool = True
    capture_output: bool = True
    csv_content_types: tuple[str, ...] = DEFAULT_CSV_CONTENT_TYPES
    json_content_types: tuple[str, ...] = DEFAULT_JSON_CONTENT_TYPES
    enabled: bool = True

    def __post_init__(self):
        bucket, _ = split_s3_uri(self.destination_s3_uri)
        if not bucket:
            raise ValueError(f"capture destination {self.destination_s3_uri!r} is not an s3://bucket[/prefix] URI")
        if not 0 <= self.sampling_percentage <= 100:
            raise ValueError(f"sampling percentage {self.sampling_percentage} is not within 0..100")
        if not (self.capture_input or self.capture_output):
            raise ValueError("capture needs at least one of input and output")

    @classmethod
    def from_data_capture_config(cls, config: dict) -> "CaptureConfig":
        """Build from the AWS API shape (CreateEndpointConfig's DataCaptureConfig)."""
        modes = {option["CaptureMode"] for option in config.get("CaptureOptions", [])} or {"Input", "Output"}
        headers = config.get("CaptureContentTypeHeader")
        # The API without CaptureContentTypeHeader base64-encodes everything.
        csv_types = tuple(headers.get("CsvContentTypes", ())) if headers is not None else ()
        json_types = tuple(headers.get("JsonContentTypes", ())) if headers is not None else ()
        return cls(
            destination_s3_uri=config["DestinationS3Uri"],
            sampling_percentage=float(config.get("InitialSamplingPercentage", 100)),
            capture_input="Input" in modes,
            capture_output="Output" in modes,
            csv_content_types=csv_types,
            json_content_types=json_types,
            enabled=bool(config.get("EnableCapture", True)),
        )

    def encoding_for(self, content_type: str | None) -> str:
        return _encoding_for(self.csv_content_types, self.json_content_types, content_type)


@functools.lru_cache(maxsize=256)
def _encoding_for(csv_content_types: tuple[str, ...], json_content_types: tuple[str, ...], content_type: str | None) -> str:
    """Exact header match first, then the media type without parameters, case-insensitively."""
    content_type = (content_type or "").strip()
    media_type = content_type.split(";")[0].strip().lower()
    if content_type in csv_content_types or media_type in _lower(csv_content_types):
        return "CSV"
    if content_type in json_content_types or media_type in _lower(json_content_types):
        return "JSON"
    return "BASE64"


def _lower(values: tuple[str, ...]) -> set[str]:
    return {value.lower() for value in values}


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        return "", ""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


@dataclass
class CapturedInvocation:
    """What the request path hands over: raw bytes, encoded later off the request path."""

    inference_time: datetime
    event_id: str
    input_body: bytes
    input_content_type: str
    output_body: bytes
    output_content_type: str
    inference_id: str | None = None


def encode_record(config: CaptureConfig, item: CapturedInvocation) -> str:
    """One JSON line. Assembled by hand because it runs for every record: base64 needs no escaping."""
    sections = []
    if config.capture_input:
        sections.append(f'"endpointInput":{_payload(config, item.input_body, item.input_content_type, "INPUT")}')
    if config.capture_output:
        sections.append(f'"endpointOutput":{_payload(config, item.output_body, item.output_content_type, "OUTPUT")}')
    metadata = f'"eventId":{json.dumps(item.event_id)}'
    if item.inference_id:
        metadata += f',"inferenceId":{json.dumps(item.inference_id)}'
    metadata += f',"inferenceTime":"{item.inference_time:%Y-%m-%dT%H:%M:%SZ}"'
    return f'{{"captureData":{{{",".join(sections)}}},"eventMetadata":{{{metadata}}},"eventVersion":"0"}}'


def _payload(config: CaptureConfig, body: bytes, content_type: str, mode: str) -> str:
    encoding = config.encoding_for(content_type)
    if encoding == "BASE64":
        data = '"' + base64.b64encode(body).decode("ascii") + '"'
    else:
        data = json.dumps(body.decode("utf-8", errors="replace"))
    return (f'{{"observedContentType":{json.dumps(content_type)},"mode":"{mode}",'
            f'"data":{data},"encoding":"{encoding}"}}')


def capture_key(prefix: str, endpoint_name: str, variant_name: str, first_time: datetime) -> str:
    """<prefix>/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl, as SageMaker names them."""
    millis = first_time.microsecond // 1000
    name = f"{first_time:%M-%S}-{millis:03d}-{uuid.uuid4()}.jsonl"
    parts = [prefix] if prefix else []
    parts += [endpoint_name, variant_name, first_time.strftime("%Y/%m/%d/%H"), name]
    return "/".join(parts)


@dataclass
class CaptureCounters:
    sampled: int = 0          # invocations chosen by sampling and handed to the buffer
    dropped: int = 0          # sampled but lost because the buffer was full
    written_records: int = 0
    written_files: int = 0
    failed_puts: int = 0      # put_object attempts that failed (each retried)
    last_error: str | None = None
    last_error_at: str | None = None
    writer_cpu_s: float = 0.0  # CPU the background writer has used encoding and uploading: capture's running cost


@dataclass
class CaptureWriter:
    """Buffers captured invocations and uploads them in batches from one background thread."""

    config: CaptureConfig
    endpoint_name: str
    variant_name: str = "AllTraffic"
    s3_client_factory: Callable[[], Any] | None = None
    max_buffered: int = 20_000        # bound on records waiting in memory
    max_batch_records: int = 1_000
    max_batch_bytes: int = 8 * 1024 * 1024
    flush_interval_s: float = 1.0     # a record waits at most about this long before its file is written
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    counters: CaptureCounters = field(default_factory=CaptureCounters)

    def __post_init__(self):
        self._bucket, self._prefix = split_s3_uri(self.config.destination_s3_uri)
        self._buffer: deque[CapturedInvocation] = deque()
        self._wake = threading.Event()
        self._client_ready = threading.Event()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None

    # --- request path ------------------------------------------------------------------------

    def should_capture(self) -> bool:
        if not self.config.enabled or self.config.sampling_percentage <= 0:
            return False
        return self.config.sampling_percentage >= 100 or random.random() * 100 < self.config.sampling_percentage

    def submit(self, item: CapturedInvocation) -> None:
        """Hand one invocation over; never blocks and never raises into the reply."""
        # A deque append is atomic under the GIL: no lock, no wake-up per record on the request path.
        if len(self._buffer) >= self.max_buffered:
            with self._lock:
                self.counters.sampled += 1
                self.counters.dropped += 1
                dropped = self.counters.dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.error("capture buffer full (%d records): %d captured records dropped so far",
                          self.max_buffered, dropped)
            return
        with self._lock:
            self.counters.sampled += 1
        self._buffer.append(item)
        if len(self._buffer) >= self.max_batch_records:
            self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "CaptureWriter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
            self._thread.start()
        return self

    def wait_started(self, timeout_s: float = 60.0) -> bool:
        """Wait until the writer has built its S3 client (importing boto3 is not free; do it before traffic)."""
        return self._client_ready.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write everything buffered, then stop. Returns False if records could not be written in time."""
        if self._thread is None:
            return not self._buffer
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)
        finished = not self._thread.is_alive()
        if not finished:
            self._abandon.set()  # stop retrying: the caller has given up waiting
            log.error("capture writer did not finish within %.0f s; %d records unwritten (last error: %s)",
                      timeout_s, self.pending(), self.counters.last_error)
        return finished

    def pending(self) -> int:
        with self._lock:
            return self.counters.sampled - self.counters.dropped - self.counters.written_records

    def status(self) -> dict:
        with self._lock:
            counters = dict(vars(self.counters))
        counters["pending"] = counters["sampled"] - counters["dropped"] - counters["written_records"]
        counters.update(
            enabled=self.config.enabled,
            destination=self.config.destination_s3_uri,
            sampling_percentage=self.config.sampling_percentage,
            running=bool(self._thread and self._thread.is_alive()),
        )
        return counters

    def wait_written(self, count: int, timeout_s: float = 30.0) -> bool:
        """Poll until `count` records are in S3 (tests and tools); False at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counters.written_records >= count:
                return True
            time.sleep(0.02)
        return self.counters.written_records >= count

    # --- background thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._s3()  # build the client now, not in the middle of the first flush
        except Exception:
            self._client = None
        finally:
            self._client_ready.set()
        cpu_before = time.thread_time()  # building the client is a one-off, not capture's running cost
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            closing = self._closing.is_set()
            self._write_buffered()
            self.counters.writer_cpu_s = round(time.thread_time() - cpu_before, 4)
            if self._abandon.is_set() or (closing and not self._buffer):
                return

    def _write_buffered(self) -> None:
        """Write what is buffered now, one file per batch; a batch never spans two clock hours."""
        batch: list[CapturedInvocation] = []
        batch_bytes = 0
        for _ in range(len(self._buffer)):
            item = self._buffer.popleft()
            size = len(item.input_body) + len(item.output_body)
            if batch and (_hour(item.inference_time) != _hour(batch[0].inference_time)
                          or len(batch) >= self.max_batch_records or batch_bytes + size > self.max_batch_bytes):
                self._write(batch)
                if self._abandon.is_set():
                    return
                batch, batch_bytes = [], 0
            batch.append(item)
            batch_bytes += size
        if batch:
            self._write(batch)

    def _write(self, batch: list[CapturedInvocation]) -> None:
        body = ("\n".join(encode_record(self.config, item) for item in batch) + "\n").encode()
        # The key is fixed before the first attempt: a retry re-sends the same object, never a new one.
        key = capture_key(self._prefix, self.endpoint_name, self.variant_name, batch[0].inference_time)
        delay = self.backoff_initial_s
        while True:
            try:
                self._s3().put_object(Bucket=self._bucket, Key=key, Body=body, ContentType="application/jsonl")
                break
            except Exception as error:  # any failure: S3 down, bucket missing, credentials
                with self._lock:
                    self.counters.failed_puts += 1
                    self.counters.last_error = f"{type(error).__name__}: {error}"
                    self.counters.last_error_at = datetime.now(timezone.utc).isoformat()
                    failures = self.counters.failed_puts
                if failures == 1 or failures % 10 == 0:
                    log.warning("capture upload of %d records to s3://%s/%s failed (%s); retrying in %.1f s",
                                len(batch), self._bucket, key, self.counters.last_error, delay)
                self._client = None  # a fresh client after errors: endpoints may have come back
                if self._abandon.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)
        with self._lock:
            self.counters.written_records += len(batch)
            self.counters.written_files += 1

    def _s3(self):
        if self._client is None:
            self._client = (self.s3_client_factory or default_s3_client)()
        return self._client


def _hour(moment: datetime) -> tuple:
    return moment.year, moment.month, moment.day, moment.hour


def default_s3_client():
    """An S3 client from the standard AWS settings, failing fast so our own backoff decides."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "s3",
        region_name=session.region_name or "us-east-1",
        # Skip the optional CRC32 botocore adds to every put: not required by S3, and its CPU is shared with inference.
        config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1},
                      request_checksum_calculation="when_required"),
    )
