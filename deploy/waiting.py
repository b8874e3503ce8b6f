"""Waiting for AWS to finish something, on scones.polling's deadline loop.

AWS reports progress only through Describe*/Get* calls, so each wait is a loop of
"describe, decide, sleep" that ends in success, a failure with AWS's own reason, or a timeout
that names what was being waited for and the last state seen.
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from botocore.exceptions import ClientError

from scones.errors import SconesError
from scones.polling import PollFailed, PollTimedOut, poll

Progress = Callable[[str], None]
T = TypeVar("T")


class DeployError(SconesError, RuntimeError):
    """A deploy step could not finish; the message says which resource and why."""


class WaitFailed(DeployError):
    """The resource reached a failed state (the message carries AWS's failure reason)."""


class WaitTimedOut(DeployError):
    """The resource did not reach its goal state before the deadline."""


def poll_until(
    describe: Callable[[], T],
    *,
    what: str,
    state_of: Callable[[T], str],
    done: set[str] | frozenset[str],
    failed: set[str] | frozenset[str] = frozenset(),
    reason_of: Callable[[T], str | None] = lambda _: None,
    timeout_s: float = 600.0,
    interval_s: float = 5.0,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    heartbeat_s: float = 60.0,
) -> T:
    """Call describe() until state_of(result) is in done; raise on failed states or the deadline.

    sleep and clock are injectable so tests drive the loop without waiting.
    """
    last_state: str | None = None
    last_report = 0.0

    def report(result: T, elapsed: float) -> None:
        nonlocal last_state, last_report
        state = state_of(result)
        if progress and (state != last_state or elapsed - last_report >= heartbeat_s):
            # A state change, or a heartbeat so a 20-minute wait never looks hung.
            so_far = "" if state != last_state else f" ({_minutes(elapsed)} so far)"
            progress(f"{what}: {state}{so_far}")
            last_report = elapsed
        last_state = state

    def failure(result: T) -> str | None:
        state = state_of(result)
        return f"{what} is {state}: {reason_of(result) or 'AWS gave no reason'}" if state in failed else None

    try:
        return poll(describe, timeout=timeout_s, interval=interval_s, until=lambda result: state_of(result) in done,
                    failure=failure, each=report, clock=clock, sleep=sleep)
    except PollFailed as error:
        raise WaitFailed(error.reason) from None
    except PollTimedOut as error:
        raise WaitTimedOut(
            f"{what} still {state_of(error.last)} after {timeout_s:.0f} s; "
            f"check it in the AWS console and re-run to resume"
        ) from None


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


# A new IAM role takes seconds to reach Lambda, Step Functions and SageMaker; until then they
# refuse it with these errors. Seen on AWS; the message is the only distinguishing mark.
ROLE_PROPAGATION_TIMEOUT_S = 90.0


def is_role_propagation_error(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "").lower()
    return (
        (code == "InvalidParameterValueException" and "cannot be assumed" in message)          # Lambda
        or (code == "AccessDeniedException" and "assume" in message and "role" in message)      # Step Functions
        or (code == "ValidationException" and "could not assume role" in message)               # SageMaker
    )


def retry_while_role_propagates(
    call: Callable[[], T],
    *,
    what: str,
    timeout_s: float = ROLE_PROPAGATION_TIMEOUT_S,
    interval_s: float = 3.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    def attempt() -> tuple[bool, Any]:
        try:
            return True, call()
        except ClientError as error:
            if not is_role_propagation_error(error):
                raise
            return False, error

    try:
        return poll(attempt, timeout=timeout_s, interval=interval_s, until=lambda outcome: outcome[0],
                    clock=clock, sleep=sleep)[1]
    except PollTimedOut as timed_out:
        error = timed_out.last[1]
        message = error.response.get("Error", {}).get("Message", "")
        raise DeployError(f"{what}: the role is still refused after {timeout_s:.0f} s: {message}") from error
