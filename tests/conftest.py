"""Shared fixtures: event fixtures, fake AWS credentials, a deterministic Lambda context and a
small stand-in for the SageMaker runtime API (the helpers themselves are in support.py)."""
from __future__ import annotations

import os
from typing import Callable

import pytest

from scones import settings
from scones.harness import prepare
from scones.harness.endpoint import free_port
from support import (
    CHECKOUT,
    COMPOSE_TEST,
    FakeSageMakerRuntime,
    LambdaContext,
    load_event,
    running_localstack,
    serialise_moto_operation_models,
)

# An example user project, run from a copy outside the clone by tests/test_user_project.py.
collect_ignore = ["user_project"]
COMPOSE_STACK_TEST = "test_compose.py::test_compose_stack_runs_the_workflow"


def pytest_configure(config):
    """Before any test starts moto: its operation models are built one thread at a time (support.py says why)."""
    serialise_moto_operation_models()


def pytest_collection_modifyitems(items):
    """Modules run in the order the stack's first-use work becomes ready, which the scones plugin builds in the
    background meanwhile (harness/prepare.py: LocalStack's venvs, then the trained model): first those that need
    neither, then those that start a LocalStack (`e2e`, the `localstack` fixture), then the parity suite (it
    trains models of its own: after the background training is done or nearly), last those that need the
    session's stack or the trained model (`slow`). Within a tier, the collection order stands."""
    def needs(item, *markers: str) -> bool:
        return any(item.get_closest_marker(marker) for marker in markers)

    def level(item) -> int:
        if "scones_stack" in item.fixturenames or needs(item, "slow"):
            return 3
        if needs(item, "parity"):
            return 2
        return 1 if "localstack" in item.fixturenames or needs(item, "e2e") else 0

    tier: dict = {}
    for item in items:
        tier[item.module] = max(tier.get(item.module, 0), level(item))
    items.sort(key=lambda item: tier[item.module])


def pytest_collection_finish(session):
    """The compose stack's images are built in the background (`stack.sh prepare`) while the tests before the
    compose stack's own run: its `stack.sh up` then waits for what is left of that build."""
    if session.config.option.collectonly or os.environ.get(COMPOSE_TEST) != "1" or not any(
            item.nodeid.endswith(COMPOSE_STACK_TEST) for item in session.items):
        return
    build = prepare.start_background([str(CHECKOUT / "harness" / "compose" / "stack.sh"), "prepare"],
                                     settings.state_dir() / "compose-prepare.log")
    session.config.add_cleanup(lambda: prepare.stop(build))


@pytest.fixture
def event() -> Callable[[str], dict]:
    """The load_event helper as a fixture: `event("workflow_input")`."""
    return load_event


@pytest.fixture
def fake_aws_credentials(monkeypatch) -> None:
    """Dummy credentials and region; no endpoint overrides or profiles leak in from the shell."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def fake_sagemaker_runtime(fake_aws_credentials, monkeypatch):
    """A FakeSageMakerRuntime on 127.0.0.1 that boto3 reaches through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME."""
    runtime = FakeSageMakerRuntime().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
    yield runtime
    runtime.stop()


@pytest.fixture
def moto_server():
    """A moto server on 127.0.0.1 that executes Step Functions definitions; yields its URL."""
    import requests
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    requests.post(f"{url}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}, timeout=5)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    """A LocalStack of the module's own, on a free port, stopped after the module."""
    with running_localstack(tmp_path_factory.mktemp("localstack")) as instance:
        yield instance
