"""Read SageMaker data capture, plot what the endpoint answered, and check it for drift.

A capture source is an S3 prefix (`s3://bucket/data_capture/ENDPOINT/`) or a local folder.
Every `.jsonl` file below it is read, every line of it (SageMaker appends many records to
one file, and nests files under VARIANT/YYYY/MM/DD/HH/). A line that is not a valid record
is reported with its file and line number; the rest are still read.

The drift check compares the captured answers with the baseline that training writes from
the test set (baseline.json): the balance of predicted classes (chi-square test of the 2 x k
table of counts, i.e. a two-proportion test for two classes) and the distribution of the
maximum confidence (two-sample Kolmogorov-Smirnov test). Each fails when its p-value falls
below `alpha`.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

from scones import contract

DEFAULT_CLASSES = contract.CLASSES
DEFAULT_THRESHOLD = contract.THRESHOLD
DEFAULT_ALPHA = 0.01          # a p-value below this fails the test
MIN_RECORDS_FOR_DRIFT = 20    # fewer answers than this say nothing about a distribution
CAPTURE_SUFFIXES = (".jsonl",)
S3_READERS = 8                # parallel GetObject calls when reading capture from S3
CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


class CaptureSourceError(RuntimeError):
    """The capture source cannot be read at all (bad URI, missing folder, no access)."""


@dataclass
class CaptureRecord:
    event_id: str
    inference_time: datetime
    probabilities: list[float]
    predicted_index: int
    max_confidence: float
    input_content_type: str | None
    input_bytes: int | None
    file: str
    line: int


@dataclass
class CaptureProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class CaptureSet:
    source: str
    records: list[CaptureRecord] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------

class MalformedRecord(ValueError):
    pass


def _decode(section: dict[str, Any], what: str) -> str:
    """The text of a captured input/output section, whatever its encoding."""
    if not isinstance(section, dict) or "data" not in section:
        raise MalformedRecord(f"{what} has no data")
    data = section["data"]
    encoding = str(section.get("encoding", "JSON")).upper()
    if not isinstance(data, str):
        raise MalformedRecord(f"{what}.data is {type(data).__name__}, not a string")
    if encoding == "BASE64":
        try:
            return base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise MalformedRecord(f"{what}.data is not base64 of UTF-8 text ({error})") from None
    return data


def parse_probabilities(section: dict[str, Any]) -> list[float]:
    text = _decode(section, "endpointOutput")
    encoding = str(section.get("encoding", "JSON")).upper()
    try:
        if encoding == "CSV":
            values: Any = [float(part) for part in text.replace("\n", ",").split(",") if part.strip()]
        else:
            values = json.loads(text)
    except ValueError as error:
        raise MalformedRecord(f"endpointOutput.data {text[:60]!r} is not a list of numbers ({error})") from None
    if isinstance(values, dict):  # tolerate {"predictions": [...]}-style bodies
        values = values.get("predictions", values.get("probabilities"))
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if (not isinstance(values, list) or len(values) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise MalformedRecord(f"endpointOutput.data {text[:60]!r} is not a list of class probabilities")
    return [float(v) for v in values]


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise MalformedRecord("eventMetadata.inferenceTime is missing")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRecord(f"eventMetadata.inferenceTime {value!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_record(text: str, file: str, line: int) -> CaptureRecord:
    """One capture line -> a record; raises MalformedRecord saying what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedRecord(f"not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(document, dict):
        raise MalformedRecord(f"a JSON {type(document).__name__}, not a capture record object")
    capture = document.get("captureData")
    if not isinstance(capture, dict):
        raise MalformedRecord("no captureData object")
    if "endpointOutput" not in capture:
        raise MalformedRecord("captureData has no endpointOutput")
    probabilities = parse_probabilities(capture["endpointOutput"])
    metadata = document.get("eventMetadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedRecord("eventMetadata is not an object")
    inference_time = parse_time(metadata.get("inferenceTime"))
    endpoint_input = capture.get("endpointInput")
    if not isinstance(endpoint_input, dict):
        endpoint_input = {}
    input_bytes = None
    if isinstance(endpoint_input.get("data"), str):
        data = endpoint_input["data"]
        input_bytes = len(data) * 3 // 4 if str(endpoint_input.get("encoding")).upper() == "BASE64" else len(data)
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return CaptureRecord(
        event_id=str(metadata.get("eventId", "")),
        inference_time=inference_time,
        probabilities=probabilities,
        predicted_index=best,
        max_confidence=probabilities[best],
        input_content_type=endpoint_input.get("observedContentType"),
        input_bytes=input_bytes,
        file=file,
        line=line,
    )


def parse_lines(lines: Iterable[str], file: str, into: CaptureSet) -> None:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            into.records.append(parse_record(text, file, number))
        except MalformedRecord as error:
            into.problems.append(CaptureProblem(file, number, str(error)))


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
            import boto3
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
                parse_lines(body.splitlines(), uri, result)
                result.files.append(uri)
                if progress:
                    progress(uri)
    else:
        for path in _local_files(Path(source_text)):
            with path.open(encoding="utf-8", errors="replace") as handle:
                parse_lines(handle, str(path), result)
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
    missing = [key for key in ("classes", "predicted_class_counts", "max_confidence") if key not in baseline]
    if missing:
        raise ValueError(f"baseline {path} lacks {', '.join(missing)}")
    return baseline


def find_default_baseline(state_dir: Path) -> Path | None:
    """The newest baseline.json that training left under the state folder, if any."""
    candidates = [p for p in (state_dir / "models").rglob("baseline.json")] if (state_dir / "models").is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def class_counts(records: list[CaptureRecord], classes: Iterable[str]) -> dict[str, int]:
    names = list(classes)
    counts = Counter(record.predicted_index for record in records)
    return {name: int(counts.get(index, 0)) for index, name in enumerate(names)}


def check_drift(records: list[CaptureRecord], baseline: dict[str, Any] | None,
                alpha: float = DEFAULT_ALPHA, min_records: int = MIN_RECORDS_FOR_DRIFT) -> dict[str, Any]:
    """Class balance and confidence distribution of `records` against the training baseline.

    status is "pass", "fail", or "skipped" (no baseline, or too few records to test).
    """
    if baseline is None:
        return {"status": "skipped", "reason": "no baseline.json given or found", "alpha": alpha, "tests": {}}
    if len(records) < min_records:
        return {"status": "skipped", "alpha": alpha, "tests": {}, "min_records": min_records,
                "reason": f"only {len(records)} captured records; the check needs at least {min_records}"}
    import numpy as np
    from scipy import stats

    classes = list(baseline["classes"])
    observed = class_counts(records, classes)
    expected = {name: int(baseline["predicted_class_counts"].get(name, 0)) for name in classes}
    table = np.array([[expected[n] for n in classes], [observed[n] for n in classes]])
    kept = table.sum(axis=0) > 0  # a class nobody predicted in either set adds no information
    if kept.sum() < 2:
        balance_statistic, balance_p = 0.0, 1.0
    else:
        balance_statistic, balance_p, _, _ = stats.chi2_contingency(table[:, kept], correction=True)
    balance = {
        "test": "chi-square test of predicted class counts, capture vs baseline (2 x k contingency table)",
        "statistic": float(balance_statistic),
        "p_value": float(balance_p),
        "baseline_share": {n: expected[n] / max(1, sum(expected.values())) for n in classes},
        "capture_share": {n: observed[n] / max(1, len(records)) for n in classes},
        "passed": bool(balance_p >= alpha),
    }
    captured = np.array([record.max_confidence for record in records])
    reference = np.array(baseline["max_confidence"], dtype=float)
    with warnings.catch_warnings():  # ties among saturated confidences make scipy fall back to the asymptotic p-value
        warnings.simplefilter("ignore", RuntimeWarning)
        ks = stats.ks_2samp(captured, reference)
    confidence = {
        "test": "two-sample Kolmogorov-Smirnov test of max confidence, capture vs baseline",
        "statistic": float(ks.statistic),
        "p_value": float(ks.pvalue),
        "baseline_median": float(np.median(reference)),
        "capture_median": float(np.median(captured)),
        "passed": bool(ks.pvalue >= alpha),
    }
    passed = balance["passed"] and confidence["passed"]
    return {
        "status": "pass" if passed else "fail",
        "alpha": alpha,
        "rule": f"each test fails when its p-value < {alpha}",
        "n_capture": len(records),
        "n_baseline": int(baseline.get("n", len(reference))),
        "tests": {"class_balance": balance, "confidence_distribution": confidence},
    }


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

