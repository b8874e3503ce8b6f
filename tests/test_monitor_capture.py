"""Reading SageMaker data capture, the drift check and the `scones monitor` command, on capture
files written here in the exact Model Monitor format (several records a file, nested hours)."""
from __future__ import annotations

import base64
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from scones.harness import monitor
from scones.harness.cli import main

CLASSES = ["bicycle", "motorcycle"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def capture_line(probabilities: list[float], when: datetime) -> str:
    """One record exactly as SageMaker Model Monitor writes it for an image/png -> JSON endpoint."""
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                              "data": base64.b64encode(PNG_MAGIC + b"fake image").decode(), "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": json.dumps(probabilities), "encoding": "JSON"},
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "eventVersion": "0",
    })


def write_capture(root: Path, answers: list[list[float]], start: datetime, per_file: int = 7,
                  endpoint: str = "scones-classifier", variant: str = "AllTraffic") -> list[Path]:
    """Spread answers over files of `per_file` records, one hour folder per file (as SageMaker nests them)."""
    written = []
    for index in range(0, len(answers), per_file):
        hour = start + timedelta(hours=index // per_file)
        folder = root / endpoint / variant / hour.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hour:%M-%S}-{index:03d}-{uuid.uuid4()}.jsonl"
        lines = [capture_line(p, hour + timedelta(seconds=k)) for k, p in enumerate(answers[index:index + per_file])]
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def answers_for(predicted: list[int], confidences: list[float]) -> list[list[float]]:
    return [[c, 1 - c] if cls == 0 else [1 - c, c] for cls, c in zip(predicted, confidences)]


def synthetic_test_set(seed: int, n: int = 200, bicycle_share: float = 0.5):
    """Predicted classes and max confidences shaped like a trained model's answers on the test set."""
    rng = random.Random(seed)
    predicted = [0 if rng.random() < bicycle_share else 1 for _ in range(n)]
    confidences = [min(0.9999, 0.5 + 0.5 * rng.betavariate(6, 1)) for _ in range(n)]
    return predicted, confidences


def baseline_from(predicted: list[int], confidences: list[float], threshold: float = 0.93) -> dict:
    return {"classes": CLASSES, "threshold": threshold,
            "true_class_counts": {"bicycle": 100, "motorcycle": 100},
            "predicted_class_counts": {name: predicted.count(i) for i, name in enumerate(CLASSES)},
            "max_confidence": confidences, "n": len(predicted)}


START = datetime(2026, 11, 26, 22, 15, tzinfo=timezone.utc)


def test_reads_every_line_of_every_file_in_nested_hour_folders(tmp_path):
    answers = answers_for([0, 1] * 10 + [0], [0.99, 0.95, 0.6, 0.97, 0.999, 0.8, 0.94] * 3)
    files = write_capture(tmp_path, answers, START, per_file=7)
    assert len(files) == 3 and len({f.parent for f in files}) == 3   # three hour folders
    assert "/2026/11/26/23/" in str(files[1]) and "/2026/11/27/00/" in str(files[2])  # day rolls over

    capture = monitor.read_capture(tmp_path)

    assert len(capture.records) == 21 and capture.problems == []
    assert sorted(capture.files) == sorted(map(str, files))
    first = capture.records[0]
    assert first.probabilities == pytest.approx([0.99, 0.01]) and first.predicted_index == 0 and first.max_confidence == 0.99
    assert first.input_content_type == "image/png"
    assert [r.inference_time for r in capture.records] == sorted(r.inference_time for r in capture.records)


def test_malformed_lines_are_reported_with_file_and_line_and_the_rest_still_read(tmp_path):
    [path] = write_capture(tmp_path, answers_for([0, 1, 0], [0.99, 0.98, 0.97]), START)
    good = path.read_text().splitlines()
    broken_output = json.loads(good[0])
    broken_output["captureData"]["endpointOutput"]["data"] = "not json"
    no_time = json.loads(good[1])
    del no_time["eventMetadata"]["inferenceTime"]
    path.write_text("\n".join([good[0], "{truncated", json.dumps(broken_output), good[1], "",
                               json.dumps(no_time), good[2], "[1, 2]"]) + "\n")

    capture = monitor.read_capture(tmp_path)

    assert len(capture.records) == 3
    by_line = {problem.line: problem for problem in capture.problems}
    assert sorted(by_line) == [2, 3, 6, 8]
    assert all(problem.file == str(path) for problem in capture.problems)
    assert "not JSON" in by_line[2].message
    assert "endpointOutput" in by_line[3].message
    assert "inferenceTime" in by_line[6].message
    assert str(by_line[2]).startswith(f"{path}:2: ")


def test_output_encoded_as_base64_is_decoded(tmp_path):
    line = json.loads(capture_line([0.2, 0.8], START))
    line["captureData"]["endpointOutput"].update(data=base64.b64encode(b"[0.2, 0.8]").decode(), encoding="BASE64")
    (tmp_path / "one.jsonl").write_text(json.dumps(line) + "\n")
    [record] = monitor.read_capture(tmp_path).records
    assert record.predicted_index == 1 and record.max_confidence == 0.8


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(monitor.CaptureSourceError, match="does not exist"):
        monitor.read_capture(tmp_path / "nowhere")


def test_drift_flags_a_capture_that_is_ninety_percent_one_class():
    baseline = baseline_from(*synthetic_test_set(seed=1))
    _, confidences = synthetic_test_set(seed=2)
    predicted = [0] * 180 + [1] * 20
    records = [_record(p, c) for p, c in zip(predicted, confidences)]

    drift = monitor.check_drift(records, baseline)

    assert drift["status"] == "fail"
    assert drift["tests"]["class_balance"]["passed"] is False
    assert drift["tests"]["class_balance"]["p_value"] < drift["alpha"]
    assert drift["tests"]["class_balance"]["capture_share"]["bicycle"] == pytest.approx(0.9)


def test_drift_flags_a_confidence_collapse():
    baseline = baseline_from(*synthetic_test_set(seed=1))
    predicted, _ = synthetic_test_set(seed=2)
    records = [_record(p, 0.55 + 0.4 * random.Random(i).random()) for i, p in enumerate(predicted)]
    drift = monitor.check_drift(records, baseline)
    assert drift["status"] == "fail"
    assert drift["tests"]["confidence_distribution"]["passed"] is False


def test_drift_passes_the_balanced_test_set_itself_and_a_fresh_sample_of_it():
    predicted, confidences = synthetic_test_set(seed=1)
    baseline = baseline_from(predicted, confidences)
    replayed = [_record(p, c) for p, c in zip(predicted, confidences)]
    assert monitor.check_drift(replayed, baseline)["status"] == "pass"

    fresh = [_record(p, c) for p, c in zip(*synthetic_test_set(seed=3))]
    drift = monitor.check_drift(fresh, baseline)
    assert drift["status"] == "pass", drift


def test_drift_is_skipped_without_baseline_or_with_too_few_records():
    assert monitor.check_drift([_record(0, 0.99)] * 50, None)["status"] == "skipped"
    baseline = baseline_from(*synthetic_test_set(seed=1))
    skipped = monitor.check_drift([_record(0, 0.99)] * 5, baseline)
    assert skipped["status"] == "skipped" and "only 5" in skipped["reason"]


def test_monitor_command_writes_plots_and_json_report(tmp_path):
    predicted, confidences = synthetic_test_set(seed=1)
    baseline_path = tmp_path / "baseline.json"
    baseline_path.write_text(json.dumps(baseline_from(predicted, confidences)))
    capture_dir = tmp_path / "capture"
    write_capture(capture_dir, answers_for([0] * 90 + [1] * 10, confidences[:100]), START, per_file=12)
    (capture_dir / "scones-classifier" / "AllTraffic" / "2026" / "bad.jsonl").write_text("oops\n")
    out = tmp_path / "out"

    result = CliRunner().invoke(main, ["monitor", "--source", str(capture_dir), "--baseline", str(baseline_path),
                                       "--out", str(out), "--json", "--state-dir", str(tmp_path / "state")])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 100 and summary["malformed_lines"] == 1
    assert summary["class_counts"] == {"bicycle": 90, "motorcycle": 10}
    assert summary["time_range"]["first"] == START.isoformat()
    below = sum(1 for c in confidences[:100] if c < 0.93)
    assert summary["share_below_threshold"] == pytest.approx(below / 100)
    assert summary["drift"]["status"] == "fail"
    assert "bad.jsonl:1" in result.stderr
    for name in ("confidence_over_time.png", "confidence_histogram.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    saved = json.loads((out / "monitor.json").read_text())
    assert saved["drift"] == summary["drift"] and len(saved["records_table"]) == 100


def test_monitor_command_reads_capture_from_s3(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    files = write_capture(tmp_path, answers_for([0, 1] * 15, [0.99] * 30), START, per_file=8)
    with moto.mock_aws():
        import boto3
        s3 = boto3.client("s3")
        bucket = f"scones-monitor-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        for path in files:
            s3.put_object(Bucket=bucket, Key=f"data_capture/{path.relative_to(tmp_path)}", Body=path.read_bytes())
        s3.put_object(Bucket=bucket, Key="data_capture/other-endpoint/AllTraffic/2026/x.jsonl", Body=b"ignored")

        result = CliRunner().invoke(main, ["monitor", "--source", f"s3://{bucket}/data_capture/scones-classifier/",
                                           "--out", str(tmp_path / "out"), "--json", "--no-target",
                                           "--state-dir", str(tmp_path / "state")])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 30 and summary["files"] == 4 and summary["malformed_lines"] == 0
    assert summary["drift"]["status"] == "skipped"


def _record(predicted: int, confidence: float) -> monitor.CaptureRecord:
    probabilities = [confidence, 1 - confidence] if predicted == 0 else [1 - confidence, confidence]
    return monitor.CaptureRecord(event_id="e", inference_time=START, probabilities=probabilities,
                                 predicted_index=predicted, max_confidence=confidence,
                                 input_content_type="image/png", input_bytes=10, file="f", line=1)


def test_since_keeps_only_later_records(tmp_path):
    write_capture(tmp_path / "capture", answers_for([0, 1] * 10, [0.99] * 20), START, per_file=5)  # 4 hours
    out = tmp_path / "out"
    later = (START + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    result = CliRunner().invoke(main, ["monitor", "--source", str(tmp_path / "capture"), "--since", later,
                                       "--out", str(out), "--json", "--no-target", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 10 and summary["time_range"]["first"] == (START + timedelta(hours=2)).isoformat()


@pytest.mark.parametrize("expected, warned", [(6, False), (9, True)])
def test_wait_for_evaluation_polls_until_its_capture_has_landed(tmp_path, expected, warned):
    state = tmp_path / "state"
    (state / "reports").mkdir(parents=True)
    (state / "reports" / "evaluation-1-local.json").write_text(json.dumps(
        {"started_at": (START + timedelta(hours=1)).isoformat(), "n": expected, "rows": [], "summary": {}}))
    write_capture(tmp_path / "capture", answers_for([0, 1] * 6, [0.99] * 12), START, per_file=6)  # 6 an hour later
    result = CliRunner().invoke(main, ["monitor", "--source", str(tmp_path / "capture"), "--wait-for-evaluation",
                                       "--wait", "0.3", "--no-target", "--state-dir", str(state), "--json"])
    assert result.exit_code == 0, result.output
    assert ("only 6 of the 9 capture records" in result.stderr) is warned
    assert json.loads(result.stdout)["records"] == 12


@pytest.mark.parametrize("data, problem", [
    ("[true, false]", "item 0 is not a finite number"),
    ("[0.5, 0.3, 0.2]", "must hold 2 probabilities"),
    ("[0.9, 0.3]", "do not sum to 1"),
])
def test_capture_outputs_are_checked_as_the_workflow_checks_its_inferences(data, problem):
    """One parser (lambdas/events.parse_inferences) for the workflow's inferences and the captured outputs:
    JSON booleans are not numbers (RFC 8259, section 3), and the endpoint answers one probability per class."""
    from scones.lambdas.capture_records import MalformedRecord, parse_record

    line = json.loads(capture_line([0.5, 0.5], START))
    line["captureData"]["endpointOutput"]["data"] = data
    with pytest.raises(MalformedRecord, match=problem):
        parse_record(json.dumps(line), "f.jsonl", 1)
