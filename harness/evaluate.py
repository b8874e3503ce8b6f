"""Evaluate a deployed workflow the way the original project tested it, then report properly.

Test cases are random images from the bucket's test/ prefix, sent as the original sent them:
`{"image_data": "", "s3_bucket": B, "s3_key": K}`. The true class is the folder of the key
(test/<class>/<file>.png). Each case runs as one workflow execution; the table says what
happened to it and the summary how the model and the threshold did:

- accuracy: correct predictions / executions that produced a prediction (the threshold does
  not change what the model predicted, so this is the figure to compare with the model's own
  test accuracy in metrics.json);
- coverage: executions that passed the threshold / all executions;
- accepted_accuracy: correct among those that passed the threshold;
- failures_by_error: how many executions failed with each error name;
- ood: with `ood=N`, N generated images that are not vehicles at all (blank, noise, tiny,
  strokes, stripes... from local_model/outliers.py, on a seed of their own) are uploaded under
  ood/<kind>/ and run too; `rejection` is the share the workflow refused with
  ThresholdConfidenceNotMet, as it must. They count in none of the figures above.
"""
from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

from scones.harness import executions
from scones.lambdas.errors import ThresholdConfidenceNotMet

TEST_PREFIX = "test/"
OOD_PREFIX = "ood/"
OOD_CLASS = "not-a-vehicle"  # the true class of every generated image under OOD_PREFIX
# Not the seed of metrics.json's set either: the workflow sees images no training run scored.
OOD_SEED = 3_000_017
REFUSED_ERROR = ThresholdConfidenceNotMet.__name__  # the error name the workflow fails with
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLUMNS = ("key", "true_class", "status", "predicted_class", "confidence", "error", "duration_s")
REPORT_PREFIX = "evaluation-"


def test_image_keys(s3, bucket: str, prefix: str = TEST_PREFIX) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if item["Key"].lower().endswith(IMAGE_SUFFIXES))
    return sorted(keys)


def make_test_cases(keys: list[str], bucket: str, n: int | None = None, seed: int | None = None) -> list[dict[str, str]]:
    """`n` distinct random test images (all of them when n is None or too large) as workflow inputs."""
    if not keys:
        raise ValueError(f"no images under s3://{bucket}/{TEST_PREFIX}: upload the dataset first (`scones up`)")
    chosen = sorted(keys) if n is None or n >= len(keys) else random.Random(seed).sample(sorted(keys), n)
    return [{"image_data": "", "s3_bucket": bucket, "s3_key": key} for key in chosen]


def true_class(key: str) -> str | None:
    """test/<class>/<file> -> <class>; ood/<kind>/<file> -> OOD_CLASS."""
    if key.startswith(OOD_PREFIX):
        return OOD_CLASS
    parts = key.split("/")
    return parts[-2] if len(parts) >= 3 else None


def upload_ood_images(s3, bucket: str, n: int, seed: int = OOD_SEED) -> list[str]:
    """Put `n` generated non-vehicle PNGs (every kind in turn) under ood/<kind>/ in the bucket; their keys."""
    # Here, not at the top: it imports the model's network, so torch (seconds), which `scones monitor` and
    # `scones report` (the same command module) never need.
    from scones.local_model import outliers

    per_kind = -(-n // len(outliers.EVALUATION_KINDS))
    generated = outliers.evaluation_set(per_kind, seed)
    # Kind by kind in turn, so a small n still covers every kind.
    in_turn = [generated[index * per_kind + round_] for round_ in range(per_kind)
               for index in range(len(outliers.EVALUATION_KINDS))][:n]
    keys = []
    for number, (kind, pixels) in enumerate(in_turn):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        key = f"{OOD_PREFIX}{kind}/{kind}-{seed}-{number:03d}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue(), ContentType="image/png")
        keys.append(key)
    return keys


@dataclass
class Evaluation:
    target: str
    bucket: str
    state_machine_arn: str
    n: int
    seed: int | None
    concurrency: int
    started_at: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "bucket": self.bucket, "state_machine_arn": self.state_machine_arn,
                "n": self.n, "seed": self.seed, "concurrency": self.concurrency, "started_at": self.started_at,
                "summary": self.summary, "rows": self.rows}


def row_for(result) -> dict[str, Any]:
    """One table row from a RunResult of scones.harness.executions."""
    return {
        "key": result.key,
        "true_class": true_class(result.key),
        "status": result.status,
        "predicted_class": result.predicted_class,
        "confidence": result.confidence,
        "error": result.error,
        "duration_s": result.duration if result.duration is not None else result.wall_duration,
        "failed_state": result.failed_state,
        "cause": result.error_message,
        "execution_arn": result.execution_arn,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures above over the test images; `ood` over the generated non-vehicles (None without any)."""
    garbage = [r for r in rows if r["true_class"] == OOD_CLASS]
    rows = [r for r in rows if r["true_class"] != OOD_CLASS]
    total = len(rows)
    predicted = [r for r in rows if r["predicted_class"] is not None]
    correct = [r for r in predicted if r["predicted_class"] == r["true_class"]]
    passed = [r for r in rows if r["status"] == "SUCCEEDED"]
    passed_correct = [r for r in passed if r["predicted_class"] == r["true_class"]]
    durations = sorted(r["duration_s"] for r in rows if r["duration_s"] is not None)
    return {
        "executions": total,
        "succeeded": len(passed),
        "failed": total - len(passed),
        "with_prediction": len(predicted),
        "correct": len(correct),
        "accuracy": len(correct) / len(predicted) if predicted else None,
        "coverage": len(passed) / total if total else None,
        "accepted_accuracy": len(passed_correct) / len(passed) if passed else None,
        "failures_by_error": dict(Counter(r["error"] or "(none)" for r in rows if r["status"] != "SUCCEEDED")),
        "true_class_counts": dict(Counter(r["true_class"] for r in rows)),
        "predicted_class_counts": dict(Counter(r["predicted_class"] for r in predicted)),
        "confusion": confusion(predicted),
        "duration_s": {"median": durations[len(durations) // 2], "max": durations[-1]} if durations else None,
        "ood": summarize_ood(garbage) if garbage else None,
    }


def summarize_ood(rows: list[dict[str, Any]]) -> dict[str, Any]:
    refused = [r for r in rows if r["status"] != "SUCCEEDED" and r["error"] == REFUSED_ERROR]
    return {
        "executions": len(rows),
        "rejected": len(refused),
        "rejection": len(refused) / len(rows),
        "accepted_keys": sorted(r["key"] for r in rows if r["status"] == "SUCCEEDED"),
        "failures_by_error": dict(Counter(r["error"] or "(none)" for r in rows if r["status"] != "SUCCEEDED")),
    }


def confusion(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """confusion[true class][predicted class] = count, over executions that produced a prediction."""
    classes = sorted({r["true_class"] for r in rows} | {r["predicted_class"] for r in rows} - {None})
    return {true: {pred: sum(1 for r in rows if r["true_class"] == true and r["predicted_class"] == pred)
                   for pred in classes} for true in classes}


def evaluate(target, n: int | None = 20, seed: int | None = None, concurrency: int = 4,
             progress: Callable[[Any], None] | None = None, keys: list[str] | None = None,
             run=None, ood: int = 0) -> Evaluation:
    """Run `n` random test images, and `ood` generated non-vehicles, through the workflow of `target` (see scones.harness.targets)."""
    if run is None:
        run = executions.run_executions
    if keys is None:
        keys = test_image_keys(target.client("s3"), target.bucket)
    test_cases = make_test_cases(keys, target.bucket, n, seed)
    cases = test_cases + [{"image_data": "", "s3_bucket": target.bucket, "s3_key": key}
                          for key in (upload_ood_images(target.client("s3"), target.bucket, ood) if ood else [])]
    evaluation = Evaluation(target=target.name, bucket=target.bucket, state_machine_arn=target.state_machine_arn,
                            n=len(test_cases), seed=seed, concurrency=concurrency,
                            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    results = run(target, cases, concurrency=concurrency, progress=progress)
    evaluation.rows = [row_for(result) for result in results]
    evaluation.summary = summarize(evaluation.rows)
    return evaluation


def save(evaluation: Evaluation, reports_dir: Path) -> tuple[Path, Path]:
    """evaluation-<time>-<target>.json and .csv under reports_dir; returns both paths."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = evaluation.started_at.replace(":", "").replace("+0000", "Z").replace("-", "")
    stem = reports_dir / f"{REPORT_PREFIX}{stamp}-{evaluation.target}"
    json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
    json_path.write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS) + ["failed_state", "cause", "execution_arn"])
        writer.writeheader()
        writer.writerows(evaluation.rows)
    return json_path, csv_path


def latest_evaluation(reports_dir: Path) -> Path | None:
    candidates = sorted(reports_dir.glob(f"{REPORT_PREFIX}*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    return candidates[-1] if candidates else None


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    cells = [[_cell(row.get(column)) for column in COLUMNS] for row in rows]
    widths = [max([len(column)] + [len(r[i]) for r in cells]) for i, column in enumerate(COLUMNS)]
    lines = ["  ".join(column.ljust(w) for column, w in zip(COLUMNS, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(value.ljust(w) for value, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    def pct(value):
        return "n/a" if value is None else f"{value:.1%}"
    lines = [
        f"executions: {summary['executions']}  succeeded: {summary['succeeded']}  failed: {summary['failed']}",
        f"accuracy: {pct(summary['accuracy'])} ({summary['correct']}/{summary['with_prediction']} predictions correct)",
        f"coverage above threshold: {pct(summary['coverage'])}   accuracy of accepted: {pct(summary['accepted_accuracy'])}",
    ]
    if summary["failures_by_error"]:
        lines.append("failures by error: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["failures_by_error"].items())))
    if summary.get("ood"):
        ood = summary["ood"]
        lines.append(f"out of distribution: {pct(ood['rejection'])} of {ood['executions']} generated non-vehicle images "
                     f"refused below the threshold ({REFUSED_ERROR})"
                     + (f"; accepted: {', '.join(ood['accepted_keys'])}" if ood["accepted_keys"] else ""))
    if summary.get("duration_s"):
        lines.append(f"duration: median {summary['duration_s']['median']:.3f} s, max {summary['duration_s']['max']:.3f} s")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
