"""LocalStack 4.14.0's process ends without the interpreter's last garbage collections.

Why: after a SIGTERM, 4.14.0 runs its shutdown hooks (services stopped, Lambda logs and metrics sent,
environments stopped), stops its server and returns from `runtime/main.py::main`; what is left is
Python's own finalization, whose full collections over LocalStack's heap (service specs, botocore
models) took 1-4 s of a loaded 2-core machine (py-spy: `gc_collect_main`, the only thread left),
while `LocalStack.stop()` and every test's LocalStack waited for the process to end. Here an atexit
handler freezes every object into the collector's permanent generation first: the exit frees the
same objects by reference count as before and skips the collections (0.1-0.3 s). It runs after
every thread has been joined and before logging's own atexit handler flushes and closes the log.

Pinned: applied only to localstack-core 4.14.0, whose shutdown sequence was read;
SCONES_LOCALSTACK_QUICK_EXIT=0 turns it off (e.g. to measure the difference).
"""
from __future__ import annotations

import atexit
import gc

from localstack.runtime import hooks

from scones.harness.lambda_executor import pinned
from scones.settings import LOCALSTACK_QUICK_EXIT as QUICK_EXIT_ENV


def _install() -> None:
    atexit.register(gc.freeze)


PATCH = pinned.Patch("Quick exit (no garbage collection while the process ends)", QUICK_EXIT_ENV, _install)


@hooks.on_infra_start()
def install_quick_exit() -> None:
    PATCH.apply()
