"""Latency patch for LocalStack 4.14.0 Step Functions: reuse one boto client per (service, region, role).

Why: for every Task state, 4.14.0's `asl/utils/boto_client.py::boto_client_for` calls STS
AssumeRole and builds a fresh botocore client (`connect_to.with_assumed_role`), ~45-60 ms on
this class of machine, three times per Scones execution; the Lambda handlers themselves take
a few ms. Caching the client per (service, region, role ARN) for a while removes that hop.
The credentials are LocalStack's own (it does not enforce IAM), and a botocore client is
safe to share between threads.

Pinned: applied only to localstack-core 4.14.0, where the function and its importers were
read; any other version is left alone (with a warning). SCONES_SFN_CLIENT_CACHE=0 turns it
off, e.g. to measure the difference. GET /_scones/sfn-client-cache on LocalStack's port
reports whether it is active and its hit/miss counts (the tests read it); GET /_scones/executor
adds the executor's own counts, the time its invokes take, the status of the patches applied in the same
background thread (sfn_definition_cache.py, sfn_jsonpath_cache.py, service_events_in_process.py) and
lambda_threads.py's.
"""
from __future__ import annotations

import functools
import importlib
import sys
import threading
import time

from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.names import THREADS_PATH
from scones.settings import SFN_CLIENT_CACHE as CLIENT_CACHE_ENV

TTL_S = 15 * 60  # well inside the assumed role's default hour


_clients: dict[tuple[str, str, str], tuple[float, object]] = {}
_started = threading.Event()        # apply_in_background() has started the patches' thread
_route_registered = threading.Event()


def _install() -> None:
    from localstack.services.stepfunctions.asl.utils import boto_client

    original = boto_client.boto_client_for

    @functools.wraps(original)
    def cached_boto_client_for(service: str, region: str, state_credentials):
        key = (service, region, state_credentials.role_arn)
        now = time.monotonic()
        entry = _clients.get(key)
        if entry is not None and now - entry[0] < TTL_S:
            PATCH.state["hits"] += 1
            return entry[1]
        client = original(service=service, region=region, state_credentials=state_credentials)
        _clients[key] = (now, client)
        PATCH.state["misses"] += 1
        return client

    boto_client.boto_client_for = cached_boto_client_for
    # The task modules did `from ...boto_client import boto_client_for`: rebind their copies too.
    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is original:
            vars(module)["boto_client_for"] = cached_boto_client_for
    _import_task_modules(original, cached_boto_client_for)


PATCH = pinned.Patch("Step Functions client cache (one client per service, region and role)", CLIENT_CACHE_ENV,
                     _install, hits=0, misses=0)


def apply() -> bool:
    """Install the cache once; True when it is active. Its status route is there either way."""
    _register_status_route()
    return PATCH.apply()


def _import_task_modules(original, replacement) -> None:
    """Import the Lambda task module now, so it binds the cached function even if loaded later."""
    from localstack.services.stepfunctions.asl.component.state.state_execution.state_task import lambda_eval_utils

    if getattr(lambda_eval_utils, "boto_client_for", None) is original:
        lambda_eval_utils.boto_client_for = replacement


def apply_in_background() -> None:
    """apply(), the caches' and service_events_in_process's off the caller's thread: they import Step Functions'
    interpreter (seconds on a busy machine), which must not delay the first Lambda call. Until
    they land, executions use the originals."""
    if PATCH.state["active"] or _started.is_set():
        return
    _started.set()
    _register_status_route()

    def apply_all() -> None:
        from scones.harness.lambda_executor import service_events_in_process, sfn_definition_cache, sfn_jsonpath_cache

        apply()
        sfn_definition_cache.apply()
        sfn_jsonpath_cache.apply()
        service_events_in_process.apply()

    threading.Thread(target=apply_all, name="scones-sfn-patches", daemon=True).start()


def status() -> dict:
    return {**PATCH.status(), "clients": len(_clients), "version": pinned.localstack_version()}


# The patch modules (of this package) whose status() GET /_scones/executor shows, each under its module's name.
STATUS_PATCHES = ("sfn_definition_cache", "sfn_jsonpath_cache", "lambda_threads", "lambda_metrics_batch",
                  "lambda_logs_batch", "gateway_keep_alive", "gateway_buffered_responses", "gateway_route_cache",
                  "service_events_in_process", "lambda_environment_queue", "internal_client_requests")


def _register_status_route() -> None:
    if _route_registered.is_set():
        return
    _route_registered.set()
    from localstack.http import Response, route
    from localstack.services.edge import ROUTER

    class _StatusRoute:
        @route("/_scones/sfn-client-cache", methods=["GET"])
        def get(self, request):
            return Response.for_json(status())

        @route("/_scones/executor", methods=["GET"])
        def executor(self, request):
            from scones.harness.lambda_executor import executor

            patches = {name: importlib.import_module(f"{__package__}.{name}").status() for name in STATUS_PATCHES}
            return Response.for_json({**executor.stats(), "sfn_client_cache": status(), **patches})

        @route(THREADS_PATH, methods=["GET"])
        def threads(self, request):
            # The OS knows LocalStack's threads by id only: which is which (benchmarks/execution_cpu.py --threads).
            return Response.for_json({str(thread.native_id): thread.name for thread in threading.enumerate()})

    ROUTER.add(_StatusRoute())
