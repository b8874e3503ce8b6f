"""Training under AWS's own training toolkit (sagemaker-training + sagemaker-pytorch-training, the code
that starts the entry point inside the PyTorch training container) against our runner.

The toolkit runs as the container runs it: `python -m sagemaker_training.cli.train` (the image's
`train` command) with SAGEMAKER_TRAINING_MODULE=sagemaker_pytorch_container.training:main, on a job
folder laid out as SageMaker lays out /opt/ml (SAGEMAKER_BASE_DIR points the toolkit at it:
sagemaker_training/environment.py) from the sourcedir.tar.gz deploy/sagemaker.py uploads.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scones import testing
from scones.deploy import sagemaker as sm
from scones.harness import training_job
from scones.harness.cli import main as scones

pytestmark = pytest.mark.parity

TINY_CLI = ["--epochs", "1", "--blocks", "1,1", "--widths", "8,16", "--batch-size", "8"]

# train.py replaced by a probe: it records how it was started, as the toolkit or our port starts it.
PROBE = b'''import json, os, sys
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "probe.json"), "w") as out:
    json.dump({"argv": sys.orig_argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}, out)
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return testing.write_synthetic_dataset(tmp_path_factory.mktemp("parity-data") / "data", {"train": 4, "test": 2})


def probe_source() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(sm.ENTRY_POINT)
        info.size = len(PROBE)
        archive.addfile(info, io.BytesIO(PROBE))
    return buffer.getvalue()


def probe(root: Path, dataset: Path, hyperparameters: dict, toolkit: str | None) -> dict:
    base = training_job.write_training_job(root, dataset, hyperparameters, name="parity-job", source=probe_source())
    training_job.run_job(base, root / "train.log", name="parity-job", toolkit=toolkit, echo=False)
    seen = json.loads((base / "output" / "data" / "probe.json").read_text())
    # The same job in two folders: compare with the folder taken out.
    return json.loads(json.dumps(seen).replace(str(root), "<job>"))


def test_our_runner_starts_the_entry_point_exactly_as_the_toolkit_does(toolkit_python, toolkit_torch, dataset, tmp_path):
    """Same command line (`python -- train.py` + sagemaker_training.mapping.to_cmd_args of the decoded
    hyperparameters), same working folder (/opt/ml/code) and the same environment: every SM_* variable
    of Environment.to_env_vars, plus what trainer.train, entry_point.run and
    sagemaker_pytorch_container.training.train put into os.environ. Only the interpreter differs
    (the toolkit's venv here, the project's Python in our port), hence PYTHONPATH and, under
    `make parity-torch25`, the torch version the toolkit reports (SM_DLC_TORCH_VERSION)."""
    import torch

    hyperparameters = {"epochs": 2, "lr": 0.05, "label-smoothing": 0.1, "channels_last": False, "augment": True,
                       "widths": [32, 64, 128], "blocks": "1,1,1", "arch": "resnet", "x": 1, "nested": {"a": 1, "b": "c"},
                       "nothing": None, "ratio": 5e-05}
    ours = probe(tmp_path / "ours", dataset, hyperparameters, toolkit=None)
    theirs = probe(tmp_path / "theirs", dataset, hyperparameters, toolkit=toolkit_python)

    assert ours["argv"] == theirs["argv"] == [
        "--", "train.py", "--arch", "resnet", "--augment", "True", "--blocks", "1,1,1", "--channels_last", "False",
        "--epochs", "2", "--label-smoothing", "0.1", "--lr", "0.05", "--nested", "a=1,b=c", "--nothing", "",
        "--ratio", "5e-05", "--widths", "[32, 64, 128]", "-x", "1"]
    assert ours["cwd"] == theirs["cwd"] == "<job>/opt/ml/code"
    assert ours["env"]["PYTHONPATH"].split(":")[0] == theirs["env"]["PYTHONPATH"].split(":")[0] == "<job>/opt/ml/code"
    assert (ours["env"]["SM_DLC_TORCH_VERSION"], theirs["env"]["SM_DLC_TORCH_VERSION"]) == (torch.__version__, toolkit_torch)
    interpreter = ("PYTHONPATH", "SM_DLC_TORCH_VERSION", "SAGEMAKER_BASE_DIR")  # the last: how we point the toolkit here
    ours_env = {k: v for k, v in ours["env"].items() if k not in interpreter}
    theirs_env = {k: v for k, v in theirs["env"].items() if k not in interpreter}
    assert sorted(ours_env) == sorted(theirs_env)
    assert {k: (ours_env[k], theirs_env[k]) for k in ours_env if ours_env[k] != theirs_env[k]} == {}
    assert theirs_env["SM_HP_LABEL-SMOOTHING"] == "0.1" and theirs_env["SM_CHANNEL_TRAIN"] == "<job>/opt/ml/input/data/train"
    assert json.loads(theirs_env["SM_HPS"])["widths"] == [32, 64, 128]


@pytest.mark.parametrize("form, key, expected", [
    (["-H", "label_smoothing=0.05"], "label_smoothing", 0.05),
    (["-H", "label-smoothing=0.05"], "label_smoothing", 0.05),
    (["-H", "batch_size=4"], "batch_size", 4),
    (["--batch-size", "4"], "batch_size", 4),
    (["-H", "channels_last=false"], "channels_last", False),
    (["-H", "channels_last=True"], "channels_last", True),
    (["-H", "widths=[8, 12]"], "widths", [8, 12]),
    (["--widths", "8,12"], "widths", [8, 12]),
])
def test_every_documented_hyperparameter_form_trains_under_the_toolkit(toolkit_python, dataset, tmp_path, monkeypatch,
                                                                       form, key, expected):
    """The forms `scones train --help` and the README show (also what `scones deploy -H` sends, through
    the same sdk_hyperparameters): each reaches train.py through the real toolkit and takes effect."""
    monkeypatch.setenv(training_job.TOOLKIT_PYTHON, toolkit_python)
    out = tmp_path / "out"
    result = CliRunner().invoke(scones, ["train", "--data", str(dataset), "--out", str(out), *TINY_CLI, *form])
    log = (out / "train.log").read_text() if (out / "train.log").exists() else ""
    assert result.exit_code == 0, result.output + log[-3000:]
    assert "# AWS's sagemaker-training toolkit" in log and "Reporting training SUCCESS" in log
    assert json.loads((out / "metrics.json").read_text())["hyperparameters"][key] == expected
    with tarfile.open(out / "model.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["code", "code/inference.py", "code/network.py", "model.pth"]


def test_the_toolkit_and_our_runner_train_the_same_model(toolkit_python, same_torch, dataset, tmp_path):
    """Byte-identical model.tar.gz, metrics aside from the timing: the artifact layout and the weights
    do not depend on which of the two started train.py. (Under `make parity-torch25` the toolkit
    trains with torch 2.5.1 and our runner with the project's torch: the same layout and checkpoint
    keys, not the same bits.)"""
    hyperparameters = {**testing.TINY_HYPERPARAMETERS, "label_smoothing": 0.05, "channels_last": False, "seed": 2}
    ours = training_job.train_model(dataset, tmp_path / "ours", hyperparameters, echo=False, toolkit=None)
    theirs = training_job.train_model(dataset, tmp_path / "theirs", hyperparameters, echo=False, toolkit=toolkit_python)
    if not same_torch:
        import torch

        with tarfile.open(ours / "model.tar.gz") as a, tarfile.open(theirs / "model.tar.gz") as b:
            assert a.getnames() == b.getnames()
            ours_checkpoint = torch.load(a.extractfile("model.pth"), weights_only=False)
            theirs_checkpoint = torch.load(b.extractfile("model.pth"), weights_only=False)
        assert ours_checkpoint.keys() == theirs_checkpoint.keys()
        assert ours_checkpoint["state_dict"].keys() == theirs_checkpoint["state_dict"].keys()
        assert ours_checkpoint["architecture"] == theirs_checkpoint["architecture"]
        return
    assert (ours / "model.tar.gz").read_bytes() == (theirs / "model.tar.gz").read_bytes()
    assert (ours / "baseline.json").read_text() == (theirs / "baseline.json").read_text()
    timing = ("training_seconds",)
    assert ({k: v for k, v in json.loads((ours / "metrics.json").read_text()).items() if k not in timing}
            == {k: v for k, v in json.loads((theirs / "metrics.json").read_text()).items() if k not in timing})


@pytest.mark.parametrize("runner", ["toolkit", "port"])
def test_an_unknown_hyperparameter_fails_the_job_and_names_the_key(toolkit_python, dataset, tmp_path, runner):
    """The toolkit passes every key; train.py's argparse refuses one it does not know (exit status 2),
    the toolkit reports ExecuteUserScriptError and the job fails, as it would on AWS."""
    with pytest.raises(training_job.TrainingError) as failure:
        training_job.train_model(dataset, tmp_path, {**testing.TINY_HYPERPARAMETERS, "label_smothing": 0.05}, echo=False,
                           toolkit=toolkit_python if runner == "toolkit" else None)
    assert "unrecognized arguments: --label_smothing 0.05" in str(failure.value)
    if runner == "toolkit":
        assert "ExecuteUserScriptError" in str(failure.value)
    else:
        assert "exited with status 2" in str(failure.value)
    assert not (tmp_path / "model.tar.gz").exists()
