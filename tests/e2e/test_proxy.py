"""A proxy in the environment (HTTP_PROXY / HTTPS_PROXY at a dead port, as on many company laptops) changes
nothing locally: `scones up`, `status`, `run` and `down` reach LocalStack and the endpoint directly (issue 26)."""
from __future__ import annotations

import os

import pytest
from e2e_helpers import scones

from scones import settings
from scones.harness.endpoint import free_port
from scones.harness.targets import load_target

pytestmark = pytest.mark.e2e


def test_up_status_run_and_down_ignore_a_dead_proxy(separate_state_dir, scones_stack, confident_test_image):
    model_dir = scones_stack.record["endpoint"]["model_dir"]
    dead = f"http://127.0.0.1:{free_port()}"
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
    env = {**{k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}, **proxies,
           settings.STATE_DIR: str(separate_state_dir),
           settings.LOCALSTACK_PORT: str(free_port()), settings.ENDPOINT_PORT: str(free_port())}
    key, image = confident_test_image("motorcycle")

    try:
        started = scones("up", "--model", model_dir, "--no-data", "--prefix", "scones-proxytest", env=env)
        assert started.returncode == 0, started.stderr
        target = load_target("local", separate_state_dir)
        target.client("s3").put_object(Bucket=target.bucket, Key=key, Body=image.read_bytes())

        status = scones("status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "UNHEALTHY" not in status.stdout

        ran = scones("run", key, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "SUCCEEDED" in ran.stdout and "motorcycle" in ran.stdout
    finally:
        stopped = scones("down", env=env)
    assert stopped.returncode == 0, stopped.stderr
