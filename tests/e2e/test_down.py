"""`scones up` then `scones down` on a stack of its own: nothing may be left running or listening."""
from __future__ import annotations

import os

import pytest
from e2e_helpers import scones

from scones import settings
from scones.harness import stack
from scones.harness.endpoint import free_port
from scones.harness.targets import load_target

pytestmark = pytest.mark.e2e


def test_down_leaves_no_process_and_no_open_port(separate_state_dir, scones_stack):
    model_dir = scones_stack.record["endpoint"]["model_dir"]
    localstack_port, endpoint_port = free_port(), free_port()
    env = {**os.environ, settings.STATE_DIR: str(separate_state_dir),
           settings.LOCALSTACK_PORT: str(localstack_port), settings.ENDPOINT_PORT: str(endpoint_port)}

    started = scones("up", "--model", model_dir, "--no-data", "--prefix", "scones-downtest", env=env)
    assert started.returncode == 0, started.stderr
    record = load_target("local", separate_state_dir).record
    roots = [record["localstack"]["pid"], record["endpoint"]["pid"]]
    # the endpoint's port: $SCONES_ENDPOINT_PORT in route mode, the one the control plane's host took in api mode
    served_port = record["endpoint"]["port"]
    tree = stack.process_tree(roots)
    assert all(stack.pid_alive(pid) for pid in roots)
    assert stack.port_open(localstack_port) and stack.port_open(served_port)

    again = scones("up", "--model", model_dir, "--no-data", "--prefix", "scones-downtest", env=env)
    assert again.returncode == 0, again.stderr
    assert "attached" in again.stderr
    assert load_target("local", separate_state_dir).record["localstack"]["pid"] == roots[0]
    tree = sorted(set(tree) | set(stack.process_tree(roots)))

    stopped = scones("down", env=env)

    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in tree if stack.pid_alive(pid)] == []
    assert not stack.port_open(localstack_port) and not stack.port_open(served_port)
    assert scones("status", env=env).returncode == 3
