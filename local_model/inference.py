"""SageMaker PyTorch serving handlers for the bicycle/motorcycle classifier.

Packed as code/inference.py in model.tar.gz beside code/network.py. The SageMaker PyTorch
container (and our local endpoint server, which loads it the same way) puts code/ on sys.path
and calls model_fn(model_dir), then input_fn -> predict_fn -> output_fn for each request.

Requests: image/png, image/jpeg, application/x-image (any format Pillow reads, any size and
mode) or application/x-npy (a numpy array of one image HxW, HxWxC or CxHxW, or a batch NxHxWxC).
Response: application/json, [p_bicycle, p_motorcycle] (a list of such pairs for a batch).
Bad input raises InvalidInputError, a ValueError, which servers map to a model error.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import torch

try:  # inside the scones package
    from . import network
except ImportError:  # inside model.tar.gz: code/ is on sys.path, as in the SageMaker container
    import network

WEIGHTS_FILE = "model.pth"
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")
NPY_CONTENT_TYPE = "application/x-npy"
SUPPORTED_CONTENT_TYPES = IMAGE_CONTENT_TYPES + (NPY_CONTENT_TYPE,)
JSON_CONTENT_TYPE = "application/json"


class InvalidInputError(network.InvalidImageError):
    """The request cannot be turned into model input (a ValueError)."""


class UnsupportedContentTypeError(InvalidInputError):
    """The request's Content-Type or Accept is not one this model handles."""


def _media_type(content_type: str | None) -> str:
    """'image/png; charset=binary' -> 'image/png'."""
    return (content_type or "").split(";")[0].strip().lower()


def model_fn(model_dir: str) -> torch.nn.Module:
    path = os.path.join(model_dir, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in model directory {model_dir}: is this a scones model.tar.gz?")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = network.build_model(checkpoint["architecture"])
    model.load_state_dict(checkpoint["state_dict"])
    # NHWC: oneDNN's CPU convolutions run ~20% faster per image in it at batches of 4+ (the
    # endpoint batches concurrent requests); no difference for a single image.
    model = model.to(memory_format=torch.channels_last).eval()
    # predict_fn reads these; they are the settings the model was evaluated with in training.
    model.scones_flip_tta = bool(checkpoint.get("flip_tta", True))
    model.scones_classes = list(checkpoint.get("classes", network.CLASSES))
    return model


def _array_to_images(array: np.ndarray) -> np.ndarray:
    """A numpy image or batch in any common layout -> uint8 (N, 32, 32, 3)."""
    from PIL import Image

    if array.dtype == object or array.size == 0:
        raise InvalidInputError(f"application/x-npy body holds an unusable array (dtype {array.dtype}, shape {array.shape})")
    if array.ndim == 4:
        return np.concatenate([_array_to_images(item) for item in array])
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CxHxW -> HxWxC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise InvalidInputError(
            f"application/x-npy array of shape {array.shape} is not an image: expected HxW, HxWx{{1,3,4}}, "
            f"{{1,3,4}}xHxW or a batch NxHxWxC"
        )
    if np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0  # floats in [0, 1] or [0, 255]
        array = np.nan_to_num(array * scale)
    elif array.dtype == bool:
        array = array * 255
    array = np.clip(array, 0, 255).astype(np.uint8)
    image = Image.fromarray(array)  # uint8 HxW / HxWx3 / HxWx4 -> L / RGB / RGBA
    return network.image_to_array(image)[np.newaxis]


def input_fn(request_body, request_content_type: str | None):
    """Request body -> normalised float tensor (N, 3, 32, 32)."""
    media_type = _media_type(request_content_type)
    if isinstance(request_body, str):
        request_body = request_body.encode("latin-1")
    if isinstance(request_body, (bytearray, memoryview)):
        request_body = bytes(request_body)
    if media_type in IMAGE_CONTENT_TYPES:
        try:
            images = network.decode_image(request_body)[np.newaxis]
        except network.InvalidImageError as error:
            raise InvalidInputError(str(error)) from error
    elif media_type == NPY_CONTENT_TYPE:
        try:
            array = np.load(io.BytesIO(request_body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise InvalidInputError(f"could not read the application/x-npy body ({len(request_body)} bytes): {error}") from error
        images = _array_to_images(np.asarray(array))
    else:
        raise UnsupportedContentTypeError(
            f"unsupported content type {request_content_type!r}: send one of {', '.join(SUPPORTED_CONTENT_TYPES)}"
        )
    return network.to_tensor(images)


def predict_fn(input_data: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """Probabilities (N, 2) in class order [bicycle, motorcycle]."""
    with torch.inference_mode():
        batch = input_data.contiguous(memory_format=torch.channels_last)
        return network.predict_probabilities(model, batch, getattr(model, "scones_flip_tta", True))


def output_fn(prediction: torch.Tensor, accept: str | None) -> str:
    """Probabilities -> JSON: [p_bicycle, p_motorcycle] for one image, a list of those for a batch."""
    media_type = _media_type(accept)
    # The container passes the request's Accept; missing or */* means the default, JSON.
    if media_type not in ("", "*/*", JSON_CONTENT_TYPE, "application/*"):
        raise UnsupportedContentTypeError(f"unsupported accept type {accept!r}: this model answers {JSON_CONTENT_TYPE}")
    rows = [[float(value) for value in row] for row in prediction.detach().cpu().tolist()]
    return json.dumps(rows[0] if len(rows) == 1 else rows)
