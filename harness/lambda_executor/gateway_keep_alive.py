"""Throughput patch for LocalStack 4.14.0's gateway: HTTP/1.1 connections stay open, as AWS's endpoints keep them.

Why: 4.14.0 answers every request served by hypercorn with `Connection: close`
(`aws/handlers/legacy.py::set_close_connection_header`, a finalizer of the gateway's handler chain,
a workaround for localstack#6557), unless the client sent `Connection: keep-alive` (boto3 does not).
So every client call (start_execution, each describe_execution poll, a Lambda's S3 and SageMaker
runtime calls) opens a new TCP connection, which LocalStack accepts on its event loop, peeks at (TLS
or not) on a new thread, and sets up hypercorn's protocol for: py-spy put about a third of
LocalStack's GIL time in accepting and setting up connections during concurrent executions.
Here the finalizer is taken out of the running gateway's chain, so responses say nothing about the
connection and HTTP/1.1's default, a persistent connection (RFC 9112 section 9.3), holds, as with
AWS. A client that asks for `Connection: close` still gets it (hypercorn/h11 honour the request).

Pinned: applied only to localstack-core 4.14.0, where the finalizer was read;
SCONES_GATEWAY_KEEP_ALIVE=0 turns it off (e.g. to measure the difference). Status in GET /_scones/executor.
"""
from __future__ import annotations

from scones.harness.lambda_executor import pinned
from scones.settings import GATEWAY_KEEP_ALIVE as KEEP_ALIVE_ENV


def _install() -> None:
    from localstack.aws import handlers
    from localstack.runtime import get_current_runtime

    gateway = get_current_runtime().components.gateway
    gateway.finalizers[:] = [finalizer for finalizer in gateway.finalizers
                             if finalizer is not handlers.set_close_connection_header]


PATCH = pinned.Patch("Gateway keep-alive (no Connection: close on every response)", KEEP_ALIVE_ENV, _install)
apply = PATCH.apply


def status() -> dict:
    return PATCH.status()
