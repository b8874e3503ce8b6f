"""Every value the CLI takes is checked before any work, with an error naming the option (issue 26).

The endpoint name rule is SageMaker's: botocore's sagemaker service model, shape EndpointName,
pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}, at most 63 characters.
"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from scones.harness.commands.endpoint import serve
from scones.harness.commands.local import down, run, status, up
from scones.harness.commands.monitoring import evaluate, monitor, report
from scones.harness.commands.options import endpoint_name_pattern
from scones.harness.commands.results import results


@pytest.mark.parametrize("command, arguments, option", [
    (up, ["--threshold", "2.0"], "--threshold"),
    (up, ["--threshold", "-1"], "--threshold"),
    (up, ["--endpoint-port", "0"], "--endpoint-port"),
    (up, ["--localstack-port", "70000"], "--localstack-port"),
    (up, ["--endpoint-name", "bad/name"], "--endpoint-name"),
    (up, ["--endpoint-name", "ends-with-hyphen-"], "--endpoint-name"),
    (up, ["--endpoint-name", "a" * 64], "--endpoint-name"),
    (serve, ["--model", ".", "--port", "99999"], "--port"),
    (serve, ["--model", ".", "--endpoint-name", "bad_name"], "--endpoint-name"),
    (evaluate, ["--n", "-5"], "--n"),
    (run, ["--timeout", "-1", "test/a.png"], "--timeout"),
    (run, ["--timeout", "0", "test/a.png"], "--timeout"),
    (monitor, ["--threshold", "1.5"], "--threshold"),
    (monitor, ["--alpha", "0"], "--alpha"),
])
def test_a_bad_value_is_a_usage_error_naming_the_option(command, arguments, option, tmp_path):
    outcome = CliRunner().invoke(command, [*arguments, "--state-dir", str(tmp_path)] if command is not serve
                                 else arguments)
    assert outcome.exit_code == 2, outcome.output
    assert f"Invalid value for '{option}'" in outcome.output
    assert "Traceback" not in outcome.output


def test_every_state_dir_and_target_option_has_one_destination():
    commands = [up, run, status, down, evaluate, monitor, report, results]
    for command in commands:
        names = {parameter.opts[0]: parameter.name for parameter in command.params if parameter.opts}
        assert names["--state-dir"] == "state_dir", command.name
        if "--target" in names:
            assert names["--target"] == "target", command.name


@pytest.mark.parametrize("name", ["scones-classifier", "a", "A1-b--2", "x" * 63])
def test_aws_endpoint_names_are_accepted(name):
    assert endpoint_name_pattern().fullmatch(name)


def test_evaluate_refuses_a_state_dir_it_cannot_save_its_report_in_before_running_anything(tmp_path):
    """The probe's read-only state dir ran every execution, then failed writing the report. Here the reports
    folder's place is taken by a file (root writes through read-only modes, so a mode would not show it)."""
    (tmp_path / "reports").write_text("not a folder")
    outcome = CliRunner().invoke(evaluate, ["--state-dir", str(tmp_path)])
    assert outcome.exit_code == 1, outcome.output
    assert f"cannot save the evaluation's report in {tmp_path / 'reports'}" in outcome.output
    assert "no local stack recorded" not in outcome.output   # refused before it looked for a stack to run on
