"""harness/lambda_executor/pinned.py: every LocalStack patch is installed at most once, only on the pinned
LocalStack, and never when its switch is "0" (the patches themselves run in tests/test_lambda_executor_sfn.py)."""
from __future__ import annotations

import threading

import pytest

from scones.harness.lambda_executor import (
    events_sfn_target,
    pinned,
    sfn_client_cache,
    sfn_definition_cache,
    sfn_jsonpath_cache,
)
from scones.harness.lambda_executor.names import LOCALSTACK_VERSION


@pytest.fixture
def installs(monkeypatch):
    monkeypatch.setattr(pinned, "localstack_version", lambda: LOCALSTACK_VERSION)
    calls = []
    return pinned.Patch("test patch", "SCONES_TEST_PATCH_SWITCH", lambda: calls.append(1), hits=0), calls


def test_a_patch_is_installed_once_even_from_many_threads(installs):
    patch, calls = installs
    threads = [threading.Thread(target=patch.apply) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert patch.status() == {"active": True, "reason": "applied", "hits": 0}


def test_its_switch_turns_it_off(installs, monkeypatch):
    patch, calls = installs
    monkeypatch.setenv("SCONES_TEST_PATCH_SWITCH", "0")
    assert patch.apply() is False and calls == []
    assert patch.status()["reason"] == "disabled by SCONES_TEST_PATCH_SWITCH=0"


def test_another_localstack_is_left_alone(installs, monkeypatch):
    patch, calls = installs
    monkeypatch.setattr(pinned, "localstack_version", lambda: "4.15.0")
    assert patch.apply() is False and calls == []
    assert "4.15.0 is not the pinned" in patch.status()["reason"]


def test_each_localstack_patch_is_a_pinned_patch():
    for module in (events_sfn_target, sfn_client_cache, sfn_definition_cache, sfn_jsonpath_cache):
        assert isinstance(module.PATCH, pinned.Patch)
        assert module.PATCH.status()["active"] is False   # nothing installs them outside LocalStack
