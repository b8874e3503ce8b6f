"""What tests and benchmarks use, and scones itself never does: a stand-in model and tiny real ones.

A stand-in model.tar.gz in the SageMaker layout (build_stub_model): the trained model
(scones.harness.models.ensure_model) takes a minute or more to build; tests of the serving contract
only need *a* model that follows the same layout: weights at the top of the archive plus
code/inference.py with model_fn/input_fn/predict_fn/output_fn. Its network is a tiny seeded CNN, so its
answers are deterministic but meaningless.

Tiny real models (ensure_tiny_model): train.py on synthetic data (write_synthetic_dataset) in seconds,
with the same artifacts and handlers as the real one.

It sits above every layer (tests/import_graph.py): it may import all of scones, and nothing shipped imports it.
"""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import textwrap
from pathlib import Path

from scones import settings
from scones.contract import CLASSES
from scones.harness.models import ensure_model, file_lock

STUB_INFERENCE_PY = textwrap.dedent(
    '''
    """Stand-in inference handlers: PNG/JPEG in, JSON [p_bicycle, p_motorcycle] out."""
    import io
    import json
    import os

    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    IMAGE_TYPES = ("image/png", "image/jpeg", "application/x-image")


    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            )
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.features(x).flatten(1))


    def model_fn(model_dir):
        model = TinyNet()
        model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu"))
        return model.eval()


    def input_fn(request_body, content_type):
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type not in IMAGE_TYPES:
            raise ValueError(f"Unsupported content type {content_type!r}: send one of {IMAGE_TYPES}")
        image = Image.open(io.BytesIO(request_body)).convert("RGB").resize((32, 32))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


    def predict_fn(data, model):
        with torch.inference_mode():
            return torch.softmax(model(data), dim=1)


    def output_fn(prediction, accept):
        return json.dumps(prediction[0].tolist()), "application/json"
    '''
).lstrip()


def build_stub_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write out_dir/model.tar.gz (model.pth + code/inference.py) and return its path."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    namespace: dict = {}
    exec(compile(STUB_INFERENCE_PY, "stub_inference.py", "exec"), namespace)
    torch.manual_seed(seed)
    weights = io.BytesIO()
    torch.save(namespace["TinyNet"]().state_dict(), weights)

    archive_path = out_dir / "model.tar.gz"
    with tarfile.open(archive_path, "w:gz") as archive:
        _add_bytes(archive, "model.pth", weights.getvalue())
        _add_bytes(archive, "code/inference.py", STUB_INFERENCE_PY.encode())
    return archive_path


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


# Tiny models for fast tests: seconds to train, same artifacts and handlers as the real one.
TINY_HYPERPARAMETERS = {"epochs": 1, "widths": [8, 16], "blocks": [1, 1], "batch_size": 8}


def write_synthetic_dataset(root: str | os.PathLike, per_split: dict[str, int] | None = None) -> Path:
    """Staged-layout data of random 32x32 RGBA PNGs (like the real files): reddish bicycles, bluish motorcycles."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for split, count in (per_split or {"train": 8, "test": 4}).items():
        for label, class_name in enumerate(CLASSES):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
                pixels[..., 3] = 255
                pixels[..., 0 if label == 0 else 2] |= 0x80
                Image.fromarray(pixels).save(folder / f"{class_name}_{index:03d}.png")
    return root


def ensure_tiny_model(state_dir: str | os.PathLike | None = None) -> Path:
    """A cached model folder like ensure_model's, trained in seconds on synthetic data (its predictions mean nothing)."""
    data = settings.state_dir(state_dir) / "models" / "synthetic-data"
    with file_lock(data.with_suffix(".lock")):
        if not (data / "test" / CLASSES[-1]).is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=data.parent))
            write_synthetic_dataset(staging)
            os.rename(staging, data)
    return ensure_model(data, state_dir, **TINY_HYPERPARAMETERS)
