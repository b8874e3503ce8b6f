"""pytest fixtures for fault rules and the Step Functions time scale, and the `--scones-coverage` report.

Loaded with the scones plugin (harness/pytest_plugin.py names this module in `pytest_plugins`):

    def test_endpoint_throttled(faults, run_workflow):
        faults.time_scale(0.01)                 # Retry waits a hundredth of their time (back to 1 after the test)
        rule = faults.add(service="sagemaker-runtime", operation="InvokeEndpoint",
                          error="ModelNotReadyException", times=2)
        assert run_workflow("test/bicycle/x.png").status == "SUCCEEDED"
        assert faults.get(rule["id"])["fired"] == 2

Every rule a test added is removed when it ends, and the time scale put back to what it was.

`--scones-coverage` prints, at the end of the session, which states, transitions, Retry and Catch
rules and Choice branches of each state machine the session's executions exercised (harness/coverage.py),
naming those never exercised; `--scones-coverage-json PATH` writes the same as JSON (for CI). Fault rules
a test added that never fired are named at the end of every session that has any.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

_SINCE = pytest.StashKey[datetime]()
_REPORT = pytest.StashKey[dict]()
_NEVER_FIRED = pytest.StashKey[list]()    # (test id, rule) of each fault rule a test added that never fired


def pytest_addoption(parser):
    group = parser.getgroup("scones")
    group.addoption("--scones-coverage", action="store_true", default=False,
                    help="Print the workflow coverage of this session's executions at its end.")
    group.addoption("--scones-coverage-json", metavar="PATH", default=None,
                    help="Write the workflow coverage of this session's executions as JSON to PATH.")


def pytest_sessionstart(session):
    session.config.stash[_SINCE] = datetime.now(timezone.utc)


def _coverage_wanted(config) -> bool:
    return bool(config.getoption("scones_coverage") or config.getoption("scones_coverage_json"))


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Once `scones_stack` is set up, collect the coverage just before its teardown (which may stop the stack)."""
    result = yield
    if fixturedef.argname == "scones_stack" and _coverage_wanted(request.config):
        config = request.config

        def collect() -> None:
            from scones.harness import coverage

            try:
                config.stash[_REPORT] = coverage.collect(result.client("stepfunctions"), since=config.stash[_SINCE])
            except Exception as error:   # the report must not turn a passing session into an error
                config.stash[_REPORT] = {"error": f"{type(error).__name__}: {error}", "state_machines": []}

        fixturedef.addfinalizer(collect)
    return result


def pytest_terminal_summary(terminalreporter, config):
    never_fired = config.stash.get(_NEVER_FIRED, [])
    if never_fired:
        from scones.harness.faults import describe

        # A rule that never fired is a test that did not test what it meant to (a wrong name or resource).
        terminalreporter.section("scones fault rules that never fired")
        for test_id, rule in never_fired:
            terminalreporter.write_line(f"{test_id}: {describe(rule).strip()}")
    if not _coverage_wanted(config):
        return
    report = config.stash.get(_REPORT, None)
    if report is None:
        terminalreporter.write_line("workflow coverage: no test used the stack (scones_stack) in this session")
        return
    from scones.harness.coverage import format_report

    terminalreporter.section("scones workflow coverage")
    if report.get("error"):
        terminalreporter.write_line(f"workflow coverage could not be collected: {report['error']}")
    if config.getoption("scones_coverage"):
        terminalreporter.write_line(format_report(report))
    path = config.getoption("scones_coverage_json")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2, default=str))
        terminalreporter.write_line(f"workflow coverage written to {path}")


class Faults:
    """The `faults` fixture: add rules and set the time scale for one test; undone when it ends."""

    def __init__(self, client) -> None:
        self.client = client
        self._added: list[str] = []
        self._scale_before: float | None = None

    def add(self, rule: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Add a rule (README: Fault rules); returns it with its id. E.g. add(service="lambda",
        operation="Invoke", resource="my-fn", error="ServiceException", times=1)."""
        added = self.client.add(rule, **fields)
        self._added.append(added["id"])
        return added

    def get(self, rule_id: str) -> dict[str, Any]:
        """The rule with its counts now: `matched` (calls it matched) and `fired` (calls it answered)."""
        return self.client.get(rule_id)

    def clear(self) -> list[dict[str, Any]]:
        """Remove this test's rules now; returns them with their counts."""
        removed = [rule for rule_id in self._added for rule in self.client.clear(rule_id)]
        self._added.clear()
        return removed

    def time_scale(self, scale: float) -> None:
        """Scale Step Functions' Retry intervals, Wait states and timeouts and the Lambda functions' botocore
        backoff (e.g. 0.01) for this test."""
        if self._scale_before is None:
            self._scale_before = self.client.time_scale()["scale"]
        state = self.client.set_time_scale(scale)
        if not state["active"]:
            pytest.fail(f"the Step Functions time scale is not active in this LocalStack: {state['reason']}")

    def _undo(self) -> list[dict[str, Any]]:
        """Remove this test's rules and put the time scale back; the removed rules that never fired."""
        never_fired = []
        for rule_id in self._added:
            try:
                never_fired += [rule for rule in self.client.clear(rule_id) if not rule["fired"]]
            except Exception:   # already removed by the test itself
                pass
        if self._scale_before is not None:
            self.client.set_time_scale(self._scale_before)
        return never_fired

    def list(self) -> list[dict[str, Any]]:   # after the methods annotated with the builtin list
        """Every rule in force (this test's and any other's), with its counts."""
        return self.client.list()


@pytest.fixture
def faults(scones_stack, request):
    """Fault rules and the Step Functions time scale of the local stack, for one test (undone at its end;
    the rules it added that never fired are named at the end of the session)."""
    if scones_stack.name != "local":
        pytest.skip("fault rules and the time scale exist on the local stack only (AWS has neither)")
    from scones.harness.faults import FaultsClient

    control = Faults(FaultsClient(scones_stack.record["localstack"]["url"]))
    yield control
    never_fired = control._undo()
    if never_fired:
        request.config.stash.setdefault(_NEVER_FIRED, []).extend((request.node.nodeid, rule) for rule in never_fired)
