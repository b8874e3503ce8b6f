"""A compose stack started from the clone (its state in <state dir>/compose, docker-compose.yml's default) is
found by `scones status`, `scones run`, `scones down` and the pytest plugin without SCONES_STATE_DIR.

The containers stand in as HTTP servers answering on the recorded ports (tests/test_compose.py runs
the real compose stack); the record is what harness/compose/deploy.py writes.
"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from scones.harness import stack
from scones.harness.commands.local import down, run, status, up
from scones.harness.targets import compose_record_path, find_local_record, load_target, local_record_path, write_record
from test_local_targets import answering_server, compose_record, outputs  # noqa: F401 - fixtures and helpers


@pytest.fixture
def compose_up(tmp_path, monkeypatch, answering_server):  # noqa: F811 - the imported fixture
    """A state dir as the clone's .scones with a compose stack up beside it, found from the working directory."""
    monkeypatch.delenv("SCONES_STATE_DIR", raising=False)
    (tmp_path / "scones.toml").write_text('state_dir = ".scones"\n')
    monkeypatch.chdir(tmp_path)
    write_record(compose_record_path(), compose_record(answering_server, answering_server))
    return tmp_path / ".scones"


def test_status_and_the_plugin_find_the_compose_stack(compose_up):
    assert find_local_record() == compose_up / "compose" / "local" / "stack.json"
    report = stack.status()
    assert report["up"] and report["managed_by"] == "docker compose"     # the plugin attaches when this is true
    assert load_target("local").bucket == outputs()["bucket"]

    result = CliRunner().invoke(status, [])
    assert result.exit_code == 0, result.output
    assert f"managed by docker compose (record {compose_up / 'compose' / 'local' / 'stack.json'})" in result.output


def test_run_reaches_the_compose_stack_and_down_names_compose(compose_up):
    from scones.harness.endpoint import free_port

    record = compose_record(free_port(), free_port())
    record["outputs"]["endpoint_urls"] = {"default": record["localstack"]["url"],
                                          "sagemaker-runtime": record["endpoint"]["url"]}
    write_record(compose_record_path(), record)

    result = CliRunner().invoke(run, ["test/bicycle/x.png"])

    # Nothing listens on the recorded LocalStack port: that run went there, to the compose stack's
    # LocalStack, is what this shows (instead of "no local stack recorded ...: run `scones up` first").
    assert record["localstack"]["url"] in str(result.exception), (result.output, result.exception)

    result = CliRunner().invoke(down, [])
    assert result.exit_code == 1 and "harness/compose/stack.sh down" in result.output


def test_own_stack_record_wins_over_the_compose_one(compose_up):
    write_record(local_record_path(), {"outputs": outputs()})
    assert find_local_record() == local_record_path()


def test_up_on_the_compose_stack_ports_says_to_use_it(compose_up, answering_server):  # noqa: F811
    result = CliRunner().invoke(up, ["--endpoint-port", str(answering_server), "--model", str(compose_up)])
    assert result.exit_code == 1
    assert "a docker compose stack holds ports" in result.output and "harness/compose/stack.sh down" in result.output
