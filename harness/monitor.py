"""Read SageMaker data capture, plot what the endpoint answered, and check it for drift.

A capture source is an S3 prefix (`s3://bucket/data_capture/ENDPOINT/`) or a local folder.
Every `.jsonl` file below it is read, every line of it (SageMaker appends many records to
one file, and nests files under VARIANT/YYYY/MM/DD/HH/). A line that is not a valid record
is reported with its file and line number; the rest are still read.

The drift check compares the captured answers with the baseline that training writes from
the test set (baseline.json): the balance of predicted classes (chi-square test of the 2 x k
table of counts, i.e. a two-proportion test for two classes) and the distribution of the
maximum confidence (two-sample Kolmogorov-Smirnov test). Each fails when its p-value falls
below `alpha`. Parsing (lambdas/capture_records.py) and the tests (lambdas/drift.py) are the
scheduled monitor function's own code, so both runs give the same answer.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

import boto3

from scones import contract
from scones.errors import SconesError
from scones.lambdas.capture_records import CaptureProblem, CaptureRecord, parse_lines
from scones.lambdas.drift import DEFAULT_ALPHA, check_drift, checked_baseline, class_counts

DEFAULT_CLASSES = contract.CLASSES
DEFAULT_THRESHOLD = contract.THRESHOLD

CAPTURE_SUFFIXES = (".jsonl",)
S3_READERS = 8                # parallel GetObject calls when reading capture from S3
CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


class CaptureSourceError(SconesError, RuntimeError):
    """The capture source cannot be read at all (bad URI, missing folder, no access)."""


@dataclass
class CaptureSet:
    source: str
    records: list[CaptureRecord] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------

def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CaptureSourceError(f"capture folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise CaptureSourceError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_keys(s3, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(CAPTURE_SUFFIXES):
                yield item["Key"]


def read_capture(source: str | os.PathLike, session=None,
                 progress: Callable[[str], None] | None = None) -> CaptureSet:
    """Every record of every capture file under `source` (s3://bucket/prefix or a folder)."""
    source_text = str(source)
    result = CaptureSet(source=source_text)
    if source_text.startswith("s3://"):
        bucket, prefix = split_s3_uri(source_text)
        if session is None:
            session = boto3.Session()
        s3 = session.client("s3")
        try:
            keys = sorted(_s3_keys(s3, bucket, prefix))
        except s3.exceptions.NoSuchBucket:
            raise CaptureSourceError(f"bucket {bucket!r} of {source_text} does not exist") from None

        def fetch(key: str) -> str:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")

        # many small files: fetch them in parallel, parse them in key order
        with ThreadPoolExecutor(max_workers=S3_READERS, thread_name_prefix="capture-read") as pool:
            for key, body in zip(keys, pool.map(fetch, keys)):
                uri = f"s3://{bucket}/{key}"
                parse_lines(body.splitlines(), uri, result.records, result.problems)
                result.files.append(uri)
                if progress:
                    progress(uri)
    else:
        for path in _local_files(Path(source_text)):
            with path.open(encoding="utf-8", errors="replace") as handle:
                parse_lines(handle, str(path), result.records, result.problems)
            result.files.append(str(path))
            if progress:
                progress(str(path))
    result.records.sort(key=lambda record: (record.inference_time, record.file, record.line))
    return result


def records_since(records: list[CaptureRecord], since: datetime) -> list[CaptureRecord]:
    since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    since = since.replace(microsecond=0)  # capture times are whole seconds
    return [record for record in records if record.inference_time >= since]


# --- baseline and drift ------------------------------------------------------------------

def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        baseline = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"baseline {path} does not exist (training writes it: `scones train`)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"baseline {path} is not valid JSON ({error})") from None
    return checked_baseline(baseline, str(path))


def find_default_baseline(state_dir: Path) -> Path | None:
    """The newest baseline.json that training left under the state folder, if any."""
    candidates = [p for p in (state_dir / "models").rglob("baseline.json")] if (state_dir / "models").is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# --- summary -----------------------------------------------------------------------------

def summarize(capture: CaptureSet, threshold: float, classes: Iterable[str],
              drift: dict[str, Any]) -> dict[str, Any]:
    records = capture.records
    below = sum(1 for record in records if record.max_confidence < threshold)
    return {
        "source": capture.source,
        "files": len(capture.files),
        "records": len(records),
        "malformed_lines": len(capture.problems),
        "problems": [str(problem) for problem in capture.problems],
        "time_range": {
            "first": records[0].inference_time.isoformat() if records else None,
            "last": records[-1].inference_time.isoformat() if records else None,
        },
        "class_counts": class_counts(records, classes),
        "threshold": threshold,
        "below_threshold": below,
        "share_below_threshold": below / len(records) if records else None,
        "drift": drift,
    }


def drift_caption(drift: dict[str, Any]) -> str:
    if drift["status"] == "skipped":
        return f"drift check skipped: {drift['reason']}"
    parts = []
    for name, test in drift["tests"].items():
        label = "class balance (chi-square)" if name == "class_balance" else "confidence (KS)"
        parts.append(f"{label}: p={test['p_value']:.3g} {'pass' if test['passed'] else 'FAIL'}")
    return f"drift {drift['status'].upper()} (alpha={drift['alpha']}): " + "; ".join(parts)


# --- plots -------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confidence_over_time(records: list[CaptureRecord], threshold: float, classes: list[str],
                              drift: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    for index, name in enumerate(classes):
        mine = [r for r in records if r.predicted_index == index]
        above = [r for r in mine if r.max_confidence >= threshold]
        below = [r for r in mine if r.max_confidence < threshold]
        colour = CLASS_COLOURS[index % len(CLASS_COLOURS)]
        axes.scatter([r.inference_time for r in above], [r.max_confidence for r in above],
                     s=18, color=colour, label=f"{name} ({len(mine)})", zorder=3)
        axes.scatter([r.inference_time for r in below], [r.max_confidence for r in below],
                     s=40, marker="x", color=colour, zorder=3,
                     label=f"{name} below threshold ({len(below)})")
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {threshold}")
    axes.set_ylim(min([0.45] + [r.max_confidence - 0.02 for r in records]), 1.02)
    axes.set_xlabel("inference time (UTC)")
    axes.set_ylabel("max class probability")
    axes.set_title(f"Captured inferences: {len(records)} records")
    axes.legend(loc="lower left", fontsize=8, ncol=2)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    _caption(figure, drift)
    return _save(figure, path)


def plot_confidence_histogram(records: list[CaptureRecord], threshold: float, baseline: dict[str, Any] | None,
                              drift: dict[str, Any], path: Path) -> Path:
    import numpy as np
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    lowest = min([0.5] + [r.max_confidence for r in records] + list((baseline or {}).get("max_confidence", [])))
    bins = np.linspace(lowest, 1.0, 26)
    axes.hist([r.max_confidence for r in records], bins=bins, alpha=0.65, color="tab:blue",
              label=f"capture ({len(records)})", weights=_weights(len(records)))
    if baseline is not None:
        reference = baseline["max_confidence"]
        axes.hist(reference, bins=bins, histtype="step", linewidth=1.8, color="black",
                  label=f"baseline test set ({len(reference)})", weights=_weights(len(reference)))
    axes.axvline(threshold, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {threshold}")
    axes.set_xlabel("max class probability")
    axes.set_ylabel("share of records")
    axes.set_title("Confidence histogram")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    _caption(figure, drift)
    return _save(figure, path)


def _weights(n: int):
    return None if n == 0 else [1.0 / n] * n


def _caption(figure, drift: dict[str, Any]) -> None:
    colour = {"pass": "#d8f0d8", "fail": "#f8d0d0"}.get(drift["status"], "#eeeeee")
    figure.text(0.5, 0.01, drift_caption(drift), ha="center", va="bottom", fontsize=8.5,
                bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "#888888"})
    figure.subplots_adjust(bottom=0.25)


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    _pyplot().close(figure)
    return path


# --- the whole run -----------------------------------------------------------------------

PLOT_FILES = {"confidence_over_time": "confidence_over_time.png", "confidence_histogram": "confidence_histogram.png"}
SUMMARY_FILE = "monitor.json"


def monitor(source: str | os.PathLike, out_dir: str | os.PathLike, baseline_path: str | os.PathLike | None = None,
            threshold: float | None = None, alpha: float = DEFAULT_ALPHA, session=None,
            progress: Callable[[str], None] | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Read the capture, check drift, write monitor.json and the two plots to `out_dir`; return the summary.

    `since` keeps only records inferred at or after that time (capture times have whole seconds).
    """
    baseline = load_baseline(baseline_path) if baseline_path else None
    classes = list(baseline["classes"]) if baseline else list(DEFAULT_CLASSES)
    if threshold is None:
        threshold = float(baseline.get("threshold", DEFAULT_THRESHOLD)) if baseline else DEFAULT_THRESHOLD
    capture = read_capture(source, session=session, progress=progress)
    if since is not None:
        capture.records = records_since(capture.records, since)
    drift = check_drift(capture.records, baseline, alpha=alpha)
    summary = summarize(capture, threshold, classes, drift)
    summary["baseline"] = str(baseline_path) if baseline_path else None
    summary["since"] = since.isoformat() if since else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary["plots"] = {
        "confidence_over_time": str(plot_confidence_over_time(
            capture.records, threshold, classes, drift, out / PLOT_FILES["confidence_over_time"])),
        "confidence_histogram": str(plot_confidence_histogram(
            capture.records, threshold, baseline, drift, out / PLOT_FILES["confidence_histogram"])),
    }
    summary["records_table"] = [
        {"time": r.inference_time.isoformat(), "predicted_class": classes[r.predicted_index]
         if r.predicted_index < len(classes) else str(r.predicted_index),
         "confidence": r.max_confidence, "event_id": r.event_id, "file": r.file, "line": r.line}
        for r in capture.records
    ]
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What `--json` prints: everything but the per-record table."""
    return {key: value for key, value in summary.items() if key != "records_table"}

