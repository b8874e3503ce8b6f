"""The serving handlers (code/inference.py of model.tar.gz), loaded as the SageMaker container loads them."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from harness import models
from local_model.serving_handlers import extract_tar


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(inference module, loaded model) from a freshly trained tiny model.tar.gz."""
    root = tmp_path_factory.mktemp("served")
    data = models.write_synthetic_dataset(root / "data")
    out = models.train_model(data, root / "out", models.TINY_HYPERPARAMETERS, echo=False)
    with tarfile.open(out / "model.tar.gz") as archive:
        extract_tar(archive, root / "model")
    inference = models.load_serving_handlers(root / "model")
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


def test_model_fn_names_a_folder_that_is_not_a_model(served, tmp_path):
    inference, _ = served
    with pytest.raises(FileNotFoundError, match="no model.pth in model directory"):
        inference.model_fn(str(tmp_path))


def test_the_packaged_handlers_are_the_package_handlers():
    """The in-package import path works too (train.py evaluation and in-process servers use it)."""
    from local_model import inference

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
    from local_model.serving_handlers import unpack_model

    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(tar_bytes(("file", "../escape", "x")))
    with pytest.raises(ValueError, match="model.tar.gz"):
        unpack_model(archive, tmp_path / "model")
    assert not (tmp_path / "escape").exists()
