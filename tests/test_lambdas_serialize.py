"""serializeImageData: every path, against moto's S3."""
from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from PIL import Image

from scones.lambdas import clients, config
from scones.lambdas.errors import ImageNotFound, ImageReadFailed, InvalidInput, NotAnImage, PayloadTooLarge
from scones.lambdas.images import FORMATS, image_format
from scones.lambdas.serialize_image_data import lambda_handler
from support import load_event, unique_name


def png_bytes(size=(8, 8), color=(10, 120, 250)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def s3(fake_aws_credentials):
    clients.reset()
    with mock_aws():
        client = boto3.client("s3")
        bucket = unique_name()
        client.create_bucket(Bucket=bucket)
        yield client, bucket
    clients.reset()


def put(s3, key: str, body: bytes) -> dict:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return {"s3_bucket": bucket, "s3_key": key}


def test_serializes_the_image_into_the_envelope(s3, lambda_context):
    image = png_bytes()
    event = load_event("workflow_input")
    event.update(put(s3, event["s3_key"], image))

    result = lambda_handler(event, lambda_context)

    assert result["statusCode"] == 200
    body = result["body"]
    assert set(body) == {"s3_bucket", "s3_key", "image_data", "inferences"}
    assert body["s3_bucket"] == event["s3_bucket"] and body["s3_key"] == event["s3_key"]
    assert isinstance(body["image_data"], str)  # the original returned bytes, which is not JSON
    assert base64.b64decode(body["image_data"]) == image
    assert body["inferences"] == []
    json.dumps(result)


def test_accepts_the_original_test_case_with_empty_image_data(s3, lambda_context):
    event = load_event("workflow_input_original")
    assert event["image_data"] == ""
    event.update(put(s3, event["s3_key"], png_bytes()))

    body = lambda_handler(event, lambda_context)["body"]

    assert base64.b64decode(body["image_data"]).startswith(b"\x89PNG")


def test_reuses_the_s3_client_across_warm_invocations(s3, lambda_context):
    event = put(s3, "test/bicycle/a.png", png_bytes())
    lambda_handler(event, lambda_context)
    first = clients.s3()
    lambda_handler(event, lambda_context)
    assert clients.s3() is first


@pytest.mark.parametrize(
    "event, message",
    [
        ({"s3_key": "k.png"}, "has no 's3_bucket'"),
        ({"s3_bucket": "b"}, "has no 's3_key'"),
        ({"s3_bucket": "", "s3_key": "k.png"}, "'s3_bucket' is empty"),
        ({"s3_bucket": "b", "s3_key": "  "}, "'s3_key' is empty"),
        ({"s3_bucket": "b", "s3_key": 7}, "'s3_key' must be a string"),
        (["b", "k"], "must be a JSON object"),
    ],
)
def test_names_the_bad_input_field(event, message, lambda_context):
    with pytest.raises(InvalidInput, match=message):
        lambda_handler(event, lambda_context)


def test_missing_object_names_bucket_and_key(s3, lambda_context):
    _, bucket = s3
    with pytest.raises(ImageNotFound) as error:
        lambda_handler({"s3_bucket": bucket, "s3_key": "test/bicycle/missing.png"}, lambda_context)
    assert f"s3://{bucket}/test/bicycle/missing.png" in str(error.value)
    assert "no such object" in str(error.value)


def test_missing_bucket_names_the_bucket(s3, lambda_context):
    bucket = unique_name("absent")
    with pytest.raises(ImageNotFound, match=f"s3://{bucket}/k.png not found: no such bucket"):
        lambda_handler({"s3_bucket": bucket, "s3_key": "k.png"}, lambda_context)


def test_other_s3_errors_name_the_object_and_the_code(fake_aws_credentials, lambda_context):
    clients.reset()
    with Stubber(clients.s3()) as stubber:
        stubber.add_client_error("get_object", service_error_code="AccessDenied",
                                 service_message="Access Denied", http_status_code=403)
        with pytest.raises(ImageReadFailed, match=r"could not read s3://b/k.png: AccessDenied: Access Denied") as error:
            lambda_handler({"s3_bucket": "b", "s3_key": "k.png"}, lambda_context)
    clients.reset()
    # Amazon S3 API Reference, GetObject, Permissions: without s3:ListBucket a missing key is AccessDenied too.
    assert "for an object that does not exist when the function's role may not s3:ListBucket the bucket" in str(error.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"hello, this is a text file", r"is not an image: its 26 bytes start with b'hello, this is a'"),
        (b"\x89PNG\r\n\x1a\n", "is not an image"),  # a PNG signature with no IHDR behind it
        (b"%PDF-1.7\n" + b"0" * 100, "no PNG, JPEG, GIF, BMP, WebP or TIFF signature"),
    ],
)
def test_refuses_an_object_that_is_not_an_image(s3, lambda_context, content, message):
    event = put(s3, "test/bicycle/not-an-image.png", content)
    with pytest.raises(NotAnImage, match=message) as error:
        lambda_handler(event, lambda_context)
    assert f"s3://{event['s3_bucket']}/test/bicycle/not-an-image.png" in str(error.value)


@pytest.mark.parametrize(
    "header, expected",
    [
        (png_bytes()[:32], "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "jpeg"),
        (b"GIF89a\x01\x00\x01\x00", "gif"),
        (b"GIF87a\x01\x00\x01\x00", "gif"),
        (b"BM" + b"\x00" * 30, "bmp"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"II+\x00\x08\x00\x00\x00", "tiff"),   # BigTIFF
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x00\x00\x00\x00\x01", None),  # zero width
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"BM", None),
    ],
)
def test_recognises_image_signatures(header, expected):
    assert image_format(header) == expected


def test_accepts_other_image_formats(s3, lambda_context):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    event = put(s3, "test/motorcycle/photo.jpg", buffer.getvalue())
    assert lambda_handler(event, lambda_context)["body"]["image_data"]


def test_accepts_a_tiff_the_model_reads(s3, lambda_context):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="TIFF")
    event = put(s3, "test/motorcycle/scan.tiff", buffer.getvalue())
    body = lambda_handler(event, lambda_context)["body"]
    assert base64.b64decode(body["image_data"]) == buffer.getvalue()


# Formats Pillow writes that the model does not read: serializeImageData must refuse them too.
OTHER_FORMATS = ("PPM", "ICO", "TGA", "PCX", "SGI", "DDS", "QOI")


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (20, 140, 60)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_the_serializer_accepts_exactly_the_formats_the_model_reads():
    """lambdas/ and local_model/ are packaged apart (a Lambda zip, code/ of model.tar.gz), so each keeps its
    list; this pins the two lists equal, and each format accepted or refused alike by both."""
    from scones.local_model import inference

    assert FORMATS == inference.IMAGE_FORMATS
    for fmt in FORMATS:
        data = encoded(fmt)
        assert image_format(data) == fmt.lower(), fmt
        assert inference.decode_image(data).shape == (32, 32, 3), fmt
    for fmt in OTHER_FORMATS:
        data = encoded(fmt)
        assert image_format(data) is None, fmt
        with pytest.raises(inference.InvalidInputError, match="none of these formats"):
            inference.decode_image(data)


def _state_size(bucket: str, key: str, image_size: int) -> int:
    """Bytes of the widest state this image produces (base64 image + two full floats)."""
    body = {"s3_bucket": bucket, "s3_key": key, "image_data": "A" * (4 * ((image_size + 2) // 3)),
            "inferences": [0.12345678901234568, 0.12345678901234568]}
    return len(json.dumps({"statusCode": 200, "body": body}).encode())


def _png_of_size(size: int) -> bytes:
    head = png_bytes()
    return head + b"\x00" * (size - len(head))


def test_refuses_an_image_that_would_pass_the_state_limit(s3, lambda_context):
    _, bucket = s3
    key = "test/bicycle/huge.png"
    size = 200_000  # 266,668 bytes as base64: over 256 KiB by itself
    event = put(s3, key, _png_of_size(size))
    with pytest.raises(PayloadTooLarge) as error:
        lambda_handler(event, lambda_context)
    message = str(error.value)
    assert f"s3://{bucket}/{key}" in message and "200,000 bytes" in message and "262,144" in message


def test_the_state_limit_counts_the_whole_envelope(s3, lambda_context):
    _, bucket = s3
    key = "test/bicycle/edge.png"
    # The largest image whose widest state still fits, and one 3 bytes (4 base64 chars) larger.
    size = 190_000
    while _state_size(bucket, key, size + 3) <= config.STATE_PAYLOAD_LIMIT_BYTES:
        size += 3
    while _state_size(bucket, key, size) > config.STATE_PAYLOAD_LIMIT_BYTES:
        size -= 1
    assert lambda_handler(put(s3, key, _png_of_size(size)), lambda_context)["statusCode"] == 200
    # Base64 grows in steps of 3 input bytes; +3 always adds 4 characters.
    with pytest.raises(PayloadTooLarge):
        lambda_handler(put(s3, key, _png_of_size(size + 3)), lambda_context)
