"""Where the accuracy ceiling is: train.py configurations x seeds, scored on a hold-out and on test.

    .venv/bin/python benchmarks/train_sweep.py [--configs FILE.json] [--seeds 0,1,2] [--parallel N]

Each configuration (a name -> train.py arguments string; the default set is CONFIGS below) is
trained once per seed on two splits: "holdout" (train.py on 4/5 of the training images, scored
on the other 1/5, for choosing without looking at test) and "test" (all training images, scored
on the 200 test images, as `scones train` reports). Runs go in parallel, one CPU thread each, on
CUDA when present (a GPU machine sweeps in minutes what takes hours on two cores). Prints per
configuration and split the mean/min/max accuracy over seeds, coverage and precision at 0.93,
and the same for the ensemble that averages the seeds' probabilities; every run's figures and
probabilities go to --out/results.jsonl.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scones import settings  # noqa: E402
from scones.local_model import inference, network, train  # noqa: E402

TRAIN_SCRIPT = ROOT / "local_model" / "train.py"
HOLDOUT_EVERY = 5
THRESHOLD = 0.93
CONFIGS = {
    "default": "",
    "epochs100": "--epochs 100",
    "epochs200": "--epochs 200",
    "widths48-epochs100": "--widths 48,96,192 --epochs 100",
    "batch64-epochs100": "--batch-size 64 --lr 0.2 --epochs 100",
    "cutmix-epochs100": "--mix cutmix --epochs 100",
}


def make_holdout(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """Every HOLDOUT_EVERY-th training image of each class (by name) -> holdout/, the rest -> train/."""
    for class_name in network.CLASSES:
        files = sorted((data_dir / "train" / class_name).iterdir())
        for index, path in enumerate(files):
            part = "holdout" if index % HOLDOUT_EVERY == 0 else "train"
            (out / part / class_name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, out / part / class_name / path.name)
    return out / "train", out / "holdout"


def scores(p_motorcycle: np.ndarray, labels: np.ndarray) -> dict:
    predicted = (p_motorcycle >= 0.5).astype(int)
    covered = np.maximum(p_motorcycle, 1 - p_motorcycle) >= THRESHOLD
    return {"accuracy": float((predicted == labels).mean()), "coverage": float(covered.mean()),
            "precision": float((predicted[covered] == labels[covered]).mean()) if covered.any() else float("nan")}


@functools.cache
def scored_images(channel: Path) -> tuple:
    """A channel's images as the model's input tensor and their labels, decoded once per sweep."""
    images, labels, _ = train.load_channel(channel)
    return network.to_tensor(images), labels


def run_one(name: str, arguments: str, seed: int, split: str, channels: dict, scratch: Path) -> dict:
    train_dir, score_dir = channels[split]
    work = Path(tempfile.mkdtemp(dir=scratch))
    command = [sys.executable, str(TRAIN_SCRIPT), "--train", str(train_dir), "--test", str(score_dir),
               "--model-dir", str(work / "model"), "--output-data-dir", str(work / "output"),
               "--seed", str(seed), "--num-threads", "1", *arguments.split()]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if finished.returncode:
        raise RuntimeError(f"{name} seed {seed} on {split} failed:\n{finished.stderr[-2000:]}")
    model = inference.model_fn(str(work / "model"))
    images, labels = scored_images(score_dir)
    p_motorcycle = train.predict(model, images, model.scones_flip_tta).numpy()[:, 1]
    device = json.loads((work / "output" / "metrics.json").read_text())["device"]
    shutil.rmtree(work, ignore_errors=True)
    return {"name": name, "seed": seed, "split": split, "seconds": round(time.perf_counter() - started, 1),
            "device": device, **scores(p_motorcycle, labels), "p_motorcycle": p_motorcycle.round(5).tolist(),
            "labels": labels.tolist()}


def summarise(results: list[dict]) -> None:
    groups = defaultdict(list)
    for result in results:
        groups[(result["name"], result["split"])].append(result)
    print(f"\n{'configuration':<22}{'split':<9}{'seeds':>5}  {'accuracy mean (min-max)':<26}{'cov@.93':>8}{'prec@.93':>9}"
          f"  | ensemble acc  cov   prec | s/run")
    for (name, split), runs in sorted(groups.items()):
        accuracy = [run["accuracy"] for run in runs]
        precision = [run["precision"] for run in runs if not np.isnan(run["precision"])]
        ensemble = scores(np.mean([run["p_motorcycle"] for run in runs], axis=0), np.asarray(runs[0]["labels"]))
        spread = f"{np.mean(accuracy):.3f} ({min(accuracy):.3f}-{max(accuracy):.3f})"
        print(f"{name:<22}{split:<9}{len(runs):>5}  {spread:<26}{np.mean([r['coverage'] for r in runs]):>8.3f}"
              f"{np.mean(precision) if precision else float('nan'):>9.3f}"
              f"  |      {ensemble['accuracy']:.3f} {ensemble['coverage']:.3f} {ensemble['precision']:.3f} |"
              f" {np.mean([r['seconds'] for r in runs]):.0f} ({runs[0]['device']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="staged data [default: settings.data_dir()]")
    parser.add_argument("--configs", type=Path, help="JSON object name -> train.py arguments [default: CONFIGS]")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--splits", default="holdout,test", help="holdout, test or both")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="runs at once")
    parser.add_argument("--out", type=Path, default=Path("sweep-results"), help="results.jsonl goes here")
    args = parser.parse_args()
    data_dir = settings.data_dir(args.data)
    configs = json.loads(args.configs.read_text()) if args.configs else CONFIGS
    seeds = [int(seed) for seed in args.seeds.split(",")]
    splits = args.splits.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, arguments, seed, split) for seed in seeds for name, arguments in configs.items() for split in splits]
    print(f"{len(jobs)} runs ({len(configs)} configurations x {len(seeds)} seeds x {len(splits)} splits), "
          f"{args.parallel} at a time, data {data_dir}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="scones-sweep-") as scratch, \
            open(args.out / "results.jsonl", "w") as log, ThreadPoolExecutor(args.parallel) as pool:
        holdout_train, holdout = make_holdout(data_dir, Path(scratch) / "holdout")
        channels = {"holdout": (holdout_train, holdout), "test": (data_dir / "train", data_dir / "test")}
        futures = [pool.submit(run_one, *job, channels, Path(scratch)) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            result = future.result()
            results.append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
            print(f"[{done}/{len(jobs)}] {result['name']} seed {result['seed']} {result['split']}: "
                  f"accuracy {result['accuracy']:.3f} coverage {result['coverage']:.3f} "
                  f"precision {result['precision']:.3f} ({result['seconds']} s)", flush=True)
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
