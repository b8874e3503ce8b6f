"""SageMaker PyTorch serving handlers for the bicycle/motorcycle classifier.

Packed as code/inference.py in model.tar.gz beside code/network.py. The SageMaker PyTorch
container (and our local endpoint server, which loads it the same way) puts code/ on sys.path
and calls model_fn(model_dir), then input_fn -> predict_fn -> output_fn for each request.

Requests: image/png, image/jpeg, application/x-image (a PNG, JPEG, GIF, BMP, WebP or TIFF of up to
MAX_IMAGE_PIXELS, in any mode, 16-bit and float included) or application/x-npy (a numpy array of one
image HxW, HxWxC or CxHxW, or a batch NxHxWxC).
Response: application/json, [p_bicycle, p_motorcycle] (a list of such pairs for a batch).
Bad input raises InvalidInputError, a ValueError, which servers map to a model error.
"""
from __future__ import annotations

import io
import json
import os
import re
import threading

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

try:  # inside the scones package
    from . import network
except ImportError:  # inside model.tar.gz: code/ is on sys.path, as in the SageMaker container
    import network  # type: ignore[no-redef]  # the same module under its top-level name

WEIGHTS_FILE = "model.pth"
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")
NPY_CONTENT_TYPE = "application/x-npy"
SUPPORTED_CONTENT_TYPES = IMAGE_CONTENT_TYPES + (NPY_CONTENT_TYPE,)
JSON_CONTENT_TYPE = "application/json"
# The formats this model reads, by Pillow's names. serializeImageData accepts the same ones (lambdas/images.py
# keeps its own copy, as neither package may import the other; tests/test_lambdas_serialize.py pins them equal).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# The model sees 32x32 pixels, so a pixel budget costs no accuracy. 50 MP holds a 48 MP phone photo (about
# 150 MB decoded); what declares more is refused from its header, before a pixel is decoded: a 17 KB PNG can
# declare 12000x12000 pixels, which cost the endpoint +825 MiB and 1.7 s to decode.
MAX_IMAGE_PIXELS = 50_000_000
# Pillow's own guard, which also checks GIF frames and TIFF tiles as they load: over the budget it warns,
# over twice the budget it raises; decode_image refuses both.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Decoding keeps no more than the model needs: an image whose shorter side is at least twice this is decoded
# reduced (JPEG's DCT scaling) or shrunk by an integer factor (a box filter, band by band) to a shorter side of
# at least this, 8x the model's input, before the final bicubic fit; the 32x32 pixels the model then sees
# differ from a full-size decode's by about one grey level in 255 on average, a few at most. Images with a
# shorter side under 2x this (the 32x32 training images, photos of a few hundred pixels) decode as before.
REDUCED_SIDE = 8 * network.IMAGE_SIZE
# What an image above this many pixels may cost while it is decoded: its full decoded size once (Pillow
# decodes a PNG, GIF, BMP, WebP or TIFF whole; at most 4 bytes a pixel, 200 MB at MAX_IMAGE_PIXELS) and a
# band of it. Such decodes take turns, one at a time per process, so a burst of them costs one at a time.
BIG_IMAGE_PIXELS = 4_000_000
_BAND_PIXELS = 1_000_000              # source pixels converted at a time where a mode needs converting
_big_decodes = threading.Lock()


class InvalidInputError(network.InvalidImageError):
    """The request cannot be turned into model input (a ValueError)."""


class UnsupportedContentTypeError(InvalidInputError):
    """The request's Content-Type or Accept is not one this model handles."""


class ImageTooLargeError(InvalidInputError):
    """The image declares more pixels than MAX_IMAGE_PIXELS."""


def _too_large(pixels: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image of {pixels} pixels refused before decoding: over this model's limit of {MAX_IMAGE_PIXELS:,} "
        f"pixels; the model sees {network.IMAGE_SIZE}x{network.IMAGE_SIZE}, so downscale the image first"
    )


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (32, 32, 3), refusing an image over the pixel budget before decoding it."""
    if not data:
        raise InvalidInputError("empty request body: expected encoded image bytes")
    try:
        # Image.open reads only the header; the pixels are decoded by load().
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large(f"{width}x{height} = {width * height:,}")
            if width * height <= BIG_IMAGE_PIXELS:
                return _decode(image)
            with _big_decodes:
                return _decode(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's message holds the pixel count ("Image size (144000000 pixels) exceeds limit of ...").
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(f"{int(found.group(1)):,}" if found else "more") from error
    except InvalidInputError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        # UnidentifiedImageError's own message names only the BytesIO object.
        why = "it is none of these formats" if isinstance(error, UnidentifiedImageError) else str(error)
        raise InvalidInputError(
            f"could not decode the request body ({len(data)} bytes, starts with {data[:8]!r}) as a "
            f"{', '.join(IMAGE_FORMATS)} image: {why}"
        ) from error


def _decode(image: Image.Image) -> np.ndarray:
    """An opened image -> uint8 (32, 32, 3), decoding no more than REDUCED_SIDE needs."""
    if image.format == "JPEG":
        image.draft(None, (REDUCED_SIDE, REDUCED_SIDE))   # decodes at 1/2, 1/4 or 1/8 scale, never below the size
    image.load()
    factor = min(image.size) // REDUCED_SIDE
    if factor < 2:
        return network.image_to_array(to_8bit(image))
    # The EXIF rotation is read from the file (EXIF, a TIFF tag or XMP) and applied here, once: the reduced
    # image carries none of the file's metadata, so network.image_to_array does not turn it again.
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    small = _reduce(image, factor)
    small.info.clear()
    if orientation in ORIENTATION_TRANSPOSES:
        small = small.transpose(ORIENTATION_TRANSPOSES[orientation])
    return network.image_to_array(small)


ORIENTATION_TAG = 0x0112
# ImageOps.exif_transpose's table: EXIF orientation -> the transpose that shows the image upright.
ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Image.reduce reads in place; LA and RGBA it premultiplies into a copy, so they go band by band, and
# the rest are converted (one band at a time) first.
_IN_PLACE_MODES = ("L", "RGB", "CMYK", "YCbCr")
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr")


def _reducible(band: Image.Image) -> Image.Image:
    band = to_8bit(band)
    if band.mode in _REDUCIBLE_MODES:
        return band
    if band.mode == "1":
        return band.convert("L")
    has_alpha = "A" in band.mode or "a" in band.mode or (band.mode == "P" and "transparency" in band.info)
    return band.convert("RGBA" if has_alpha else "RGB")


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Each output pixel the mean of a factor x factor block (Image.reduce), with no copy of the whole decoded
    image: read in place, or band by band where the mode needs converting (16-bit, palette, 1-bit) or
    premultiplying (transparency). The pixels left over past the last whole block (fewer than `factor` a side)
    are trimmed evenly from both edges, so the centre crop that follows frames the same scene as at full size."""
    width, height = image.size
    left, top_edge = (width % factor) // 2, (height % factor) // 2
    right, bottom = left + width // factor * factor, top_edge + height // factor * factor
    if image.mode in _IN_PLACE_MODES:
        return image.reduce(factor, (left, top_edge, right, bottom))
    band_height = factor * max(1, _BAND_PIXELS // (width * factor))
    bands = []
    for top in range(top_edge, bottom, band_height):
        band = image.crop((left, top, right, min(top + band_height, bottom)))
        bands.append(_reducible(band).reduce(factor))
    small = Image.new(bands[0].mode, (bands[0].width, sum(band.height for band in bands)))
    top = 0
    for band in bands:
        small.paste(band, (0, top))
        top += band.height
    return small


def _unit_floats_to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] or [0, 255] -> uint8 (NaN -> 0, the rest clipped)."""
    finite = values[np.isfinite(values)]
    scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
    return np.clip(np.rint(np.nan_to_num(values * scale)), 0, 255).astype(np.uint8)


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images -> 8-bit "L"; any other mode unchanged.

    Pillow's convert() clips these modes at 255 (a 16-bit grayscale PNG comes out white), so
    scale them ourselves: 16-bit values by 255/65535, floats as application/x-npy floats are.
    Mode "I" is what some Pillow versions and TIFF writers give 16-bit grayscale, so it is read
    as 16-bit too.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        return Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8))
    if image.mode == "F":
        return Image.fromarray(_unit_floats_to_uint8(np.asarray(image, dtype=np.float32)))
    return image


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
    model.scones_flip_tta = bool(checkpoint.get("flip_tta", True))  # type: ignore[assignment]  # our attribute on the module
    model.scones_classes = list(checkpoint.get("classes", network.CLASSES))  # type: ignore[assignment]  # our attribute on the module
    # Calibrated on held-out training images; checkpoints from before calibration existed have none.
    model.scones_temperature = float(checkpoint.get("temperature", 1.0))  # type: ignore[assignment]  # our attribute on the module
    return model


def _array_to_images(array: np.ndarray) -> np.ndarray:
    """A numpy image or batch in any common layout -> uint8 (N, 32, 32, 3)."""
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
        array = _unit_floats_to_uint8(array)
    elif array.dtype == bool:
        array = array * 255
    elif array.dtype == np.uint16:  # 16-bit, as a 16-bit image file is read
        array = np.rint(array / 257.0)
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
        images = decode_image(request_body)[np.newaxis]
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
        return network.predict_probabilities(model, batch, getattr(model, "scones_flip_tta", True),
                                             getattr(model, "scones_temperature", 1.0))


def output_fn(prediction: torch.Tensor, accept: str | None) -> str:
    """Probabilities -> JSON: [p_bicycle, p_motorcycle] for one image, a list of those for a batch."""
    media_type = _media_type(accept)
    # The container passes the request's Accept; missing or */* means the default, JSON.
    if media_type not in ("", "*/*", JSON_CONTENT_TYPE, "application/*"):
        raise UnsupportedContentTypeError(f"unsupported accept type {accept!r}: this model answers {JSON_CONTENT_TYPE}")
    rows = [[float(value) for value in row] for row in prediction.detach().cpu().tolist()]
    return json.dumps(rows[0] if len(rows) == 1 else rows)
