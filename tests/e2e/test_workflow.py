"""The whole workflow end to end: S3 -> serializeImageData -> classifyImage (endpoint) -> filterInferences."""
from __future__ import annotations

import base64
import io
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from e2e_helpers import SUCCEEDED_EVENTS, capture_records, failed_events, png_bytes
from PIL import Image

from support import poll

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("class_name", ["bicycle", "motorcycle"])
def test_test_image_is_routed_to_its_class(class_name, confident_test_image, run_workflow, threshold):
    key, _ = confident_test_image(class_name)

    result = run_workflow(key)

    assert result.status == "SUCCEEDED", f"{result.error}: {result.error_message}"
    assert result.predicted_class == class_name
    assert result.confidence >= threshold
    assert result.event_types == SUCCEEDED_EVENTS
    assert set(result.state_durations) == {"serializeImageData", "classifyImage", "filterInferences"}
    assert result.output["body"]["s3_key"] == key


def test_original_test_case_shape_with_empty_image_data_is_accepted(confident_test_image, run_workflow, scones_stack):
    key, _ = confident_test_image("bicycle")

    result = run_workflow({"image_data": "", "s3_bucket": scones_stack.bucket, "s3_key": key})

    assert result.status == "SUCCEEDED" and result.predicted_class == "bicycle"


def test_unsure_image_fails_loudly_in_filter_inferences(unsure_image, upload_image, run_workflow, threshold):
    body, inferences = unsure_image
    key = upload_image(body, name="unsure")

    result = run_workflow(key)

    assert result.status == "FAILED"
    assert result.error == "ThresholdConfidenceNotMet"
    assert result.failed_state == "filterInferences"
    assert result.event_types == failed_events(2)
    assert result.confidence == pytest.approx(max(inferences), abs=1e-6)
    assert result.confidence < threshold
    assert "threshold" in result.error_message.lower()


def test_missing_key_fails_in_serialize_with_image_not_found(run_workflow, scones_stack):
    result = run_workflow("test/bicycle/does-not-exist.png")

    assert result.status == "FAILED"
    assert result.error == "ImageNotFound"
    assert result.failed_state == "serializeImageData"
    assert f"s3://{scones_stack.bucket}/test/bicycle/does-not-exist.png" in result.error_message
    assert result.event_types == failed_events(0)


def test_non_image_object_fails_with_not_an_image(upload_image, run_workflow):
    key = upload_image(b"name,vehicle\nscone,bicycle\n", suffix=".png", content_type="text/csv", name="not-an-image")

    result = run_workflow(key)

    assert result.status == "FAILED"
    assert result.error == "NotAnImage"
    assert result.failed_state == "serializeImageData"
    assert "not an image" in result.error_message
    assert result.event_types == failed_events(0)


def test_oversized_image_fails_with_payload_too_large(upload_image, run_workflow):
    noise = np.random.default_rng(7).integers(0, 256, (330, 330, 3), dtype=np.uint8)
    body = png_bytes(Image.fromarray(noise))
    assert len(body) > 196_608  # base64 of it cannot fit in a 256 KiB state
    key = upload_image(body, name="oversized")

    result = run_workflow(key)

    assert result.status == "FAILED"
    assert result.error == "PayloadTooLarge"
    assert result.failed_state == "serializeImageData"
    assert "256 KiB" in result.error_message
    assert result.event_types == failed_events(0)


def test_every_classify_call_leaves_exactly_one_capture_record(confident_test_image, upload_image, run_workflows,
                                                               unsure_image, scones_stack, s3_client):
    """Each image's bytes are made unique (a PNG text chunk; pixels unchanged), so its records can be told
    from those of every other call, earlier tests' included."""
    run_id = uuid.uuid4().hex
    images = []
    for index, class_name in enumerate(["bicycle", "motorcycle", "bicycle"]):
        _, path = confident_test_image(class_name)
        images.append(png_bytes(Image.open(path), tag=f"{run_id}-{index}"))
    images.append(png_bytes(Image.open(io.BytesIO(unsure_image[0])), tag=f"{run_id}-unsure"))  # fails after classifyImage: captured too
    keys = [upload_image(body, name=f"capture-{n}") for n, body in enumerate(images)]
    wanted = {base64.b64encode(body).decode() for body in images}
    since = datetime.now(timezone.utc) - timedelta(minutes=2)  # generous: S3 and this machine's clocks may differ

    results = run_workflows(keys, concurrency=2)

    assert [r.status for r in results] == ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED"]

    def ours():
        records = capture_records(s3_client, scones_stack.capture_s3_uri, scones_stack.endpoint_name, since)
        return [r for r in records if r["captureData"]["endpointInput"]["data"] in wanted]

    found = poll(lambda: (lambda rs: rs if len(rs) >= len(images) else None)(ours()), timeout=30,
                 what=f"{len(images)} capture records")
    inputs = sorted(r["captureData"]["endpointInput"]["data"] for r in found)
    assert inputs == sorted(wanted), "each classify call must leave exactly one record"
    for record in found:
        assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
        assert record["captureData"]["endpointInput"]["observedContentType"] == "image/png"
        assert record["captureData"]["endpointOutput"]["mode"] == "OUTPUT"
        assert record["eventVersion"] == "0"


def test_status_reads_back_the_autoscaling_the_plan_registered(scones_stack):
    """`scones up` registers the endpoint's scaling with the local Application Auto Scaling, as the AWS deploy does
    (README: stored, not acted on); status and the report read it back as on AWS (deploy/aws_operations.py):
    the variant's resource id (Application Auto Scaling API Reference, RegisterScalableTarget: ResourceId
    "endpoint/<name>/variant/<variant>"), its capacity range and the target-tracking policy."""
    from scones.harness import operations

    scaling = operations.describe(scones_stack)["autoscaling"]
    assert scaling is not None, "status says: " + operations.lines(operations.describe(scones_stack))[0]
    assert scaling["resource_id"] == f"endpoint/{scones_stack.endpoint_name}/variant/AllTraffic"
    assert 1 <= scaling["min_instances"] <= scaling["max_instances"]
    assert [policy["type"] for policy in scaling["policies"]] == ["TargetTrackingScaling"]
    assert operations.lines(operations.describe(scones_stack))[0].startswith(f"autoscaling {scaling['resource_id']}: ")
