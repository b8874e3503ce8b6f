"""Data staging: a tiny archive in the real CIFAR-100 pickle format, a staged folder, and the failures."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from scones.harness import staging
from scones.harness.cli import main
from scones.harness.staging import StagingError, list_images, stage_from_archive, stage_from_dir
from scones.settings import data_dir


def count_images(root: Path) -> dict[str, dict[str, int]]:
    return {split: {name: len(paths) for name, paths in per_class.items()}
            for split, per_class in list_images(root).items()}


FINE_NAMES = [f"class{index}".encode() for index in range(100)]
FINE_NAMES[8], FINE_NAMES[48] = b"bicycle", b"motorcycle"


def batch(labels: list[int], prefix: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"filenames": [f"{prefix}_s_{index:06d}.png".encode() for index in range(len(labels))],
        b"batch_label": prefix.encode(),
        b"fine_labels": labels,
        b"coarse_labels": [0] * len(labels),
        b"data": rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8),
    }


TRAIN_LABELS = [3, 8, 48, 8, 99, 48, 48, 0]
TEST_LABELS = [48, 1, 8]


def make_archive(path: Path) -> dict[str, dict]:
    """cifar-100-python/{meta,train,test} pickled the way the official archive is read back."""
    batches = {
        "meta": {b"fine_label_names": FINE_NAMES, b"coarse_label_names": [b"c"] * 20},
        "train": batch(TRAIN_LABELS, "train", seed=1),
        "test": batch(TEST_LABELS, "test", seed=2),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, content in batches.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return batches


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    batches = make_archive(path)
    return path, batches


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


def test_stages_a_tiny_cifar100_archive(archive, tmp_path):
    path, batches = archive
    out = tmp_path / "staged"

    result = stage_from_archive(path, out, md5=md5_of(path), progress=False)

    assert result.counts == {"train": {"bicycle": 2, "motorcycle": 3}, "test": {"bicycle": 1, "motorcycle": 1}}
    assert count_images(out) == result.counts
    assert (out / "train.lst").read_text() == (
        "1\t0\ttrain_s_000001.png\n2\t1\ttrain_s_000002.png\n3\t0\ttrain_s_000003.png\n"
        "5\t1\ttrain_s_000005.png\n6\t1\ttrain_s_000006.png\n"
    )
    assert (out / "test.lst").read_text() == "0\t1\ttest_s_000000.png\n2\t0\ttest_s_000002.png\n"
    # Pixels: the row is the R plane, then G, then B, each 32x32 row-major.
    row = batches["train"][b"data"][5]
    with Image.open(out / "train" / "motorcycle" / "train_s_000005.png") as image:
        assert image.mode == "RGB" and image.size == (32, 32)
        pixels = np.asarray(image)
    assert pixels[0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert pixels[0, 1].tolist() == [row[1], row[1025], row[2049]]
    assert pixels[1, 0].tolist() == [row[32], row[1056], row[2080]]
    assert leftovers(tmp_path) == []


def test_wrong_md5_leaves_nothing(archive, tmp_path):
    path, _ = archive
    out = tmp_path / "staged"
    with pytest.raises(StagingError, match=f"archive {path} has MD5 {md5_of(path)}, expected 0{{32}}"):
        stage_from_archive(path, out, md5="0" * 32, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_the_official_md5_is_checked_by_default(archive, tmp_path):
    path, _ = archive
    with pytest.raises(StagingError, match=staging.CIFAR100_MD5):
        stage_from_archive(path, tmp_path / "staged", progress=False)


def test_truncated_archive_leaves_nothing(archive, tmp_path):
    path, _ = archive
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "staged"
    with pytest.raises(StagingError, match="is truncated or corrupt"):
        stage_from_archive(truncated, out, md5=None, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_previous_staging(archive, tmp_path, monkeypatch):
    path, _ = archive
    out = tmp_path / "staged"
    stage_from_archive(path, out, md5=None, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        stage_from_archive(path, out, md5=None, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert leftovers(tmp_path) == []


def test_archive_without_the_cifar_batches_is_named(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(StagingError, match=r"lacks \['meta', 'test', 'train'\]"):
        stage_from_archive(path, tmp_path / "staged", md5=None, progress=False)


def test_download_is_cached_and_md5_checked(archive, tmp_path):
    path, _ = archive
    cache = tmp_path / "cache"
    url = path.as_uri()  # file:// exercises the same download code as https://

    stage_from_archive(url, tmp_path / "first", md5=md5_of(path), cache_dir=cache, progress=False)
    assert (cache / path.name).read_bytes() == path.read_bytes()

    expected = md5_of(path)
    path.unlink()  # the second run must not need the source
    result = stage_from_archive(url, tmp_path / "second", md5=expected, cache_dir=cache, progress=False)
    assert result.total == 7

    with pytest.raises(StagingError, match=f"could not download {url}"):
        stage_from_archive(url, tmp_path / "third", md5="0" * 32, cache_dir=cache, progress=False)
    assert not (tmp_path / "third").exists()
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_bad_download_md5_keeps_nothing_in_the_cache(archive, tmp_path):
    path, _ = archive
    cache = tmp_path / "cache"
    with pytest.raises(StagingError, match="has MD5"):
        stage_from_archive(path.as_uri(), tmp_path / "staged", md5="0" * 32, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# From a folder


def make_folder(root: Path, per_class: int = 2) -> Path:
    for split in staging.SPLITS:
        for label, name in enumerate(staging.CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.new("RGBA", (32, 32), (label * 200, index, 0, 255)).save(folder / f"{name}_{index}.png")
    return root


def test_stages_the_shared_data_and_finds_every_image(tmp_path):
    source = data_dir()
    if not (source / "train").is_dir():
        pytest.skip(f"the shared data is not at {source}")
    result = stage_from_dir(source, tmp_path / "staged", progress=False)
    expected = {"train": {"bicycle": 500, "motorcycle": 500}, "test": {"bicycle": 100, "motorcycle": 100}}
    assert result.counts == expected
    assert count_images(tmp_path / "staged") == expected
    assert (tmp_path / "staged" / "train.lst").read_text() == (source / "train.lst").read_text()
    some = next((tmp_path / "staged" / "test" / "motorcycle").iterdir())
    assert some.read_bytes() == (source / "test" / "motorcycle" / some.name).read_bytes()


def test_folder_with_a_broken_image_is_refused_by_name(tmp_path):
    source = make_folder(tmp_path / "source")
    (source / "test" / "motorcycle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "staged"
    with pytest.raises(StagingError, match=r"1 file\(s\) under .* do not decode as images:\n  test/motorcycle/broken.png"):
        stage_from_dir(source, out, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_folder_missing_a_class_is_refused(tmp_path):
    source = make_folder(tmp_path / "source")
    for path in (source / "train" / "bicycle").iterdir():
        path.unlink()
    (source / "train" / "bicycle").rmdir()
    with pytest.raises(StagingError, match=r"train/bicycle is missing"):
        stage_from_dir(source, tmp_path / "staged", progress=False)


def test_checksums_are_verified_when_present(tmp_path):
    source = make_folder(tmp_path / "source")
    (source / "SHA256SUMS").write_text(f"{'0' * 64}  train/bicycle/bicycle_0.png\n")
    with pytest.raises(StagingError, match="do not match its SHA256SUMS"):
        stage_from_dir(source, tmp_path / "staged", progress=False)


def test_links_and_writes_missing_lists(tmp_path):
    source = make_folder(tmp_path / "source")
    out = tmp_path / "staged"
    stage_from_dir(source, out, link=True, progress=False)
    linked = out / "test" / "bicycle" / "bicycle_0.png"
    assert linked.is_symlink() and linked.resolve() == (source / "test" / "bicycle" / "bicycle_0.png").resolve()
    assert (out / "test.lst").read_text() == (
        "0\t0\tbicycle_0.png\n1\t0\tbicycle_1.png\n2\t1\tmotorcycle_0.png\n3\t1\tmotorcycle_1.png\n"
    )


def test_restaging_replaces_only_a_staged_folder(tmp_path):
    source = make_folder(tmp_path / "source")
    out = tmp_path / "staged"
    stage_from_dir(source, out, progress=False)
    (out / "train" / "bicycle" / "stale.png").write_bytes(b"old")
    stage_from_dir(source, out, progress=False)
    assert not (out / "train" / "bicycle" / "stale.png").exists()

    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(StagingError, match="was not written by `scones stage`"):
        stage_from_dir(source, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"

    with pytest.raises(StagingError, match="must not be the source folder"):
        stage_from_dir(source, source / "inside", progress=False)


# ---------------------------------------------------------------------------------------------
# The command


def test_scones_stage_from_dir(tmp_path):
    source = make_folder(tmp_path / "source", per_class=1)
    result = CliRunner().invoke(main, ["stage", "--from-dir", str(source), "--out", str(tmp_path / "staged"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "staged 4 images" in result.output and "test/motorcycle 1" in result.output


def test_scones_stage_from_archive_reports_a_bad_md5(archive, tmp_path):
    path, _ = archive
    runner = CliRunner()
    result = runner.invoke(main, ["stage", "--from-archive", str(path), "--out", str(tmp_path / "a"), "--quiet"])
    assert result.exit_code == 1 and "has MD5" in result.output
    result = runner.invoke(main, ["stage", "--from-archive", str(path), "--skip-md5", "--out", str(tmp_path / "a"), "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args", [[], ["--from-dir", ".", "--from-archive", "x.tar.gz"], ["--from-dir", ".", "--md5", "ab"]])
def test_scones_stage_needs_exactly_one_source(args, tmp_path):
    result = CliRunner().invoke(main, ["stage", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
