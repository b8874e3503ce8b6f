"""classifyImage: send the image to the SageMaker endpoint and store its inferences in the state."""
from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from lambdas import clients, config
from lambdas.errors import EndpointInvocationFailed
from lambdas.events import ImageState, parse_inferences

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
        raise EndpointInvocationFailed(_client_error_message(endpoint_name, source, exc)) from None
    except BotoCoreError as exc:
        raise EndpointInvocationFailed(
            f"could not invoke endpoint {endpoint_name!r} at {client.meta.endpoint_url} for {source}: {exc}"
        ) from None
    return parse_inferences(payload, source=f"the inferences endpoint {endpoint_name!r} returned for {source}")


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
