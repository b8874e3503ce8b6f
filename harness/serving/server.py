"""A local SageMaker endpoint: the serving container contract and the runtime API in one server.

- Container contract (what SageMaker calls inside the instance), as the SageMaker PyTorch
  inference toolkit answers it under TorchServe: GET /ping answers 200 {"status": "Healthy"} once
  the model is loaded (503 before: ours); POST /invocations runs the handlers as the toolkit's
  Transformer does (harness/serving/handlers.py) and answers a failure with its status
  (500 unless the handler raised a toolkit error with its own), the body "<message>\n<traceback>"
  and no Content-Type.
- Runtime API (what boto3's sagemaker-runtime client sends, e.g. with
  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME pointing here): POST /endpoints/{EndpointName}/invocations,
  with AWS's headers and AWS's error shapes (see botocore/data/sagemaker-runtime service-2.json):
  unknown endpoint or variant -> 400 ValidationError; handler failure -> 424 ModelError with
  OriginalStatusCode/OriginalMessage (the container's status and body)/LogStreamArn; body over
  6 MiB -> 413 as the AWS front end answers it.
- GET /capture/status: the data-capture counters; GET /inference/status: requests, batches and
  the largest batch the inference workers served (ours, not AWS's).

Starlette on uvicorn; the handlers run either on the event loop (inference_threads=0) or in
inference worker threads (torch releases the GIL inside its kernels) fed by one queue, one request
per predict_fn call as in the container. The worker count has the container's meaning
(container_workers): SAGEMAKER_MODEL_SERVER_WORKERS is TorchServe's default_workers_per_model, and
once any SAGEMAKER_TS_* variable is set the toolkit pins the model to SAGEMAKER_TS_MIN_WORKERS
(default 1). SAGEMAKER_TS_BATCH_SIZE changes nothing a handler sees: TorchServe would hand the
handler service several requests at once, and the toolkit still calls predict_fn once per request.
(Its loop over such a batch is faulty: the first request's Content-Type serves them all, only the first
answer gets a Content-Type, and one failure fails the whole batch with 503, as measured with
harness/toolkit_endpoint.py. scones serve answers each request as if alone, as at batch size 1.)

Opt-in and ours, not the container's (max_batch_size > 1, `scones serve --max-batch-size`): each
worker takes every request waiting, up to max_batch_size, waits at most max_batch_delay_ms for
more (0: only what is already queued), and serves them with one predict_fn call
(LoadedModel.invoke_batch); each request still gets its own answer or error, and data capture
records each request's own input and output. See benchmarks/endpoint.py.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import queue
import random
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scones import contract
from scones.errors import SconesError
from scones.harness.serving.capture import CaptureConfig, CapturedInvocation, CaptureWriter
from scones.harness.serving.handlers import LoadedModel, error_body, load_model, status_of, unpack_model

log = logging.getLogger("scones.endpoint")

MAX_BODY_BYTES = 6 * 1024 * 1024        # InvokeEndpoint's BodyBlob max (6291456)
INVOKE_TIMEOUT_S = 60.0                  # how long InvokeEndpoint waits for the container's answer
DEFAULT_VARIANT = contract.VARIANT_NAME
LOCAL_ACCOUNT = "000000000000"           # the account id LocalStack and moto report
HEALTHY_PING = b'{\n  "status": "Healthy"\n}\n'   # TorchServe's /ping body, byte for byte
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"   # TorchServe's default_workers_per_model
TS_MIN_WORKERS_ENV = "SAGEMAKER_TS_MIN_WORKERS"
TS_ENV = ("SAGEMAKER_TS_BATCH_SIZE", "SAGEMAKER_TS_MAX_BATCH_DELAY", TS_MIN_WORKERS_ENV, "SAGEMAKER_TS_MAX_WORKERS",
          "SAGEMAKER_TS_RESPONSE_TIMEOUT")       # sagemaker_pytorch_serving_container.ts_environment
DEFAULT_INFERENCE_THREADS = 2            # the measured best on 2 cores (benchmarks/endpoint.py); TorchServe's own
                                         # default is one worker per CPU, 2 here as well


def container_workers(environ=os.environ) -> tuple[int, str] | None:
    """How many workers the container would run, and which variable says so; None when nothing does.

    sagemaker_pytorch_serving_container.torchserve: with any SAGEMAKER_TS_* variable set the model gets
    minWorkers SAGEMAKER_TS_MIN_WORKERS (default 1), which TorchServe starts; else
    SAGEMAKER_MODEL_SERVER_WORKERS becomes default_workers_per_model.
    """
    if any(name in environ for name in TS_ENV):
        return int(environ.get(TS_MIN_WORKERS_ENV, 1)), TS_MIN_WORKERS_ENV
    if environ.get(WORKERS_ENV):
        return int(environ[WORKERS_ENV]), WORKERS_ENV
    return None


@dataclass
class EndpointSettings:
    model: str                                # model.tar.gz, a directory holding it, or an unpacked model dir
    endpoint_name: str = contract.ENDPOINT_NAME
    variant_name: str = DEFAULT_VARIANT
    capture: CaptureConfig | None = None
    inference_threads: int | None = None      # 0: run handlers on the event loop; None: container_workers() or 2
    torch_threads: int | None = 1             # torch intra-op threads; None leaves torch's default
    max_batch_size: int = 1                   # ours, opt-in: requests per predict_fn call (1: the container's way)
    max_batch_delay_ms: float = 0.0           # ours: longest a worker waits to fill a batch
    region: str | None = None
    model_dir: str | None = None              # where to unpack; a temporary directory when None
    capture_writer_options: dict = field(default_factory=dict)  # CaptureWriter tuning (batching, backoff)
    invoke_timeout_s: float = INVOKE_TIMEOUT_S  # the runtime API's limit on the container's answer
    release_memory: bool = True               # hand big freed blocks back to the OS at once (release_freed_memory)

    def __post_init__(self) -> None:
        if self.inference_threads is None:
            workers = container_workers()
            self.inference_threads = workers[0] if workers else DEFAULT_INFERENCE_THREADS
        if self.inference_threads < 0:
            raise ValueError(f"inference_threads must be >= 0, not {self.inference_threads}")
        if self.max_batch_size < 1 or self.max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_batch_delay_ms >= 0, not {self.max_batch_size} "
                             f"and {self.max_batch_delay_ms}")


# glibc's mallopt parameter, and the size from which every allocation gets its own mapping when it is set.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def release_freed_memory() -> bool:
    """Make glibc return each freed block of MMAP_THRESHOLD_BYTES or more to the OS at once; False off glibc.

    By default glibc raises its mmap threshold to the size of each big block freed (up to 32 MiB), after
    which Pillow's 16 MiB image blocks come from the heap and stay in the process once freed: a burst of
    big images left the endpoint hundreds of MiB larger for good (issue 26). A fixed threshold keeps them
    mapped, so decoding a big image costs memory only while it runs (benchmarks/image_decoding.py).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):   # no C library by that name, or one without mallopt (musl)
        return False


_STOP = object()


@dataclass
class _Pending:
    body: bytes
    content_type: str | None
    accept: str | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class InferenceWorkers:
    """Worker threads serving queued requests in dynamic batches (see the module docstring)."""

    def __init__(self, threads: int, max_batch_size: int, max_batch_delay_s: float,
                 run_batch: Callable[[list[tuple[bytes, str | None, str | None]]], list]):
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self._run_batch = run_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._counts_lock = threading.Lock()
        self._counts = {"requests": 0, "batches": 0, "largest_batch": 0}
        self._threads = [threading.Thread(target=self._work, name=f"inference-{index}", daemon=True)
                         for index in range(threads)]

    def start(self) -> "InferenceWorkers":
        for thread in self._threads:
            thread.start()
        return self

    async def invoke(self, body: bytes, content_type: str | None, accept: str | None):
        """(body, content type), or the exception the handlers raised for this request."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(body, content_type, accept, loop, future))
        return await future

    def status(self) -> dict:
        with self._counts_lock:
            counts = dict(self._counts)
        return {**counts, "threads": len(self._threads), "max_batch_size": self.max_batch_size,
                "max_batch_delay_ms": self.max_batch_delay_s * 1000}

    def stop(self) -> None:
        """Serve everything queued, then end the workers."""
        started = [thread for thread in self._threads if thread.ident is not None]
        for _ in started:
            self._queue.put(_STOP)
        for thread in started:
            thread.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = self._take_batch(first)
            with self._counts_lock:
                self._counts["requests"] += len(batch)
                self._counts["batches"] += 1
                self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
            try:
                results = self._run_batch([(item.body, item.content_type, item.accept) for item in batch])
            except BaseException as error:  # the batch call itself failed: every request in it gets the error
                results = [error] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for item, result in zip(batch, results):
                by_loop.setdefault(item.loop, []).append((item.future, result))
            for loop, answers in by_loop.items():  # one wake-up of the event loop per batch, not per request
                try:
                    loop.call_soon_threadsafe(_deliver, answers)
                except RuntimeError:  # that loop is closed: nobody waits for these answers any more
                    pass

    def _take_batch(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        deadline = None
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self.max_batch_delay_s <= 0:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self.max_batch_delay_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                self._queue.put(_STOP)  # served after this batch; this worker or another ends on it
                break
            batch.append(item)
        return batch


def _deliver(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in answers:
        if not future.done():  # done: the client went away and the request was cancelled
            future.set_result(result)


class EndpointApp:
    """State of one endpoint: the loaded model, the capture writer, readiness."""

    def __init__(self, settings: EndpointSettings):
        self.settings = settings
        self.region = settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.ready = threading.Event()
        self.capture: CaptureWriter | None = None
        if settings.capture is not None and settings.capture.enabled:
            self.capture = CaptureWriter(settings.capture, settings.endpoint_name, settings.variant_name,
                                         **settings.capture_writer_options)
        threads = settings.inference_threads
        assert threads is not None  # EndpointSettings.__post_init__ resolved None to a count
        self._workers = (InferenceWorkers(threads, settings.max_batch_size, settings.max_batch_delay_ms / 1000,
                                          self._run_batch)
                         if threads > 0 else None)
        self._temp_dir: str | None = None
        self.on_load_failure: Callable[[], None] | None = None   # serve() stops the server with it
        self.starlette = Starlette(
            routes=[
                Route("/ping", self.ping, methods=["GET"]),
                Route("/invocations", self.container_invocations, methods=["POST"]),
                Route("/endpoints/{endpoint_name}/invocations", self.runtime_invocations, methods=["POST"]),
                Route("/capture/status", self.capture_status, methods=["GET"]),
                Route("/inference/status", self.inference_status, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope, receive, send):
        await self.starlette(scope, receive, send)

    # --- lifecycle ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app):
        self.start()
        try:
            yield
        finally:
            self.stop()

    def start(self) -> None:
        """Start loading the model in the background (ping says 503 until done) and the capture writer."""
        if self.settings.release_memory and not release_freed_memory():
            log.info("this C library has no mallopt: freed image memory may stay in the endpoint process")
        if self.capture is not None:
            self.capture.start()
        if self._workers is not None:
            self._workers.start()
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def stop(self, capture_timeout_s: float = 30.0) -> None:
        """Finish inferences in flight, then write every captured record still buffered."""
        if self._workers is not None:
            self._workers.stop()
            log.info("inference workers stopped: %s", self._workers.status())
        if self.capture is not None:
            self.capture.close(capture_timeout_s)
            log.info("capture writer stopped: %s", self.capture.status())
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _load(self) -> None:
        try:
            model_dir = self._model_dir()   # before torch loads: a bad archive fails in a moment
            if self.settings.torch_threads:
                import torch

                torch.set_num_threads(self.settings.torch_threads)
            self.model = load_model(model_dir)
            if self.capture is not None:
                self.capture.wait_started()
            # What is loaded now (model, torch, boto3 for capture) lives as long as the server: out of the
            # garbage collector's oldest generation, so its full collections do not walk it during requests.
            gc.freeze()
            log.info("model loaded from %s; endpoint %s ready", self.settings.model, self.settings.endpoint_name)
            self.ready.set()
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("could not load model %s: %s", self.settings.model, self.load_error)
            log.debug("the model load's traceback", exc_info=True)
            if self.on_load_failure is not None:
                self.on_load_failure()

    def _model_dir(self) -> Path:
        source = Path(self.settings.model)
        if source.is_dir() and (source / "code").is_dir():
            return source
        if source.is_dir():
            source = source / "model.tar.gz"
        target = self.settings.model_dir
        if target is None:
            target = self._temp_dir = tempfile.mkdtemp(prefix="scones-model-")
        return unpack_model(source, target)

    # --- routes ------------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        if self.ready.is_set():
            return Response(HEALTHY_PING, status_code=200, media_type="application/json")
        body = {"status": "loading"} if self.load_error is None else {"status": "failed", "error": self.load_error}
        return JSONResponse(body, status_code=503)

    async def inference_status(self, request: Request) -> Response:
        if self._workers is None:
            return JSONResponse({"threads": 0})
        return JSONResponse(self._workers.status())

    async def capture_status(self, request: Request) -> Response:
        if self.capture is None:
            return JSONResponse({"enabled": False})
        return JSONResponse(self.capture.status())

    async def container_invocations(self, request: Request) -> Response:
        if not self.ready.is_set():
            return Response(b"model not loaded yet", status_code=503)
        body = await _read_body(request)
        if body is None:
            return Response(b"request body too large", status_code=413)
        outcome = await self._invoke(request, body)
        if isinstance(outcome, BaseException):
            return Response(error_body(outcome), status_code=status_of(outcome))  # no Content-Type, as TorchServe
        response_body, response_type = outcome
        return Response(response_body, headers=_content_type(response_type))

    async def runtime_invocations(self, request: Request) -> Response:
        name = request.path_params["endpoint_name"]
        if name != self.settings.endpoint_name:
            return self._aws_error(400, "ValidationError",
                                   f"Endpoint {name} of account {LOCAL_ACCOUNT} not found.")
        variant = request.headers.get("x-amzn-sagemaker-target-variant")
        if variant is not None and variant != self.settings.variant_name:
            return self._aws_error(400, "ValidationError",
                                   f"The variant {variant} is not a production variant of endpoint {name} "
                                   f"(it has: {self.settings.variant_name}).")
        if not self.ready.is_set():
            return self._aws_error(503, "ServiceUnavailable", f"Endpoint {name} is not ready yet: the model is loading.")
        body = await _read_body(request)
        if body is None:
            # The AWS front end answers before SageMaker sees it: no error type, so botocore's code is "413".
            return JSONResponse({"message": f"HTTP content length exceeded {MAX_BODY_BYTES} bytes."},
                                status_code=413, headers=self._request_id_header())
        try:
            outcome = await asyncio.wait_for(self._invoke(request, body), self.settings.invoke_timeout_s)
        except asyncio.TimeoutError:  # the handler keeps running in its thread; its answer is dropped
            return self._timed_out()
        if isinstance(outcome, BaseException):
            return self._model_error(outcome)
        response_body, response_type = outcome
        headers = {"x-Amzn-Invoked-Production-Variant": self.settings.variant_name, **self._request_id_header(),
                   **_content_type(response_type)}
        return Response(response_body, headers=headers)

    # --- invocation --------------------------------------------------------------------------

    async def _invoke(self, request: Request, body: bytes):
        """Run the handlers; returns (body, content type) or the exception the handlers raised."""
        content_type = request.headers.get("content-type")  # None when absent: the toolkit passes None on
        accept = request.headers.get("accept")
        inference_time = datetime.now(timezone.utc)
        if self._workers is None:
            result = self._loaded_model().invoke_batch([(body, content_type, accept)])[0]
        else:
            result = await self._workers.invoke(body, content_type, accept)
        if isinstance(result, BaseException):
            log.warning("handler failed for a %s request: %s\n%s", content_type, result,
                        "".join(traceback.format_exception(result)))
            return result
        if self.capture is not None and self.capture.should_capture():
            self.capture.submit(CapturedInvocation(
                inference_time=inference_time,
                event_id=_random_uuid(),
                input_body=body,
                input_content_type=content_type,
                output_body=result[0],
                output_content_type=result[1],
                inference_id=request.headers.get("x-amzn-sagemaker-inference-id"),
            ))
        return result

    def _run_batch(self, requests: list[tuple[bytes, str | None, str | None]]) -> list:
        return self._loaded_model().invoke_batch(requests)

    def _loaded_model(self) -> LoadedModel:
        """The model; invocations reach the handlers only once ready is set, after it loaded."""
        if self.model is None:
            raise RuntimeError(f"the model of endpoint {self.settings.endpoint_name} is not loaded")
        return self.model

    def _model_error(self, error: BaseException) -> Response:
        status = status_of(error)
        original = error_body(error).decode("utf-8", errors="replace")
        side = "client" if status < 500 else "server"
        name = self.settings.endpoint_name
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        message = (f'Received {side} error ({status}) from primary with message "{original}". See '
                   f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
                   f"#logEventViewer:group={log_group} in account {LOCAL_ACCOUNT} for more information.")
        return self._aws_error(424, "ModelError", message, {
            "ErrorCode": f"{side.upper()}_ERROR_FROM_MODEL",
            "OriginalStatusCode": status,
            "OriginalMessage": original,
            "LogStreamArn": f"arn:aws:logs:{self.region}:{LOCAL_ACCOUNT}:log-group:{log_group}",
        })

    def _timed_out(self) -> Response:
        # What SageMaker answers when the container takes longer than InvokeEndpoint waits: a ModelError
        # "from primary" with status 0 and no OriginalStatusCode (the container never answered).
        name = self.settings.endpoint_name
        return self._aws_error(424, "ModelError", (
            f'Received server error (0) from primary with message "Your invocation timed out while waiting for a '
            f'response from container primary. Review the latency metrics for each container in Amazon CloudWatch, '
            f'resolve the issue, and try again.". See https://{self.region}.console.aws.amazon.com/cloudwatch/home?'
            f'region={self.region}#logEventViewer:group=/aws/sagemaker/Endpoints/{name} in account {LOCAL_ACCOUNT} '
            f'for more information.'))

    def _aws_error(self, status: int, code: str, message: str, extra: dict | None = None) -> Response:
        headers = {"x-amzn-ErrorType": code, **self._request_id_header()}
        return JSONResponse({"Message": message, **(extra or {})}, status_code=status, headers=headers)

    @staticmethod
    def _request_id_header() -> dict:
        return {"x-amzn-RequestId": _random_uuid()}


def _content_type(value: str | None) -> dict:
    """The handler's content type as it is: Starlette's media_type would add "; charset=utf-8" to text/*."""
    return {"content-type": value} if value else {}


def _random_uuid() -> str:
    """A version-4 UUID like uuid.uuid4(), from the random module: ids need not be secret, and the os.urandom
    system call behind uuid4 was a visible share of the request path's CPU in a profile."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is over MAX_BODY_BYTES (checked before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    if declared is not None:
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class ModelSourceError(SconesError, ValueError):
    """The model to serve is missing, or a folder holds none; or it could not be loaded."""


def check_model_source(model: str | os.PathLike) -> None:
    """Refuse at once what EndpointApp could never load: a missing path, or a folder holding no model.

    What loads (EndpointApp._model_dir): a model.tar.gz, a folder holding one (as `scones train --out`
    writes), or an unpacked model folder with code/ beside the weights (as /opt/ml/model in the container).
    """
    source = Path(model)
    if not source.exists():
        raise ModelSourceError(f"no model at {source}: the path does not exist")
    if source.is_dir() and not (source / "code").is_dir() and not (source / "model.tar.gz").is_file():
        raise ModelSourceError(
            f"the folder {source} holds no model: expected model.tar.gz in it (as `scones train --out` writes) "
            f"or an unpacked model (code/inference.py beside the weights, as in /opt/ml/model)")


def create_app(settings: EndpointSettings) -> EndpointApp:
    return EndpointApp(settings)


def serve(settings: EndpointSettings, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info",
          http: str = "auto", loop: str = "auto") -> None:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; shutdown flushes data capture.

    A model source that holds no model fails before anything starts, and a model that fails to load
    stops the server: both raise ModelSourceError naming the model (a server that can never answer
    must not keep running).
    http/loop "auto" pick httptools and uvloop when installed (uvicorn[standard]), else h11 and asyncio.
    """
    import uvicorn

    check_model_source(settings.model)
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, http=http, loop=loop,
                            proxy_headers=False,  # nothing proxies a local endpoint: one ASGI layer less per request
                            lifespan="on", timeout_graceful_shutdown=60)
    server = uvicorn.Server(config)
    app.on_load_failure = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.load_error is not None:
        raise ModelSourceError(f"endpoint {settings.endpoint_name} could not load the model {settings.model}: "
                               f"{app.load_error}")
