"""Issue 25's LocalStack patches (settings.THROUGHPUT_SWITCHES): Lambda's CloudWatch metrics and logs sent in
batches (lambda_metrics_batch.py, lambda_logs_batch.py); the gateway keeping HTTP/1.1 connections open
(gateway_keep_alive.py), handing a short response from LocalStack's worker thread to its event loop once
(gateway_buffered_responses.py) and remembering the requests that no edge route matches (gateway_route_cache.py);
Step Functions' JSONPaths parsed once each (sfn_jsonpath_cache.py); Step Functions' and S3's events handed to
EventBridge without a client round trip (service_events_in_process.py); at a function's cap of environments an
invoke waiting for one of them (lambda_environment_queue.py); calls between LocalStack's services without a
computed signature (internal_client_requests.py).

What AWS shows must not change: the same AWS/Lambda `Invocations` and `Errors` sums per function
(https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html: "Invocations - The
number of times that your function code is invoked, including successful invocations and
invocations that result in a function error"; "Errors - The number of invocations that result in a
function error"), and every invocation's lines in its /aws/lambda/<name> log group. The e2e tests
run on LocalStack with the patches on and with them off (their switches "0"), asserting the same,
and on the patched one that the batching took place (fewer calls than invokes).
Connections: HTTP/1.1 connections are persistent unless either side says `Connection: close`
(RFC 9112 section 9.3), and AWS's endpoints keep them (botocore pools them: `max_pool_connections`).
Responses: the same status, headers and bytes with the buffering on and off, framed by Content-Length
(RFC 9112 section 6.3); S3 GetObject's body is the object and its Content-Length the object's size, HeadObject
gives the size with no body (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html,
API_HeadObject.html; RFC 9110 section 9.3.2), a missing key is 404 NoSuchKey.
JSONPaths: InputPath, Parameters (`.$` fields and intrinsic functions), ResultPath, a Choice rule's
Variable and OutputPath give what https://docs.aws.amazon.com/step-functions/latest/dg/concepts-input-output-filtering.html
describes; a path that matches nothing fails the execution with States.Runtime
(https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), on every execution.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from scones import settings
from scones.harness.lambda_executor import (
    gateway_buffered_responses,
    gateway_keep_alive,
    gateway_route_cache,
    internal_client_requests,
    lambda_environment_queue,
    lambda_logs_batch,
    lambda_metrics_batch,
    pinned,
    service_events_in_process,
    sfn_jsonpath_cache,
)
from scones.harness.localstack import LocalStack
from support import poll, running_localstack, zip_of

ROLE = "arn:aws:iam::000000000000:role/scones-test-lambda-role"
HANDLER = '''
def handler(event, context):
    print("batch-probe", event["marker"], event["index"])
    if event.get("fail"):
        raise ValueError("failing on purpose")
    return event["index"]
'''


def test_data_of_one_function_metric_and_second_become_one_datum_with_its_count():
    counts = {("111111111111", "us-east-1", "f", "Invocations", 1_700_000_000): 5,
              ("111111111111", "us-east-1", "f", "Errors", 1_700_000_000): 2,
              ("111111111111", "us-east-1", "f", "Invocations", 1_700_000_001): 1,
              ("222222222222", "eu-west-1", "g", "Invocations", 1_700_000_000): 3}
    calls = lambda_metrics_batch.metric_data(counts)
    assert set(calls) == {("111111111111", "us-east-1"), ("222222222222", "eu-west-1")}
    first = calls[("111111111111", "us-east-1")]
    assert len(first) == 3
    invocations = [d for d in first if d["MetricName"] == "Invocations"]
    assert [d["Counts"] for d in invocations] == [[5.0], [1.0]]
    assert all(d["Values"] == [1.0] and d["Dimensions"] == [{"Name": "FunctionName", "Value": "f"}] for d in first)
    assert invocations[0]["Timestamp"] == datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.UTC)


def test_log_events_split_at_awss_count_and_size_limits_in_order():
    """PutLogEvents: at most 10,000 events, and 1,048,576 bytes counting each message's UTF-8 plus 26
    (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html)."""
    many = [{"timestamp": 1, "message": f"{i}\n"} for i in range(25_000)]
    calls = lambda_logs_batch.batches(many)
    assert [len(call) for call in calls] == [10_000, 10_000, 5_000]
    assert [event for call in calls for event in call] == many
    big = [{"timestamp": 1, "message": "é" * 100_000} for _ in range(12)]  # 200,000 bytes each in UTF-8
    calls = lambda_logs_batch.batches(big)
    assert [len(call) for call in calls] == [5, 5, 2]
    assert all(sum(len(e["message"].encode()) + 26 for e in call) <= 1_048_576 for call in calls)


def test_log_lines_are_4140s_one_event_per_non_empty_line():
    assert lambda_logs_batch.log_events("START a\n\nhello\nEND a\n", 7) == [
        {"timestamp": 7, "message": "START a\n"}, {"timestamp": 7, "message": "hello\n"},
        {"timestamp": 7, "message": "END a\n"}]


def test_both_are_pinned_patches_off_outside_localstack():
    for module in (lambda_metrics_batch, lambda_logs_batch, gateway_keep_alive, gateway_buffered_responses,
                   gateway_route_cache, sfn_jsonpath_cache, service_events_in_process, lambda_environment_queue,
                   internal_client_requests):
        assert isinstance(module.PATCH, pinned.Patch)
        assert module.PATCH.status()["active"] is False
    assert lambda_metrics_batch.PATCH.switch_env == settings.LAMBDA_METRICS_BATCH
    assert lambda_logs_batch.PATCH.switch_env == settings.LAMBDA_LOGS_BATCH
    assert gateway_keep_alive.PATCH.switch_env == settings.GATEWAY_KEEP_ALIVE
    assert gateway_buffered_responses.PATCH.switch_env == settings.GATEWAY_BUFFERED_RESPONSES
    assert sfn_jsonpath_cache.PATCH.switch_env == settings.SFN_JSONPATH_CACHE
    assert gateway_route_cache.PATCH.switch_env == settings.GATEWAY_ROUTE_CACHE
    assert service_events_in_process.PATCH.switch_env == settings.SERVICE_EVENTS_IN_PROCESS
    assert lambda_environment_queue.PATCH.switch_env == settings.LAMBDA_ENVIRONMENT_QUEUE
    assert internal_client_requests.PATCH.switch_env == settings.INTERNAL_CLIENT_REQUESTS


@pytest.fixture(scope="module", params=["patched", "switched off"])
def stack(request, tmp_path_factory):
    off = dict.fromkeys(settings.THROUGHPUT_SWITCHES, "0") if request.param != "patched" else {}
    with running_localstack(tmp_path_factory.mktemp("localstack"), off) as instance:
        session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        lambda_client = session.client("lambda", endpoint_url=instance.url)
        name = f"scones-batch-{uuid.uuid4().hex[:8]}"
        lambda_client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="probe.handler",
                                      Code={"ZipFile": zip_of({"probe.py": HANDLER})}, Timeout=10)
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
        yield request.param, instance, session, lambda_client, name


def _statuses(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_scones/executor", timeout=10) as reply:
        return json.loads(reply.read())


@pytest.mark.e2e
def test_metrics_and_logs_reach_cloudwatch_as_without_the_patches(stack):
    variant, localstack, session, lambda_client, name = stack
    marker = uuid.uuid4().hex
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    events = [{"marker": marker, "index": i, "fail": i % 4 == 0} for i in range(12)]   # 3 of 12 fail

    def invoke(event):
        reply = lambda_client.invoke(FunctionName=name, Payload=json.dumps(event))
        return reply.get("FunctionError"), reply["Payload"].read()

    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(invoke, events))
    assert sum(error == "Unhandled" for error, _ in replies) == 3

    cloudwatch = session.client("cloudwatch", endpoint_url=localstack.url)

    def total(metric: str) -> float:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName=metric, Dimensions=[{"Name": "FunctionName", "Value": name}],
            StartTime=started, EndTime=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1),
            Period=3600, Statistics=["Sum", "SampleCount"])["Datapoints"]
        return sum(point["Sum"] for point in points)

    poll(lambda: total("Invocations") == 12 and total("Errors") == 3, timeout=30,
         what=f"AWS/Lambda Invocations 12 and Errors 3 of {name} ({variant})")

    logs = session.client("logs", endpoint_url=localstack.url)

    def lines() -> list[str]:
        try:
            found = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return []
        return [event["message"] for event in found]

    def every_invocation_logged() -> bool:
        text = lines()
        return all(any(f"batch-probe {marker} {i}\n" == line for line in text) for i in range(12))

    poll(every_invocation_logged, timeout=30, what=f"12 invocations' lines in /aws/lambda/{name} ({variant})")
    text = lines()
    assert sum(line.startswith("START RequestId:") for line in text) >= 12
    assert sum(line.startswith("REPORT RequestId:") for line in text) >= 12
    assert all(line.endswith("\n") and line.strip() for line in text)

    status = _statuses(localstack.url)
    metrics, log_batch = status["lambda_metrics_batch"], status["lambda_logs_batch"]
    if variant == "patched":
        assert metrics["active"] and log_batch["active"]
        assert metrics["recorded"] >= 15               # 12 Invocations + 3 Errors, the function's first
        assert metrics["calls"] < metrics["recorded"]  # batched: fewer PutMetricData calls than data
        assert log_batch["invocations"] >= 12 and log_batch["calls"] <= log_batch["invocations"]
    else:
        assert not metrics["active"] and not log_batch["active"]
        assert "disabled by" in metrics["reason"] and "disabled by" in log_batch["reason"]



def _connects(calls) -> tuple[int, list[str | None]]:
    """How many TCP connections `calls` opened, and the Connection header of each answer."""
    import urllib3.connection

    opened = []
    original = urllib3.connection.HTTPConnection.connect

    def connect(self):
        opened.append(self)
        return original(self)

    urllib3.connection.HTTPConnection.connect = connect
    try:
        headers = [call()["ResponseMetadata"]["HTTPHeaders"].get("connection") for call in calls]
    finally:
        urllib3.connection.HTTPConnection.connect = original
    return len(opened), headers


@pytest.mark.e2e
def test_a_clients_calls_share_one_connection_as_with_aws(stack):
    variant, localstack, session, lambda_client, name = stack
    sfn = session.client("stepfunctions", endpoint_url=localstack.url)
    sfn.list_state_machines()   # the pool's first connection
    opened, headers = _connects([sfn.list_state_machines] * 5)
    if variant == "patched":
        assert opened == 0 and headers == [None] * 5
        assert _statuses(localstack.url)["gateway_keep_alive"]["active"]
    else:   # 4.14.0's own: every answer closes its connection
        assert opened >= 4 and headers == ["close"] * 5


@pytest.mark.e2e
def test_a_client_that_asks_to_close_gets_its_connection_closed(stack):
    import http.client
    from urllib.parse import urlsplit

    variant, localstack, *_ = stack
    address = urlsplit(localstack.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.request("GET", "/_localstack/health", headers={"Connection": "close"})
    reply = connection.getresponse()
    reply.read()
    assert reply.status == 200 and reply.will_close
    connection.close()


def _raw(session, url: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One SigV4-signed S3 request on its own connection: status, headers (lower-case names) and the body as
    framed. Signed as the bucket's owner, as on AWS, where an unsigned request to a private bucket is refused."""
    import http.client
    from urllib.parse import urlsplit

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=f"{url}{path}")
    S3SigV4Auth(session.get_credentials(), "s3", session.region_name).add_auth(request)
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(method, path, headers=dict(request.headers))
        reply = connection.getresponse()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}, reply.read()
    finally:
        connection.close()


@pytest.mark.e2e
def test_short_and_long_responses_carry_the_same_bytes_and_framing(stack):
    """GetObject and HeadObject answer 200 with the object's Content-Length, and a missing key is 404 NoSuchKey
    for a caller who may list the bucket, as its owner may (https://docs.aws.amazon.com/AmazonS3/latest/API/
    API_GetObject.html); the patch must change none of it, nor the framing."""
    variant, localstack, session, *_ = stack
    s3 = session.client("s3", endpoint_url=localstack.url)
    bucket = f"scones-frames-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    small = b"small object\n" * 40
    large = bytes(range(256)) * ((gateway_buffered_responses.BUFFER_LIMIT // 256) + 17)   # over the limit: streamed
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    s3.put_object(Bucket=bucket, Key="large", Body=large)
    buffered_before = _statuses(localstack.url)["gateway_buffered_responses"]["buffered"]

    for key, content in (("small", small), ("large", large)):
        status, headers, body = _raw(session, localstack.url, "GET", f"/{bucket}/{key}")
        assert (status, body) == (200, content)
        assert int(headers["content-length"]) == len(content) and "transfer-encoding" not in headers
        status, headers, body = _raw(session, localstack.url, "HEAD", f"/{bucket}/{key}")
        assert (status, body, int(headers["content-length"])) == (200, b"", len(content))
    status, headers, body = _raw(session, localstack.url, "GET", f"/{bucket}/missing")
    assert status == 404 and b"<Code>NoSuchKey</Code>" in body and int(headers["content-length"]) == len(body)
    assert s3.get_object(Bucket=bucket, Key="large")["Body"].read() == large

    state = _statuses(localstack.url)["gateway_buffered_responses"]
    if variant == "patched":
        assert state["active"] and state["buffered"] >= buffered_before + 3   # the small GET and HEAD, the 404
    else:
        assert not state["active"] and state["buffered"] == 0 and "disabled by" in state["reason"]


ORDER_MACHINE = {
    "StartAt": "Shape",
    "States": {
        "Shape": {"Type": "Pass", "InputPath": "$.order",
                  "Parameters": {"id.$": "$.id", "first.$": "$.items[0]", "skus.$": "$.items[*].sku",
                                 "count.$": "States.ArrayLength($.items)", "label.$": "States.Format('order {}', $.id)"},
                  "ResultPath": "$.shaped", "Next": "Pick"},
        "Pick": {"Type": "Choice", "Choices": [{"Variable": "$.shaped.count", "NumericGreaterThan": 2, "Next": "Many"}],
                 "Default": "Few"},
        "Many": {"Type": "Pass", "Result": "many", "ResultPath": "$.shaped.kind", "OutputPath": "$.shaped", "End": True},
        "Few": {"Type": "Pass", "Result": "few", "ResultPath": "$.shaped.kind", "OutputPath": "$.shaped", "End": True},
    },
}


@pytest.mark.e2e
def test_jsonpaths_select_the_same_values_on_every_execution(stack):
    """What https://docs.aws.amazon.com/step-functions/latest/dg/concepts-input-output-filtering.html describes:
    InputPath selects the input, `.$` Parameters and intrinsic functions
    (https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html: States.ArrayLength,
    States.Format) build the state's input, ResultPath places the result in the raw input, OutputPath selects the
    output; a Choice compares its Variable; a path that matches nothing is States.Runtime
    (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). The same on every
    execution, with the JSONPath cache on and off."""
    variant, localstack, session, _, _ = stack
    if variant == "patched":   # applied in the background once the executor plugin loads (the fixture's function)
        poll(lambda: _statuses(localstack.url)["sfn_jsonpath_cache"]["active"], timeout=60, interval=0.1,
             what="the JSONPath cache to be applied")
    sfn = session.client("stepfunctions", endpoint_url=localstack.url)
    machine = sfn.create_state_machine(name=f"scones-paths-{uuid.uuid4().hex[:8]}", definition=json.dumps(ORDER_MACHINE),
                                       roleArn=ROLE)["stateMachineArn"]

    def run(order: dict) -> dict:
        arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"order": order}))["executionArn"]
        return poll(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
                    timeout=30, interval=0.05, what=f"execution {arn} to end ({variant})")

    try:
        for _ in range(2):   # the second time from the cache, when it is on
            many = run({"id": 7, "items": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]})
            assert many["status"] == "SUCCEEDED", many
            assert json.loads(many["output"]) == {"id": 7, "first": {"sku": "a"}, "skus": ["a", "b", "c"], "count": 3,
                                                  "label": "order 7", "kind": "many"}
            few = run({"id": 8, "items": [{"sku": "x"}, {"sku": "y"}]})
            assert few["status"] == "SUCCEEDED", few
            assert json.loads(few["output"])["kind"] == "few" and json.loads(few["output"])["skus"] == ["x", "y"]
            missing = run({"id": 9, "items": []})
            assert missing["status"] == "FAILED" and missing["error"] == "States.Runtime", missing
            assert "$.items[0]" in missing["cause"]
    finally:
        sfn.delete_state_machine(stateMachineArn=machine)
    cache = _statuses(localstack.url)["sfn_jsonpath_cache"]
    if variant == "patched":
        assert cache["active"] and cache["hits"] > cache["misses"] > 0, cache
    else:
        assert not cache["active"] and "disabled by" in cache["reason"] and cache["hits"] == 0, cache


def _probe_in_localstack(tmp_path, source: str, switches: dict[str, str]) -> dict:
    """Run `source` on LocalStack's own interpreter (its venv, our patches importable) with `switches` set; the
    JSON document its last line prints."""
    instance = LocalStack(home=tmp_path)
    instance.ensure_venv(progress=False)
    probe = subprocess.run([str(instance.python), "-c", source], capture_output=True, text=True,
                           env={**os.environ, **switches}, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout.splitlines()[-1])


ROUTE_PROBE = """
import json
from localstack.http import Request, Response
from localstack.services.edge import ROUTER
from werkzeug.exceptions import NotFound

from scones.harness.lambda_executor import gateway_route_cache

applied = gateway_route_cache.apply()
answers = []


def ask(path):
    try:
        answers.append(ROUTER.dispatch(Request("GET", path, headers={"Host": "localhost:4566"})).get_data(as_text=True))
    except NotFound:
        answers.append(None)


ask("/probe")
ask("/probe")
ROUTER.add("/probe", lambda request: Response("probe answered"))
ask("/probe")
calls = []


def found_the_second_time(request):
    calls.append(request)
    if len(calls) == 1:
        raise NotFound()
    return Response("found the second time")


ROUTER.add("/later", found_the_second_time)
ask("/later")
ask("/later")
print(json.dumps({"applied": applied, "answers": answers, "status": gateway_route_cache.status()}))
"""


@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_edge_router_answers_as_without_the_route_cache(tmp_path, switch):
    """rolo's Router.dispatch: NotFound when no rule matches, the rule's handler when one does, the rules being
    those added so far (Router.add); a handler's own NotFound is its answer for that request only."""
    found = _probe_in_localstack(tmp_path, ROUTE_PROBE, {settings.GATEWAY_ROUTE_CACHE: switch})
    assert found["answers"] == [None, None, "probe answered", None, "found the second time"]
    assert found["applied"] is (switch == "1")
    if switch == "1":   # the second unmatched /probe came from the cache; the handler's NotFound was not kept
        assert (found["status"]["hits"], found["status"]["misses"]) == (1, 1), found


def _delivered_events(logs, group: str, wanted: int) -> list[dict]:
    def delivered() -> list[dict] | None:
        found = [json.loads(event["message"]) for event in logs.filter_log_events(logGroupName=group)["events"]]
        return found if len(found) >= wanted else None

    return poll(delivered, timeout=30, interval=0.1, what=f"{wanted} events in log group {group}")


@pytest.mark.e2e
def test_services_events_reach_a_rules_target_as_without_the_patches(stack):
    """Step Functions sends "Step Functions Execution Status Change" to the default event bus when an execution
    starts and ends, its resources the execution's ARN and its detail the execution's name, status, input and
    output (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html); S3 sends "Object Created" for a
    write to a bucket with EventBridge notifications on, its detail naming the bucket, key and size
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html, EventBridge.html). Rules deliver them
    to a CloudWatch Logs target, a log group under /aws/events/ whose resource policy lets EventBridge write
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-cloudwatchlogs-permissions).
    The same events with service_events_in_process.py on and off."""
    variant, localstack, session, _, _ = stack
    if variant == "patched":
        poll(lambda: _statuses(localstack.url)["service_events_in_process"]["active"], timeout=60, interval=0.1,
             what="service events in process to be applied")
    handed_over_before = _statuses(localstack.url)["service_events_in_process"]["events"]
    tag = uuid.uuid4().hex[:8]
    sfn, s3, logs, events = (session.client(service, endpoint_url=localstack.url)
                             for service in ("stepfunctions", "s3", "logs", "events"))
    group = f"/aws/events/scones-events-{tag}"
    logs.create_log_group(logGroupName=group)
    group_arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{group}"
    logs.put_resource_policy(policyName=f"scones-events-{tag}", policyDocument=json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]},
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{group_arn}:*"}]}))
    machine = sfn.create_state_machine(name=f"scones-events-{tag}", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": {"done": True}, "End": True}}}))["stateMachineArn"]
    bucket = f"scones-events-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    rules = {f"scones-runs-{tag}": {"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                                    "detail": {"stateMachineArn": [machine]}},
             f"scones-objects-{tag}": {"source": ["aws.s3"], "detail-type": ["Object Created"],
                                       "detail": {"bucket": {"name": [bucket]}}}}
    try:
        for rule, pattern in rules.items():
            events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")
            events.put_targets(Rule=rule, Targets=[{"Id": "log-group", "Arn": group_arn}])
        arn = sfn.start_execution(stateMachineArn=machine, name=f"run-{tag}", input=json.dumps({"photo": tag}))["executionArn"]
        poll(lambda: sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED", timeout=30, interval=0.05,
             what=f"execution {arn} to succeed ({variant})")
        s3.put_object(Bucket=bucket, Key=f"incoming/{tag}.png", Body=b"12345")
        received = _delivered_events(logs, group, 3)
        handed_over = _statuses(localstack.url)["service_events_in_process"]
    finally:
        for rule in rules:
            events.remove_targets(Rule=rule, Ids=["log-group"])
            events.delete_rule(Name=rule)
        sfn.delete_state_machine(stateMachineArn=machine)
        for stored in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=stored["Key"])
        s3.delete_bucket(Bucket=bucket)
        logs.delete_resource_policy(policyName=f"scones-events-{tag}")
        logs.delete_log_group(logGroupName=group)
    runs = sorted((event for event in received if event["source"] == "aws.states"), key=lambda e: e["detail"]["status"])
    assert [event["detail"]["status"] for event in runs] == ["RUNNING", "SUCCEEDED"], received
    for event in runs:
        assert event["detail-type"] == "Step Functions Execution Status Change"
        assert event["resources"] == [arn] and event["account"] == "000000000000" and event["region"] == "us-east-1"
        assert event["detail"]["executionArn"] == arn and event["detail"]["name"] == f"run-{tag}"
        assert json.loads(event["detail"]["input"]) == {"photo": tag}
    assert json.loads(runs[1]["detail"]["output"]) == {"done": True} and runs[0]["detail"]["output"] is None
    [created] = [event for event in received if event["source"] == "aws.s3"]
    assert created["detail-type"] == "Object Created" and created["detail"]["bucket"]["name"] == bucket
    assert created["detail"]["object"]["key"] == f"incoming/{tag}.png" and created["detail"]["object"]["size"] == 5
    if variant == "patched":   # the two status changes and the object: none went through a client
        assert handed_over["active"] and handed_over["events"] - handed_over_before == 3, handed_over
    else:
        assert not handed_over["active"] and handed_over["events"] == 0, handed_over


ASSIGNMENT_PROBE = """
import json
import threading
import time
from types import SimpleNamespace

from localstack.services.lambda_.invocation.assignment import AssignmentException, AssignmentService
from localstack.services.lambda_.invocation.execution_environment import InvalidStatusException
from localstack.services.lambda_.invocation.lambda_models import InitializationType

from scones.harness.lambda_executor import lambda_environment_queue

lambda_environment_queue.PER_FUNCTION = 2
lambda_environment_queue.WAIT_S = 1.0
applied = lambda_environment_queue.apply()


class Environment:
    # an execution environment's status as 4.14.0's: READY -> reserve() -> INVOKING -> release() -> READY
    def __init__(self, number):
        self.id, self.status, self.lock = f"environment-{number}", "READY", threading.Lock()
        self.initialization_type = InitializationType.on_demand

    def reserve(self):
        with self.lock:
            if self.status != "READY":
                raise InvalidStatusException(f"{self.id} is {self.status}")
            self.status = "INVOKING"

    def release(self):
        with self.lock:
            self.status = "READY"


service = AssignmentService()
started = []


def start_environment(version_manager_id, function_version):
    started.append((version_manager_id, Environment(len(started) + 1)))
    return started[-1][1]


service.start_environment = start_environment
functions = {name: SimpleNamespace(qualified_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}:$LATEST")
             for name in ("classify", "serialize")}
got, errors = {}, {}


def invoke(label, function, hold=None):
    try:
        with service.get_environment(function, functions[function], InitializationType.on_demand) as environment:
            got[label] = environment.id
            if hold is not None:
                hold.wait(10)
    except AssignmentException as error:
        errors[label] = str(error)


def in_thread(*args):
    thread = threading.Thread(target=invoke, args=args)
    thread.start()
    return thread


def until(condition):
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


first_done, second_done, late_done = threading.Event(), threading.Event(), threading.Event()
busy = [in_thread("first", "classify", first_done), in_thread("second", "classify", second_done)]
until(lambda: len(got) == 2)
third = in_thread("third", "classify")            # both of the function's environments are busy
other = in_thread("other function", "serialize")  # the cap is per function
other.join(10)
first_done.set()
third.join(10)
late = in_thread("late", "classify", late_done)   # the idle one again; then none is left for the next
until(lambda: "late" in got)
in_thread("timed out", "classify").join(10)
second_done.set()
late_done.set()
print(json.dumps({"applied": applied, "got": got, "errors": errors,
                  "started": [[function, environment.id] for function, environment in started],
                  "status": lambda_environment_queue.status()}))
"""


@pytest.mark.parametrize("switch", ["1", "0"])
def test_at_a_functions_cap_an_invoke_gets_the_environment_that_comes_free(tmp_path, switch):
    """With the patch, an invoke that finds all of its function's environments busy at the cap (here 2) waits and
    gets the first one that comes free, instead of a new environment in place of an idle one (each cost a cold
    start, environment_slots.py); another function's invoke gets a new environment at once, as 4.14.0's
    AssignmentService.get_environment gives one; a wait past its limit fails the invoke with AssignmentException
    naming the function. Switched off, 4.14.0's own assignment starts a third environment.
    On AWS a function scales out to the account's concurrency (1,000 by default:
    https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html); the per-function cap is this machine's
    stand-in for that limit (environment_slots.py), so what is asserted here is the wait at the cap, not a limit
    AWS has."""
    found = _probe_in_localstack(tmp_path, ASSIGNMENT_PROBE, {settings.LAMBDA_ENVIRONMENT_QUEUE: switch})
    got, started = found["got"], found["started"]
    assert got["first"] != got["second"] and got["other function"] not in (got["first"], got["second"]), got
    if switch == "1":
        assert found["applied"] is True
        assert got["third"] == got["first"] == got["late"], got   # the one that came free, then idle again
        assert [function for function, _ in started] == ["classify", "classify", "serialize"], started
        assert "timed out" not in got and "stayed busy" in found["errors"]["timed out"], found
        assert "function:classify" in found["errors"]["timed out"]
        assert (found["status"]["started"], found["status"]["waited"], found["status"]["timed_out"]) == (3, 1, 1), found
    else:
        assert found["applied"] is False
        assert got["third"] not in (got["first"], got["second"]), got
        assert [function for function, _ in started].count("classify") >= 3, started


INTERNAL_CLIENT_PROBE = """
import io, json
from botocore import awsrequest
from localstack import config
config.IN_MEMORY_CLIENT = False   # no gateway runs here: each request is answered at before-send below
from localstack.aws.connect import connect_to
from localstack.utils.aws.request_context import extract_access_key_id_from_auth_header, extract_region_from_auth_header

from scones.harness.lambda_executor import internal_client_requests

applied = internal_client_requests.apply()
sent = []


class Body(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


def answer(request, event_name, **kwargs):
    headers = {key: value.decode() if isinstance(value, bytes) else value for key, value in request.headers.items()}
    headers["read as"] = [extract_access_key_id_from_auth_header(headers), extract_region_from_auth_header(headers)]
    sent.append(headers)
    body = b"<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>" if ".s3." in event_name else b"{}"
    return awsrequest.AWSResponse(request.url, 200, {}, Body(body))


def headers_of(client, call):
    client.meta.events.register_first("before-send.*.*", answer)
    call(client)
    return sent[-1]


def invoke(client):
    client.invoke(FunctionName="classify", Payload=b"{}")


role = connect_to(aws_access_key_id="ASIAPROBEROLE", aws_secret_access_key="secret", aws_session_token="session-token",
                  region_name="eu-west-1")
elsewhere = connect_to(aws_access_key_id="ASIAPROBEROLE", aws_secret_access_key="secret",
                       aws_session_token="session-token", region_name="eu-west-1",
                       endpoint_url="https://lambda.eu-west-1.amazonaws.com")
found = {"lambda": headers_of(role.lambda_, invoke), "lambda again": headers_of(role.lambda_, invoke),
         "s3": headers_of(role.s3, lambda client: client.list_buckets()), "elsewhere": headers_of(elsewhere.lambda_, invoke)}
print(json.dumps({"applied": applied, "status": internal_client_requests.status(), "found": found}))
"""


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_call_between_localstacks_services_names_its_caller_as_a_signed_one_does(tmp_path, switch):
    """A SigV4 request's Authorization header is `AWS4-HMAC-SHA256 Credential=<access key>/<yyyymmdd>/<region>/
    <service>/aws4_request, SignedHeaders=..., Signature=...`, with X-Amz-Date and, for temporary credentials,
    X-Amz-Security-Token (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html). LocalStack reads
    the caller's access key and region from that scope (and our IAM checks the role session the key belongs to), so
    with the patch a Lambda call of LocalStack's own clients reads as the same caller and region, with the same date
    and token headers, and only its signature is not computed; S3's clients and a client of another endpoint still
    sign. Switched off, every request is signed by botocore."""
    found = _probe_in_localstack(tmp_path, INTERNAL_CLIENT_PROBE, {settings.INTERNAL_CLIENT_REQUESTS: switch})
    requests = found["found"]
    for name, headers in requests.items():
        assert headers["read as"] == ["ASIAPROBEROLE", "eu-west-1"], name
        assert headers["X-Amz-Security-Token"] == "session-token", name
        assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAPROBEROLE/"
                                                   f"{headers['X-Amz-Date'][:8]}/eu-west-1/"), name
        signed = headers["Authorization"].rpartition("Signature=")[2] != internal_client_requests.UNCOMPUTED_SIGNATURE
        assert signed is (switch == "0" or name in ("s3", "elsewhere")), (name, headers["Authorization"])
    assert "/lambda/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token" in requests["lambda"]["Authorization"]
    assert requests["lambda"]["User-Agent"] == requests["lambda again"]["User-Agent"]
    assert requests["lambda"]["User-Agent"].startswith("Boto3/")
    assert found["applied"] is (switch == "1")
    assert found["status"]["clients"] == (1 if switch == "1" else 0), found["status"]
