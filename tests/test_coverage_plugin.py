"""`--scones-coverage` and `--scones-coverage-json` of the pytest plugin, in a pytester session against moto
standing in for a deployed stack (its Step Functions executes definitions and records AWS's history events);
and the `faults` fixture outside the local stack."""
from __future__ import annotations

import json

from test_executions import three_state_machine

from scones import settings
from scones.deploy.record import write_record

pytest_plugins = ["pytester"]

INNER_TEST = '''
def test_one_confident_photo(run_workflow):
    assert run_workflow("a.png").status == "SUCCEEDED"

def test_faults_exist_on_the_local_stack_only(faults):
    pass
'''


def test_session_coverage_is_printed_and_written(pytester, moto_server, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SCONES_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SCONES_TEST_TARGET", "aws")
    monkeypatch.setenv(settings.ALLOW_LOCAL_AWS_ENDPOINTS, "1")   # moto on 127.0.0.1 stands in for AWS on purpose
    session = boto3.Session(region_name="eu-west-1")
    sfn = session.client("stepfunctions")
    machine = sfn.create_state_machine(name="coverage-workflow", roleArn="arn:aws:iam::123456789012:role/r",
                                       definition=json.dumps(three_state_machine(0.99)))["stateMachineArn"]
    sfn.start_execution(stateMachineArn=machine, input="{}")   # before the session: not counted
    write_record(tmp_path / "aws" / "deploy-record.json", {"outputs": {
        "region": "eu-west-1", "bucket": "b", "state_machine_arn": machine, "function_arns": {},
        "endpoint_name": "scones-classifier", "capture_s3_uri": "s3://b/data_capture"}})
    pytester.makepyfile(INNER_TEST)
    report_path = tmp_path / "coverage.json"

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "--scones-coverage",
                                          "--scones-coverage-json", str(report_path))

    result.assert_outcomes(passed=1, skipped=1)
    output = result.stdout.str()
    assert "fault rules and the time scale exist on the local stack only" in output
    assert "workflow coverage of coverage-workflow over 1 execution(s):" in output
    assert "states entered: 4/5" in output and "never  thresholdFailed" in output
    [covered] = json.loads(report_path.read_text())["state_machines"]
    assert covered["choices"]["counts"] == {"filterInferences Choices[0] -> done": 1,
                                            "filterInferences Choices[1] -> done": 1,
                                            "filterInferences Default -> thresholdFailed": 0}
    assert covered["transitions"]["never"] == ["filterInferences -> thresholdFailed", "thresholdFailed -> (end)"]
