"""Run in each local Lambda environment before AWS's runtime interface client: botocore's retry backoff
inside the function follows the local stack's time scale, as the Step Functions waits do.

Why: a function's botocore client retries throttling and 5xx errors itself and sleeps between the
attempts (standard mode: a random part of 1, 2, 4, 8 s for a throttle, botocore/retries/standard.py
ExponentialBackoff), so "the endpoint throttles five times" would wait tens of seconds of real time per
test. Every retry mode sleeps in one place, `botocore.endpoint.Endpoint._needs_retry`
(`time.sleep(handler_response)`); that module's `time` becomes one whose sleep asks the stack for the
current scale (GET /_scones/time-scale, only when a retry is about to wait) and waits that share, and
says so on the function's log. The number of attempts, which errors are retried, the retry quota and
the computed delays stay botocore's own; only the wall clock of the wait is scaled.

The executor (harness/lambda_executor/executor.py) runs this file's source as `python -c` with the
handler as argument, and passes the time scale's URL in TIME_SCALE_URL_ENV, which this removes from
the environment before the function's code runs, so the function sees the environment AWS gives it.
Standard library only: it runs on every runtime's Python before anything is imported.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import runpy
import sys
import time
import urllib.request

TIME_SCALE_URL_ENV = "_SCONES_TIME_SCALE_URL"
PATCHED_MODULE = "botocore.endpoint"


def current_scale(url: str) -> float:
    """The stack's time scale now; 1 (real time) when it cannot be read."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as reply:
            scale = float(json.load(reply)["scale"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return scale if 0 < scale <= 1000 else 1.0


class ScaledTime:
    """botocore.endpoint's `time`: sleep waits the scaled share of the backoff; the rest is the time module."""

    def __init__(self, url: str) -> None:
        self._url = url

    def sleep(self, seconds: float) -> None:
        scale = current_scale(self._url)
        if scale != 1.0:
            print(f"[scones] botocore retry backoff {seconds:.3f} s, waited {seconds * scale:.4f} s "
                  f"(time scale {scale:g})", file=sys.stderr, flush=True)
        time.sleep(seconds * scale)

    def __getattr__(self, name: str):
        return getattr(time, name)


class PatchOnImport:
    """A meta path finder that gives botocore.endpoint a ScaledTime once it is imported (botocore is
    imported by the function, if at all, so nothing is imported here ahead of it)."""

    def __init__(self, url: str) -> None:
        self._url = url

    def find_spec(self, name, path, target=None):
        if name != PATCHED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module
        url = self._url

        def exec_module(module) -> None:
            loader_exec(module)
            module.time = ScaledTime(url)

        spec.loader.exec_module = exec_module
        return spec


def install(environ=os.environ) -> bool:
    url = environ.pop(TIME_SCALE_URL_ENV, None)
    if not url:
        return False
    sys.meta_path.insert(0, PatchOnImport(url))
    return True


def main() -> None:
    install()
    # As `python -m awslambdaric <handler>`: the working directory first on the path, argv[1] the handler.
    sys.path[0] = os.getcwd()
    runpy.run_module("awslambdaric", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
