"""train.py under SageMaker's script-mode contract, `scones train`, and the ensure_model cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scones import settings, testing
from scones.harness import models, training_job
from scones.harness.cli import main as scones
from scones.harness.serving.handlers import extract_tar, import_handlers
from support import poll

TINY = testing.TINY_HYPERPARAMETERS


@pytest.fixture
def dataset(tmp_path) -> Path:
    return testing.write_synthetic_dataset(tmp_path / "data")


def test_train_script_runs_under_the_sagemaker_env_contract(dataset, tmp_path):
    model_dir, output_dir = tmp_path / "opt_ml_model", tmp_path / "opt_ml_output_data"
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(dataset / "train"), "SM_CHANNEL_TEST": str(dataset / "test"),
           "SM_MODEL_DIR": str(model_dir), "SM_OUTPUT_DATA_DIR": str(output_dir), "SM_NUM_GPUS": "0"}
    # The toolkit runs the entry point as a plain script from its source dir, hyperparameters as --name value.
    completed = subprocess.run(
        [sys.executable, "train.py", *training_job.toolkit_cmd_args(TINY)],
        cwd=training_job.MODEL_CODE_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "epoch 1/1" in completed.stdout
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "code", "code/inference.py", "code/network.py", "model.pth"]

    metrics = json.loads((output_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "per_class", "confusion_matrix", "threshold_coverage", "threshold_precision",
                "ood_rejection", "ood_rejection_by_kind", "temperature", "calibration", "training_seconds", "epochs"):
        assert key in metrics
    assert set(metrics["per_class"]) == {"bicycle", "motorcycle"}
    assert set(metrics["per_class"]["bicycle"]) >= {"precision", "recall"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == 8
    assert metrics["threshold"] == 0.93 and metrics["epochs"] == 1

    baseline = json.loads((output_dir / "baseline.json").read_text())
    assert baseline["classes"] == ["bicycle", "motorcycle"] and baseline["threshold"] == 0.93
    assert baseline["n"] == 8 == len(baseline["max_confidence"])
    assert baseline["true_class_counts"] == {"bicycle": 4, "motorcycle": 4}
    assert sum(baseline["predicted_class_counts"].values()) == 8
    assert all(0.5 <= value <= 1.0 for value in baseline["max_confidence"])

    inference = import_handlers(model_dir)
    model = inference.model_fn(str(model_dir))
    body = (dataset / "test" / "bicycle" / "bicycle_000.png").read_bytes()
    probabilities = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body, "image/png"), model),
                                                   "application/json"))
    # The handlers see an image exactly as training's evaluation did.
    assert probabilities[0] + probabilities[1] == pytest.approx(1.0)
    assert max(probabilities) == pytest.approx(baseline["max_confidence"][0], abs=1e-4)


def test_train_script_rejects_a_channel_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_CHANNEL_TEST": str(tmp_path / "train"),
           "SM_MODEL_DIR": str(tmp_path / "m"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "o")}
    completed = subprocess.run([sys.executable, str(training_job.TRAIN_SCRIPT), "--epochs", "1"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert "has no bicycle/ folder" in completed.stderr


def test_scones_train_writes_a_sagemaker_model_tarball(dataset, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(scones, ["train", "--data", str(dataset), "--out", str(out), "--epochs", "1",
                                         "--widths", "8,16", "--blocks", "1,1", "-H", "batch_size=8"])
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output and "model.tar.gz" in result.output
    assert "generated images refused below the threshold" in result.output and "temperature" in result.output
    assert {"model.tar.gz", "metrics.json", "baseline.json", "train.log"} <= {p.name for p in out.iterdir()}
    with tarfile.open(out / "model.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["code", "code/inference.py", "code/network.py", "model.pth"]
        extract_tar(archive, tmp_path / "unpacked")
    inference = import_handlers(tmp_path / "unpacked")
    model = inference.model_fn(str(tmp_path / "unpacked"))
    assert json.loads(inference.output_fn(inference.predict_fn(
        inference.input_fn((dataset / "test" / "motorcycle" / "motorcycle_001.png").read_bytes(), "image/png"),
        model), None)).__len__() == 2


def test_scones_train_reports_missing_data_clearly(tmp_path):
    result = CliRunner().invoke(scones, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "lacks train/bicycle/" in result.output


def test_training_is_deterministic_for_a_seed(dataset, tmp_path):
    first = training_job.train_model(dataset, tmp_path / "a", {**TINY, "seed": 3}, echo=False)
    second = training_job.train_model(dataset, tmp_path / "b", {**TINY, "seed": 3}, echo=False)
    assert (first / "model.tar.gz").read_bytes() == (second / "model.tar.gz").read_bytes()
    assert (first / "baseline.json").read_text() == (second / "baseline.json").read_text()


def test_hyperparameters_are_passed_the_sagemaker_way(tmp_path):
    """What the PyTorch training container runs for these hyperparameters: the SDK json.dumps every
    value (sagemaker 2.x EstimatorBase._json_encode_hyperparameters), the toolkit json.loads it back
    (sagemaker_training/environment.py read_hyperparameters), drops the sagemaker_* keys and passes
    the rest sorted, keys verbatim, values str()'d (mapping.to_cmd_args), after `python --`
    (process.ProcessRunner._create_command). tests/parity runs the real toolkit on the same job."""
    data = testing.write_synthetic_dataset(tmp_path / "data", {"train": 1, "test": 1})
    base = training_job.write_training_job(tmp_path / "job", data, {
        "batch_size": 8, "widths": [8, 16], "flip_tta": False, "label-smoothing": 0.05, "arch": "resnet", "lr": None,
    }, name="job")
    command, environment = training_job.toolkit_invocation(base, {"TRAINING_JOB_NAME": "job"})
    assert command == [sys.executable, "--", "train.py", "--arch", "resnet", "--batch_size", "8", "--flip_tta", "False",
                       "--label-smoothing", "0.05", "--lr", "", "--widths", "[8, 16]"]
    assert json.loads(environment["SM_USER_ARGS"]) == command[3:]
    assert environment["SM_HP_LABEL-SMOOTHING"] == "0.05" and environment["SM_HP_WIDTHS"] == "[8,16]"
    assert json.loads(environment["SM_HPS"]) == {"arch": "resnet", "batch_size": 8, "flip_tta": False,
                                                 "label-smoothing": 0.05, "lr": None, "widths": [8, 16]}
    assert environment["SM_CHANNELS"] == '["test","train"]'
    assert environment["SM_CHANNEL_TRAIN"] == str(base / "input" / "data" / "train")
    assert environment["SM_MODEL_DIR"] == str(base / "model")
    assert environment["SM_OUTPUT_DATA_DIR"] == str(base / "output" / "data")
    assert environment["SM_CURRENT_HOST"] == "algo-1" and environment["SM_HOSTS"] == '["algo-1"]'
    assert environment["SM_NUM_CPUS"] == str(os.cpu_count())
    assert environment["SM_MODULE_DIR"] == str(tmp_path / "job" / "sourcedir.tar.gz")


def test_train_script_accepts_the_forms_sagemaker_passes():
    """train.py as the toolkit calls it: underscored or dashed keys, str() of JSON booleans and lists."""
    from scones.local_model import train

    args = train.parse_args(["--label_smoothing", "0.05", "--batch_size", "64", "--channels_last", "False",
                             "--widths", "[32, 64, 128]", "--blocks", "1,1,1", "--flip-tta", "True"])
    assert (args.label_smoothing, args.batch_size, args.channels_last, args.widths, args.blocks, args.flip_tta) == (
        0.05, 64, False, [32, 64, 128], [1, 1, 1], True)
    assert train.parse_args(["--label-smoothing", "0.1", "--channels-last", "false"]).label_smoothing == 0.1


@pytest.mark.parametrize("argv, named", [
    (["--label_smothing", "0.05"], "unrecognized arguments: --label_smothing 0.05"),
    (["--epoch", "3"], "unrecognized arguments: --epoch 3"),  # no prefix matching: a misspelt key fails
    (["--widths", "[32, x]"], "argument --widths: expected a list of integers"),
    (["--channels_last", "maybe"], "argument --channels-last/--channels_last: expected a boolean"),
])
def test_train_script_refuses_unknown_keys_and_bad_values_naming_them(argv, named):
    completed = subprocess.run([sys.executable, str(training_job.TRAIN_SCRIPT), *argv], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 2
    assert named in completed.stderr


def fake_trainer(calls: list, before_writing=lambda: None):
    """Stands in for train_model in cache tests: writes the three artifacts without training."""
    def train(data_dir, out_dir, hyperparameters, **_):
        calls.append(dict(hyperparameters))
        before_writing()
        out_dir = Path(out_dir)
        for name in models.ARTIFACTS:
            (out_dir / name).write_text(json.dumps({"trained_with": hyperparameters}))
        return out_dir
    return train


def test_ensure_model_trains_once_while_a_second_caller_waits(dataset, tmp_path, monkeypatch):
    calls: list = []
    second_caller_waiting = threading.Event()
    real_report = models._report_waiting
    monkeypatch.setattr(models, "_report_waiting", lambda path: (real_report(path), second_caller_waiting.set()))
    # The first caller holds the lock until the second one is blocked on it.
    monkeypatch.setattr(models, "train_model", fake_trainer(
        calls, lambda: poll(second_caller_waiting.is_set, 60, interval=0.01, what="the second caller to wait on the lock")))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.ensure_model(dataset, tmp_path / "state", **TINY)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2 and results[0] == results[1]
    assert len(calls) == 1
    folder = results[0]
    assert folder.parent == tmp_path / "state" / "models"
    assert all((folder / name).is_file() for name in models.ARTIFACTS)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_ensure_model_cache_key_follows_data_and_hyperparameters(dataset, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(models, "train_model", fake_trainer(calls))
    folder = models.ensure_model(dataset, tmp_path / "state", **TINY)
    assert models.ensure_model(dataset, tmp_path / "state", **TINY) == folder
    assert len(calls) == 1
    other = models.ensure_model(dataset, tmp_path / "state", **{**TINY, "seed": 1})
    assert other != folder and len(calls) == 2
    (dataset / "train" / "bicycle" / "bicycle_000.png").unlink()
    assert models.ensure_model(dataset, tmp_path / "state", **TINY) not in (folder, other)
    assert len(calls) == 3


def test_ensure_model_leaves_nothing_behind_when_training_fails(dataset, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise training_job.TrainingError("boom")

    monkeypatch.setattr(models, "train_model", failing)
    with pytest.raises(training_job.TrainingError, match="boom"):
        models.ensure_model(dataset, tmp_path / "state", **TINY)
    assert [p.suffix for p in (tmp_path / "state" / "models").iterdir()] == [".lock"]


def test_ensure_model_clears_staging_left_by_a_killed_run(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "train_model", fake_trainer([]))
    leftover = tmp_path / "state" / "models" / f".{models.model_key(dataset, TINY)}-killed"
    leftover.mkdir(parents=True)
    models.ensure_model(dataset, tmp_path / "state", **TINY)
    assert not leftover.exists()


def test_ensure_tiny_model_gives_a_servable_model(tmp_path):
    folder = testing.ensure_tiny_model(tmp_path / "state")
    assert testing.ensure_tiny_model(tmp_path / "state") == folder
    with tarfile.open(folder / "model.tar.gz") as archive:
        assert "code/inference.py" in archive.getnames()


def test_ensure_model_names_the_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks train/bicycle/"):
        models.ensure_model(tmp_path / "empty", tmp_path / "state")


@pytest.mark.slow
def test_default_model_on_the_real_data_reaches_the_floor():
    data = settings.data_dir()
    if not (data / "train" / "bicycle").is_dir():
        pytest.skip(f"real data not staged at {data}")
    folder = models.ensure_model(data)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_test"] == 200
    # A floor that catches a broken pipeline (which scores ~0.5), not the 0.96 target: the default
    # model measured 0.895-0.935 across seeds, devices and memory formats (benchmarks/train.py,
    # benchmarks/train_sweep.py), so 0.93 would fail a correct pipeline.
    assert metrics["test_accuracy"] >= 0.90, metrics


@pytest.mark.parametrize("policy", ["trivialaugment", "autoaugment"])
def test_train_script_with_augment_policies_and_weight_average_is_deterministic(dataset, tmp_path, policy):
    from scones.local_model import train

    def run(name: str) -> tuple[dict, dict]:
        args = train.parse_args([*training_job.toolkit_cmd_args({**TINY, "epochs": 2}), "--policy", policy,
                                 "--erasing", "0.5", "--ema-decay", "0.9", "--num-threads", "1",
                                 "--train", str(dataset / "train"), "--test", str(dataset / "test"),
                                 "--model-dir", str(tmp_path / name / "model"),
                                 "--output-data-dir", str(tmp_path / name / "output")])
        metrics = train.train(args)
        return metrics, torch.load(tmp_path / name / "model" / train.WEIGHTS_FILE)["state_dict"]

    import torch

    first_metrics, first_weights = run("first")
    second_metrics, second_weights = run("second")
    assert first_metrics["hyperparameters"]["policy"] == policy and "unaveraged" in first_metrics
    assert first_metrics["test_accuracy"] == second_metrics["test_accuracy"]
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[key], second_weights[key]) for key in first_weights)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_train_script_with_batch_mixing_is_deterministic_and_changes_training(dataset, tmp_path, mix):
    import torch

    from scones.local_model import train

    def run(name: str, *extra: str) -> tuple[dict, dict]:
        args = train.parse_args([*training_job.toolkit_cmd_args({**TINY, "epochs": 2}), "--num-threads", "1", *extra,
                                 "--train", str(dataset / "train"), "--test", str(dataset / "test"),
                                 "--model-dir", str(tmp_path / name / "model"),
                                 "--output-data-dir", str(tmp_path / name / "output")])
        metrics = train.train(args)
        return metrics, torch.load(tmp_path / name / "model" / train.WEIGHTS_FILE)["state_dict"]

    mixed_metrics, mixed = run("first", "--mix", mix, "--mix-prob", "1")
    _, mixed_again = run("second", "--mix", mix, "--mix-prob", "1")
    _, unmixed = run("unmixed")
    assert mixed_metrics["hyperparameters"]["mix"] == mix
    assert all(torch.equal(mixed[key], mixed_again[key]) for key in mixed)
    assert not all(torch.equal(mixed[key], unmixed[key]) for key in mixed)
