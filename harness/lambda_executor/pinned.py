"""What our LocalStack patches share: the version their call sites were read in, their switch, and
the apply-once bookkeeping (Patch).

Each patch module of this package (its PATCH is a Patch) replaces LocalStack internals that can change in any
release, so it applies only to LOCALSTACK_VERSION, and its environment variable (one of settings.SWITCHES)
set to "0" turns it off (e.g. to measure the difference).
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable

from scones import settings
from scones.harness.lambda_executor.names import LOCALSTACK_VERSION

LOG = logging.getLogger(__name__)


@functools.cache
def localstack_version() -> str:
    from importlib.metadata import version

    return version("localstack-core")


def refusal(switch_env: str, patch: str) -> str | None:
    """Why `patch` must stay off (its switch is "0", or this is not the pinned LocalStack); None to apply it."""
    if settings.switched_off(switch_env):
        return f"disabled by {switch_env}=0"
    found = localstack_version()
    if found != LOCALSTACK_VERSION:
        reason = f"localstack-core {found} is not the pinned {LOCALSTACK_VERSION}"
        LOG.warning("%s not applied: %s", patch, reason)
        return reason
    return None


class Patch:
    """One pinned patch: installed at most once, under its lock, unless refusal() says why not.

    `state` is what its status route reports: active, the reason, and the patch's own counters
    (the patch's code updates them under `lock`).
    """

    def __init__(self, name: str, switch_env: str, install: Callable[[], None], **counters: int) -> None:
        self.name = name
        self.switch_env = switch_env
        self._install = install
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {"active": False, "reason": "not applied yet", **counters}

    def apply(self) -> bool:
        """Install the patch once; True when it is active."""
        with self.lock:
            if self.state["active"]:
                return True
            reason = refusal(self.switch_env, self.name)
            if reason:
                self.state["reason"] = reason
                return False
            self._install()
            self.state.update(active=True, reason="applied")
            LOG.info("%s active", self.name)
            return True

    def status(self) -> dict[str, Any]:
        return dict(self.state)
