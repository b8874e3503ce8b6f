"""The serving handlers (code/inference.py of model.tar.gz), loaded as the SageMaker container loads them."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scones import testing
from scones.harness import models
from scones.harness.serving.handlers import extract_tar, import_handlers


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A folder holding a freshly trained tiny model.tar.gz."""
    root = tmp_path_factory.mktemp("tiny")
    data = testing.write_synthetic_dataset(root / "data")
    return models.train_model(data, root / "out", testing.TINY_HYPERPARAMETERS, echo=False)


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """(inference module, loaded model) from the tiny model.tar.gz, loaded as the container loads it."""
    root = tmp_path_factory.mktemp("served")
    with tarfile.open(tiny_model / "model.tar.gz") as archive:
        extract_tar(archive, root / "model")
    inference = import_handlers(root / "model")
    return inference, inference.model_fn(str(root / "model"))


def invoke(served, body, content_type="image/png", accept="application/json"):
    inference, model = served
    return json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model), accept))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(640, 480), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def assert_probabilities(result):
    assert isinstance(result, list) and len(result) == 2
    assert all(isinstance(value, float) and 0.0 <= value <= 1.0 for value in result)
    assert sum(result) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("mode, fmt, content_type", [
    ("RGBA", "PNG", "image/png"),
    ("RGB", "PNG", "image/png"),
    ("L", "PNG", "image/png"),
    ("P", "PNG", "application/x-image"),
    ("LA", "PNG", "image/png"),
    ("RGB", "JPEG", "image/jpeg"),
    ("L", "JPEG", "application/x-image"),
])
def test_small_images_in_every_mode_round_trip(served, mode, fmt, content_type):
    assert_probabilities(invoke(served, encode(photo((32, 32), mode), fmt), content_type))


@pytest.mark.parametrize("fmt, content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_a_photo_sized_image_is_resized_like_training_data(served, fmt, content_type):
    assert_probabilities(invoke(served, encode(photo((640, 480)), fmt, **({"quality": 90} if fmt == "JPEG" else {})),
                                content_type))


def test_rgba_and_rgb_of_the_same_opaque_pixels_agree(served):
    image = photo((32, 32), "RGBA")
    assert invoke(served, encode(image, "PNG")) == pytest.approx(invoke(served, encode(image.convert("RGB"), "PNG")))


def test_content_type_parameters_and_accept_wildcards_are_accepted(served):
    body = encode(photo((32, 32)), "PNG")
    assert_probabilities(invoke(served, body, "Image/PNG; charset=binary", "*/*"))
    assert_probabilities(invoke(served, body, "image/png", None))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_single_images_in_common_layouts(served):
    pixels = np.asarray(photo((32, 32)))
    expected = invoke(served, encode(Image.fromarray(pixels), "PNG"))
    for array in (pixels, pixels.transpose(2, 0, 1), pixels.astype(np.float32) / 255.0):
        assert invoke(served, npy(array), "application/x-npy") == pytest.approx(expected, abs=1e-5)
    assert_probabilities(invoke(served, npy(pixels[..., 0]), "application/x-npy"))


def test_npy_batch_gives_one_pair_per_image(served):
    batch = np.stack([np.asarray(photo((32, 32)))] * 3)
    result = invoke(served, npy(batch), "application/x-npy")
    assert len(result) == 3
    for pair in result:
        assert_probabilities(pair)


@pytest.mark.parametrize("body, content_type, message", [
    (b"definitely not a png", "image/png", "could not decode"),
    (b"", "image/jpeg", "empty request body"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", "could not decode"),
    (b"not numpy", "application/x-npy", "could not read the application/x-npy body"),
    (npy(np.zeros((5,), dtype=np.uint8)), "application/x-npy", "is not an image"),
    (b"1,2,3", "text/csv", "unsupported content type 'text/csv'"),
    (b"{}", None, "unsupported content type None"),
])
def test_bad_input_raises_a_clear_value_error(served, body, content_type, message):
    inference, _ = served
    with pytest.raises(ValueError, match=message) as caught:
        inference.input_fn(body, content_type)
    assert isinstance(caught.value, inference.InvalidInputError)


def test_unsupported_content_type_has_its_own_error_class(served):
    inference, model = served
    with pytest.raises(inference.UnsupportedContentTypeError):
        inference.input_fn(b"x", "application/json")
    prediction = inference.predict_fn(inference.input_fn(encode(photo((32, 32)), "PNG"), "image/png"), model)
    with pytest.raises(inference.UnsupportedContentTypeError, match="unsupported accept type 'text/csv'"):
        inference.output_fn(prediction, "text/csv")


# ---- hostile and unusual images

def png_bomb(width: int = 12000, height: int = 12000) -> bytes:
    """A 1-bit grayscale PNG of width x height zeros: about 17.5 KB that decodes to 144 MB (432 MB as RGB).

    Written chunk by chunk with zlib, so building it costs no more memory than the file."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


BOMB_PROBE = """
import json, sys, time
from pathlib import Path
from scones.local_model import inference

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

inference.decode_image(open(sys.argv[2], "rb").read())   # warm: every decoder path imported once
try:
    Path("/proc/self/clear_refs").write_text("5")        # reset the peak RSS (Linux >= 4.0)
except OSError:
    pass
before = status("VmRSS")
bomb = open(sys.argv[1], "rb").read()
started = time.perf_counter()
try:
    inference.decode_image(bomb)
    error = None
except ValueError as caught:
    error = f"{type(caught).__name__}: {caught}"
print(json.dumps({"error": error, "seconds": time.perf_counter() - started,
                  "peak_growth_bytes": status("VmHWM") - before}))
"""


def test_a_decompression_bomb_is_refused_from_its_header_with_bounded_memory(tmp_path):
    """The 17.5 KB PNG of 12000x12000 pixels from issue 12 cost the endpoint +825 MiB: it must be refused
    before a pixel is decoded. Measured in a fresh process (peak RSS, /proc/self/status VmHWM)."""
    bomb, small = tmp_path / "bomb.png", tmp_path / "small.png"
    bomb.write_bytes(png_bomb())
    small.write_bytes(encode(photo((64, 48)), "PNG"))
    assert bomb.stat().st_size < 20_000
    probe = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(bomb), str(small)], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert result["error"] and result["error"].startswith("ImageTooLargeError")
    assert "144,000,000 pixels" in result["error"] and "limit of 50,000,000 pixels" in result["error"]
    # Decoding it would take 144 MB at one byte per pixel; refusing it takes a few pages.
    assert result["peak_growth_bytes"] < 16 * 2**20, result
    print(f"bomb refused in {result['seconds'] * 1000:.1f} ms, peak RSS +{result['peak_growth_bytes'] / 2**20:.1f} MiB")


def test_an_image_between_the_budget_and_pillows_hard_limit_names_its_size(served):
    """Between the budget and twice it, Pillow's Image.open only warns; decode_image refuses from the size."""
    inference, _ = served
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(inference.ImageTooLargeError, match=r"8000x8000 = 64,000,000 pixels .* limit of 50,000,000"):
        inference.input_fn(png_bomb(8000, 8000), "image/png")


def test_the_endpoint_reports_a_bomb_as_a_model_error_naming_size_and_limit(tiny_model):
    import boto3
    from botocore.config import Config

    from scones.harness.endpoint import EndpointServer

    with EndpointServer(tiny_model / "model.tar.gz", endpoint_name="bomb-test") as server:
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(client.exceptions.ModelError) as caught:
            client.invoke_endpoint(EndpointName="bomb-test", ContentType="image/png", Body=png_bomb())
        ok = client.invoke_endpoint(EndpointName="bomb-test", ContentType="image/png", Body=encode(photo((32, 32)), "PNG"))
    assert "144,000,000 pixels" in caught.value.response["OriginalMessage"]
    assert "limit of 50,000,000 pixels" in caught.value.response["OriginalMessage"]
    assert_probabilities(json.loads(ok["Body"].read()))


GRADIENT = (np.arange(32 * 32).reshape(32, 32) * 7 % 256).astype(np.uint8)   # every 8-bit value, scattered


def sixteen_bit(gray: np.ndarray) -> np.ndarray:
    return gray.astype(np.uint16) * 257   # 0..255 -> 0..65535, as an image editor widens 8-bit to 16-bit


def test_a_16_bit_grayscale_png_is_classified_as_its_8_bit_version(served):
    """Issue 12: a 16-bit grayscale PNG was decoded as pure white (Pillow's convert() clips I;16 at 255)."""
    inference, _ = served
    gray = np.asarray(photo((32, 32), "L"))
    eight, sixteen = Image.fromarray(gray), Image.fromarray(sixteen_bit(gray))
    assert sixteen.mode == "I;16"
    png8, png16 = encode(eight, "PNG"), encode(sixteen, "PNG")
    assert Image.open(io.BytesIO(png16)).mode == "I;16"
    np.testing.assert_array_equal(inference.decode_image(png16), inference.decode_image(png8))
    assert invoke(served, png16) == invoke(served, png8)


def _palette_with_transparency() -> tuple[Image.Image, np.ndarray]:
    image = Image.fromarray(GRADIENT, mode="L").convert("P")
    image.putpalette([value for level in range(256) for value in (level, level, level)])
    image.info["transparency"] = 0
    expected = np.where(GRADIENT == 0, 255, GRADIENT).astype(np.uint8)   # transparent -> white, as training composites
    return image, expected


def _mode_case(mode: str) -> tuple[Image.Image, Image.Image]:
    """(an image in `mode`, the 8-bit image it must decode as)."""
    gray = Image.fromarray(GRADIENT)
    if mode == "I;16":
        return Image.fromarray(sixteen_bit(GRADIENT)), gray
    if mode == "I;16B":
        return Image.frombytes("I;16B", (32, 32), sixteen_bit(GRADIENT).astype(">u2").tobytes()), gray
    if mode == "I":
        return Image.fromarray(sixteen_bit(GRADIENT).astype(np.int32)), gray
    if mode == "F":
        return Image.fromarray(GRADIENT.astype(np.float32) / 255), gray
    if mode == "LA":
        alpha = np.where(np.arange(32)[None, :] < 16, 255, 0).astype(np.uint8).repeat(32, 0)
        return (Image.merge("LA", (gray, Image.fromarray(alpha))),
                Image.fromarray(np.where(alpha == 255, GRADIENT, 255).astype(np.uint8)))
    if mode == "P":
        image, expected = _palette_with_transparency()
        return image, Image.fromarray(expected)
    if mode == "CMYK":
        rgb = photo((32, 32))
        return rgb.convert("CMYK"), rgb
    if mode == "1":
        return Image.fromarray(GRADIENT > 127), Image.fromarray(np.where(GRADIENT > 127, 255, 0).astype(np.uint8))
    raise AssertionError(mode)


@pytest.mark.parametrize("mode, fmt", [
    ("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF"), ("F", "TIFF"),
    ("LA", "PNG"), ("P", "PNG"), ("CMYK", "TIFF"), ("CMYK", "JPEG"), ("1", "PNG"), ("1", "TIFF"),
])
def test_every_mode_decodes_to_its_8_bit_rgb_pixels(served, mode, fmt):
    inference, _ = served
    image, expected = _mode_case(mode)
    assert image.mode == mode
    data = encode(image, fmt, **({"transparency": 0} if mode == "P" else {}))
    assert Image.open(io.BytesIO(data)).mode == (mode if fmt != "PNG" or mode != "I;16B" else "I;16")
    decoded = inference.decode_image(data)
    wanted = inference.network.image_to_array(expected)
    if fmt == "JPEG":  # lossy: close, not equal
        assert np.abs(decoded.astype(int) - wanted.astype(int)).mean() < 12
    else:
        np.testing.assert_array_equal(decoded, wanted)


def raw_png(pixels: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB, LA or RGBA): rows of big-endian samples."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    height, width = pixels.shape[:2]
    samples = pixels.astype(">u2" if bit_depth == 16 else np.uint8)
    rows = b"".join(b"\x00" + samples[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("color_type, channels", [(0, 1), (2, 3), (4, 2), (6, 4)])   # gray, RGB, gray+alpha, RGBA
def test_16_bit_pngs_of_every_color_type_decode_as_their_8_bit_twins(served, color_type, channels):
    inference, _ = served
    rng = np.random.default_rng(color_type)
    pixels = rng.integers(0, 256, (32, 32, channels), dtype=np.uint16)
    if channels in (2, 4):
        pixels[..., -1] = np.where(np.arange(32)[None, :] < 20, 255, 90)   # opaque and half-transparent columns
    pixels = pixels[..., 0] if channels == 1 else pixels
    np.testing.assert_array_equal(inference.decode_image(raw_png(pixels * 257, color_type, 16)),
                                  inference.decode_image(raw_png(pixels, color_type, 8)))


def test_16_bit_npy_arrays_are_read_as_16_bit_images_are(served):
    inference, _ = served
    np.testing.assert_array_equal(inference.input_fn(npy(sixteen_bit(GRADIENT)), "application/x-npy"),
                                  inference.input_fn(npy(GRADIENT), "application/x-npy"))


def test_model_fn_names_a_folder_that_is_not_a_model(served, tmp_path):
    inference, _ = served
    with pytest.raises(FileNotFoundError, match="no model.pth in model directory"):
        inference.model_fn(str(tmp_path))


def test_the_packaged_handlers_are_the_package_handlers():
    """The in-package import path works too (train.py evaluation and in-process servers use it)."""
    from scones.local_model import inference

    assert inference.network.CLASSES == ("bicycle", "motorcycle")


# ---- unpacking model.tar.gz safely on every Python 3.11 (3.11.0-3.11.3 lack extractall's filter=)

def tar_bytes(*members: tuple[str, str, str]) -> bytes:
    """A tar of (kind, name, file content or link target) members; kind is "file", "dir", "symlink" or "hardlink"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value.encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            info.linkname = value
            archive.addfile(info)
    return buffer.getvalue()


@pytest.fixture(params=["data filter", "checked by hand"])
def extraction(request, monkeypatch):
    """Both ways extract_tar works: with tarfile's data filter, and as on a Python without one."""
    if request.param == "checked by hand":
        # As on Python 3.11.0-3.11.3: no data_filter, and extractall takes no filter= argument.
        extractall = tarfile.TarFile.extractall

        def extractall_without_filter(self, path=".", members=None, *, numeric_owner=False, **unexpected):
            if unexpected:
                raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(unexpected))!r}")
            return extractall(self, path, members, numeric_owner=numeric_owner)

        monkeypatch.delattr(tarfile, "data_filter")
        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_without_filter)
    return request.param


def test_extract_tar_unpacks_a_model_archive(extraction, tmp_path):
    archive = tar_bytes(("dir", "code", ""), ("file", "code/inference.py", "x = 1\n"),
                        ("symlink", "code/alias.py", "inference.py"), ("file", "model.pth", "weights"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        extract_tar(tar, tmp_path / "model")
    assert (tmp_path / "model" / "code" / "alias.py").read_text() == "x = 1\n"
    assert (tmp_path / "model" / "model.pth").read_text() == "weights"


@pytest.mark.parametrize("member", [
    ("file", "{absolute}", "x"),
    ("file", "../escape", "x"),
    ("file", "code/../../escape", "x"),
    ("symlink", "link", "../escape"),
    ("symlink", "link", "/etc/passwd"),
    ("hardlink", "link", "../escape"),
], ids=["absolute", "dotdot", "nested-dotdot", "symlink-outside", "symlink-absolute", "hardlink-outside"])
def test_extract_tar_refuses_members_that_escape(extraction, tmp_path, member):
    kind, name, value = member
    name = name.format(absolute=str(tmp_path / "escape"))
    destination = tmp_path / "model"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(("file", "model.pth", "w"), (kind, name, value)))) as tar:
        try:
            extract_tar(tar, destination)
            refused = False
        except tarfile.TarError:
            refused = True
    # The data filter may instead strip the leading "/" and write the member inside the destination.
    assert refused or (extraction == "data filter" and name.startswith("/"))
    assert not (tmp_path / "escape").exists()
    assert not os.path.lexists(destination / "link")


def test_unpack_model_names_an_unsafe_archive(extraction, tmp_path):
    from scones.harness.serving.handlers import unpack_model

    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(tar_bytes(("file", "../escape", "x")))
    with pytest.raises(ValueError, match="model.tar.gz"):
        unpack_model(archive, tmp_path / "model")
    assert not (tmp_path / "escape").exists()


def test_the_calibrated_temperature_travels_in_the_checkpoint_and_old_checkpoints_serve_at_1(served, tmp_path):
    import torch

    inference, model = served
    body = encode(photo((32, 32)), "PNG")
    checkpoint_dir = tmp_path / "model"
    checkpoint_dir.mkdir()
    state = {"format": 1, "state_dict": model.state_dict(), "architecture": {"name": "resnet", "widths": [8, 16],
             "blocks": [1, 1]}, "classes": ["bicycle", "motorcycle"], "flip_tta": True, "image_size": 32}

    torch.save(state, checkpoint_dir / inference.WEIGHTS_FILE)  # as train.py wrote it before calibration existed
    old = inference.model_fn(str(checkpoint_dir))
    torch.save({**state, "temperature": 0.25}, checkpoint_dir / inference.WEIGHTS_FILE)
    sharpened = inference.model_fn(str(checkpoint_dir))

    assert old.scones_temperature == 1.0 and sharpened.scones_temperature == 0.25
    logits = old(inference.input_fn(body, "image/png")).detach()
    mirrored = old(torch.flip(inference.input_fn(body, "image/png"), dims=[3])).detach()
    at_1 = (torch.softmax(logits, 1) + torch.softmax(mirrored, 1)) / 2
    at_quarter = (torch.softmax(logits / 0.25, 1) + torch.softmax(mirrored / 0.25, 1)) / 2
    assert invoke((inference, old), body) == pytest.approx(at_1[0].tolist(), abs=1e-5)
    assert invoke((inference, sharpened), body) == pytest.approx(at_quarter[0].tolist(), abs=1e-5)


# --- issue 26: decoding bounded by what the model needs ------------------------------------------------

def full_size_decode(inference, data: bytes) -> np.ndarray:
    """What decode_image gave before issue 26: the whole image decoded, then fitted to 32x32."""
    from scones.local_model import network

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return network.image_to_array(inference.to_8bit(image))


def scene(size=(1600, 1200)) -> Image.Image:
    """A photo-like RGB image: smooth shapes with detail at several scales."""
    rng = np.random.default_rng(5)
    coarse = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    return Image.blend(coarse, fine, 0.3)


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return image.convert(mode)


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"),
                                       ("1", "PNG"), ("I;16", "PNG"), ("RGB", "JPEG"), ("CMYK", "JPEG"),
                                       ("RGB", "WEBP"), ("RGB", "TIFF")])
def test_a_big_image_is_decoded_reduced_to_what_the_model_sees(served, mode, fmt):
    """Shorter side >= 2 x REDUCED_SIDE: JPEG's draft scale or a band-by-band box reduction, then the same fit;
    the 32x32 pixels differ from a full-size decode's by about one grey level in 255 on average."""
    inference, _ = served
    data = encode(as_mode(scene(), mode), fmt)
    reduced, whole = inference.decode_image(data).astype(int), full_size_decode(inference, data).astype(int)
    assert reduced.shape == whole.shape == (32, 32, 3)
    assert np.abs(reduced - whole).mean() < 2.0, (mode, fmt, np.abs(reduced - whole).mean())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_a_big_image_keeps_its_exif_rotation(served, fmt):
    """A phone photo stores its rotation in EXIF (orientation 6: turn 90 degrees clockwise); the reduced decode
    must turn it as network.image_to_array does at full size, or the model would see it on its side."""
    inference, _ = served
    exif = Image.Exif()
    exif[0x0112] = 6
    image = scene((2400, 1600))   # a JPEG too is then reduced after its draft decode
    data = encode(image, fmt, exif=exif.tobytes())
    reduced, whole = inference.decode_image(data).astype(int), full_size_decode(inference, data).astype(int)
    assert np.abs(reduced - whole).mean() < 2.0
    unrotated = full_size_decode(inference, encode(image, fmt)).astype(int)
    assert np.abs(reduced - unrotated).mean() > 10   # the rotation is really applied


@pytest.mark.parametrize("size, mode, fmt", [((32, 32), "RGB", "PNG"), ((32, 32), "RGBA", "PNG"),
                                             ((511, 400), "RGB", "PNG"), ((640, 480), "RGB", "JPEG"),
                                             ((500, 300), "P", "PNG")])
def test_images_under_twice_the_reduced_side_decode_exactly_as_before(served, size, mode, fmt):
    """The 32x32 training images and photos with a shorter side under 2 x REDUCED_SIDE (512) are decoded whole,
    as before issue 26, so their predictions do not change."""
    inference, _ = served
    data = encode(as_mode(scene(size), mode), fmt)
    assert np.array_equal(inference.decode_image(data), full_size_decode(inference, data))
