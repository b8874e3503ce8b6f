"""The generated non-vehicle images (local_model/outliers.py) and the temperature calibration in train.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scones.local_model import network, outliers, train


@pytest.mark.parametrize("kind", sorted(outliers.GENERATORS))
def test_every_kind_makes_model_ready_images_that_differ_between_draws(kind):
    rng = np.random.default_rng(0)
    source = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    images = [outliers.generate(kind, rng, source) for _ in range(6)]

    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert outliers.as_model_input(image).shape == (32, 32, 3)
    assert len({image.tobytes() for image in images}) > 1, f"{kind} drew the same image six times"


def test_tiny_images_are_tiny_and_reach_the_model_as_the_endpoint_scales_them():
    from PIL import Image

    rng = np.random.default_rng(3)
    images = [outliers.tiny(rng) for _ in range(20)]

    assert {image.shape[0] for image in images} <= {1, 2, 3, 4} and any(image.shape[0] == 1 for image in images)
    for image in images:
        assert np.array_equal(outliers.as_model_input(image), network.image_to_array(Image.fromarray(image)))


def test_uniform_images_are_one_colour_and_shuffled_images_keep_the_pixels_of_their_source():
    rng = np.random.default_rng(5)
    source = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    blank = outliers.uniform(rng)
    scrambled = outliers.shuffled(rng, source)

    assert len(np.unique(blank.reshape(-1, 3), axis=0)) == 1
    assert not np.array_equal(scrambled, source)
    assert sorted(map(tuple, scrambled.reshape(-1, 3))) == sorted(map(tuple, source.reshape(-1, 3)))


def test_a_kind_made_from_a_real_image_needs_one_and_an_unknown_kind_is_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'cut' is made from a real image"):
        outliers.generate("cut", rng)
    with pytest.raises(ValueError, match="unknown garbage kind 'plaid'.*uniform"):
        outliers.generate("plaid", rng)


def test_the_evaluation_set_is_reproducible_and_holds_kinds_training_never_makes():
    first, again = outliers.evaluation_set(3), outliers.evaluation_set(3)
    other_seed = outliers.evaluation_set(3, seed=outliers.EVALUATION_SEED + 1)

    assert [kind for kind, _ in first] == [kind for kind, _ in again]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, other_seed))
    kinds = {kind for kind, _ in first}
    assert kinds == set(outliers.EVALUATION_KINDS) and len(first) == 3 * len(kinds)
    unseen = kinds - set(outliers.TRAINING_KINDS) - set(outliers.TRAINING_SOURCE_KINDS)
    assert unseen == set(outliers.EVALUATION_ONLY_KINDS) and unseen


def test_a_training_batch_mixes_kinds_and_normalises_like_real_images():
    rng = np.random.default_rng(0)
    sources = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)

    images = outliers.batch(rng, 64, tuple(outliers.TRAINING_KINDS) + tuple(outliers.TRAINING_SOURCE_KINDS), sources)

    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    assert network.to_tensor(images).shape == (64, 3, 32, 32)


def logits_with_margins(margins, labels) -> torch.Tensor:
    """One view of 2-class logits whose difference (true minus other class) is `margins`."""
    margins = np.asarray(margins, dtype=np.float32)
    logits = np.zeros((len(margins), 2), dtype=np.float32)
    logits[np.arange(len(margins)), labels] = margins
    return torch.from_numpy(logits)[None]


def test_calibration_sharpens_an_under_confident_model_until_precision_would_drop():
    # 40 right with margin 2 (p = 0.88 at T=1, below 0.93), 1 wrong with margin 1.2; garbage near 0.
    labels = np.array([0] * 20 + [1] * 21)
    margins = [2.0] * 40 + [-1.2]
    garbage = logits_with_margins(np.linspace(-0.4, 0.4, 20), np.zeros(20, dtype=int))

    temperature, scores = train.fit_temperature(logits_with_margins(margins, labels), labels, garbage,
                                                threshold=0.93, min_precision=0.98, min_rejection=0.95)

    # 2/T >= logit(0.93) = 2.587 accepts the right ones; 1.2/T >= 2.587 would accept the wrong one too.
    assert 1.2 / 2.587 < temperature <= 2 / 2.587
    assert scores["coverage"] == pytest.approx(40 / 41) and scores["precision"] == 1.0
    assert scores["ood_rejection"] == 1.0


def test_calibration_keeps_garbage_below_the_threshold_before_coverage():
    labels = np.zeros(10, dtype=int)
    garbage = logits_with_margins([1.5] * 20, np.zeros(20, dtype=int))  # sharpening lifts garbage with the rest

    temperature, scores = train.fit_temperature(logits_with_margins([2.0] * 10, labels), labels, garbage,
                                                threshold=0.93, min_precision=0.98, min_rejection=0.95)

    assert temperature > 1.5 / 2.587 and scores["ood_rejection"] == 1.0


def test_calibration_that_cannot_keep_precision_refuses_nearly_everything():
    labels = np.array([0, 1] * 10)
    wrong = logits_with_margins([-3.0] * 20, labels)  # confidently wrong on every image
    garbage = logits_with_margins([0.0] * 4, np.zeros(4, dtype=int))

    temperature, scores = train.fit_temperature(wrong, labels, garbage, threshold=0.93, min_precision=0.98,
                                                min_rejection=0.95)

    assert temperature == pytest.approx(train.TEMPERATURES[-1]) and scores["infeasible"]


def test_the_temperature_divides_logits_before_the_flip_average():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])  # image and mirror of one image

    sharp = network.probabilities_from_logits(logits, temperature=0.5)

    expected = (torch.softmax(torch.tensor([4.0, 0.0]), 0) + torch.tensor([0.5, 0.5])) / 2
    assert torch.allclose(sharp[0], expected)


def test_the_holdout_is_a_share_of_each_class_and_never_trained_on():
    labels = np.array([0] * 500 + [1] * 500)

    fit, held = train.split_holdout(labels, 0.1, seed=0)

    assert len(held) == 100 and (labels[held] == 0).sum() == 50
    assert not set(fit) & set(held) and len(fit) + len(held) == 1000
    assert np.array_equal(held, train.split_holdout(labels, 0.1, seed=0)[1])
    assert len(train.split_holdout(labels, 0.0, seed=0)[1]) == 0


def test_calibration_hyperparameters_arrive_as_sagemaker_passes_them():
    args = train.parse_args(["--outlier_weight", "0.25", "--outlier-ratio", "0.5", "--calibration_split", "0.2",
                             "--calibration_precision", "0.99", "--calibration-rejection", "0.9"])

    assert (args.outlier_weight, args.outlier_ratio, args.calibration_split, args.calibration_precision,
            args.calibration_rejection) == (0.25, 0.5, 0.2, 0.99, 0.9)
    with pytest.raises(SystemExit):
        train.parse_args(["--calibration-split", "1.5"])
