"""serializeImageData: read the image from S3 and put it, base64-encoded, into the workflow state."""
from __future__ import annotations

import base64
import json
import logging

from botocore.exceptions import BotoCoreError, ClientError

from . import clients
from .config import CLASSES, STATE_PAYLOAD_LIMIT_BYTES
from .errors import ImageNotFound, ImageReadFailed, NotAnImage, PayloadTooLarge
from .events import ImageLocation, ImageState
from .images import describe_formats, describe_start, image_format

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
# Amazon S3 API Reference, GetObject, "Permissions": a missing key is a 403 to a caller not allowed s3:ListBucket.
_ACCESS_DENIED_HINT = (" (S3 answers AccessDenied, not NoSuchKey, for an object that does not exist when the "
                       "function's role may not s3:ListBucket the bucket)")
# classifyImage later adds the inferences to this same state; count the widest they can be.
_WIDEST_INFERENCES = [0.12345678901234568] * len(CLASSES)


def lambda_handler(event, context):
    location = ImageLocation.from_event(event)
    image = read_image(location)
    state = ImageState(location.s3_bucket, location.s3_key, base64.b64encode(image).decode("ascii"))
    check_state_size(state, len(image))
    logger.info("serialized %s (%d bytes)", location.uri, len(image))
    return state.to_envelope()


def read_image(location: ImageLocation) -> bytes:
    try:
        response = clients.s3().get_object(Bucket=location.s3_bucket, Key=location.s3_key)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _NOT_FOUND_CODES:
            what = "bucket" if code == "NoSuchBucket" else "object"
            raise ImageNotFound(
                f"{location.uri} not found: no such {what} ({code}: {error.get('Message', '')})"
            ) from None
        hint = _ACCESS_DENIED_HINT if code == "AccessDenied" else ""
        raise ImageReadFailed(f"could not read {location.uri}: {code}: {error.get('Message', exc)}{hint}") from None
    except BotoCoreError as exc:
        raise ImageReadFailed(f"could not read {location.uri}: {exc}") from None

    body = response["Body"]
    size = response.get("ContentLength")
    # Refuse before downloading an object that could never fit in the state.
    if size is not None and _base64_length(size) > STATE_PAYLOAD_LIMIT_BYTES:
        body.close()
        raise PayloadTooLarge(_too_large_message(location.uri, size, _base64_length(size)))
    image = body.read()
    if not image:
        raise NotAnImage(f"{location.uri} is empty (0 bytes), not an image")
    if image_format(image) is None:
        raise NotAnImage(
            f"{location.uri} is not an image: its {len(image)} bytes start with {describe_start(image)}, "
            f"which is no {describe_formats()} signature"
        )
    return image


def check_state_size(state: ImageState, image_size: int) -> None:
    widest = state.with_inferences(_WIDEST_INFERENCES).to_envelope()
    state_size = len(json.dumps(widest).encode("utf-8"))
    if state_size > STATE_PAYLOAD_LIMIT_BYTES:
        raise PayloadTooLarge(_too_large_message(state.uri, image_size, state_size))


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _too_large_message(uri: str, image_size: int, state_size: int) -> str:
    return (
        f"{uri} is {image_size:,} bytes; base64-encoded in the workflow state it needs at least "
        f"{state_size:,} bytes, over the Step Functions limit of {STATE_PAYLOAD_LIMIT_BYTES:,} bytes "
        "(256 KiB) per state"
    )
