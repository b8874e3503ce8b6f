"""Data capture records and keys, checked against the Model Monitor format without any S3."""
from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scones.harness.serving.capture import (
    CaptureConfig,
    CapturedInvocation,
    CaptureWriter,
    capture_key,
    encode_record,
)
from support import poll

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def invocation(when=datetime(2026, 11, 26, 7, 5, 9, 123456, tzinfo=timezone.utc), **overrides):
    fields = dict(inference_time=when, event_id="0d7a5f2e-3c1b-4f5e-9a8b-1c2d3e4f5a6b",
                  input_body=b"\x89PNG\r\n\x1a\nfake", input_content_type="image/png",
                  output_body=b"[0.97, 0.03]", output_content_type="application/json")
    return CapturedInvocation(**{**fields, **overrides})


def test_record_has_the_model_monitor_shape():
    config = CaptureConfig("s3://bucket/capture")
    record = json.loads(encode_record(config, invocation()))
    assert record == {
        "captureData": {
            "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                              "data": base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode(), "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": "[0.97, 0.03]", "encoding": "JSON"},
        },
        "eventMetadata": {"eventId": "0d7a5f2e-3c1b-4f5e-9a8b-1c2d3e4f5a6b", "inferenceTime": "2026-11-26T07:05:09Z"},
        "eventVersion": "0",
    }


def test_inference_id_is_recorded_when_the_caller_sends_one():
    record = json.loads(encode_record(CaptureConfig("s3://b/p"), invocation(inference_id="order-42")))
    assert record["eventMetadata"]["inferenceId"] == "order-42"


@pytest.mark.parametrize("content_type, encoding", [
    ("text/csv", "CSV"),
    ("application/json", "JSON"),
    ("application/json; charset=utf-8", "JSON"),
    ("image/png", "BASE64"),
    ("application/x-npy", "BASE64"),
])
def test_encoding_follows_the_content_type_header_lists(content_type, encoding):
    assert CaptureConfig("s3://b/p").encoding_for(content_type) == encoding


def test_capture_options_and_header_lists_from_the_aws_api_shape():
    config = CaptureConfig.from_data_capture_config({
        "EnableCapture": True, "InitialSamplingPercentage": 25, "DestinationS3Uri": "s3://b/monitoring",
        "CaptureOptions": [{"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/jsonlines"]},
    })
    assert (config.sampling_percentage, config.capture_input, config.capture_output) == (25.0, False, True)
    assert config.encoding_for("application/json") == "BASE64"  # not in this config's JSON list
    assert config.encoding_for("application/jsonlines") == "JSON"
    record = json.loads(encode_record(config, invocation()))
    assert list(record["captureData"]) == ["endpointOutput"]
    assert record["captureData"]["endpointOutput"]["encoding"] == "BASE64"


def test_api_shape_without_header_lists_base64_encodes_everything():
    config = CaptureConfig.from_data_capture_config({"DestinationS3Uri": "s3://b"})
    assert config.encoding_for("text/csv") == config.encoding_for("application/json") == "BASE64"


@pytest.mark.parametrize("bad", [dict(destination_s3_uri="bucket/prefix"), dict(sampling_percentage=101),
                                 dict(capture_input=False, capture_output=False)])
def test_invalid_config_is_refused_with_the_reason(bad):
    with pytest.raises(ValueError):
        CaptureConfig(**{"destination_s3_uri": "s3://b/p", **bad})


def test_key_follows_the_sagemaker_layout():
    key = capture_key("datacapture", "scones-classifier", "AllTraffic",
                      datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc))
    assert re.fullmatch(rf"datacapture/scones-classifier/AllTraffic/2026/01/02/03/04-05-678-{UUID}\.jsonl", key)
    assert capture_key("", "e", "v", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)).startswith("e/v/2026/01/02/03/04-05-000-")


class RecordingS3:
    """Stands in for an S3 client: records put_object calls, fails the first `failures` of them."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def put_object(self, Bucket, Key, Body, **_):
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("S3 unreachable")
            assert Key not in self.objects, f"key {Key} written twice"
            self.objects[Key] = Body


def writer_with(s3: RecordingS3, spool_dir=None, start=True, **options) -> CaptureWriter:
    options = {"flush_interval_s": 0.05, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **options}
    writer = CaptureWriter(CaptureConfig("s3://bucket/cap"), "ep", s3_client_factory=lambda: s3, spool_dir=spool_dir,
                           **options)
    return writer.start() if start else writer


def lines(s3: RecordingS3) -> list[dict]:
    return [json.loads(line) for body in s3.objects.values() for line in body.decode().splitlines()]


def test_records_spanning_an_hour_go_to_each_hours_folder():
    s3 = RecordingS3()
    writer = writer_with(s3, flush_interval_s=10)
    writer.submit(invocation(datetime(2026, 1, 1, 9, 59, 59, tzinfo=timezone.utc)))
    writer.submit(invocation(datetime(2026, 1, 1, 10, 0, 0, tzinfo=timezone.utc)))
    assert writer.close(timeout_s=10)
    assert sorted(key.split("/")[6] for key in s3.objects) == ["09", "10"]


def test_batches_are_capped_and_close_writes_everything():
    s3 = RecordingS3()
    writer = writer_with(s3, max_batch_records=7, flush_interval_s=10)
    for _ in range(50):
        writer.submit(invocation())
    assert writer.close(timeout_s=10)
    assert len(lines(s3)) == 50
    assert len(s3.objects) == 8  # ceil(50 / 7)
    assert writer.status()["pending"] == 0


def test_s3_failures_are_retried_counted_and_lose_nothing():
    s3 = RecordingS3(failures=3)
    writer = writer_with(s3)
    for _ in range(20):
        writer.submit(invocation())
    assert writer.wait_written(20, timeout_s=10)
    status = writer.status()
    assert status["failed_puts"] == 3 and "S3 unreachable" in status["last_error"]
    assert writer.close(timeout_s=10)
    assert len(lines(s3)) == 20


def test_a_spool_that_cannot_be_written_fails_the_start_and_later_drops_and_counts(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    with pytest.raises(NotADirectoryError, match="not-a-folder"):
        writer_with(RecordingS3(), spool_dir=blocker / "spool")  # the endpoint does not start with a broken spool
    writer = writer_with(RecordingS3(), spool_dir=blocker / "spool", start=False)  # as if it broke after the start
    for _ in range(5):
        writer.submit(invocation())  # returns normally: the reply never fails because of capture
    status = writer.status()
    assert status["sampled"] == 5 and status["dropped"] == 5 and status["spooled_records"] == 0
    assert "NotADirectoryError" in status["last_error"]


def spool_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()]


def test_a_record_is_in_the_spool_file_when_submit_returns(tmp_path):
    """What counts as captured is on disk (in the kernel's hands) before the endpoint replies: no thread runs here."""
    writer = writer_with(RecordingS3(), spool_dir=tmp_path, start=False)
    writer.submit(invocation(event_id="11111111-2222-4333-8444-555555555555"))
    [path] = (tmp_path / "pending" / "bucket").rglob("*.jsonl")
    assert path.relative_to(tmp_path / "pending" / "bucket").as_posix().startswith("cap/ep/AllTraffic/2026/11/26/07/05-09-123-")
    assert [record["eventMetadata"]["eventId"] for record in spool_lines(tmp_path)] == [
        "11111111-2222-4333-8444-555555555555"]
    assert writer.status()["spooled_records"] == 1
    writer.start()
    assert writer.close(timeout_s=10)


def test_files_move_to_uploaded_only_after_s3_confirmed_them(tmp_path):
    s3 = RecordingS3(failures=10**9)  # S3 never answers
    writer = writer_with(s3, spool_dir=tmp_path, max_batch_records=4)
    for _ in range(10):
        writer.submit(invocation())
    poll(lambda: writer.status()["failed_puts"] >= 2, 10, interval=0.01, what="two failed PUTs")
    assert writer.close(timeout_s=0.3) is False  # says that records were left unsent
    assert len(spool_lines(tmp_path / "pending")) == 10 and not (tmp_path / "uploaded").exists()
    assert writer.status()["synced_records"] == 10  # sealed files are fdatasync'ed before any upload

    s3.failures = 0
    again = writer_with(s3, spool_dir=tmp_path)
    assert again.close(timeout_s=10)
    assert len(lines(s3)) == 10
    assert spool_lines(tmp_path / "pending") == [] and len(spool_lines(tmp_path / "uploaded")) == 10
    status = again.status()
    assert (status["recovered_records"], status["recovered_files"], status["written_records"]) == (10, 3, 10)
    # the archive holds exactly the objects, under the same keys
    assert {path.relative_to(tmp_path / "uploaded" / "bucket").as_posix()
            for path in (tmp_path / "uploaded").rglob("*.jsonl")} == set(s3.objects)


def test_a_writer_that_died_without_close_leaves_its_records_to_the_next(tmp_path):
    """A kill -9 of the endpoint: the process never reaches close(); the next process on the spool sends it all."""
    s3 = RecordingS3()
    dead = writer_with(s3, spool_dir=tmp_path, start=False)  # its threads never ran, as if killed at once
    for _ in range(7):
        dead.submit(invocation())
    successor = writer_with(s3, spool_dir=tmp_path)
    assert successor.close(timeout_s=10)
    assert len(lines(s3)) == 7 and successor.status()["recovered_records"] == 7


def test_a_torn_last_line_is_cut_and_the_whole_records_are_sent(tmp_path):
    s3 = RecordingS3()
    writer = writer_with(s3, spool_dir=tmp_path, start=False)
    for _ in range(3):
        writer.submit(invocation())
    [path] = (tmp_path / "pending").rglob("*.jsonl")
    with path.open("ab") as handle:
        handle.write(b'{"captureData": {"endpointIn')  # what a power loss in the middle of a write() can leave
    successor = writer_with(s3, spool_dir=tmp_path)
    assert successor.close(timeout_s=10)
    assert len(lines(s3)) == 3


def test_sampling_zero_never_captures_and_hundred_always_does():
    never = CaptureWriter(CaptureConfig("s3://b/p", sampling_percentage=0), "ep")
    always = CaptureWriter(CaptureConfig("s3://b/p", sampling_percentage=100), "ep")
    assert not any(never.should_capture() for _ in range(1000))
    assert all(always.should_capture() for _ in range(1000))


def test_text_payloads_survive_quotes_newlines_and_unicode():
    text = '{"label": "v\\u00e9lo", "note": "two\\nlines \\"quoted\\""}\n'
    config = CaptureConfig("s3://b/p", csv_content_types=("text/csv",), json_content_types=("application/json",))
    record = json.loads(encode_record(config, invocation(
        input_body="a,\"b\"\n1,é".encode(), input_content_type="text/csv",
        output_body=text.encode(), output_content_type="application/json")))
    assert record["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv", "mode": "INPUT", "data": "a,\"b\"\n1,é", "encoding": "CSV"}
    assert record["captureData"]["endpointOutput"]["data"] == text


def test_two_live_writers_cannot_share_a_spool_but_a_dead_ones_is_free(tmp_path):
    from scones.harness.serving.capture import SpoolInUse

    first = writer_with(RecordingS3(), spool_dir=tmp_path)
    with pytest.raises(SpoolInUse, match=rf"capture spool {tmp_path} is in use by another endpoint process"):
        writer_with(RecordingS3(), spool_dir=tmp_path)
    assert first.close(timeout_s=10)
    second = writer_with(RecordingS3(), spool_dir=tmp_path)
    assert second.close(timeout_s=10)
