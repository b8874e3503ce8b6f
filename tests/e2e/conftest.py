"""Shared helpers of the end-to-end tests: they run against whatever stack the scones plugin hands out.

By default that is the local stack (attached to if it is up, else started for the session);
with SCONES_TEST_TARGET=aws the same tests run against the deployed AWS stack.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import CLASSES, png_bytes
from PIL import Image

from scones import settings


@pytest.fixture(scope="session")
def threshold(scones_stack) -> float:
    return float(scones_stack.record.get("threshold", 0.93))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return settings.data_dir()


@pytest.fixture(scope="session")
def classify(scones_stack, sagemaker_runtime_client):
    """classify(png_bytes) -> [p_bicycle, p_motorcycle], straight from the endpoint (no workflow)."""

    def invoke(body: bytes) -> list[float]:
        reply = sagemaker_runtime_client.invoke_endpoint(EndpointName=scones_stack.endpoint_name,
                                                         ContentType="image/png", Body=body)
        return json.loads(reply["Body"].read())

    return invoke


@pytest.fixture(scope="session")
def confident_test_image(data_dir, classify, threshold):
    """confident_test_image(class_name) -> (S3 key, image path) of a test image the model gets right above threshold.

    The model is right on most test images but not all; asking the endpoint first keeps the
    workflow tests about the workflow, not about the model's accuracy.
    """
    chosen: dict[str, tuple[str, Path]] = {}

    def pick(class_name: str) -> tuple[str, Path]:
        if class_name not in chosen:
            index = CLASSES.index(class_name)
            for path in sorted((data_dir / "test" / class_name).glob("*.png"))[:40]:
                inferences = classify(path.read_bytes())
                if max(inferences) >= threshold and inferences[index] == max(inferences):
                    chosen[class_name] = (f"test/{class_name}/{path.name}", path)
                    break
            else:
                pytest.fail(f"none of the first 40 {class_name} test images is classified right above {threshold}")
        return chosen[class_name]

    return pick


@pytest.fixture(scope="session")
def unsure_image(data_dir, classify, threshold):
    """An image the model is unsure of: blends of a bicycle and a motorcycle, or flat grey.

    Checked through the endpoint first, so the test does not depend on one model's quirks.
    """
    bicycles = sorted((data_dir / "test" / "bicycle").glob("*.png"))[:12]
    motorcycles = sorted((data_dir / "test" / "motorcycle").glob("*.png"))[:12]
    candidates = [Image.new("RGB", (32, 32), (grey, grey, grey)) for grey in (128, 96, 160)]
    for bicycle, motorcycle in zip(bicycles, motorcycles):
        a, b = Image.open(bicycle).convert("RGB"), Image.open(motorcycle).convert("RGB")
        candidates += [Image.blend(a, b, alpha) for alpha in (0.5, 0.4, 0.6, 0.3, 0.7)]
    noise = np.random.default_rng(11)
    candidates += [Image.fromarray(noise.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    for image in candidates:
        body = png_bytes(image)
        inferences = classify(body)
        if max(inferences) < threshold - 0.05:  # a margin, so the verdict is not a coin toss
            return body, inferences
    pytest.fail(f"no blended or grey image left the model below {threshold - 0.05:.2f}")


@pytest.fixture
def separate_state_dir(tmp_path, scones_target_name):
    """A state dir of its own for a second local stack (the session's stays untouched), sharing the installed venvs."""
    if scones_target_name != "local":
        pytest.skip("a second local stack's processes: the local target only")
    from scones.harness.localstack import LocalStack

    shared = settings.state_dir()
    LocalStack(shared).ensure_venv(progress=False)
    for name in ("localstack-venv", "lambda-runtimes"):
        if (shared / name).exists():
            (tmp_path / name).symlink_to(shared / name)
    return tmp_path
