"""Event-driven runs: a photo dropped under incoming/ runs the workflow by itself, and its result
lands under results/ for a dispatcher to read, failures included with their error.

The wiring (deploy/event_runs.py) is S3 EventBridge notifications -> a rule with the state machine
as target -> Step Functions' "Execution Status Change" events -> a rule invoking writeResult. S3
and Step Functions deliver these events to EventBridge on AWS
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventBridge.html,
https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html), and LocalStack 4.14 does
too (with harness/lambda_executor/events_sfn_target.py's fix for the transformed input).
"""
from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from e2e_helpers import CLASSES

from scones.harness.commands.results import results
from scones.lambdas.run_results import RunResult, result_key
from support import poll

DEADLINE_S = 180.0


@pytest.fixture
def drop_photo(scones_stack, s3_client):
    """drop_photo(bytes, name) -> key: put a photo under the stack's intake prefix, in a folder of this test's own.

    The photos and their results are deleted when the test ends.
    """
    outputs = scones_stack.record["outputs"]
    intake = outputs["intake_s3_uri"].removeprefix(f"s3://{scones_stack.bucket}/")
    results = outputs["results_s3_uri"].removeprefix(f"s3://{scones_stack.bucket}/")
    folder = f"{intake}e2e-{uuid.uuid4().hex[:10]}/"
    dropped: list[str] = []

    def drop(body: bytes, name: str) -> str:
        key = f"{folder}{name}"
        s3_client.put_object(Bucket=scones_stack.bucket, Key=key, Body=body, ContentType="image/png")
        dropped.append(key)
        return key

    drop.results_prefix = results
    yield drop
    for key in dropped:
        for stale in (key, result_key(results, key)):
            s3_client.delete_object(Bucket=scones_stack.bucket, Key=stale)


def read_results(s3_client, bucket: str, results_prefix: str, keys: list[str]) -> dict[str, RunResult]:
    """The results written so far for these photo keys."""
    found = {}
    for key in keys:
        try:
            body = s3_client.get_object(Bucket=bucket, Key=result_key(results_prefix, key))["Body"].read()
        except s3_client.exceptions.NoSuchKey:
            continue
        found[key] = RunResult.from_json(body)
    return found


def wait_for_results(s3_client, bucket: str, results_prefix: str, keys: list[str]) -> dict[str, RunResult]:
    latest: dict[str, RunResult] = {}

    def all_written():
        latest.update(read_results(s3_client, bucket, results_prefix, [k for k in keys if k not in latest]))
        return len(latest) == len(keys)

    poll(all_written, timeout=DEADLINE_S, interval=0.25,
         what=f"results of {len(keys)} photos under {results_prefix} (got {len(latest)})")
    return latest


def test_twenty_photos_dropped_in_incoming_give_twenty_runs_and_twenty_results(
        scones_stack, s3_client, stepfunctions_client, data_dir, drop_photo):
    photos = [path for name in CLASSES for path in sorted((data_dir / "test" / name).glob("*.png"))[:10]]
    keys = [drop_photo(path.read_bytes(), f"{path.parent.name}-{path.name}") for path in photos]

    results = wait_for_results(s3_client, scones_stack.bucket, drop_photo.results_prefix, keys)

    assert sorted(results) == sorted(keys)
    runs = {result.execution_arn for result in results.values()}
    assert len(runs) == 20, "each photo had a run of its own"
    for key, result in results.items():
        execution = stepfunctions_client.describe_execution(executionArn=result.execution_arn)
        assert execution["stateMachineArn"] == scones_stack.state_machine_arn
        assert json.loads(execution["input"]) == {"s3_bucket": scones_stack.bucket, "s3_key": key}
        assert result.status == execution["status"]
        if result.status == "SUCCEEDED":
            inferences = json.loads(execution["output"])["body"]["inferences"]
            assert result.inferences == inferences
            assert result.predicted_class == CLASSES[inferences.index(max(inferences))]
            assert result.confidence == max(inferences) and result.error is None
        else:   # mostly ThresholdConfidenceNotMet; whatever the run's error, the result carries it
            assert result.status == "FAILED" and result.error, result
            assert (result.error, result.cause) == (execution["error"], execution["cause"])
    assert any(result.status == "SUCCEEDED" for result in results.values())


def test_a_photo_the_model_is_unsure_of_lands_a_failure_with_its_error(scones_stack, s3_client, drop_photo,
                                                                       unsure_image, threshold):
    body, inferences = unsure_image
    key = drop_photo(body, "unsure.png")

    [result] = wait_for_results(s3_client, scones_stack.bucket, drop_photo.results_prefix, [key]).values()

    assert result.status == "FAILED"
    assert result.error == "ThresholdConfidenceNotMet"
    assert f"below the threshold {threshold}" in result.message and key in result.message
    assert result.predicted_class is None


def test_garbage_in_incoming_lands_a_failure_naming_what_is_wrong(scones_stack, s3_client, drop_photo):
    key = drop_photo(b"these bytes are no photo", "garbage.png")

    [result] = wait_for_results(s3_client, scones_stack.bucket, drop_photo.results_prefix, [key]).values()

    assert result.status == "FAILED"
    assert result.error == "NotAnImage"
    assert key in result.message

    listed = CliRunner().invoke(results, ["--target", scones_stack.name, "--under", key])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(f"{key}  FAILED NotAnImage: ")
