"""A user's tests of the deployed workflow, through the scones plugin's fixtures only.

Run against the local stack by default, or against AWS with `pytest --scones-target aws`
after `scones deploy --target aws`.
"""
from PIL import Image

BICYCLE = "test/bicycle/bicycle_s_000030.png"   # uploaded by the stack from data_dir's test/


def test_a_photo_is_routed_or_fails_loudly(run_workflow, scones_stack):
    result = run_workflow(BICYCLE)

    threshold = float(scones_stack.record.get("threshold", 0.93))
    if result.succeeded:
        assert result.predicted_class in ("bicycle", "motorcycle")
        assert result.confidence >= threshold
    else:
        assert result.error == "ThresholdConfidenceNotMet", result.error_message
        assert result.confidence < threshold


def test_an_upload_that_is_no_image_fails_in_serialize(upload_image, run_workflow):
    key = upload_image(b"a text file, not a photo", suffix=".png")

    result = run_workflow(key)

    assert result.status == "FAILED"
    assert result.error == "NotAnImage" and result.failed_state == "serializeImageData"
    assert "not an image" in result.error_message


def test_my_own_photo_gets_an_answer(upload_image, run_workflow):
    photo = Image.new("RGB", (32, 32), (200, 40, 40))

    result = run_workflow(upload_image(photo, name="red-square"))

    assert result.inferences is not None and len(result.inferences) == 2
    assert result.status == "SUCCEEDED" or result.error == "ThresholdConfidenceNotMet"
