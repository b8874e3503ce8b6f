"""Recognise image bytes by their signature, standard library only (no pillow in Lambdas)."""
from __future__ import annotations

import struct

# The formats the model reads (local_model/inference.py IMAGE_FORMATS, by Pillow's names; this package cannot
# import that one, and tests/test_lambdas_serialize.py pins the two equal). The signatures are Pillow's own.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a",  # classic TIFF, either byte order
                    b"MM\x00\x2b", b"II\x2b\x00")                                 # BigTIFF
_WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")


def image_format(data: bytes) -> str | None:
    """Return "png", "jpeg", "gif", "bmp", "webp" or "tiff" when the header is one of those, else None.

    PNG gets a closer look (the first chunk must be a well-formed IHDR with a non-zero size),
    since PNG is what the model is sent.
    """
    if data.startswith(_PNG_SIGNATURE):
        return "png" if _png_header_ok(data) else None
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if len(data) >= 16 and data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] in _WEBP_CHUNKS:
        return "webp"
    if data.startswith(_TIFF_SIGNATURES):
        return "tiff"
    return None


def describe_formats() -> str:
    """The formats in words, for error messages: "PNG, JPEG, GIF, BMP, WebP or TIFF"."""
    names = [name if name != "WEBP" else "WebP" for name in FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _png_header_ok(data: bytes) -> bool:
    # Signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4).
    if len(data) < 24:
        return False
    length, chunk_type, width, height = struct.unpack(">I4sII", data[8:24])
    return chunk_type == b"IHDR" and length == 13 and width > 0 and height > 0


def describe_start(data: bytes, limit: int = 16) -> str:
    """The first bytes of an object, for error messages."""
    return repr(data[:limit]) + ("..." if len(data) > limit else "")
