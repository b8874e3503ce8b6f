"""Recognise image bytes by their signature, standard library only (no pillow in Lambdas)."""
from __future__ import annotations

import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_format(data: bytes) -> str | None:
    """Return "png", "jpeg", "gif", "bmp" or "webp" when the header is one of those, else None.

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
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _png_header_ok(data: bytes) -> bool:
    # Signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4).
    if len(data) < 24:
        return False
    length, chunk_type, width, height = struct.unpack(">I4sII", data[8:24])
    return chunk_type == b"IHDR" and length == 13 and width > 0 and height > 0


def describe_start(data: bytes, limit: int = 16) -> str:
    """The first bytes of an object, for error messages."""
    return repr(data[:limit]) + ("..." if len(data) > limit else "")
