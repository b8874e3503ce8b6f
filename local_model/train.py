"""SageMaker PyTorch script-mode training entry point for the bicycle/motorcycle classifier.

Runs unchanged in a SageMaker PyTorch training container and by hand:

    python local_model/train.py --epochs 30 --seed 0

Inputs (SageMaker's contract, with defaults for running by hand):
    SM_CHANNEL_TRAIN, SM_CHANNEL_TEST  folders of {bicycle,motorcycle}/*.png
    SM_MODEL_DIR                       receives model.pth and code/{inference,network}.py,
                                       i.e. exactly the model.tar.gz layout SageMaker serves
    SM_OUTPUT_DATA_DIR                 receives metrics.json and baseline.json
    SM_NUM_GPUS                        0 forces the CPU even where CUDA is present
Hyperparameters arrive as command-line arguments, as SageMaker's training toolkit passes them:
every key as the user wrote it (`--batch_size 64` and `--batch-size 64` both work) and every value
as str() of the JSON the SDK sent (`--channels_last False`, `--widths "[32, 64, 128]"`; the
comma form `--widths 32,64,128` works too). An unknown key fails with exit status 2, naming it.

Confidence is trained and calibrated for the threshold the workflow applies (--threshold):
- outlier exposure: beside every batch, generated images that are no vehicle at all
  (outliers.py: blank, noise, gradients, strokes, tiny, 2x2-shuffled and heavily cut training
  images) are trained towards the uniform distribution, so they come out near [0.5, 0.5];
- temperature: --calibration-split of each class is held out of training, and the softmax
  temperature is the one with the most hold-out images above the threshold that keeps hold-out
  precision >= --calibration-precision and generated garbage refused >= --calibration-rejection.
  It is stored in model.pth and applied by inference.py (1 for checkpoints without one).
metrics.json reports ood_rejection (share of a garbage set of other seeds, and of kinds training
never makes, left below the threshold) beside accuracy, coverage and precision.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on a shared machine spinning made epochs 5-8x slower
# (27 s vs 3.5 s measured here). Only takes effect before torch loads, i.e. when run as a script.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

try:  # inside the scones package
    from . import network, outliers
except ImportError:  # run as a script, as SageMaker does: the script's folder is on sys.path
    import network  # type: ignore[no-redef]  # the same modules under their top-level names
    import outliers  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
WEIGHTS_FILE = "model.pth"
# Files copied into <model dir>/code/: the serving handlers and everything they import.
SERVING_CODE = ("inference.py", "network.py")
AUGMENT_POLICIES = ("none", "trivialaugment", "autoaugment")
MIX_METHODS = ("none", "mixup", "cutmix")
# Candidate temperatures for calibration, from sharpening 5x to softening 5x.
TEMPERATURES = np.geomspace(0.2, 5.0, 161)
# Images of each garbage kind in the out-of-distribution figure of metrics.json.
OOD_PER_KIND = 40


def _str2bool(value: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _int_list(value: str) -> list[int]:
    """'[32, 64, 128]' (a JSON list, as SageMaker passes one), '32,64,128' or '32' -> [32, 64, 128]."""
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a list of integers like [32, 64, 128] or 32,64,128, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    def add_argument(self, *names, **kwargs):
        """Each --dashed-name also answers to --underscored_name: SageMaker passes keys exactly as written."""
        spellings = list(names)
        for name in names:
            if name.startswith("--") and "-" in name[2:]:
                spellings.append("--" + name[2:].replace("-", "_"))
        return super().add_argument(*spellings, **kwargs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    # allow_abbrev=False: a misspelt key must fail, not silently set the option it is a prefix of.
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    # Hyperparameters (the defaults are the tuned ones; see benchmarks/train.py).
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-5)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--warmup-epochs", type=float, default=2.0)
    parser.add_argument("--arch", choices=network.ARCHITECTURES, default="resnet",
                        help="resnet: torchvision ResNet adapted to 32x32; small-cnn: the plain baseline")
    parser.add_argument("--widths", type=_int_list, default=network.DEFAULT_ARCHITECTURE["widths"],
                        help="channels per ResNet stage, e.g. [32, 64, 128] or 32,64,128")
    parser.add_argument("--blocks", type=_int_list, default=network.DEFAULT_ARCHITECTURE["blocks"],
                        help="BasicBlocks per ResNet stage, e.g. [1, 1, 1] or 1,1,1")
    parser.add_argument("--augment", type=_str2bool, default=True, help="random crop (pad 4) + horizontal flip")
    parser.add_argument("--policy", choices=AUGMENT_POLICIES, default="none",
                        help="extra per-image augmentation before crop+flip: torchvision TrivialAugmentWide or "
                             "AutoAugment with the CIFAR10 policy")
    parser.add_argument("--erasing", type=float, default=0.0, help="RandomErasing probability per image (cutout)")
    parser.add_argument("--mix", choices=MIX_METHODS, default="none",
                        help="batch mixing: torchvision MixUp or CutMix (soft labels)")
    parser.add_argument("--mix-alpha", type=float, default=1.0, help="Beta(alpha, alpha) of the mixing ratio")
    parser.add_argument("--mix-prob", type=float, default=0.5, help="share of batches that get mixed")
    parser.add_argument("--ema-decay", type=float, default=0.0,
                        help="per-step decay of an exponential moving average of the weights (and BN buffers); "
                             "the average is what gets saved and scored; 0 = off")
    parser.add_argument("--flip-tta", type=_str2bool, default=True,
                        help="average predictions over the image and its mirror (training and serving)")
    parser.add_argument("--channels-last", type=_str2bool, default=True,
                        help="train in NHWC memory format (oneDNN's CPU convolutions are 10-25%% faster in it here)")
    parser.add_argument("--outlier-weight", type=float, default=0.5,
                        help="weight of the outlier-exposure loss: generated non-vehicle images (local_model/outliers.py) "
                             "trained towards the uniform distribution; 0 = off")
    parser.add_argument("--outlier-ratio", type=float, default=0.25,
                        help="generated non-vehicle images per training image in each batch")
    parser.add_argument("--calibration-split", type=float, default=0.1,
                        help="share of the training images held out (per class) to calibrate the softmax temperature; "
                             "0 = no calibration (temperature 1)")
    parser.add_argument("--calibration-precision", type=float, default=0.98,
                        help="precision above the threshold that the calibrated temperature must keep on the hold-out")
    parser.add_argument("--calibration-rejection", type=float, default=0.95,
                        help="share of generated non-vehicle images it must keep below the threshold")
    parser.add_argument("--threshold", type=float, default=0.93)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=0, help="torch CPU threads; 0 = all cores")
    # SageMaker's environment contract.
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "data/train"))
    parser.add_argument("--test", default=env.get("SM_CHANNEL_TEST", "data/test"))
    parser.add_argument("--output-data-dir", default=env.get("SM_OUTPUT_DATA_DIR", "output"))
    parser.add_argument("--num-gpus", type=int, default=int(env.get("SM_NUM_GPUS", "-1")),
                        help="-1 = use CUDA when present")
    args = parser.parse_args(argv)
    if not 0 <= args.calibration_split < 1:
        parser.error(f"--calibration-split {args.calibration_split} must be in [0, 1)")
    if args.arch == "resnet" and len(args.widths) != len(args.blocks):
        parser.error(f"--widths {args.widths} and --blocks {args.blocks} must have the same length")
    return args


def load_channel(channel: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A channel folder of <class>/<image> -> (uint8 images N x 32 x 32 x 3, labels, relative paths)."""
    root = Path(channel)
    if not root.is_dir():
        raise FileNotFoundError(f"data channel {root} does not exist (expected {'/'.join(network.CLASSES)} folders of images)")
    images, labels, names = [], [], []
    for label, class_name in enumerate(network.CLASSES):
        class_dir = root / class_name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"data channel {root} has no {class_name}/ folder")
        files = sorted(path for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{class_dir} holds no .png/.jpg images")
        for path in files:
            images.append(network.load_image_file(path))
            labels.append(label)
            names.append(f"{class_name}/{path.name}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


def choose_device(num_gpus: int) -> torch.device:
    if num_gpus != 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def augment_batch(batch: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop from a reflect-padded image and random horizontal flip, per sample."""
    n, _, height, width = batch.shape
    padded = nn.functional.pad(batch, (padding,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator).lt(0.5).tolist()
    out = torch.empty_like(batch)
    for index, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[index, :, dy:dy + height, dx:dx + width]
        out[index] = crop.flip(2) if flip else crop
    return out


def build_policy(name: str, erasing: float):
    """A per-image torchvision transform on uint8 (3, H, W) tensors, or None."""
    from torchvision.transforms import v2

    steps = []
    if name == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif name == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    if erasing > 0:
        # Erase to the mean colour (0 after normalisation would be ideal; 128 grey is close on uint8).
        steps.append(v2.RandomErasing(p=erasing, value=128))
    return v2.Compose(steps) if steps else None


def build_mixer(name: str, alpha: float):
    """A torchvision batch transform (images, labels) -> (mixed images, soft labels), or None."""
    if name == "none":
        return None
    from torchvision.transforms import v2

    mixer = v2.MixUp if name == "mixup" else v2.CutMix
    return mixer(alpha=alpha, num_classes=len(network.CLASSES))


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalised float, as network.to_tensor does for NHWC arrays."""
    mean = torch.tensor(network.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(network.STD).view(1, 3, 1, 1)
    return (pixels.float().div_(255.0) - mean) / std


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, flip_tta: bool, batch_size: int = 256) -> torch.Tensor:
    """Logits (views, N, classes): the image, and with flip_tta its mirror, as serving sees them."""
    model.eval()
    device = next(model.parameters()).device
    views = [images, torch.flip(images, dims=[3])] if flip_tta else [images]
    return torch.stack([
        torch.cat([model(view[start:start + batch_size].to(device)) for start in range(0, len(view), batch_size)])
        for view in views
    ]).float().cpu()


def predict(model: nn.Module, images: torch.Tensor, flip_tta: bool, temperature: float = 1.0) -> torch.Tensor:
    """Probabilities (N, classes), computed as inference.predict_fn computes them."""
    return network.probabilities_from_logits(predict_logits(model, images, flip_tta), temperature)


def split_holdout(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, hold-out): `share` of each class held out at random, for calibration."""
    rng = np.random.default_rng([seed, 3])
    per_class = [rng.permutation(np.flatnonzero(labels == label))[:round(share * (labels == label).sum())]
                 for label in range(len(network.CLASSES))]
    held = np.sort(np.concatenate(per_class))
    return np.setdiff1d(np.arange(len(labels)), held), held


def rejection(probabilities: np.ndarray, threshold: float) -> float:
    """Share of images whose top probability stays below the threshold (the workflow refuses them)."""
    return float((probabilities.max(axis=1) < threshold).mean())


def fit_temperature(logits: torch.Tensor, labels: np.ndarray, garbage_logits: torch.Tensor, threshold: float,
                    min_precision: float, min_rejection: float) -> tuple[float, dict]:
    """The temperature with the most hold-out images above the threshold that still keeps, there,
    precision >= min_precision and >= min_rejection of the generated garbage below it.

    Ties go to the higher (more cautious) temperature. When no temperature keeps both, the
    highest candidate is taken, which refuses nearly everything: safe, and visible in metrics.
    """
    best, best_scores = None, None
    for temperature in TEMPERATURES[::-1]:
        scores = evaluate(network.probabilities_from_logits(logits, temperature).numpy(), labels, threshold)
        scores = {"coverage": scores["threshold_coverage"], "precision": scores["threshold_precision"],
                  "ood_rejection": rejection(network.probabilities_from_logits(garbage_logits, temperature).numpy(), threshold)}
        feasible = (scores["precision"] is not None and scores["precision"] >= min_precision
                    and scores["ood_rejection"] >= min_rejection)
        if feasible and (best_scores is None or scores["coverage"] > best_scores["coverage"]):
            best, best_scores = float(temperature), scores
    if best is None:
        best = float(TEMPERATURES[-1])
        print(f"calibration: no temperature keeps precision >= {min_precision} and garbage rejection >= "
              f"{min_rejection} on the hold-out; using the most cautious, {best:.3f}", flush=True)
        best_scores = {"coverage": 0.0, "precision": None, "ood_rejection": 1.0, "infeasible": True}
    assert best_scores is not None  # set with best, or by the fallback above
    return best, best_scores


def ood_scores(model: nn.Module, flip_tta: bool, temperature: float, threshold: float,
               test_images: np.ndarray) -> dict:
    """Out-of-distribution figure: the share of garbage refused, over images training never saw.

    Every evaluation kind from outliers.EVALUATION_SEED (training's stream is seeded apart), some
    kinds training never made, plus shuffled and cut test images (training cut only training images).
    """
    rng = np.random.default_rng(outliers.EVALUATION_SEED)
    garbage = outliers.evaluation_set(OOD_PER_KIND)
    kinds = [kind for kind, _ in garbage]
    images = [outliers.as_model_input(image) for _, image in garbage]
    for kind in outliers.TRAINING_SOURCE_KINDS:
        for _ in range(OOD_PER_KIND):
            images.append(outliers.generate(kind, rng, test_images[rng.integers(len(test_images))]))
            kinds.append(f"{kind}-test")
    probabilities = predict(model, network.to_tensor(np.stack(images)), flip_tta, temperature).numpy()
    refused = probabilities.max(axis=1) < threshold
    kind_of = np.asarray(kinds)
    return {
        "ood_rejection": float(refused.mean()),
        "ood_n": int(len(kinds)),
        "ood_rejection_by_kind": {kind: float(refused[kind_of == kind].mean()) for kind in dict.fromkeys(kinds)},
        "ood_max_confidence_p50": float(np.median(probabilities.max(axis=1))),
    }


def evaluate(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    n_classes = len(network.CLASSES)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    for true, guess in zip(labels, predicted):
        confusion[true, guess] += 1
    per_class = {}
    for index, name in enumerate(network.CLASSES):
        predicted_here = confusion[:, index].sum()
        actually_here = confusion[index, :].sum()
        per_class[name] = {
            "precision": float(confusion[index, index] / predicted_here) if predicted_here else None,
            "recall": float(confusion[index, index] / actually_here) if actually_here else None,
            "support": int(actually_here),
        }
    covered = confidence >= threshold
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "confusion_matrix_layout": "rows = true class, columns = predicted class, in `classes` order",
        "threshold": threshold,
        "threshold_coverage": float(covered.mean()),
        "threshold_precision": float((predicted[covered] == labels[covered]).mean()) if covered.any() else None,
        "n_test": int(len(labels)),
    }


def baseline(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """The reference distribution that model monitoring compares live traffic against."""
    predicted = probabilities.argmax(axis=1)
    return {
        "classes": list(network.CLASSES),
        "threshold": threshold,
        "true_class_counts": {name: int((labels == i).sum()) for i, name in enumerate(network.CLASSES)},
        "predicted_class_counts": {name: int((predicted == i).sum()) for i, name in enumerate(network.CLASSES)},
        "max_confidence": [round(float(value), 6) for value in probabilities.max(axis=1)],
        "n": int(len(labels)),
    }


def architecture(args: argparse.Namespace) -> dict:
    return {"name": args.arch, "widths": list(args.widths), "blocks": list(args.blocks)}


def save_model(model: nn.Module, args: argparse.Namespace, model_dir: Path, temperature: float) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "format": 1,
        "state_dict": {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()},
        "architecture": architecture(args),
        "classes": list(network.CLASSES),
        "flip_tta": bool(args.flip_tta),
        "temperature": float(temperature),
        "image_size": network.IMAGE_SIZE,
    }
    torch.save(checkpoint, model_dir / WEIGHTS_FILE)
    code_dir = model_dir / "code"
    code_dir.mkdir(exist_ok=True)
    for name in SERVING_CODE:
        shutil.copyfile(HERE / name, code_dir / name)


def train(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(args.num_threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    device = choose_device(args.num_gpus)
    generator = torch.Generator().manual_seed(args.seed)

    train_images, train_labels, _ = load_channel(args.train)
    test_images, test_labels, _ = load_channel(args.test)
    fit, holdout = split_holdout(train_labels, args.calibration_split, args.seed)
    holdout_images, holdout_labels = train_images[holdout], train_labels[holdout]
    train_images, train_labels = train_images[fit], train_labels[fit]
    print(f"data: {len(train_labels)} train images from {args.train} (+{len(holdout)} held out for calibration), "
          f"{len(test_labels)} test images from {args.test}; device {device}, {torch.get_num_threads()} CPU threads",
          flush=True)
    # Outlier exposure: generated non-vehicles beside every batch (a stream of its own, apart from the
    # evaluation and calibration seeds in outliers.py).
    outlier_rng = np.random.default_rng([args.seed, 15])
    n_outliers = round(args.outlier_ratio * args.batch_size) if args.outlier_weight > 0 else 0
    outlier_kinds = tuple(outliers.TRAINING_KINDS) + tuple(outliers.TRAINING_SOURCE_KINDS)
    x_train = network.to_tensor(train_images)
    # uint8 NCHW copy for the per-image policies, which work on integer pixels.
    pixels_train = torch.from_numpy(np.array(train_images, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
    policy = build_policy(args.policy, args.erasing) if args.augment else None
    mixer = build_mixer(args.mix, args.mix_alpha)
    y_train = torch.from_numpy(train_labels)
    x_test = network.to_tensor(test_images)

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = network.build_model(architecture(args)).to(device).to(memory_format=memory_format)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, momentum=args.momentum, nesterov=True,
    )
    ema = None
    if args.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    steps_per_epoch = math.ceil(len(y_train) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)

    step = 0
    for epoch in range(1, args.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            index = order[start:start + args.batch_size]
            if len(index) < 2:  # BatchNorm cannot train on a single sample
                continue
            if policy is not None:
                batch = normalise(torch.stack([policy(image) for image in pixels_train[index]])).contiguous()
            else:
                batch = x_train[index]
            if args.augment:
                batch = augment_batch(batch, generator)
            batch, target = batch.to(device), y_train[index].to(device)
            soft_target = target
            if mixer is not None and torch.rand(1, generator=generator).item() < args.mix_prob:
                batch, soft_target = mixer(batch, target)
            if n_outliers:
                # An even total: torch 2.14's channels-last CPU conv backward crashes (SIGSEGV) on odd batches.
                count = n_outliers + (len(index) + n_outliers) % 2
                garbage = network.to_tensor(outliers.batch(outlier_rng, count, outlier_kinds, train_images))
                batch = torch.cat([batch, garbage.to(device)])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup_steps, args.lr)
            all_logits = model(batch.contiguous(memory_format=memory_format))
            logits = all_logits[:len(target)]
            loss = loss_fn(logits, soft_target)
            if n_outliers:
                # Cross-entropy to the uniform distribution (up to a constant): no class for garbage.
                loss = loss - args.outlier_weight * torch.log_softmax(all_logits[len(target):], dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == target).sum().item()
        print(f"epoch {epoch}/{args.epochs} loss={loss_sum / len(order):.4f} "
              f"train_accuracy={correct / len(order):.4f} lr={optimizer.param_groups[0]['lr']:.4f} "
              f"seconds={time.perf_counter() - epoch_started:.1f}", flush=True)

    unaveraged = None
    if ema is not None:
        unaveraged = evaluate(predict(model, x_test, args.flip_tta).numpy(), test_labels, args.threshold)
        model = ema.module
    temperature, calibration = 1.0, None
    if len(holdout):
        calibration_rng = np.random.default_rng(outliers.CALIBRATION_SEED)
        calibration_garbage = outliers.batch(calibration_rng, 4 * len(holdout), outlier_kinds, holdout_images)
        temperature, calibration = fit_temperature(
            predict_logits(model, network.to_tensor(holdout_images), args.flip_tta), holdout_labels,
            predict_logits(model, network.to_tensor(calibration_garbage), args.flip_tta),
            args.threshold, args.calibration_precision, args.calibration_rejection)
        calibration.update({"temperature": temperature, "n_holdout": int(len(holdout)),
                            "n_garbage": int(len(calibration_garbage))})
    training_seconds = time.perf_counter() - started
    test_logits = predict_logits(model, x_test, args.flip_tta)
    probabilities = network.probabilities_from_logits(test_logits, temperature).numpy()
    metrics = evaluate(probabilities, test_labels, args.threshold)
    metrics.update(ood_scores(model, args.flip_tta, temperature, args.threshold, test_images))
    metrics["temperature"] = temperature
    metrics["calibration"] = calibration
    # The same model at temperature 1, to show what calibration changes.
    uncalibrated = evaluate(network.probabilities_from_logits(test_logits).numpy(), test_labels, args.threshold)
    metrics["uncalibrated"] = {**{key: uncalibrated[key] for key in ("threshold_coverage", "threshold_precision")},
                               "ood_rejection": ood_scores(model, args.flip_tta, 1.0, args.threshold, test_images)["ood_rejection"]}
    if unaveraged is not None:
        # The raw final weights' scores, to show what the weight average adds.
        metrics["unaveraged"] = {key: unaveraged[key] for key in
                                 ("test_accuracy", "threshold_coverage", "threshold_precision")}
    metrics.update({
        "classes": list(network.CLASSES),
        "training_seconds": round(training_seconds, 2),
        "epochs": args.epochs,
        "n_train": int(len(y_train)),
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "hyperparameters": {
            key: getattr(args, key) for key in (
                "arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "warmup_epochs",
                "widths", "blocks", "augment", "policy", "erasing", "mix", "mix_alpha", "mix_prob", "ema_decay", "flip_tta",
                "channels_last", "outlier_weight", "outlier_ratio", "calibration_split", "calibration_precision",
                "calibration_rejection", "threshold", "seed")
        },
    })

    model_dir, output_dir = Path(args.model_dir), Path(args.output_data_dir)
    save_model(model.cpu(), args, model_dir, temperature)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (output_dir / "baseline.json").write_text(json.dumps(baseline(probabilities, test_labels, args.threshold)) + "\n")
    # One line per metric, in the key=value form SageMaker metric definitions can match.
    print(f"test_accuracy={metrics['test_accuracy']:.4f} threshold_coverage={metrics['threshold_coverage']:.4f} "
          f"threshold_precision={metrics['threshold_precision'] if metrics['threshold_precision'] is None else round(metrics['threshold_precision'], 4)} "
          f"ood_rejection={metrics['ood_rejection']:.4f} temperature={temperature:.4f} "
          f"training_seconds={training_seconds:.1f}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
