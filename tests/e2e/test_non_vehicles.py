"""Images that are not vehicles at all must not be routed: the endpoint leaves them below the threshold
and the workflow fails them loudly with ThresholdConfidenceNotMet (issue 15: a black image scored
bicycle 0.987, noise motorcycle 1.000, and a 1x1 PNG SUCCEEDED).

These are what a user sends by mistake, made here by hand rather than by local_model/outliers.py,
so the tests do not grade the model on its own training generator.
"""
from __future__ import annotations

import numpy as np
import pytest
from e2e_helpers import failed_events, png_bytes
from PIL import Image

pytestmark = pytest.mark.e2e


def _noise(size: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


NON_VEHICLES = {
    "black 32x32": Image.new("RGB", (32, 32), (0, 0, 0)),
    "white 640x480": Image.new("RGB", (640, 480), (255, 255, 255)),
    "grey 32x32": Image.new("L", (32, 32), 128),
    "noise 32x32": _noise(32, seed=7),
    "noise 300x300": _noise(300, seed=8),
    "one pixel 1x1": Image.new("RGB", (1, 1), (200, 30, 30)),
    "tiny 3x3 noise": _noise(3, seed=9),
}


@pytest.mark.parametrize("name", NON_VEHICLES)
def test_a_non_vehicle_image_comes_out_of_the_endpoint_below_the_threshold(name, classify, threshold):
    inferences = classify(png_bytes(NON_VEHICLES[name]))

    assert len(inferences) == 2 and sum(inferences) == pytest.approx(1.0, abs=1e-5)
    assert max(inferences) < threshold, f"{name}: {inferences}"


@pytest.mark.parametrize("name", ["black 32x32", "noise 32x32", "one pixel 1x1"])
def test_a_non_vehicle_image_fails_the_workflow_with_threshold_confidence_not_met(name, upload_image, run_workflow,
                                                                                  threshold):
    key = upload_image(NON_VEHICLES[name], name=name.replace(" ", "-"))

    result = run_workflow(key)

    assert result.status == "FAILED", f"{name} was routed as {result.predicted_class} at {result.confidence}"
    assert result.error == "ThresholdConfidenceNotMet"
    assert result.failed_state == "filterInferences"
    assert result.event_types == failed_events(2)
    assert result.confidence < threshold
