"""classifyImage: send the image to the SageMaker endpoint and store its inferences in the state."""
from __future__ import annotations

import logging

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
    inferences = classify(state.image_bytes(), config.endpoint_name(), source=state.uri)
    logger.info("classified %s: %s", state.uri, inferences)
    return state.with_inferences(inferences).to_envelope()


def classify(image: bytes, endpoint_name: str, *, source: str = "the image") -> list[float]:
    client = clients.sagemaker_runtime()
    try:
        response = client.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType=config.IMAGE_CONTENT_TYPE,
            Accept="application/json",
            Body=image,
        )
        payload = response["Body"].read()
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


def _transient(exc: ClientError) -> bool:
    """A 5xx or 429 (botocore retries 500/502/503/504 but neither ModelNotReadyException 429 nor
    InternalDependencyException 530), or any error botocore judged retryable (throttling codes)."""
    metadata = exc.response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode") or 0
    return status == 429 or status >= 500 or metadata.get("RetryAttempts", 0) > 0


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
