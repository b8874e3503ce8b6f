"""classifyImage: send the image to the SageMaker endpoint and store its inferences in the state."""
from __future__ import annotations

import logging
import queue
import threading

from botocore import exceptions as botocore_errors
from botocore.exceptions import BotoCoreError, ClientError

from . import clients, config
from .errors import EndpointInvocationFailed, EndpointUnavailable
from .events import ImageState, parse_inferences

# What botocore's standard retry mode treats as transient on the wire (botocore/retries/standard.py).
TRANSIENT_NETWORK_ERRORS = (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def lambda_handler(event, context):
    state = ImageState.from_event(event)
    inferences = classify(state.image_bytes(), config.endpoint_name(), source=state.uri,
                          time_budget_s=time_budget_s(context))
    logger.info("classified %s: %s", state.uri, inferences)
    return state.with_inferences(inferences).to_envelope()


def time_budget_s(context) -> float | None:
    """How long this invocation may wait on the endpoint: the time the function has left, less the time
    kept to report EndpointUnavailable (None without a Lambda context, e.g. when called as a library)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    left_s = remaining() / 1000
    return max(left_s - config.ENDPOINT_REPORT_RESERVE_S, left_s / 2)


def classify(image: bytes, endpoint_name: str, *, source: str = "the image",
             time_budget_s: float | None = None) -> list[float]:
    """The endpoint's inferences for `image`; with a time budget, EndpointUnavailable once it is spent.

    botocore's retries cannot be bounded in total time (each attempt may wait a full read timeout), so
    the call runs in a thread that this one waits for at most the budget; past it the call is left to
    end by its own timeouts, and the function reports the endpoint as unavailable while it still can.
    """
    client = clients.sagemaker_runtime()
    try:
        payload = _within(time_budget_s, _invoke, client, endpoint_name, image)
    except _OutOfTime:
        raise EndpointUnavailable(
            f"endpoint {endpoint_name!r} at {client.meta.endpoint_url} did not answer for {source} within "
            f"{time_budget_s:.1f} s, the time this function had left less {config.ENDPOINT_REPORT_RESERVE_S:g} s "
            f"to report it: the endpoint is hung or overloaded"
        ) from None
    except ClientError as exc:
        error = EndpointUnavailable if _transient(exc) else EndpointInvocationFailed
        raise error(_client_error_message(endpoint_name, source, exc)) from None
    except TRANSIENT_NETWORK_ERRORS as exc:  # refused, reset, timed out: botocore retried each of them
        raise EndpointUnavailable(
            f"could not invoke endpoint {endpoint_name!r} at {client.meta.endpoint_url} for {source} "
            f"in {config.ENDPOINT_MAX_ATTEMPTS} attempts: {exc}"
        ) from None
    except BotoCoreError as exc:
        raise EndpointInvocationFailed(
            f"could not invoke endpoint {endpoint_name!r} at {client.meta.endpoint_url} for {source}: {exc}"
        ) from None
    return parse_inferences(payload, source=f"the inferences endpoint {endpoint_name!r} returned for {source}")


def _invoke(client, endpoint_name: str, image: bytes) -> bytes:
    response = client.invoke_endpoint(
        EndpointName=endpoint_name,
        ContentType=config.IMAGE_CONTENT_TYPE,
        Accept="application/json",
        Body=image,
    )
    return response["Body"].read()


class _OutOfTime(Exception):
    """The time budget ran out before the call ended."""


def _within(budget_s: float | None, function, *args):
    """function(*args), raising what it raises; _OutOfTime when it has not ended after budget_s."""
    if budget_s is None:
        return function(*args)
    outcomes: queue.SimpleQueue = queue.SimpleQueue()

    def run() -> None:
        try:
            outcomes.put((True, function(*args)))
        except Exception as error:
            outcomes.put((False, error))

    # A daemon thread: one stuck on a hung endpoint never holds up the runtime's exit.
    threading.Thread(target=run, name="invoke-endpoint", daemon=True).start()
    try:
        ok, value = outcomes.get(timeout=budget_s)
    except queue.Empty:
        raise _OutOfTime from None
    if not ok:
        raise value
    return value


def _transient(exc: ClientError) -> bool:
    """A 5xx or 429 (botocore retries 500/502/503/504 but neither ModelNotReadyException 429 nor
    InternalDependencyException 530), or any error botocore judged retryable (throttling codes): it retried
    it, or would have but for its retry quota, which a warm environment's client spends on many retries
    (RetryQuotaReached: botocore/retries/standard.py RetryQuotaChecker)."""
    metadata = exc.response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode") or 0
    return (status == 429 or status >= 500 or metadata.get("RetryAttempts", 0) > 0
            or bool(metadata.get("RetryQuotaReached")))


def _client_error_message(endpoint_name: str, source: str, exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    message = (
        f"endpoint {endpoint_name!r} failed for {source}: "
        f"{error.get('Code', 'Error')} (HTTP {status}): {error.get('Message', exc)}"
    )
    # A ModelError carries what the model container itself answered.
    if "OriginalStatusCode" in exc.response or "OriginalMessage" in exc.response:
        message += (
            f"; the model answered HTTP {exc.response.get('OriginalStatusCode', '?')}: "
            f"{exc.response.get('OriginalMessage', '')}"
        )
    return message
