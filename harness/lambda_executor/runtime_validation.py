"""CreateFunction refuses the runtimes AWS no longer accepts (runtimes.BLOCKED_RUNTIMES), with AWS's error.

LocalStack 4.14.0 accepts python3.8 for new functions (its deprecation list stops at python3.7);
AWS answers InvalidParameterValueException. Pinned like our other patches: applied only to
localstack-core 4.14.0, where `LambdaProvider._validate_runtime` was read.
"""
from __future__ import annotations

from scones import settings
from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.runtimes import BLOCKED_RUNTIMES, blocked_message

SWITCH = settings.LAMBDA_RUNTIME_VALIDATION


def _install() -> None:
    from localstack.aws.api.lambda_ import InvalidParameterValueException
    from localstack.services.lambda_.provider import LambdaProvider

    original = LambdaProvider._validate_runtime

    def validate_runtime(self, package_type, runtime):
        if runtime in BLOCKED_RUNTIMES:
            raise InvalidParameterValueException(blocked_message(runtime), Type="User")
        return original(self, package_type, runtime)

    LambdaProvider._validate_runtime = validate_runtime


PATCH = pinned.Patch("Lambda runtime validation", SWITCH, _install)


def apply() -> str | None:
    """Install the check; None when active, else why not."""
    return None if PATCH.apply() else PATCH.state["reason"]
