"""Images that are neither a bicycle nor a motorcycle, generated on the fly: the model's negatives.

Training shows the model a batch of these beside every batch of vehicles and trains its output on
them towards the uniform distribution (outlier exposure, Hendrycks et al. 2019), so that a blank,
noisy, tiny or scrambled image comes out below the confidence threshold instead of at 0.99.
The evaluation set (`evaluation_set`) uses other seeds and also kinds training never sees, so the
out-of-distribution figure in metrics.json measures generalisation, not memory.

Part of the SageMaker source directory beside train.py: imports only numpy, Pillow and network.
Every generator takes a numpy Generator and returns one uint8 (H, W, 3) array; most are 32x32,
"tiny" ones are 1..4 pixels a side and reach the model as the endpoint would scale them.
"""
from __future__ import annotations

import string
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

try:  # inside the scones package
    from . import network
except ImportError:  # run as a script, as SageMaker does: the script's folder is on sys.path
    import network  # type: ignore[no-redef]  # the same module under its top-level name

SIZE = network.IMAGE_SIZE


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour; a quarter of the time black, white or a grey, which users send most."""
    if rng.random() < 0.25:
        return np.full(3, rng.choice([0, 255, int(rng.integers(0, 256))]), dtype=np.uint8)
    return rng.integers(0, 256, 3, dtype=np.uint8)


def uniform(rng: np.random.Generator) -> np.ndarray:
    return np.broadcast_to(_colour(rng), (SIZE, SIZE, 3)).copy()


def noise(rng: np.random.Generator) -> np.ndarray:
    """Uniform, Gaussian or salt-and-pepper noise, in colour or grey."""
    channels = 3 if rng.random() < 0.7 else 1
    style = rng.integers(0, 3)
    values: np.ndarray
    if style == 0:
        values = rng.integers(0, 256, (SIZE, SIZE, channels))
    elif style == 1:
        values = rng.normal(rng.uniform(40, 215), rng.uniform(10, 80), (SIZE, SIZE, channels))
    else:
        values = np.where(rng.random((SIZE, SIZE, channels)) < rng.uniform(0.05, 0.5), 255 * rng.integers(0, 2), 128)
        values = np.where(values == 128, _colour(rng)[:channels], values)
    return np.broadcast_to(np.clip(values, 0, 255).astype(np.uint8), (SIZE, SIZE, 3)).copy()


def gradient(rng: np.random.Generator) -> np.ndarray:
    """A linear gradient between two colours at a random angle."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    start, end = _colour(rng).astype(np.float64), _colour(rng).astype(np.float64)
    return (start + ramp[..., None] * (end - start)).round().astype(np.uint8)


def strokes(rng: np.random.Generator) -> np.ndarray:
    """Text-like strokes: random letters and pen lines on a plain background (a screenshot, a document)."""
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in _colour(rng)))
    draw = ImageDraw.Draw(image)
    ink = tuple(int(v) for v in _colour(rng))
    if rng.random() < 0.5:
        font = ImageFont.load_default()
        for _ in range(int(rng.integers(1, 4))):
            text = "".join(rng.choice(list(string.ascii_letters + string.digits), int(rng.integers(2, 7))))
            draw.text((int(rng.integers(-4, 8)), int(rng.integers(0, 24))), text, fill=ink, font=font)
    else:
        for _ in range(int(rng.integers(2, 9))):
            points = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(int(rng.integers(2, 5)))]
            draw.line(points, fill=ink, width=int(rng.integers(1, 4)))
    return np.asarray(image, dtype=np.uint8)


def tiny(rng: np.random.Generator) -> np.ndarray:
    """1x1 to 4x4 random pixels: an icon or a broken thumbnail (the endpoint scales it up)."""
    side = int(rng.integers(1, 5))
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    if rng.random() < 0.3:
        pixels[:] = _colour(rng)
    return pixels


def checkerboard(rng: np.random.Generator) -> np.ndarray:
    """Two colours in square cells (evaluation only)."""
    cell = int(rng.integers(2, 9))
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] // cell
    mask = ((ys + xs) % 2).astype(bool)
    return np.where(mask[..., None], _colour(rng), _colour(rng)).astype(np.uint8)


def stripes(rng: np.random.Generator) -> np.ndarray:
    """A sine wave of two colours at a random angle and frequency (evaluation only)."""
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    wave = 0.5 + 0.5 * np.sin((np.cos(angle) * xs + np.sin(angle) * ys) * rng.uniform(0.3, 1.5))
    start, end = _colour(rng).astype(np.float64), _colour(rng).astype(np.float64)
    return (start + wave[..., None] * (end - start)).round().astype(np.uint8)


def blotches(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour blotches: 3x3 to 8x8 noise scaled up bilinearly (evaluation only)."""
    side = int(rng.integers(3, 9))
    small = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return np.asarray(small.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def shuffled(rng: np.random.Generator, source: np.ndarray) -> np.ndarray:
    """A real image cut into 2x2 patches put back in random order: its colours, not its shape.

    Larger patches keep parts of a vehicle (a wheel, a seat) whole, which is not garbage.
    """
    patch = 2
    grid = SIZE // patch
    tiles = source.reshape(grid, patch, grid, patch, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, patch, patch, 3)
    tiles = tiles[rng.permutation(len(tiles))]
    return tiles.reshape(grid, grid, patch, patch, 3).transpose(0, 2, 1, 3, 4).reshape(SIZE, SIZE, 3).copy()


def cut(rng: np.random.Generator, source: np.ndarray) -> np.ndarray:
    """A real image with all but a small window (at most 8x8 of its 32x32) covered by a flat colour."""
    height, width = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    top, left = int(rng.integers(0, SIZE - height + 1)), int(rng.integers(0, SIZE - width + 1))
    out = np.broadcast_to(_colour(rng), (SIZE, SIZE, 3)).copy()
    out[top:top + height, left:left + width] = source[top:top + height, left:left + width]
    return out


# Kinds made from nothing, and kinds made from a real image (they take it as `source`).
Generator = Callable[[np.random.Generator], np.ndarray]
TRAINING_KINDS: dict[str, Generator] = {"uniform": uniform, "noise": noise, "gradient": gradient, "strokes": strokes, "tiny": tiny}
TRAINING_SOURCE_KINDS: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {"shuffled": shuffled, "cut": cut}
# Never shown in training: the out-of-distribution figure must measure more than what was learnt.
EVALUATION_ONLY_KINDS: dict[str, Generator] = {"checkerboard": checkerboard, "stripes": stripes, "blotches": blotches}
EVALUATION_KINDS = {**TRAINING_KINDS, **EVALUATION_ONLY_KINDS}
GENERATORS: dict[str, Callable[..., np.ndarray]] = {**EVALUATION_KINDS, **TRAINING_SOURCE_KINDS}
# Seeds of the garbage that measures. Training draws from default_rng([--seed, 15]), a seed sequence of
# another length, so its stream is none of these whatever --seed is.
EVALUATION_SEED = 1_000_003
CALIBRATION_SEED = 2_000_003


def generate(kind: str, rng: np.random.Generator, source: np.ndarray | None = None) -> np.ndarray:
    """One image of `kind` at its own size (tiny ones are tiny); `source` for the kinds made from a real image."""
    if kind in TRAINING_SOURCE_KINDS:
        if source is None:
            raise ValueError(f"garbage kind {kind!r} is made from a real image: pass source")
        return TRAINING_SOURCE_KINDS[kind](rng, source)
    if kind not in GENERATORS:
        raise ValueError(f"unknown garbage kind {kind!r}: expected one of {', '.join(GENERATORS)}")
    return GENERATORS[kind](rng)


def as_model_input(image: np.ndarray) -> np.ndarray:
    """Any generated image -> uint8 (32, 32, 3), scaled exactly as the endpoint scales a request."""
    if image.shape[:2] == (SIZE, SIZE):
        return image
    return network.image_to_array(Image.fromarray(image))


def batch(rng: np.random.Generator, n: int, kinds: tuple[str, ...], sources: np.ndarray | None = None) -> np.ndarray:
    """n model-ready images (n, 32, 32, 3), kinds drawn evenly at random; source kinds need `sources`."""
    images = []
    for kind in rng.choice(kinds, n):
        source = sources[rng.integers(len(sources))] if kind in TRAINING_SOURCE_KINDS and sources is not None else None
        images.append(as_model_input(generate(str(kind), rng, source)))
    return np.stack(images)


def evaluation_set(n_per_kind: int, seed: int = EVALUATION_SEED) -> list[tuple[str, np.ndarray]]:
    """(kind, image at its own size) pairs, n_per_kind of every evaluation kind, from a seed training never uses."""
    rng = np.random.default_rng(seed)
    return [(kind, generate(kind, rng)) for kind in EVALUATION_KINDS for _ in range(n_per_kind)]
