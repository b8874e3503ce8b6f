"""Throughput patch for LocalStack 4.14.0's HTTP server: a short request and its short response cross threads once.

Why: under hypercorn, LocalStack's gateway is a WSGI app that rolo's ASGIAdapter (rolo/asgi.py,
`handle_http`) runs on a worker thread, and every step of a request hops between that thread and
the event loop: the worker reads each part of the request body through run_coroutine_threadsafe,
start_response sends the status line from the worker and waits for the loop, then the loop pulls
the body from the app's iterator with one run_in_executor per chunk and one more to close it, and
sends the body and, separately, its end. py-spy put about half of LocalStack's GIL time during
concurrent executions on the event loop (hypercorn and these hand-offs), for requests and answers of
a few hundred bytes (describe_execution, S3, sagemaker-runtime, the sandboxes' calls).

Here a request body framed by a Content-Length of at most BUFFER_LIMIT bytes (or none at all) is
read on the loop before the app runs, and the app reads it from memory. The app runs on the worker
as before, and when its response declares a Content-Length of at most BUFFER_LIMIT bytes the worker
also reads and closes the body; the loop then sends the status, headers and whole body: one hop
there, one back. The bytes on the wire are the same (status, headers, body, Content-Length
framing); a response without a Content-Length or a larger one (event streams, big S3 objects) is
streamed as before, its status line sent as soon as the app has returned (when werkzeug calls
start_response). Measured (benchmarks/execution_cpu.py --baseline-off SCONES_GATEWAY_BUFFERED_RESPONSES):
LocalStack's CPU per workflow execution 10-21% lower in same-run comparisons on a loaded 2-core machine.

Pinned: applied only to localstack-core 4.14.0 (rolo as it pins it), where handle_http was read;
SCONES_GATEWAY_BUFFERED_RESPONSES=0 turns it off (e.g. to measure the difference). Status in
GET /_scones/executor.
"""
from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator

from scones.harness.lambda_executor import pinned
from scones.settings import GATEWAY_BUFFERED_RESPONSES as BUFFERED_RESPONSES_ENV

LOG = logging.getLogger(__name__)

BUFFER_LIMIT = 1 << 20   # larger bodies stream, as before, instead of being held in memory whole


def declared_length(headers) -> int | None:
    """The Content-Length a WSGI response declared, None when it declared none."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


def short_request_body(environ) -> bool:
    """Whether the request's body is framed by a Content-Length of at most BUFFER_LIMIT, or absent (RFC 9112
    section 6.3: no Content-Length and no Transfer-Encoding is an empty body)."""
    if "HTTP_TRANSFER_ENCODING" in environ:
        return False
    length = environ.get("CONTENT_LENGTH") or "0"
    return length.isdigit() and int(length) <= BUFFER_LIMIT


async def _receive_body(receive) -> bytes:
    """The whole request body, read on the loop (rolo's wsgi.input reads each part from the worker)."""
    parts = []
    while True:
        event = await receive()
        if event["type"] != "http.request":
            break
        parts.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    return b"".join(parts)


def read_small_body(app, environ, start_response) -> tuple[bytes | None, object]:
    """Run the WSGI app (on the worker); (its whole body, None) when it is short and of known length,
    else (None, its iterable) to be streamed."""
    iterable = app(environ, start_response)
    length = start_response.content_length_declared
    if iterable is None or length is None or length > BUFFER_LIMIT:
        return None, iterable
    try:
        return b"".join(iterable), None
    finally:
        if close := getattr(iterable, "close", None):
            close()


def _install() -> None:
    from rolo import asgi

    class DeferredStartResponse(asgi.WsgiStartResponse):
        """start_response that keeps the status and headers until the loop sends them with the body.

        A write through the callable start_response returns (WSGI allows it, werkzeug does not use it)
        sends them first, from the worker, as rolo does."""

        def __init__(self, send, event_loop) -> None:
            super().__init__(send, event_loop)
            self.pending_start: dict | None = None
            self.content_length_declared: int | None = None

        def start_response_sync(self, status, headers, exec_info=None):
            self.pending_start = {
                "type": "http.response.start",
                "status": int(status[:3]),
                "headers": [(name.encode("latin1"), value.encode("latin1")) for name, value in headers],
            }
            self.content_length_declared = declared_length(headers)
            self.content_length = self.content_length_declared if self.content_length_declared is not None else float("inf")
            return self.write_sync

        async def send_start(self) -> None:
            start = self.pending_start
            if start is not None:
                self.pending_start = None
                await self.send(start)
                self.started = True

        async def write(self, data: bytes) -> None:
            await self.send_start()
            await super().write(data)

        async def close(self) -> None:
            await self.send_start()
            await super().close()

        async def send_whole(self, body: bytes) -> None:
            await self.send_start()
            if getattr(self.send.__self__, "closed", None):
                self.finalized = True
                raise BrokenPipeError("Connection closed")
            self.finalized = True
            await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def handle_http(self, scope, receive, send):
        env = self.to_wsgi_environment(scope, receive)
        if short_request_body(env):
            env["wsgi.input"] = io.BytesIO(await _receive_body(receive))
        response = DeferredStartResponse(send, self.event_loop)
        try:
            body, iterable = await self.event_loop.run_in_executor(
                self.executor, read_small_body, self.wsgi_app, env, response)
        except Exception as error:
            LOG.error("Error while trying to schedule execution: %s with environment %s", error, env,
                      exc_info=LOG.isEnabledFor(logging.DEBUG))
            raise
        if body is None:
            # as soon as the app returned, as rolo sends it: a stream's first part may be long in coming
            await response.send_start()
            await _stream(response, iterable, scope)
            return
        with PATCH.lock:
            PATCH.state["buffered"] += 1
        try:
            await response.send_whole(body)
        except ConnectionError as error:
            LOG.debug("Error while writing responses: %s (client_info: %s)", error, scope.get("client"))

    async def _stream(response, iterable, scope) -> None:
        """rolo's own streaming of an iterable (its handle_http after the app returned)."""
        try:
            if iterable:
                if isinstance(iterable, Iterator):
                    iterable = asgi._AsyncGeneratorWrapper(iterable)
                if isinstance(iterable, (AsyncIterator, AsyncIterable)):
                    async for packet in iterable:
                        await response.write(packet)
                else:
                    for packet in iterable:
                        await response.write(packet)
        except ConnectionError as error:
            LOG.debug("Error while writing responses: %s (client_info: %s)", error, scope.get("client"))
        finally:
            if iterable and hasattr(iterable, "aclose"):
                await iterable.aclose()
            await response.close()

    asgi.ASGIAdapter.handle_http = handle_http


PATCH = pinned.Patch("Gateway buffered responses (a short response crosses threads once)", BUFFERED_RESPONSES_ENV,
                     _install, buffered=0)
apply = PATCH.apply


def status() -> dict:
    return PATCH.status()
