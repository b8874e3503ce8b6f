"""Stage the bicycle/motorcycle images into <out>/{train,test}/{bicycle,motorcycle}/.

Two sources:
- the official CIFAR-100 python archive (a URL, downloaded once into a cache with a progress
  bar, or a local path), MD5-checked, unpickled with encoding="bytes"; fine labels 8
  (bicycle) and 48 (motorcycle) become RGB PNGs, plus the original project's train.lst /
  test.lst ("<cifar row>\t<label 0|1>\t<file name>", rows ascending);
- a folder already in that layout (such as ../shared/data): every image must decode, and
  the files are copied (or symlinked) as they are.

Staging is atomic: everything is written into a temporary folder beside <out> and renamed
into place at the end, so a failure (a truncated archive, a wrong MD5, an image that does
not decode) leaves no half-written output. <out> is replaced only when it is empty or was
written by an earlier staging (it holds STAGED.json).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import numpy as np
from PIL import Image
from tqdm import tqdm

from scones.contract import CLASSES
from scones.errors import SconesError
from scones.settings import state_dir

CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
# CIFAR-100's fine label numbers of our classes, in CLASSES order (bicycle 8, motorcycle 48, from the
# archive's meta fine_label_names); our label index is the class's position in CLASSES.
FINE_LABELS = dict(zip((8, 48), CLASSES))
SPLITS = ("train", "test")
MARKER = "STAGED.json"
# Small files that travel with a staged folder when the source has them.
SIDE_FILES = ("train.lst", "test.lst", "SHA256SUMS", "PROVENANCE.md")
_IMAGE_SIDE = 32
_ROW_BYTES = 3 * _IMAGE_SIDE * _IMAGE_SIDE


class StagingError(SconesError):
    """The source cannot be staged; the message names the file and the problem."""


@dataclass
class StageResult:
    out: Path
    source: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images

    @property
    def total(self) -> int:
        return sum(n for per_class in self.counts.values() for n in per_class.values())

    def summary(self) -> str:
        parts = [f"{split}/{name} {self.counts[split][name]}" for split in SPLITS for name in CLASSES]
        return f"staged {self.total} images into {self.out}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# From the CIFAR-100 python archive


def is_url(source: str | os.PathLike) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "file")


def stage_from_archive(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    md5: str | None = CIFAR100_MD5,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> StageResult:
    """Stage from the CIFAR-100 python archive at a URL or a local path.

    md5 is the archive's expected MD5 (default: the official archive's); None skips the check.
    A URL is downloaded into cache_dir (default <state dir>/downloads) and reused next time.
    """
    if is_url(source):
        archive = fetch(str(source), cache_dir=cache_dir, md5=md5, progress=progress)
    else:
        archive = Path(source)
        if not archive.is_file():
            raise StagingError(f"archive not found: {archive}")
        if md5:
            _check_md5(archive, md5)
    batches = read_cifar_archive(archive)
    out = Path(out)
    with _atomic_output(out, source=str(source)) as (tmp, result):
        for split in SPLITS:
            result.counts[split] = _write_split(tmp, split, batches[split], progress=progress)
    return result


def fetch(url: str, *, cache_dir: str | os.PathLike | None = None, md5: str | None = None,
          progress: bool = True) -> Path:
    """Download url into the cache once (MD5-checked when md5 is given) and return its path."""

    if cache_dir is None:
        cache_dir = state_dir() / "downloads"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    target = cache_dir / name
    if target.is_file() and (not md5 or _md5(target) == md5.lower()):
        return target

    partial = cache_dir / f".{name}.{os.getpid()}.part"
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as sink:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}",
                      disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    sink.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if total is not None and partial.stat().st_size != total:
            raise StagingError(f"download of {url} is truncated: {partial.stat().st_size} of {total} bytes")
        if md5 and digest.hexdigest() != md5.lower():
            raise StagingError(f"download of {url} has MD5 {digest.hexdigest()}, expected {md5.lower()}")
        partial.replace(target)
    except OSError as exc:
        raise StagingError(f"could not download {url}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def read_cifar_archive(archive: Path) -> dict[str, dict]:
    """{"meta", "train", "test"} unpickled from the archive (keys are bytes, as in the original)."""
    wanted = {"meta", "train", "test"}
    batches: dict[str, dict] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    data = cast(IO[bytes], tar.extractfile(member)).read()  # None only for a member that is no file
                    batches[name] = pickle.loads(data, encoding="bytes")
    except (tarfile.TarError, EOFError, zlib.error, OSError, pickle.UnpicklingError, ValueError) as exc:
        raise StagingError(f"archive {archive} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    missing = sorted(wanted - set(batches))
    if missing:
        raise StagingError(
            f"archive {archive} lacks {missing}: expected the CIFAR-100 python archive "
            "(cifar-100-python/meta, train, test)"
        )
    names = batches["meta"].get(b"fine_label_names")
    if names is not None:
        for label, class_name in FINE_LABELS.items():
            found = names[label].decode() if label < len(names) else None
            if found != class_name:
                raise StagingError(f"archive {archive}: fine label {label} is {found!r}, expected {class_name!r}")
    return batches


def _write_split(tmp: Path, split: str, batch: dict, *, progress: bool) -> dict[str, int]:

    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = list(batch[b"fine_labels"])
        filenames = [name.decode() if isinstance(name, bytes) else str(name) for name in batch[b"filenames"]]
    except KeyError as exc:
        raise StagingError(f"the {split} batch has no {exc.args[0]!r} entry") from None
    if data.ndim != 2 or data.shape[1] != _ROW_BYTES or not len(data) == len(labels) == len(filenames):
        raise StagingError(
            f"the {split} batch is malformed: data {data.shape}, {len(labels)} labels, {len(filenames)} file names "
            f"(expected N x {_ROW_BYTES} bytes and N of each)"
        )
    rows = [row for row, label in enumerate(labels) if label in FINE_LABELS]
    counts = {name: 0 for name in CLASSES}
    lines = []
    for name in CLASSES:
        (tmp / split / name).mkdir(parents=True, exist_ok=True)
    for row in tqdm(rows, desc=f"writing {split} images", unit="img", disable=not progress):
        class_name = FINE_LABELS[labels[row]]
        # A row is the R, G and B planes of 32x32 pixels, one after the other.
        pixels = data[row].reshape(3, _IMAGE_SIDE, _IMAGE_SIDE).transpose(1, 2, 0)
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp / split / class_name / filenames[row], format="PNG")
        counts[class_name] += 1
        lines.append(f"{row}\t{CLASSES.index(class_name)}\t{filenames[row]}\n")
    (tmp / f"{split}.lst").write_text("".join(lines), encoding="utf-8")
    return counts


# ---------------------------------------------------------------------------------------------
# From a folder in the staged layout


def stage_from_dir(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    link: bool = False,
    progress: bool = True,
) -> StageResult:
    """Stage from a folder already in the {train,test}/{bicycle,motorcycle}/ layout.

    Every image must decode; SHA256SUMS, when present, must match. Files are copied as they
    are (link=True makes symlinks instead); a missing .lst is written with running indices.
    """

    source = Path(source).resolve()
    out = Path(out)
    if not source.is_dir():
        raise StagingError(f"source folder not found: {source}")
    if out.resolve() == source or source in out.resolve().parents:
        raise StagingError(f"--out {out} must not be the source folder {source} or inside it")
    files = list_images(source)
    _verify_images(files, source, progress=progress)
    _verify_checksums(source)

    with _atomic_output(out, source=str(source)) as (tmp, result):
        for split in SPLITS:
            result.counts[split] = {}
            for class_name in CLASSES:
                paths = files[split][class_name]
                result.counts[split][class_name] = len(paths)
                (tmp / split / class_name).mkdir(parents=True)
            for class_name in CLASSES:
                for path in tqdm(files[split][class_name], desc=f"{'linking' if link else 'copying'} {split}/{class_name}",
                                 unit="img", disable=not progress):
                    target = tmp / split / class_name / path.name
                    if link:
                        target.symlink_to(path)
                    else:
                        shutil.copyfile(path, target)
        for name in SIDE_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        for split in SPLITS:
            if not (tmp / f"{split}.lst").is_file():
                lines = [
                    f"{index}\t{label}\t{path.name}\n"
                    for index, (label, path) in enumerate(
                        (label, path) for label, name in enumerate(CLASSES) for path in files[split][name]
                    )
                ]
                (tmp / f"{split}.lst").write_text("".join(lines), encoding="utf-8")
    return result


def list_images(root: str | os.PathLike) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [image paths, sorted]}} of a staged folder; hidden files are skipped."""
    root = Path(root)
    layout: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        layout[split] = {}
        for class_name in CLASSES:
            folder = root / split / class_name
            if not folder.is_dir():
                raise StagingError(
                    f"{root} is not in the staged layout: {folder} is missing "
                    f"(expected {{{','.join(SPLITS)}}}/{{{','.join(CLASSES)}}}/)"
                )
            images = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            if not images:
                raise StagingError(f"{folder} holds no images")
            layout[split][class_name] = images
    return layout


def _verify_images(files: dict[str, dict[str, list[Path]]], root: Path, *, progress: bool) -> None:

    every = [path for per_class in files.values() for paths in per_class.values() for path in paths]
    bad = []
    for path in tqdm(every, desc="checking images decode", unit="img", disable=not progress):
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # pillow raises many types for a bad file; all mean "does not decode"
            bad.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise StagingError(f"{len(bad)} file(s) under {root} do not decode as images:\n  {shown}")


def _verify_checksums(root: Path) -> None:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return
    wrong = []
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        path = root / name.strip()
        if not path.is_file():
            wrong.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected.strip():
            wrong.append(f"{name}: SHA-256 differs")
    if wrong:
        raise StagingError(f"{len(wrong)} file(s) under {root} do not match its SHA256SUMS: {wrong[:10]}")


# ---------------------------------------------------------------------------------------------
# Atomic output


@contextmanager
def _atomic_output(out: Path, *, source: str) -> Iterator[tuple[Path, StageResult]]:
    out = out.absolute()
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    result = StageResult(out=out, source=source)
    try:
        yield tmp, result
        (tmp / MARKER).write_text(json.dumps({"source": source, "counts": result.counts}, indent=2) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StagingError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise StagingError(
            f"--out {out} exists, is not empty and was not written by `scones stage` (no {MARKER}); "
            "choose another folder or empty it"
        )


def _replace(new: Path, out: Path) -> None:
    _check_replaceable(out)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str) -> None:
    actual = _md5(path)
    if actual != expected.lower():
        raise StagingError(f"archive {path} has MD5 {actual}, expected {expected.lower()} (truncated or not the right file)")
