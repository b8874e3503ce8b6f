"""scones serve's opt-in dynamic batching (--max-batch-size > 1; ours, not the container's): several
waiting requests served by one predict_fn call, each with its own answer.

LoadedModel.invoke_batch (the handlers' side) and InferenceWorkers (the queue the server's
worker threads take batches from), then the whole endpoint under concurrent boto3 clients.
By default the endpoint serves one request per predict_fn call, as the SageMaker PyTorch
container does (sagemaker_inference/transformer.py, Transformer.transform loops over the
requests TorchServe hands it, even with SAGEMAKER_TS_BATCH_SIZE set); tests/parity proves that
against the real toolkit.
"""
from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import torch
from botocore.config import Config

from scones import settings
from scones.harness.endpoint import EndpointServer
from scones.harness.serving.handlers import LoadedModel, load_model, unpack_model
from scones.harness.serving.server import EndpointSettings, InferenceWorkers
from scones.testing import build_stub_model
from support import poll

ENDPOINT = "batching-endpoint"


def read_test_images(count: int) -> list[bytes]:
    files = sorted((settings.data_dir() / "test").glob("*/*.png"))[:count]
    if len(files) < count:
        pytest.skip(f"fewer than {count} test images under {settings.data_dir() / 'test'}")
    return [path.read_bytes() for path in files]


@pytest.fixture(scope="module")
def stub_archive(tmp_path_factory) -> Path:
    return build_stub_model(tmp_path_factory.mktemp("stub-model"))


@pytest.fixture(scope="module")
def stub(stub_archive, tmp_path_factory) -> LoadedModel:
    return load_model(unpack_model(stub_archive, tmp_path_factory.mktemp("stub-unpacked")))


def probabilities(reply: tuple[bytes, str]) -> list[float]:
    body, content_type = reply
    assert content_type == "application/json"
    return json.loads(body)


class RecordingModel:
    """Plain handlers around a fake network that remembers how many rows each predict_fn call got."""

    def __init__(self, predict=None):
        self.calls: list[int] = []
        self.predict = predict or (lambda data: data.sum(dim=tuple(range(1, data.ndim))).unsqueeze(1))

    def loaded(self, **overrides) -> LoadedModel:
        def input_fn(body, content_type):
            if content_type != "application/x-rows":
                raise ValueError(f"unsupported {content_type}")
            rows = json.loads(body)
            return torch.tensor(rows, dtype=torch.float64)

        def predict_fn(data, model):
            self.calls.append(len(data))
            return self.predict(data)

        def output_fn(prediction, accept):
            if accept == "text/bad":
                raise ValueError("cannot answer text/bad")
            return json.dumps(prediction.squeeze(1).tolist()), "application/json"

        handlers = dict(model_dir=Path("."), model=None, input_fn=input_fn, predict_fn=predict_fn,
                        output_fn=output_fn, transform_fn=None)
        return LoadedModel(**{**handlers, **overrides})


# --- LoadedModel.invoke_batch -------------------------------------------------------------------

def test_a_batch_answers_each_request_as_if_alone(stub):
    images = read_test_images(6)
    alone = [probabilities(stub.invoke(image, "image/png", None)) for image in images]
    together = stub.invoke_batch([(image, "image/png", None) for image in images])
    assert len(together) == len(images)
    for reply, expected in zip(together, alone):
        assert probabilities(reply) == pytest.approx(expected, abs=1e-5)
    assert len({json.dumps(expected) for expected in alone}) > 1  # distinct answers: a mix-up would show


def test_bad_requests_in_a_batch_get_their_own_errors_and_the_others_their_answers(stub):
    good_a, good_b = read_test_images(2)
    requests = [
        (good_a, "image/png", None),
        (b"not a png", "image/png", None),
        (good_b, "text/plain", None),
        (good_b, "image/png", "application/json"),
    ]
    results = stub.invoke_batch(requests)
    assert isinstance(results[1], Exception) and isinstance(results[2], Exception)
    assert "text/plain" in str(results[2])
    assert probabilities(results[0]) == pytest.approx(probabilities(stub.invoke(good_a, "image/png", None)), abs=1e-5)
    assert probabilities(results[3]) == pytest.approx(probabilities(stub.invoke(good_b, "image/png", None)), abs=1e-5)


def test_rows_are_split_back_to_their_requests_with_one_predict_call():
    recording = RecordingModel()
    model = recording.loaded()
    requests = [(json.dumps([[1, 2], [3, 4]]).encode(), "application/x-rows", None),   # two rows
                (json.dumps([[10, 20]]).encode(), "application/x-rows", None),
                (json.dumps([[5, 5], [6, 6], [7, 7]]).encode(), "application/x-rows", None)]
    results = model.invoke_batch(requests)
    assert recording.calls == [6]
    assert [json.loads(body) for body, _ in results] == [[3.0, 7.0], [30.0], [10.0, 12.0, 14.0]]


def test_an_output_fn_failure_fails_only_its_own_request():
    recording = RecordingModel()
    results = recording.loaded().invoke_batch([(json.dumps([[1]]).encode(), "application/x-rows", "text/bad"),
                                               (json.dumps([[2]]).encode(), "application/x-rows", None)])
    assert recording.calls == [2]
    assert isinstance(results[0], ValueError) and json.loads(results[1][0]) == [2.0]


def test_a_predict_fn_failure_fails_every_request_of_that_call():
    def explode(data):
        raise RuntimeError("out of memory")

    recording = RecordingModel(predict=explode)
    results = recording.loaded().invoke_batch([(json.dumps([[1]]).encode(), "application/x-rows", None),
                                               (b"bad", "text/plain", None),
                                               (json.dumps([[2]]).encode(), "application/x-rows", None)])
    assert recording.calls == [2]
    assert isinstance(results[0], RuntimeError) and isinstance(results[2], RuntimeError)
    assert isinstance(results[1], ValueError) and "text/plain" in str(results[1])


def test_inputs_of_different_trailing_shapes_are_predicted_in_matching_groups():
    recording = RecordingModel()
    results = recording.loaded().invoke_batch([(json.dumps([[1, 1]]).encode(), "application/x-rows", None),
                                               (json.dumps([[1, 1, 1]]).encode(), "application/x-rows", None),
                                               (json.dumps([[2, 2]]).encode(), "application/x-rows", None)])
    assert sorted(recording.calls) == [1, 2]   # the two 2-wide rows together, the 3-wide one alone
    assert [json.loads(body) for body, _ in results] == [[2.0], [3.0], [4.0]]


def test_a_prediction_without_one_row_per_input_row_falls_back_to_one_request_at_a_time():
    recording = RecordingModel(predict=lambda data: data.sum().reshape(1, 1))  # one row, whatever the batch
    results = recording.loaded().invoke_batch([(json.dumps([[1, 2]]).encode(), "application/x-rows", None),
                                               (json.dumps([[3, 4]]).encode(), "application/x-rows", None)])
    assert recording.calls == [2, 1, 1]
    assert [json.loads(body) for body, _ in results] == [[3.0], [7.0]]


def test_a_script_with_transform_fn_is_called_once_per_request():
    calls = []

    def transform_fn(model, body, content_type, accept):
        calls.append(body)
        if body == b"bad":
            raise ValueError("bad body")
        return body.upper(), "text/plain"

    model = RecordingModel().loaded(transform_fn=transform_fn)
    results = model.invoke_batch([(b"a", "text/plain", None), (b"bad", "text/plain", None), (b"c", "text/plain", None)])
    assert calls == [b"a", b"bad", b"c"]
    assert results[0] == (b"A", "text/plain") and isinstance(results[1], ValueError) and results[2] == (b"C", "text/plain")


# --- InferenceWorkers: the queue ----------------------------------------------------------------

def test_a_worker_takes_every_waiting_request_up_to_the_batch_size():
    gate, batches = threading.Event(), []

    def run_batch(requests):
        batches.append([body for body, _, _ in requests])
        gate.wait(30)  # the first batch holds the worker while the others queue up
        return [(body * 2, content_type) for body, content_type, _ in requests]

    workers = InferenceWorkers(threads=1, max_batch_size=4, max_batch_delay_s=0, run_batch=run_batch).start()

    async def scenario():
        first = asyncio.ensure_future(workers.invoke(b"0", "t", None))
        await asyncio.to_thread(poll, lambda: len(batches) == 1, timeout=30, interval=0.01, what="the first batch")
        rest = [asyncio.ensure_future(workers.invoke(str(index).encode(), "t", None)) for index in range(1, 7)]
        await asyncio.sleep(0)  # let the six reach the queue
        gate.set()
        return await asyncio.gather(first, *rest)

    try:
        answers = asyncio.run(scenario())
    finally:
        workers.stop()
    assert answers == [(str(index).encode() * 2, "t") for index in range(7)]
    assert batches == [[b"0"], [b"1", b"2", b"3", b"4"], [b"5", b"6"]]
    assert workers.status() == {"requests": 7, "batches": 3, "largest_batch": 4, "threads": 1,
                                      "max_batch_size": 4, "max_batch_delay_ms": 0}


def test_with_a_batch_delay_a_worker_waits_for_more_requests_until_the_batch_is_full():
    batches = []

    def run_batch(requests):
        batches.append(len(requests))
        return [(body, content_type) for body, content_type, _ in requests]

    # A delay far longer than the test: the batch is served because it is full, not because the delay ran out.
    workers = InferenceWorkers(threads=1, max_batch_size=3, max_batch_delay_s=600, run_batch=run_batch).start()

    async def scenario():
        first = asyncio.ensure_future(workers.invoke(b"a", "t", None))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(workers.invoke(b"b", "t", None))
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(workers.invoke(b"c", "t", None))
        return await asyncio.gather(first, second, third)

    try:
        assert asyncio.run(scenario()) == [(b"a", "t"), (b"b", "t"), (b"c", "t")]
    finally:
        workers.stop()
    assert batches == [3]


def test_a_failure_of_the_batch_call_itself_reaches_every_request_of_the_batch():
    def run_batch(requests):
        raise RuntimeError("broken batch")

    workers = InferenceWorkers(threads=2, max_batch_size=8, max_batch_delay_s=0, run_batch=run_batch).start()

    async def scenario():
        return await asyncio.gather(*(workers.invoke(b"x", "t", None) for _ in range(5)))

    try:
        answers = asyncio.run(scenario())
    finally:
        workers.stop()
    assert all(isinstance(answer, RuntimeError) for answer in answers)


def test_the_sagemaker_torchserve_variables_keep_one_request_per_predict_fn_call(monkeypatch):
    """sagemaker_pytorch_serving_container/torchserve.py writes SAGEMAKER_TS_* into TorchServe's model config
    (batchSize, maxBatchDelay, minWorkers 1 unless SAGEMAKER_TS_MIN_WORKERS); the handlers still see one request
    per call, so our batching stays off. Workers: SAGEMAKER_TS_MIN_WORKERS once any SAGEMAKER_TS_* is set, else
    SAGEMAKER_MODEL_SERVER_WORKERS (TorchServe's default_workers_per_model)."""
    for name in ("SAGEMAKER_TS_BATCH_SIZE", "SAGEMAKER_TS_MAX_BATCH_DELAY", "SAGEMAKER_TS_MIN_WORKERS",
                 "SAGEMAKER_TS_MAX_WORKERS", "SAGEMAKER_TS_RESPONSE_TIMEOUT", "SAGEMAKER_MODEL_SERVER_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    assert EndpointSettings(model="unused").inference_threads == 2
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    assert EndpointSettings(model="unused").inference_threads == 3
    monkeypatch.setenv("SAGEMAKER_TS_BATCH_SIZE", "16")
    monkeypatch.setenv("SAGEMAKER_TS_MAX_BATCH_DELAY", "25")
    from_environment = EndpointSettings(model="unused")
    assert (from_environment.max_batch_size, from_environment.max_batch_delay_ms) == (1, 0)
    assert from_environment.inference_threads == 1
    monkeypatch.setenv("SAGEMAKER_TS_MIN_WORKERS", "4")
    assert EndpointSettings(model="unused").inference_threads == 4
    explicit = EndpointSettings(model="unused", max_batch_size=8, max_batch_delay_ms=2.5, inference_threads=2)
    assert (explicit.max_batch_size, explicit.max_batch_delay_ms, explicit.inference_threads) == (8, 2.5, 2)
    with pytest.raises(ValueError):
        EndpointSettings(model="unused", max_batch_size=0)


# --- the endpoint -------------------------------------------------------------------------------

def test_concurrent_good_and_bad_requests_through_the_endpoint_each_get_their_own_answer(stub_archive, stub):
    images = read_test_images(8)
    expected = [probabilities(stub.invoke(image, "image/png", None)) for image in images]
    requests = [(index, images[index % 8] if index % 5 else b"broken png") for index in range(120)]

    def worker(share):
        runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing",
                               config=Config(retries={"total_max_attempts": 1}))
        answers = []
        for index, body in share:
            try:
                reply = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=body)
                answers.append((index, json.loads(reply["Body"].read())))
            except runtime.exceptions.ModelError as error:
                answers.append((index, error.response["OriginalStatusCode"]))
        return answers

    with EndpointServer(stub_archive, endpoint_name=ENDPOINT, inference_threads=1, max_batch_size=8) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = dict(pair for share in pool.map(worker, [requests[index::8] for index in range(8)])
                           for pair in share)
        status = server.inference_status()
    assert status["requests"] == len(requests) and status["max_batch_size"] == 8
    for index, answer in answers.items():
        if index % 5:
            assert answer == pytest.approx(expected[index % 8], abs=1e-5), index
        else:
            assert answer == 500, index


def test_by_default_concurrent_requests_get_one_predict_fn_call_each(stub_archive, stub):
    images = read_test_images(4)
    expected = [probabilities(stub.invoke(image, "image/png", None)) for image in images]

    def ask(index):
        runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        reply = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=images[index % 4])
        return json.loads(reply["Body"].read())

    with EndpointServer(stub_archive, endpoint_name=ENDPOINT, inference_threads=1) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(48)))
        status = server.inference_status()
    assert (status["requests"], status["batches"], status["largest_batch"]) == (48, 48, 1)
    for index, answer in enumerate(answers):
        assert answer == pytest.approx(expected[index % 4], abs=1e-6)


@pytest.mark.parametrize("options, env, expected", [
    ({"max_batch_size": 3, "max_batch_delay_ms": 1.5}, {}, (3, 1.5, 2)),            # scones serve's opt-in flags
    ({}, {"SAGEMAKER_TS_BATCH_SIZE": "5", "SAGEMAKER_TS_MAX_BATCH_DELAY": "2"}, (1, 0, 1)),  # the container's: no batching
])
def test_a_subprocess_endpoint_batches_only_when_asked_by_its_flags(stub_archive, tmp_path, options, env, expected):
    server = EndpointServer(stub_archive, endpoint_name=ENDPOINT, mode="subprocess", env=env,
                            log_path=tmp_path / "endpoint.log", **options)
    with server:
        status = server.inference_status()
    assert (status["max_batch_size"], status["max_batch_delay_ms"], status["threads"]) == expected
    log = (tmp_path / "endpoint.log").read_text()
    if expected[0] > 1:
        assert f"batches of up to {expected[0]} waiting at most {expected[1]:g} ms (scones' opt-in)" in log
    else:
        assert "1 inference threads, one request per predict_fn call, as the container" in log
