"""`scones evaluate` and `scones monitor` against the deployed stack (local by default).

Every test image goes through the workflow; the accuracy the evaluation reports must be the
model's own test accuracy from training (metrics.json), and the inferences the endpoint
captured meanwhile must match the training baseline (no drift).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from support import poll
from scones.harness import evaluate, monitor

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served_model_dir(scones_stack) -> Path:
    """The folder of the model the stack's endpoint serves (model.tar.gz, metrics.json, baseline.json)."""
    record = scones_stack.record
    model_dir = (record.get("endpoint") or {}).get("model_dir") or record.get("model_dir")
    if not model_dir or not (Path(model_dir) / "metrics.json").is_file():
        pytest.skip(f"the {scones_stack.name} stack record names no local model folder with metrics.json")
    return Path(model_dir)


@pytest.fixture(scope="module")
def full_evaluation(scones_stack, served_model_dir):
    started = datetime.now(timezone.utc)
    result = evaluate.evaluate(scones_stack, n=None, concurrency=4)
    return started, result


def test_evaluation_of_every_test_image_reports_the_models_own_accuracy(full_evaluation, served_model_dir, data_dir):
    _, result = full_evaluation
    metrics = json.loads((served_model_dir / "metrics.json").read_text())
    test_images = sorted(data_dir.glob("test/*/*.png"))

    summary = result.summary
    assert summary["executions"] == len(test_images) == 200
    assert {row["key"] for row in result.rows} == {f"test/{p.parent.name}/{p.name}" for p in test_images}
    unexpected = {e: n for e, n in summary["failures_by_error"].items() if e != "ThresholdConfidenceNotMet"}
    assert not unexpected, f"executions failed for other reasons than the threshold: {unexpected}"
    assert summary["with_prediction"] == 200
    assert summary["correct"] == round(metrics["test_accuracy"] * 200)
    assert summary["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # the threshold is applied to float32 outputs on both sides; an image right on it may flip
    assert summary["coverage"] == pytest.approx(metrics["threshold_coverage"], abs=0.01)


def test_capture_of_the_evaluation_matches_the_training_baseline(full_evaluation, served_model_dir, scones_stack,
                                                                 tmp_path):
    started, _ = full_evaluation
    source = f"{scones_stack.capture_s3_uri.rstrip('/')}/{scones_stack.endpoint_name}/"

    def captured():  # the endpoint uploads capture in batches from a background thread
        records = monitor.records_since(monitor.read_capture(source, session=scones_stack.session).records, started)
        return records if len(records) >= 200 else None

    poll(captured, timeout=60, interval=0.5, what="200 capture records of the evaluation")
    summary = monitor.monitor(source, tmp_path, baseline_path=served_model_dir / "baseline.json",
                              session=scones_stack.session, since=started)

    assert summary["records"] >= 200 and summary["malformed_lines"] == 0
    assert summary["drift"]["status"] == "pass", monitor.drift_caption(summary["drift"])
    assert (tmp_path / "confidence_over_time.png").is_file()
