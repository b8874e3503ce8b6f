"""What our LocalStack patches share: the version their call sites were read in, and their switch.

Each patch (sfn_client_cache, sfn_definition_cache, lambda_threads) replaces LocalStack internals
that can change in any release, so it applies only to LOCALSTACK_VERSION, and its environment
variable set to "0" turns it off (e.g. to measure the difference).
"""
from __future__ import annotations

import functools
import logging
import os

from scones.harness.lambda_executor.names import LOCALSTACK_VERSION

LOG = logging.getLogger(__name__)


@functools.cache
def localstack_version() -> str:
    from importlib.metadata import version

    return version("localstack-core")


def refusal(switch_env: str, patch: str) -> str | None:
    """Why `patch` must stay off (its switch is "0", or this is not the pinned LocalStack); None to apply it."""
    if os.environ.get(switch_env, "1") == "0":
        return f"disabled by {switch_env}=0"
    found = localstack_version()
    if found != LOCALSTACK_VERSION:
        reason = f"localstack-core {found} is not the pinned {LOCALSTACK_VERSION}"
        LOG.warning("%s not applied: %s", patch, reason)
        return reason
    return None
