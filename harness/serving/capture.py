"""Model Monitor data capture: the records an endpoint with DataCaptureConfig writes to S3.

Each sampled invocation becomes one JSON line
    {"captureData": {"endpointInput": {...}, "endpointOutput": {...}},
     "eventMetadata": {"eventId": uuid, "inferenceTime": "YYYY-MM-DDTHH:MM:SSZ"},
     "eventVersion": "0"}
and lines are written in batches to
    s3://<DestinationS3Uri>/<EndpointName>/<VariantName>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl
through boto3's put_object, so the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL settings decide
whether that is LocalStack, moto or real S3.

Every record goes through a spool on local disk first (CaptureWriter), so that no crash loses
what the endpoint answered:

    <spool>/pending/<bucket>/<key>    records of files S3 has not confirmed yet (the open one too)
    <spool>/uploaded/<bucket>/<key>   files S3 confirmed: an archive of what the bucket should hold,
                                      from which restore_uploaded() re-seeds an S3 that lost its data

Durability policy:
- the request path appends the record to the open spool file with one write() before the endpoint
  replies; from then on it counts as captured ("spooled") and survives a crash or kill -9 of the
  endpoint (the kernel holds the bytes);
- a sync thread fdatasyncs the open file every `sync_interval_s` (50 ms), so a machine crash or
  power loss loses at most the last 50 ms of records ("synced" counts those that are past it);
- after `flush_interval_s`, or at max_batch_records / max_batch_bytes, or when the clock hour changes,
  the file is sealed (synced, closed) and uploaded under the key its name already holds, retried
  with backoff while S3 fails; only after S3 answered does it move from pending/ to uploaded/;
- a writer that starts uploads what an earlier process left in pending/ (cutting a torn last line
  that only a power loss can leave), so a restarted endpoint sends what its predecessor spooled.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
import queue
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, AbstractSet, Any, Callable, Iterable, Iterator

from scones import contract
from scones.errors import SconesError
from scones.polling import poll_condition

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
    input_content_type: str | None   # None: the request had no Content-Type
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


def _payload(config: CaptureConfig, body: bytes, content_type: str | None, mode: str) -> str:
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
    sampled: int = 0          # invocations chosen by sampling
    spooled_records: int = 0  # written to the spool before the reply: captured, survives a crash of the endpoint
    synced_records: int = 0   # fdatasync'ed too: survives a crash of the machine
    dropped: int = 0          # sampled but not spooled: the spool write failed (disk full, permissions)
    recovered_records: int = 0  # left in pending/ by an earlier process, uploaded by this one
    recovered_files: int = 0
    written_records: int = 0  # confirmed by S3 (recovered ones included)
    written_files: int = 0
    failed_puts: int = 0      # put_object attempts that failed (each retried)
    last_error: str | None = None
    last_error_at: str | None = None
    writer_cpu_s: float = 0.0  # CPU the sync and upload threads have used: capture's running cost off the request path


@dataclass
class _SpoolFile:
    """One capture file in pending/: the records of one future S3 object."""

    bucket: str
    key: str
    path: Path
    hour: tuple = ()
    fd: int | None = None      # open while records are appended to it
    opened_at: float = 0.0     # time.monotonic()
    records: int = 0
    size: int = 0
    synced_records: int = 0

    def open_fd(self) -> int:
        """The descriptor records are appended to; only a file the sync thread has not closed has one."""
        if self.fd is None:
            raise RuntimeError(f"capture spool file {self.path} is already closed")
        return self.fd


class SpoolInUse(SconesError, RuntimeError):
    """Another live capture writer holds this spool."""


PENDING = "pending"
UPLOADED = "uploaded"
_STOP = object()


@dataclass
class CaptureWriter:
    """Spools captured invocations on disk and uploads them in batches (see the module docstring)."""

    config: CaptureConfig
    endpoint_name: str
    variant_name: str = contract.VARIANT_NAME
    s3_client_factory: Callable[[], Any] | None = None
    spool_dir: str | os.PathLike | None = None   # None: a temporary folder, removed by a close() that sent everything
    max_batch_records: int = 1_000
    max_batch_bytes: int = 8 * 1024 * 1024
    flush_interval_s: float = 1.0     # a record waits at most about this long before its file is uploaded
    sync_interval_s: float = 0.05     # a spooled record is fdatasync'ed at most about this long after its write
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    counters: CaptureCounters = field(default_factory=CaptureCounters)

    def __post_init__(self) -> None:
        self._bucket, self._prefix = split_s3_uri(self.config.destination_s3_uri)
        self._temporary_spool = self.spool_dir is None
        self._spool_root = Path(tempfile.mkdtemp(prefix="scones-capture-spool-") if self.spool_dir is None
                                else self.spool_dir)
        self._lock = threading.Lock()          # the open file and the counters
        self._open: _SpoolFile | None = None
        self._sealed: list[_SpoolFile] = []   # full files the sync thread closes and hands to the uploader
        self._uploads: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._client_ready = threading.Event()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spool_lock: IO[str] | None = None   # the open writer.lock while this writer owns the spool
        self._client: Any = None

    # --- request path ------------------------------------------------------------------------

    def should_capture(self) -> bool:
        if not self.config.enabled or self.config.sampling_percentage <= 0:
            return False
        return self.config.sampling_percentage >= 100 or random.random() * 100 < self.config.sampling_percentage

    def submit(self, item: CapturedInvocation) -> None:
        """Append one record to the spool (one write(), no fsync); never raises into the reply."""
        line = (encode_record(self.config, item) + "\n").encode()
        hour = _hour(item.inference_time)
        with self._lock:
            self.counters.sampled += 1
            try:
                spool_file = self._file_for(item.inference_time, hour, len(line))
                _write_all(spool_file.open_fd(), line)
            except OSError as error:
                self.counters.dropped += 1
                dropped = self.counters.dropped
                self._note_error(error)
            else:
                spool_file.records += 1
                spool_file.size += len(line)
                self.counters.spooled_records += 1
                return
        if dropped == 1 or dropped % 1000 == 0:
            log.error("capture spool %s cannot be written (%s): %d captured records dropped so far",
                      self._spool_root, self.counters.last_error, dropped)

    def _file_for(self, moment: datetime, hour: tuple, size: int) -> _SpoolFile:
        """The open spool file, or a new one when it is full or holds another clock hour (lock held)."""
        current = self._open
        if current is not None and (current.hour != hour or current.records >= self.max_batch_records
                                    or current.size + size > self.max_batch_bytes):
            self._sealed.append(current)
            self._wake.set()
            current = self._open = None
        if current is None:
            key = capture_key(self._prefix, self.endpoint_name, self.variant_name, moment)
            path = self._spool_root / PENDING / self._bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            current = self._open = _SpoolFile(self._bucket, key, path, hour, fd, time.monotonic())
        return current

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "CaptureWriter":
        """Queue what an earlier process left in pending/, then start the sync and upload threads.

        One writer per spool: a second one would send the first one's open file. The lock is a flock,
        so the kernel releases it when its holder dies, even by kill -9."""
        if not self._threads:
            self._lock_spool()
            with self._lock:
                mine = {spool_file.path for spool_file in [self._open, *self._sealed] if spool_file is not None}
            # Only files for this writer's destination: one for a bucket that is gone would block the queue.
            own_prefix = "/".join(part for part in (self._prefix, self.endpoint_name, self.variant_name) if part) + "/"
            for leftover in pending_files(self._spool_root, skip=mine):
                if leftover.bucket != self._bucket or not leftover.key.startswith(own_prefix):
                    log.warning("capture spool file %s is for s3://%s/%s, not this endpoint's destination; left there",
                                leftover.path, leftover.bucket, leftover.key)
                    continue
                self._uploads.put(leftover)
                self.counters.recovered_files += 1
                self.counters.recovered_records += leftover.records
            if self.counters.recovered_files:
                log.info("capture spool %s: %d records in %d files left by an earlier process; uploading them",
                         self._spool_root, self.counters.recovered_records, self.counters.recovered_files)
            self._threads = [threading.Thread(target=self._sync_loop, name="capture-sync", daemon=True),
                             threading.Thread(target=self._upload_loop, name="capture-upload", daemon=True)]
            for thread in self._threads:
                thread.start()
        return self

    def _lock_spool(self) -> None:
        import fcntl

        self._spool_root.mkdir(parents=True, exist_ok=True)
        spool_lock = self._spool_lock = open(self._spool_root / "writer.lock", "a")
        try:
            fcntl.flock(spool_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            spool_lock.close()
            raise SpoolInUse(f"capture spool {self._spool_root} is in use by another endpoint process; stop it, "
                             "or give this one a spool of its own (scones serve --capture-spool)") from None

    def wait_started(self, timeout_s: float = 60.0) -> bool:
        """Wait until the uploader has built its S3 client (importing boto3 is not free; do it before traffic)."""
        return self._client_ready.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Seal, sync and upload everything spooled, then stop. False if S3 did not take it all in time:
        what is left stays in pending/ for the next writer on this spool."""
        if not self._threads:
            return self.pending() == 0
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        if not finished:
            self._abandon.set()  # stop retrying: the caller has given up waiting; what is left stays in pending/
            log.error("capture writer did not finish within %.0f s; %d records left in %s (last error: %s)",
                      timeout_s, self.pending(), self._spool_root / PENDING, self.counters.last_error)
            for thread in self._threads:
                thread.join(1.0)   # an upload in flight may still be running; it ends at its next wait
        if not any(thread.is_alive() for thread in self._threads):
            if self._spool_lock is not None:   # taken by start(), which started the threads
                self._spool_lock.close()   # the next writer on this spool may take over
            if finished and self._temporary_spool:  # nothing would read its archive again
                shutil.rmtree(self._spool_root, ignore_errors=True)
        return finished

    def pending(self) -> int:
        """Records spooled (or recovered) that S3 has not confirmed yet."""
        with self._lock:
            counters = self.counters
            return counters.spooled_records + counters.recovered_records - counters.written_records

    def status(self) -> dict:
        with self._lock:
            counters = dict(vars(self.counters))
        counters["pending"] = counters["spooled_records"] + counters["recovered_records"] - counters["written_records"]
        counters.update(
            enabled=self.config.enabled,
            destination=self.config.destination_s3_uri,
            sampling_percentage=self.config.sampling_percentage,
            spool_dir=str(self._spool_root),
            sync_interval_s=self.sync_interval_s,
            running=any(thread.is_alive() for thread in self._threads),
        )
        return counters

    def wait_written(self, count: int, timeout_s: float = 30.0) -> bool:
        """Poll until `count` records are in S3 (tests and tools); False at the deadline."""
        return poll_condition(lambda: self.counters.written_records >= count, timeout_s, interval=0.02)

    # --- sync thread: fdatasync the open file, seal full or old files --------------------------

    def _sync_loop(self) -> None:
        cpu_before = time.thread_time()
        while True:
            self._wake.wait(self.sync_interval_s)
            self._wake.clear()
            closing = self._closing.is_set()
            with self._lock:
                current = self._open
                if current is not None and (closing or time.monotonic() - current.opened_at >= self.flush_interval_s):
                    self._sealed.append(current)
                    current = self._open = None
                sealed, self._sealed = self._sealed, []
                records = current.records if current is not None else 0
            for spool_file in sealed:
                self._sync(spool_file, spool_file.records)
                os.close(spool_file.open_fd())
                spool_file.fd = None
                self._uploads.put(spool_file)
            if current is not None and records > current.synced_records:
                self._sync(current, records)
            self._add_cpu(time.thread_time() - cpu_before)
            cpu_before = time.thread_time()
            if closing or self._abandon.is_set():
                self._uploads.put(_STOP)
                return

    def _sync(self, spool_file: _SpoolFile, records: int) -> None:
        try:
            os.fdatasync(spool_file.open_fd())
            if spool_file.synced_records == 0:
                _fsync_dir(spool_file.path.parent)  # the new file's name, not only its bytes
        except OSError as error:
            with self._lock:
                self._note_error(error)
            return
        with self._lock:
            self.counters.synced_records += records - spool_file.synced_records
        spool_file.synced_records = records

    # --- upload thread -------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        try:
            self._s3()  # build the client now, not in the middle of the first upload
        except Exception:
            self._client = None
        finally:
            self._client_ready.set()
        cpu_before = time.thread_time()
        while True:
            item = self._uploads.get()
            if item is _STOP or self._abandon.is_set():
                return
            self._upload(item)
            self._add_cpu(time.thread_time() - cpu_before)
            cpu_before = time.thread_time()

    def _upload(self, spool_file: _SpoolFile) -> None:
        try:
            body = spool_file.path.read_bytes()
        except OSError as error:  # someone removed or broke the spool under us: say so, keep going
            with self._lock:
                self._note_error(error)
            log.error("capture spool file %s cannot be read (%s); its %d records are not uploaded",
                      spool_file.path, error, spool_file.records)
            return
        delay = self.backoff_initial_s
        while True:
            try:
                self._s3().put_object(Bucket=spool_file.bucket, Key=spool_file.key, Body=body,
                                      ContentType="application/jsonl")
                break
            except Exception as error:  # any failure: S3 down, bucket missing, credentials
                with self._lock:
                    self.counters.failed_puts += 1
                    self._note_error(error)
                    failures = self.counters.failed_puts
                if failures == 1 or failures % 10 == 0:
                    log.warning("capture upload of %d records to s3://%s/%s failed (%s); retrying in %.1f s",
                                spool_file.records, spool_file.bucket, spool_file.key, self.counters.last_error, delay)
                self._client = None  # a fresh client after errors: endpoints may have come back
                if self._abandon.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)
        # Kept, not deleted: uploaded/ is the archive an S3 that lost its data is re-seeded from.
        archived = self._spool_root / UPLOADED / spool_file.bucket / spool_file.key
        archived.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool_file.path, archived)
        with self._lock:
            self.counters.written_records += spool_file.records
            self.counters.written_files += 1

    def _s3(self):
        if self._client is None:
            self._client = (self.s3_client_factory or default_s3_client)()
        return self._client

    def _note_error(self, error: BaseException) -> None:
        """Remember the last failure for status() (lock held)."""
        self.counters.last_error = f"{type(error).__name__}: {error}"
        self.counters.last_error_at = datetime.now(timezone.utc).isoformat()

    def _add_cpu(self, seconds: float) -> None:
        with self._lock:
            self.counters.writer_cpu_s = round(self.counters.writer_cpu_s + seconds, 4)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the spool on disk: what a restarted endpoint uploads, and what `scones up` re-seeds S3 from ---

def _spooled(root: Path) -> Iterator[_SpoolFile]:
    """Capture files under root/<bucket>/<key...>.jsonl, oldest key first."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*.jsonl")):
        bucket, _, key = path.relative_to(root).as_posix().partition("/")
        if key:
            yield _SpoolFile(bucket, key, path)


def pending_files(spool_dir: str | os.PathLike, skip: AbstractSet[Path] = frozenset()) -> list[_SpoolFile]:
    """Files in pending/ (a process that died left them unsent), each cut after its last whole line."""
    found = []
    for spool_file in _spooled(Path(spool_dir) / PENDING):
        if spool_file.path in skip:
            continue
        data = spool_file.path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):  # a torn last line: only a machine crash leaves one
            log.warning("capture spool file %s ends in a partial record (%d bytes); dropping it",
                        spool_file.path, len(data) - len(whole))
            with open(spool_file.path, "r+b") as handle:
                handle.truncate(len(whole))
                os.fsync(handle.fileno())
        if not whole:
            spool_file.path.unlink()
            continue
        spool_file.records, spool_file.size = whole.count(b"\n"), len(whole)
        found.append(spool_file)
    return found


@dataclass
class RestoreReport:
    records: int = 0     # records in the files put back
    files: int = 0       # files put back into S3 from uploaded/
    present: int = 0     # files S3 still held
    pending_records: int = 0   # in pending/: not restored here, the endpoint's writer uploads them
    pending_files: int = 0
    seconds: float = 0.0


def spool_slots(spool_dir: str | os.PathLike) -> list[Path]:
    """spool_dir and each spool in a folder of it: the local SageMaker control plane gives each live host of an
    endpoint a slot of its own (harness/sagemaker/endpoint_host.py spool_slot)."""
    root = Path(spool_dir)
    slots = sorted(child for child in root.iterdir() if child.is_dir() and child.name not in (PENDING, UPLOADED)) \
        if root.is_dir() else []
    return [root, *slots]


def restore_uploaded(spool_dir: str | os.PathLike, s3, buckets: Iterable[str] | None = None,
                     max_workers: int = 8) -> RestoreReport:
    """Put every archived capture file that S3 lacks back under its key (LocalStack keeps no data across restarts).

    `buckets` limits the restore to those buckets; S3 is listed once per bucket and capture prefix. The spools
    in spool_dir's folders (spool_slots) are restored too.
    """
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    report = RestoreReport()
    wanted = set(buckets) if buckets is not None else None
    spools = spool_slots(spool_dir)
    archived = [spool_file for spool in spools for spool_file in _spooled(spool / UPLOADED)
                if wanted is None or spool_file.bucket in wanted]
    existing: set[tuple[str, str]] = set()
    for bucket, prefix in {(f.bucket, f.key.rsplit("/", 5)[0] + "/") for f in archived}:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            existing.update((bucket, item["Key"]) for item in page.get("Contents", []))
    missing = [f for f in archived if (f.bucket, f.key) not in existing]

    def put(spool_file: _SpoolFile) -> int:
        body = spool_file.path.read_bytes()
        s3.put_object(Bucket=spool_file.bucket, Key=spool_file.key, Body=body, ContentType="application/jsonl")
        return body.count(b"\n")

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="capture-restore") as pool:
        report.records = sum(pool.map(put, missing))
    report.files, report.present = len(missing), len(archived) - len(missing)
    for spool_file in (spool_file for spool in spools for spool_file in _spooled(spool / PENDING)):
        if wanted is None or spool_file.bucket in wanted:
            report.pending_files += 1
            report.pending_records += spool_file.path.read_bytes().count(b"\n")
    report.seconds = round(time.perf_counter() - started, 3)
    return report


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
