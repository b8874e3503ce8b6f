"""`scones evaluate` without a stack: test cases, the summary figures, the saved table, the CLI."""
from __future__ import annotations

import csv
import io
import json
import uuid
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from scones.harness import evaluate
from scones.harness.cli import main
from scones.lambdas.run_results import RunResult

KEYS = [f"test/{cls}/{cls[:4]}_{i:03d}.png" for cls in ("bicycle", "motorcycle") for i in range(10)]


def test_cases_are_random_test_images_in_the_original_shape():
    cases = evaluate.make_test_cases(KEYS, "bucket", n=5, seed=42)
    assert len(cases) == 5 and len({c["s3_key"] for c in cases}) == 5
    assert all(c == {"image_data": "", "s3_bucket": "bucket", "s3_key": c["s3_key"]} for c in cases)
    assert cases == evaluate.make_test_cases(KEYS, "bucket", n=5, seed=42)          # the seed repeats the choice
    assert cases != evaluate.make_test_cases(KEYS, "bucket", n=5, seed=43)
    assert [c["s3_key"] for c in evaluate.make_test_cases(KEYS, "bucket", n=None)] == sorted(KEYS)
    assert len(evaluate.make_test_cases(KEYS, "bucket", n=500)) == 20


def test_no_test_images_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no images under s3://bucket/test/"):
        evaluate.make_test_cases([], "bucket", n=3)


def test_only_images_under_the_test_prefix_are_listed(monkeypatch):
    moto = pytest.importorskip("moto")
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        import boto3
        s3 = boto3.client("s3")
        bucket = f"scones-eval-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        for key in KEYS[:3] + ["train/bicycle/a.png", "test.lst", "test/README.txt", "testing/x.png"]:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert evaluate.test_image_keys(s3, bucket) == sorted(KEYS[:3])


def result(key, status, predicted, confidence, error=None, duration=0.1):
    return RunResult(s3_bucket="bucket", s3_key=key, status=status, execution_arn=f"arn:{key}", predicted_class=predicted,
                     confidence=confidence, error=error, duration=duration,
                     cause=json.dumps({"errorMessage": "below threshold"}) if error else None,
                     failed_state="filterInferences" if error else None)


RESULTS = [
    result("test/bicycle/a.png", "SUCCEEDED", "bicycle", 0.99),
    result("test/bicycle/b.png", "FAILED", "bicycle", 0.80, "ThresholdConfidenceNotMet"),
    result("test/motorcycle/c.png", "FAILED", "bicycle", 0.70, "ThresholdConfidenceNotMet"),
    result("test/motorcycle/d.png", "SUCCEEDED", "motorcycle", 0.97),
    result("test/motorcycle/e.png", "FAILED", None, None, "States.Timeout"),
]


def test_summary_separates_model_accuracy_from_threshold_coverage():
    rows = [evaluate.row_for(r) for r in RESULTS]
    summary = evaluate.summarize(rows)
    assert rows[2]["true_class"] == "motorcycle" and rows[1]["cause"] == "below threshold"
    assert summary["accuracy"] == pytest.approx(3 / 4)           # predictions made, threshold or not
    assert summary["coverage"] == pytest.approx(2 / 5)
    assert summary["accepted_accuracy"] == 1.0
    assert summary["failures_by_error"] == {"ThresholdConfidenceNotMet": 2, "States.Timeout": 1}
    assert summary["confusion"] == {"bicycle": {"bicycle": 2, "motorcycle": 0},
                                    "motorcycle": {"bicycle": 1, "motorcycle": 1}}
    table = evaluate.format_table(rows)
    assert table.splitlines()[0].split() == list(evaluate.COLUMNS)
    assert "ThresholdConfidenceNotMet" in table and "0.9900" in table


def fake_target(bucket="scones-local", uploaded=None):
    s3 = SimpleNamespace(get_paginator=lambda name: SimpleNamespace(
        paginate=lambda **kw: iter([{"Contents": [{"Key": k} for k in KEYS]}])),
        put_object=lambda **kw: (uploaded if uploaded is not None else {}).update({kw["Key"]: kw["Body"]}))
    return SimpleNamespace(name="local", bucket=bucket, state_machine_arn="arn:sm", client=lambda service: s3)


def fake_workflow(accepted_ood_key=None):
    """run_executions stand-in: test images succeed as their class; generated ones are refused, but one."""
    sent = {}

    def run(target, inputs, concurrency=1, progress=None, **_):
        sent.update(inputs=list(inputs), concurrency=concurrency)
        out = [result(i["s3_key"], "SUCCEEDED", i["s3_key"].split("/")[1], 0.99) if i["s3_key"].startswith("test/")
               else result(i["s3_key"], "SUCCEEDED", "bicycle", 0.95) if i["s3_key"] == accepted_ood_key
               else result(i["s3_key"], "FAILED", "bicycle", 0.6, "ThresholdConfidenceNotMet") for i in inputs]
        for item in out:
            progress(item)
        return out

    return sent, run


def test_evaluate_command_prints_and_saves_the_table(tmp_path, monkeypatch):
    sent, fake_run = fake_workflow()
    uploaded = {}
    monkeypatch.setattr("scones.harness.commands.monitoring._target", lambda name, state: fake_target(uploaded=uploaded))
    monkeypatch.setattr("scones.harness.executions.run_executions", fake_run)

    outcome = CliRunner().invoke(main, ["evaluate", "--n", "6", "--seed", "1", "--concurrency", "3", "--ood", "0",
                                        "--state-dir", str(tmp_path)])

    assert outcome.exit_code == 0, outcome.output
    assert len(sent["inputs"]) == 6 and sent["concurrency"] == 3 and not uploaded
    assert all(i["image_data"] == "" and i["s3_key"].startswith("test/") for i in sent["inputs"])
    assert "accuracy: 100.0% (6/6 predictions correct)" in outcome.stdout
    assert "out of distribution" not in outcome.stdout
    [saved] = (tmp_path / "reports").glob("evaluation-*.json")
    document = json.loads(saved.read_text())
    assert document["seed"] == 1 and len(document["rows"]) == 6 and document["summary"]["coverage"] == 1.0
    assert document["summary"]["ood"] is None
    with saved.with_suffix(".csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert evaluate.latest_evaluation(tmp_path / "reports") == saved


def test_evaluate_runs_generated_non_vehicles_too_and_reports_the_share_refused(tmp_path, monkeypatch):
    from PIL import Image

    accepted = "ood/stripes/stripes-3000017-006.png"
    sent, fake_run = fake_workflow(accepted_ood_key=accepted)
    uploaded = {}
    monkeypatch.setattr("scones.harness.commands.monitoring._target", lambda name, state: fake_target(uploaded=uploaded))
    monkeypatch.setattr("scones.harness.executions.run_executions", fake_run)

    outcome = CliRunner().invoke(main, ["evaluate", "--n", "6", "--seed", "1", "--state-dir", str(tmp_path)])

    assert outcome.exit_code == 0, outcome.output
    ood_keys = [i["s3_key"] for i in sent["inputs"] if not i["s3_key"].startswith("test/")]
    assert len(ood_keys) == 16 and sorted(ood_keys) == sorted(uploaded)        # the default: 16, every kind twice
    assert {key.split("/")[1] for key in ood_keys} >= {"uniform", "noise", "tiny", "checkerboard"}
    tiny_sizes = {Image.open(io.BytesIO(uploaded[key])).size for key in uploaded if "/tiny/" in key}
    assert tiny_sizes and all(max(size) <= 4 for size in tiny_sizes)                 # sent tiny, as a user would
    assert "accuracy: 100.0% (6/6 predictions correct)" in outcome.stdout      # the figures are the test images'
    assert ("out of distribution: 93.8% of 16 generated non-vehicle images refused below the threshold "
            f"(ThresholdConfidenceNotMet); accepted: {accepted}") in outcome.stdout
    [saved] = (tmp_path / "reports").glob("evaluation-*.json")
    summary = json.loads(saved.read_text())["summary"]
    assert summary["executions"] == 6 and summary["coverage"] == 1.0
    assert summary["ood"] == {"executions": 16, "rejected": 15, "rejection": 15 / 16, "accepted_keys": [accepted],
                              "failures_by_error": {"ThresholdConfidenceNotMet": 15}}
