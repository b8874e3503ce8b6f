"""Step Functions -> Lambda through the process executor, and the pinned client and definition caches being active."""
from __future__ import annotations

import io
import json
import urllib.request
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from support import poll

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/scones-test-role"
HANDLER = '''
def handler(event, context):
    event["hops"] = event.get("hops", 0) + 1
    if event.get("fail_at") == event["hops"]:
        raise RuntimeError("failing at hop %d" % event["hops"])
    return event
'''


def _definition(function_arn: str, tasks: int) -> str:
    states = {}
    for index in range(tasks):
        states[f"Hop{index}"] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
            "OutputPath": "$.Payload",
            **({"Next": f"Hop{index + 1}"} if index + 1 < tasks else {"End": True}),
        }
    return json.dumps({"StartAt": "Hop0", "States": states})


@pytest.fixture(scope="module")
def workflow(localstack):
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    lambda_client = session.client("lambda", endpoint_url=localstack.url)
    sfn = session.client("stepfunctions", endpoint_url=localstack.url)
    name = f"scones-test-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hop.py", HANDLER)
    arn = lambda_client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="hop.handler",
                                        Code={"ZipFile": buffer.getvalue()})["FunctionArn"]
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
    machine = sfn.create_state_machine(name=name, definition=_definition(arn, 3), roleArn=ROLE)["stateMachineArn"]
    yield sfn, machine
    sfn.delete_state_machine(stateMachineArn=machine)
    lambda_client.delete_function(FunctionName=name)


def _run(sfn, machine: str, payload: dict, timeout: float = 60) -> dict:
    execution = sfn.start_execution(stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(payload))

    def finished() -> dict | None:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        return described if described["status"] != "RUNNING" else None

    return poll(finished, timeout=timeout, interval=0.05, what="the execution to finish")


def _cache_status(localstack) -> dict:
    with urllib.request.urlopen(f"{localstack.url}/_scones/sfn-client-cache", timeout=5) as response:
        return json.loads(response.read())


def _executor_status(localstack) -> dict:
    with urllib.request.urlopen(f"{localstack.url}/_scones/executor", timeout=5) as response:
        return json.loads(response.read())


def test_lambda_tasks_run_and_reuse_one_client(localstack, workflow):
    sfn, machine = workflow
    # The patches land in the background once the executor plugin loads (at the first function).
    poll(lambda: _executor_status(localstack)["sfn_definition_cache"]["active"], timeout=60, interval=0.1,
         what="the Step Functions patches to be applied")
    for _ in range(2):
        described = _run(sfn, machine, {"hops": 0})
        assert described["status"] == "SUCCEEDED", described
        assert json.loads(described["output"])["hops"] == 3
    status = _cache_status(localstack)
    assert status["active"] is True and status["version"] == "4.14.0", status
    assert status["misses"] == 1 and status["hits"] >= 5, status
    executor = _executor_status(localstack)
    assert executor["invokes"] >= 6 and executor["recent_invoke_ms"]["p50"] > 0, executor
    definitions = executor["sfn_definition_cache"]
    assert definitions["active"] is True and definitions["hits"] >= 1, definitions
    threads = executor["lambda_threads"]  # keep-alive timers on one thread, metrics recorded by one worker
    assert threads["active"] is True and threads["timers_started"] >= 6, threads
    poll(lambda: _executor_status(localstack)["lambda_threads"]["metrics_recorded"] >= 6, timeout=30,
         what="the Lambda invocation metrics to be recorded")


def test_concurrent_executions_of_one_cached_definition(workflow):
    sfn, machine = workflow
    with ThreadPoolExecutor(max_workers=4) as pool:
        described = list(pool.map(lambda hops: _run(sfn, machine, {"hops": hops * 10}), range(4)))
    assert [d["status"] for d in described] == ["SUCCEEDED"] * 4, described
    assert sorted(json.loads(d["output"])["hops"] for d in described) == [3, 13, 23, 33]


def test_lambda_error_fails_the_execution_with_the_exception_class(workflow):
    sfn, machine = workflow
    described = _run(sfn, machine, {"hops": 0, "fail_at": 2})
    assert described["status"] == "FAILED"
    assert described["error"] == "RuntimeError"
    cause = json.loads(described["cause"])
    assert cause["errorType"] == "RuntimeError" and cause["errorMessage"] == "failing at hop 2"
