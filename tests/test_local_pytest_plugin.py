"""The scones pytest plugin, run in a pytester session against moto standing in for a deployed AWS stack."""
from __future__ import annotations

import json

from test_executions import three_state_machine

from scones.deploy.record import write_record

pytest_plugins = ["pytester"]

INNER_TEST = '''

def test_fixtures_reach_the_recorded_stack(scones_stack, s3_client, stepfunctions_client, upload_image,
                                           run_workflow, run_workflows):
    assert scones_stack.name == "aws" and scones_stack.bucket == "plugin-bucket"
    key = upload_image(b"\\x89PNG\\r\\n\\x1a\\n fake", name="probe")
    assert key.startswith("pytest-uploads/probe-") and key.endswith(".png")
    assert s3_client.get_object(Bucket="plugin-bucket", Key=key)["Body"].read().startswith(b"\\x89PNG")

    result = run_workflow(key)
    assert result.status == "SUCCEEDED" and result.predicted_class == "motorcycle"
    assert [r.key for r in run_workflows(["a.png", "b.png"], concurrency=2)] == ["a.png", "b.png"]

def test_uploads_were_cleaned_up(s3_client):
    assert "Contents" not in s3_client.list_objects_v2(Bucket="plugin-bucket", Prefix="pytest-uploads/")
'''


def test_plugin_points_the_fixtures_at_the_aws_record(pytester, moto_server, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SCONES_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SCONES_TEST_TARGET", "aws")
    monkeypatch.setenv("SCONES_ALLOW_LOCAL_AWS_ENDPOINTS", "1")   # moto's server stands in for AWS on purpose
    session = boto3.Session(region_name="eu-west-1")
    session.client("s3").create_bucket(Bucket="plugin-bucket",
                                       CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    machine = session.client("stepfunctions").create_state_machine(
        name="plugin-workflow", roleArn="arn:aws:iam::123456789012:role/r",
        definition=json.dumps(three_state_machine(0.01)))["stateMachineArn"]
    write_record(tmp_path / "aws" / "deploy-record.json", {"outputs": {
        "region": "eu-west-1", "bucket": "plugin-bucket", "state_machine_arn": machine, "function_arns": {},
        "endpoint_name": "scones-classifier", "capture_s3_uri": "s3://plugin-bucket/data_capture"}})
    pytester.makepyfile(INNER_TEST)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def test_unknown_target_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.setenv("SCONES_TEST_TARGET", "mars")
    pytester.makepyfile("def test_x(scones_stack):\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert "expected 'local' or 'aws'" in result.stdout.str()


FAKE_STACK_CONFTEST = '''
import sys
from types import SimpleNamespace

import pytest

from scones.harness import stack, targets


@pytest.fixture(autouse=True, scope="session")
def fake_stack(tmp_path_factory):
    saved = stack.status, stack.up, stack.down, targets.load_target

    def up(config, progress):
        progress("localstack: starting")
        for count in range(1, 4):       # a progress bar as tqdm draws one: redraws, then its last line
            sys.stderr.write(f"\\rInstalling LocalStack: {count} pkg")
        sys.stderr.write("\\n")
        print("training model abc on /data (first use)", file=sys.stderr)
        progress("localstack: ready")

    stack.status = lambda state_dir=None: {"up": False}
    stack.up = up
    stack.down = lambda state_dir, progress: progress("localstack: stopping") or {"leftover_processes": [], "open_ports": []}
    targets.load_target = lambda name, state_dir=None: SimpleNamespace(name=name)
    yield
    stack.status, stack.up, stack.down, targets.load_target = saved
'''


def test_stack_progress_reaches_the_terminal_without_dash_s(pytester, monkeypatch, tmp_path):
    """A first run takes minutes (LocalStack's venv, training): each step and each line the parts write to
    stderr shows at once through pytest's terminal reporter, not held by its capture until the end."""
    monkeypatch.setenv("SCONES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("SCONES_TEST_TARGET", raising=False)
    pytester.makeconftest(FAKE_STACK_CONFTEST)
    pytester.makepyfile("def test_uses_the_stack(scones_stack):\n    assert scones_stack.name == 'local'\n")

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    lines = [line for line in result.stdout.lines if line.startswith("scones: ")]
    assert lines[0].startswith(f"scones: bringing up a local stack in {tmp_path / 'state'}")
    assert lines[1:] == ["scones: localstack: starting", "scones: Installing LocalStack: 3 pkg",
                         "scones: training model abc on /data (first use)", "scones: localstack: ready",
                         "scones: localstack: stopping"]
    # Shown while the session runs: before the test's result line, not in a captured-output section.
    assert result.stdout.str().index("localstack: ready") < result.stdout.str().index("1 passed")
    assert "Captured stderr" not in result.stdout.str()


NO_STACK_UP_CONFTEST = '''
import pytest

from scones.harness import stack


@pytest.fixture(autouse=True, scope="session")
def no_stack_up():
    saved, stack.status = stack.status, lambda state_dir=None: {"up": False}
    yield
    stack.status = saved
'''


def test_a_stack_that_cannot_come_up_fails_each_test_with_one_clear_line(pytester, monkeypatch):
    """No images where the project's config says: the tests fail with the message that says how to point
    scones at them."""
    # CI (and BUILD_NUMBER) make pytest print the summary's messages in full: counted once per test here.
    for name in ("SCONES_STATE_DIR", "SCONES_DATA_DIR", "SCONES_MODEL_DIR", "SCONES_TEST_TARGET", "CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyprojecttoml('[tool.scones]\nstate_dir = "state"\ndata_dir = "no-images-here"\n')
    pytester.makeconftest(NO_STACK_UP_CONFTEST)
    pytester.makepyfile("def test_one(scones_stack):\n    pass\n\ndef test_two(scones_stack):\n    pass\n")

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    assert output.count(f"scones: the local stack could not come up: data directory {pytester.path / 'no-images-here'} "
                        "lacks train/bicycle/") == 2
    assert "data_dir in the [tool.scones] table" in output
    assert "Traceback" not in output and "raise FileNotFoundError" not in output


def test_a_long_progress_bar_shows_a_redraw_every_interval_and_its_final_line(monkeypatch):
    from scones.harness import pytest_plugin

    clock = [100.0]
    monkeypatch.setattr(pytest_plugin.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    stream = pytest_plugin._TerminalLines(lines.append)

    for count in range(1, 31):          # one redraw a second for 30 s, as tqdm draws a pip install
        stream.write(f"\rInstalling: {count} pkg")
        clock[0] += 1.0
    stream.write("\rInstalling: 30 pkg, done\n")
    stream.write("next step\n")

    interval = pytest_plugin.REDRAW_INTERVAL_S
    assert len(lines) == 2 + 30 // interval - 1
    assert lines[0] == f"Installing: {int(interval)} pkg"
    assert lines[-2:] == ["Installing: 30 pkg, done", "next step"]
