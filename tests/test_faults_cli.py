"""`scones faults` (harness/commands/faults.py): errors a user can act on, without a traceback."""
from __future__ import annotations

from click.testing import CliRunner

from scones.harness.commands.faults import faults
from scones.harness.endpoint import free_port


def test_unreachable_localstack_is_one_line_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(faults, ["list", "--localstack-url", url])
    assert result.exit_code == 1
    assert f"could not reach LocalStack at {url}" in result.output and "Traceback" not in result.output


def test_a_rule_that_is_not_json_is_refused_before_any_call():
    result = CliRunner().invoke(faults, ["add", "{service: s3", "--localstack-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "RULE_JSON" in result.output and "not JSON" in result.output


def test_status_without_an_error_code_is_refused():
    result = CliRunner().invoke(faults, ["add", "--service", "s3", "--operation", "GetObject", "--status", "503",
                                         "--localstack-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--status and --message go with --error CODE" in result.output
