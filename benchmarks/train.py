"""Benchmark the classifier against its targets, with a plain small CNN trained in the same run as baseline.

    .venv/bin/python benchmarks/train.py [--data DIR] [--out DIR] [--skip-baseline]
    .venv/bin/python benchmarks/train.py --score-model DIR   # score a trained model folder, e.g. an older one

Trains (through `scones.harness.models.train_model`, i.e. train.py as a SageMaker training job runs it;
--toolkit-python PYTHON runs the job with AWS's sagemaker-training toolkit instead of our port):
  1. baseline: a plain small CNN, no augmentation, no test-time augmentation;
  2. the default model: exactly what `scones train` / ensure_model() train.
Prints for each: test accuracy, coverage and precision at the 0.93 threshold, training time, and
single-image latency (p50/p90) through the packaged handlers (input_fn -> predict_fn -> output_fn
on PNG bytes), the share of generated non-vehicle images (local_model/outliers.py's evaluation set,
sent as PNGs at their own sizes) the handlers leave below the threshold, plus the machine load,
since the two cores are shared.

Targets (issue 3, accuracy as issue 15 set it after issue 3 found the from-scratch ceiling near
0.93-0.94): accuracy >= 0.93; at 0.93 coverage >= 0.85 with precision >= 0.98; non-vehicles
refused >= 95%; training <= 180 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# As train.py does: idle OpenMP threads sleep instead of spinning. Without it, 2-thread single-image
# latency on this shared machine was ~96 ms p50 against ~1.5 ms with 1 thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scones import settings
from scones.deploy import sagemaker as sm  # noqa: E402
from scones.harness import models  # noqa: E402
from scones.harness.serving.handlers import extract_tar, import_handlers  # noqa: E402

BASELINE = {"arch": "small-cnn", "widths": [32, 64], "epochs": 15, "batch_size": 32, "lr": 0.02,
            "augment": False, "flip_tta": False}
TARGETS = {"test_accuracy": 0.93, "threshold_coverage": 0.85, "threshold_precision": 0.98, "ood_rejection": 0.95,
           "training_seconds": 180}
# Generated non-vehicles per kind sent through the handlers.
OOD_PER_KIND = 25


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def served(out_dir: Path):
    """(inference module, model) from out_dir/model.tar.gz, loaded as the serving container loads them."""
    unpacked = out_dir / "unpacked"
    if not unpacked.is_dir():
        with tarfile.open(out_dir / "model.tar.gz") as archive:
            extract_tar(archive, unpacked)
    inference = import_handlers(unpacked)
    return inference, inference.model_fn(str(unpacked))


def handler_ood_rejection(out_dir: Path, threshold: float) -> dict:
    """Share of generated non-vehicle PNGs whose top probability the handlers leave below the threshold."""
    import io

    from PIL import Image

    from scones.local_model import outliers

    inference, model = served(out_dir)
    refused: dict[str, list[bool]] = {}
    for kind, pixels in outliers.evaluation_set(OOD_PER_KIND):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        reply = inference.output_fn(inference.predict_fn(inference.input_fn(buffer.getvalue(), "image/png"), model),
                                    "application/json")
        refused.setdefault(kind, []).append(max(json.loads(reply)) < threshold)
    every = [value for values in refused.values() for value in values]
    return {"ood_rejection": sum(every) / len(every),
            "by_kind": {kind: round(sum(values) / len(values), 3) for kind, values in refused.items()}}


def handler_latency(out_dir: Path, data_dir: Path, threads: int) -> dict:
    """Per-request seconds through the packaged handlers for every test PNG, one image per request."""
    import torch

    inference, model = served(out_dir)
    bodies = [path.read_bytes() for path in sorted((data_dir / "test").rglob("*.png"))]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for body in bodies[:10]:  # warm-up
            inference.output_fn(inference.predict_fn(inference.input_fn(body, "image/png"), model), "application/json")
        seconds = []
        for body in bodies:
            started = time.perf_counter()
            inference.output_fn(inference.predict_fn(inference.input_fn(body, "image/png"), model), "application/json")
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    seconds.sort()
    return {"threads": threads, "p50_ms": 1000 * statistics.median(seconds),
            "p90_ms": 1000 * seconds[int(0.9 * (len(seconds) - 1))], "n": len(seconds)}


def run(name: str, data_dir: Path, out_dir: Path, hyperparameters: dict, toolkit: str | None) -> dict:
    print(f"\n== {name}: {hyperparameters or 'train.py defaults'} ({load_average()})", flush=True)
    started = time.perf_counter()
    models.train_model(data_dir, out_dir, hyperparameters, echo=False, toolkit=toolkit)
    wall = time.perf_counter() - started
    return score(name, data_dir, out_dir, {"wall_seconds_with_startup": round(wall, 1)})


def score(name: str, data_dir: Path, out_dir: Path, extra: dict | None = None) -> dict:
    metrics = json.loads((out_dir / "metrics.json").read_text())
    latency = [handler_latency(out_dir, data_dir, threads) for threads in (1, os.cpu_count() or 1)]
    ood = handler_ood_rejection(out_dir, metrics["threshold"])
    result = {
        "name": name,
        "test_accuracy": metrics["test_accuracy"],
        "threshold_coverage": metrics["threshold_coverage"],
        "threshold_precision": metrics["threshold_precision"],
        "ood_rejection": ood["ood_rejection"],
        "ood_rejection_by_kind": ood["by_kind"],
        "ood_rejection_in_metrics": metrics.get("ood_rejection"),  # train.py's own set (None before issue 15)
        "temperature": metrics.get("temperature", 1.0),
        "training_seconds": metrics["training_seconds"],
        **(extra or {}),
        "confusion_matrix": metrics["confusion_matrix"],
        "latency": latency,
        "load_after": load_average(),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def verdict(result: dict) -> list[str]:
    lines = []
    for key, target in TARGETS.items():
        value = result[key]
        ok = value is not None and (value <= target if key == "training_seconds" else value >= target)
        lines.append(f"  {key:<20} {value!s:<8} target {'<=' if key == 'training_seconds' else '>='} {target}"
                     f"  {'ok' if ok else 'MISSED'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="staged data [default: settings.data_dir()]")
    parser.add_argument("--out", type=Path, default=None, help="keep artifacts here [default: a temp dir]")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("-H", "--hyperparameter", action="append", default=[],
                        help="override a default-model hyperparameter, NAME=VALUE as `scones train -H` takes it")
    parser.add_argument("--toolkit-python", default=None, metavar="PYTHON",
                        help="run the jobs with AWS's training toolkit in this Python [default: our port]")
    parser.add_argument("--score-model", type=Path, default=None, metavar="DIR",
                        help="train nothing: score the model folder DIR (model.tar.gz + metrics.json) as trained")
    args = parser.parse_args()
    data_dir = settings.data_dir(args.data)
    if args.score_model:
        print(f"data {data_dir}; {load_average()}; pid {os.getpid()}")
        result = score(f"model in {args.score_model}", data_dir, args.score_model)
        print("\n".join(verdict(result)))
        return 0
    candidate = {key: sm.hyperparameter_value(value) for key, _, value in (item.partition("=") for item in args.hyperparameter)}
    print(f"data {data_dir}; {load_average()}; pid {os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="scones-bench-") as scratch:
        root = args.out or Path(scratch)
        results = []
        if not args.skip_baseline:
            results.append(run("baseline small CNN", data_dir, root / "baseline", BASELINE, args.toolkit_python))
        results.append(run("default model", data_dir, root / "default", candidate, args.toolkit_python))
    print(f"\n== summary ({load_average()})")
    for result in results:
        print(f"{result['name']}: accuracy {result['test_accuracy']:.3f}, coverage@0.93 {result['threshold_coverage']:.3f}, "
              f"precision@0.93 {result['threshold_precision']}, non-vehicles refused {result['ood_rejection']:.3f}, "
              f"training {result['training_seconds']:.0f} s, "
              + ", ".join(f"p50 {lat['p50_ms']:.2f} ms ({lat['threads']} thr)" for lat in result["latency"]))
    print("default model vs targets:")
    print("\n".join(verdict(results[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
