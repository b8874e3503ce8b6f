"""Data capture end to end against a real S3 API (moto's server on 127.0.0.1).

The endpoint finds S3 the standard way, through AWS_ENDPOINT_URL_S3, exactly as it will find
LocalStack or real S3.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from scones import settings
from scones.harness.endpoint import EndpointServer, free_port
from scones.harness.serving.capture import CaptureConfig, CapturedInvocation, CaptureWriter, restore_uploaded
from scones.testing import build_stub_model
from support import poll

ENDPOINT = "capture-endpoint"
KEY_PATTERN = re.compile(
    r"(?P<prefix>.+)/(?P<endpoint>[^/]+)/(?P<variant>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"(?P<mm>\d{2})-(?P<ss>\d{2})-(?P<ms>\d{3})-(?P<uuid>[0-9a-f-]{36})\.jsonl"
)


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory) -> Path:
    return build_stub_model(tmp_path_factory.mktemp("stub-model"))


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    files = sorted((settings.data_dir() / "test").glob("*/*.png"))
    if not files:
        pytest.skip(f"no test images under {settings.data_dir() / 'test'}")
    return [path.read_bytes() for path in files]


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    server = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    name = f"capture-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def captured(bucket: str, prefix: str = "capture") -> dict[str, list[dict]]:
    """Every capture file under the prefix -> its records (every line, not just the first)."""
    s3 = boto3.client("s3")
    files = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            files[item["Key"]] = [json.loads(line) for line in body.splitlines() if line]
    return files


def invoke_all(url: str, bodies: list[bytes], clients: int = 8) -> dict[str, tuple[bytes, bytes]]:
    """Invoke concurrently from `clients` threads, each with its own boto3 client and each request with its
    own InferenceId; {inference id: (input, output)}."""
    def worker(share: list[tuple[str, bytes]]):
        runtime = boto3.client("sagemaker-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1}))
        return [(inference_id, (body, runtime.invoke_endpoint(
                    EndpointName=ENDPOINT, ContentType="image/png", InferenceId=inference_id, Body=body)["Body"].read()))
                for inference_id, body in share]

    requests = [(f"request-{index}", body) for index, body in enumerate(bodies)]
    with ThreadPoolExecutor(clients) as pool:
        shares = pool.map(worker, [requests[index::clients] for index in range(clients)])
        return dict(pair for share in shares for pair in share)


def test_500_concurrent_invocations_make_exactly_500_right_records(stub_model, bucket, images, moto_url, tmp_path):
    destination = f"s3://{bucket}/capture"
    bodies = [images[index % len(images)] for index in range(500)]
    started = datetime.now(timezone.utc).replace(microsecond=0)
    # A subprocess, as the local stack runs it: the server does not share the clients' GIL.
    endpoint = EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=CaptureConfig(destination), mode="subprocess",
                              env={"AWS_ENDPOINT_URL_S3": moto_url}, log_path=tmp_path / "endpoint.log")
    with endpoint:  # with the default dynamic batching, so requests share forward passes
        replies = invoke_all(endpoint.url, bodies)
    finished = datetime.now(timezone.utc)

    files = captured(bucket)
    records = [record for file_records in files.values() for record in file_records]
    assert len(records) == 500
    event_ids = [record["eventMetadata"]["eventId"] for record in records]
    assert len(set(event_ids)) == 500 and all(uuid.UUID(event_id) for event_id in event_ids)

    for key, file_records in files.items():
        match = KEY_PATTERN.fullmatch(key)
        assert match, f"{key} is not in the SageMaker capture layout"
        assert (match["prefix"], match["endpoint"], match["variant"]) == ("capture", ENDPOINT, "AllTraffic")
        first_time = datetime.strptime(file_records[0]["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert (match["mm"], match["ss"]) == (f"{first_time:%M}", f"{first_time:%S}")
        for record in file_records:
            assert record["eventVersion"] == "0"
            when = datetime.strptime(record["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            assert started <= when <= finished
            assert f"{when:%Y/%m/%d/%H}" == "/".join(match.group("y", "m", "d", "h"))
            endpoint_input = record["captureData"]["endpointInput"]
            endpoint_output = record["captureData"]["endpointOutput"]
            assert (endpoint_input["mode"], endpoint_input["encoding"], endpoint_input["observedContentType"]) == \
                ("INPUT", "BASE64", "image/png")
            assert (endpoint_output["mode"], endpoint_output["encoding"], endpoint_output["observedContentType"]) == \
                ("OUTPUT", "JSON", "application/json")
            # Exactly this request's input and this request's reply (a batched reply may differ from the same
            # image's reply alone in the last float digits, so the pairing goes by InferenceId, not by input).
            sent, answered = replies[record["eventMetadata"]["inferenceId"]]
            assert base64.b64decode(endpoint_input["data"]) == sent
            assert endpoint_output["data"].encode() == answered
    assert sorted(record["eventMetadata"]["inferenceId"] for record in records) == sorted(replies)


def test_sampling_zero_writes_nothing(stub_model, bucket, images):
    config = CaptureConfig(f"s3://{bucket}/capture", sampling_percentage=0)
    with EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config) as endpoint:
        invoke_all(endpoint.url, images[:40], clients=4)
        assert endpoint.capture_status()["sampled"] == 0
    assert captured(bucket) == {}


def test_partial_sampling_captures_some_but_not_all(stub_model, bucket, images):
    config = CaptureConfig(f"s3://{bucket}/capture", sampling_percentage=50)
    with EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config) as endpoint:
        invoke_all(endpoint.url, images[:100], clients=4)
    count = sum(len(records) for records in captured(bucket).values())
    assert 20 < count < 80  # binomial(100, 0.5): outside this range about once in 10^9 runs


def test_sigterm_right_after_a_burst_loses_nothing(stub_model, bucket, images, moto_url, tmp_path):
    config = CaptureConfig(f"s3://{bucket}/capture")
    # Batches wait up to a minute: at SIGTERM every record is still in memory, and only the shutdown writes them.
    endpoint = EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config, mode="subprocess",
                              env={"AWS_ENDPOINT_URL_S3": moto_url}, log_path=tmp_path / "endpoint.log",
                              capture_writer_options={"flush_interval_s": 60})
    with endpoint:
        invoke_all(endpoint.url, [images[index % len(images)] for index in range(300)], clients=8)
        assert captured(bucket) == {}
    assert sum(len(records) for records in captured(bucket).values()) == 300


def test_s3_down_then_up_records_arrive(stub_model, images, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)  # nothing listens there yet
    bucket = f"late-{uuid.uuid4().hex[:12]}"
    config = CaptureConfig(f"s3://{bucket}/capture")
    endpoint = EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config,
                              capture_writer_options={"flush_interval_s": 0.1, "backoff_max_s": 0.3})
    moto = None
    with endpoint:
        replies = invoke_all(endpoint.url, images[:50], clients=4)
        assert len(replies) == 50  # replies do not wait for, or fail with, S3
        poll(lambda: endpoint.capture_status()["failed_puts"] >= 2, 30, interval=0.05, what="two failed PUTs")
        status = endpoint.capture_status()
        assert status["failed_puts"] >= 2 and status["written_records"] == 0 and status["last_error"]

        moto = start_moto(port)
        boto3.client("s3").create_bucket(Bucket=bucket)
        poll(lambda: endpoint.capture_status()["written_records"] >= 50, 30, interval=0.05, what="50 written records")
        assert endpoint.capture_status()["written_records"] == 50
    try:
        assert sum(len(records) for records in captured(bucket).values()) == 50
    finally:
        moto.stop()


def test_inference_id_reaches_the_record_and_failed_invocations_are_not_captured(stub_model, bucket, images):
    config = CaptureConfig(f"s3://{bucket}/capture")
    with EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config) as endpoint:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=endpoint.url)
        runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", InferenceId="order-42", Body=images[0])
        with pytest.raises(runtime.exceptions.ModelError):
            runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"not a png")
    records = [record for file_records in captured(bucket).values() for record in file_records]
    assert [record["eventMetadata"].get("inferenceId") for record in records] == ["order-42"]


def test_kill_9_of_the_endpoint_loses_no_acknowledged_record(stub_model, bucket, images, moto_url, tmp_path):
    """Every reply the client got is in the spool on disk; the next server on that spool uploads them."""
    config = CaptureConfig(f"s3://{bucket}/capture")
    spool = tmp_path / "spool"
    # Uploads wait a minute: at the kill every record is only in the spool.
    first = EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config, mode="subprocess", capture_spool=spool,
                           env={"AWS_ENDPOINT_URL_S3": moto_url}, log_path=tmp_path / "first.log",
                           capture_writer_options={"flush_interval_s": 60})
    first.start()
    try:
        replies = invoke_all(first.url, [images[index % len(images)] for index in range(120)], clients=8)
        os.kill(first.pid, signal.SIGKILL)
        first._process.wait(10)
    finally:
        first.stop()
    assert captured(bucket) == {}

    second = EndpointServer(stub_model, endpoint_name=ENDPOINT, capture=config, mode="subprocess", capture_spool=spool,
                            env={"AWS_ENDPOINT_URL_S3": moto_url}, log_path=tmp_path / "second.log")
    with second:
        poll(lambda: second.capture_status()["written_records"] >= 120, 30, interval=0.05, what="120 written records")
        status = second.capture_status()
        assert status["recovered_records"] == 120 and status["pending"] == 0
    records = [record for file_records in captured(bucket).values() for record in file_records]
    assert sorted(record["eventMetadata"]["inferenceId"] for record in records) == sorted(replies)
    # and the archive holds exactly what S3 got, for `scones up` to put back
    assert {path.relative_to(spool / "uploaded" / bucket).as_posix()
            for path in (spool / "uploaded").rglob("*.jsonl")} == set(captured(bucket))


def test_restore_puts_back_exactly_the_archived_files_s3_lacks(bucket, tmp_path):
    s3 = boto3.client("s3")
    writer = CaptureWriter(CaptureConfig(f"s3://{bucket}/capture"), ENDPOINT, spool_dir=tmp_path, max_batch_records=3,
                           flush_interval_s=0.05)
    writer.start()
    for _ in range(10):
        writer.submit(CapturedInvocation(datetime.now(timezone.utc), str(uuid.uuid4()), b"png", "image/png",
                                         b"[0.9, 0.1]", "application/json"))
    assert writer.close(timeout_s=30)
    keys = sorted(captured(bucket))
    assert len(keys) == 4   # ceil(10 / 3)
    s3.delete_object(Bucket=bucket, Key=keys[0])   # as if S3 had lost them: LocalStack restarted empty
    s3.delete_object(Bucket=bucket, Key=keys[1])
    (tmp_path / "pending" / bucket / "capture").mkdir(parents=True, exist_ok=True)
    (tmp_path / "pending" / bucket / "capture" / "x.jsonl").write_text('{"unsent": 1}\n{"unsent": 2}\n')

    report = restore_uploaded(tmp_path, s3, buckets=[bucket])

    assert (report.files, report.present) == (2, 2)
    assert report.records == sum(len(records) for key, records in captured(bucket).items() if key in keys[:2])
    assert (report.pending_files, report.pending_records) == (1, 2)   # the endpoint sends those, not restore
    assert sorted(captured(bucket)) == keys
    assert sum(len(records) for records in captured(bucket).values()) == 10
    assert restore_uploaded(tmp_path, s3, buckets=["another-bucket"]).files == 0
