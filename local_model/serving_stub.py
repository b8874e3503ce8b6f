"""A stand-in model.tar.gz in the SageMaker layout, for endpoint tests and benchmarks.

The trained model (scones.harness.models.ensure_model) takes a minute or more to build; tests of the
serving contract only need *a* model that follows the same layout: weights at the top of the
archive plus code/inference.py with model_fn/input_fn/predict_fn/output_fn. The network here is
a tiny seeded CNN, so its answers are deterministic but meaningless.
"""
from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

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
