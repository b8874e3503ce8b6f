"""Target records, the local session's endpoint routing, `scones run/status/down` without LocalStack."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_executions import three_state_machine

from scones.deploy.record import local_record_path, write_record
from scones.harness import stack
from scones.harness.commands.local import down, run, status
from scones.harness.targets import TargetNotFound, load_target
from support import poll

LOCALSTACK = "http://127.0.0.1:4999"
ENDPOINT = "http://127.0.0.1:8999"


def outputs(**overrides):
    base = {
        "region": "us-east-1",
        "bucket": "scones-local",
        "state_machine_arn": "arn:aws:states:us-east-1:000000000000:stateMachine:scones-workflow",
        "function_arns": {"classifyImage": "arn:aws:lambda:us-east-1:000000000000:function:scones-classifyImage"},
        "endpoint_name": "scones-classifier",
        "capture_s3_uri": "s3://scones-local/data_capture",
        "endpoint_urls": {"default": LOCALSTACK, "sagemaker-runtime": ENDPOINT},
    }
    base.update(overrides)
    return base


def test_local_target_routes_sagemaker_runtime_to_the_endpoint_server(tmp_path):
    write_record(local_record_path(tmp_path), {"outputs": outputs()})

    target = load_target("local", tmp_path)

    assert target.bucket == "scones-local" and target.endpoint_name == "scones-classifier"
    assert target.client("s3").meta.endpoint_url == LOCALSTACK
    assert target.client("stepfunctions").meta.endpoint_url == LOCALSTACK
    assert target.client("sagemaker-runtime").meta.endpoint_url == ENDPOINT
    assert target.session.get_credentials().access_key == "test"


def test_aws_target_reads_the_deploy_record(tmp_path):
    aws_outputs = outputs(region="eu-west-1", bucket="scones-123", endpoint_urls=None)
    aws_outputs.pop("endpoint_urls")
    write_record(tmp_path / "aws" / "deploy-record.json", {"outputs": aws_outputs})

    target = load_target("aws", tmp_path)

    assert target.region == "eu-west-1" and target.bucket == "scones-123"
    assert "amazonaws.com" in target.client("stepfunctions").meta.endpoint_url


def test_missing_record_says_what_to_run(tmp_path):
    with pytest.raises(TargetNotFound, match="scones up"):
        load_target("local", tmp_path)
    with pytest.raises(TargetNotFound, match="scones deploy --target aws"):
        load_target("aws", tmp_path)


def test_incomplete_record_names_the_missing_outputs(tmp_path):
    incomplete = outputs()
    del incomplete["state_machine_arn"], incomplete["bucket"]
    write_record(local_record_path(tmp_path), {"outputs": incomplete})
    with pytest.raises(TargetNotFound, match="bucket, state_machine_arn"):
        load_target("local", tmp_path)


def test_record_is_replaced_whole(tmp_path):
    path = local_record_path(tmp_path)
    write_record(path, {"outputs": outputs()})
    write_record(path, {"outputs": outputs(bucket="other")})
    assert json.loads(path.read_text())["outputs"]["bucket"] == "other"
    assert [p.name for p in path.parent.iterdir()] == ["stack.json"]


def test_scones_run_prints_a_table_and_fails_on_a_failed_execution(tmp_path, moto_server):
    from scones.deploy.local import local_session

    session = local_session(moto_server)
    sfn = session.client("stepfunctions")
    passing = sfn.create_state_machine(name="pass", roleArn="arn:aws:iam::000000000000:role/r",
                                       definition=json.dumps(three_state_machine(0.99)))["stateMachineArn"]
    write_record(local_record_path(tmp_path), {"outputs": outputs(
        state_machine_arn=passing, endpoint_urls={"default": moto_server})})

    result = CliRunner().invoke(run, ["test/bicycle/a.png", "test/bicycle/b.png", "--state-dir", str(tmp_path),
                                      "-c", "2"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["key", "status", "class", "confidence", "error"]
    assert "test/bicycle/a.png" in lines[1] and "SUCCEEDED" in lines[1] and "0.9900" in lines[1]
    assert "2/2 succeeded" in result.output

    failing = sfn.create_state_machine(name="fail", roleArn="arn:aws:iam::000000000000:role/r",
                                       definition=json.dumps(three_state_machine(0.5)))["stateMachineArn"]
    write_record(local_record_path(tmp_path), {"outputs": outputs(
        state_machine_arn=failing, endpoint_urls={"default": moto_server})})

    result = CliRunner().invoke(run, ["x.png", "--state-dir", str(tmp_path), "--json"])

    assert result.exit_code == 1
    document = json.loads(result.stdout.splitlines()[0])
    assert document["status"] == "FAILED" and document["error"] == "ThresholdConfidenceNotMet"


def test_status_without_a_stack(tmp_path):
    result = CliRunner().invoke(status, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 3 and "down" in result.output


def test_down_stops_the_recorded_process_tree_and_frees_its_port(tmp_path):
    """A stand-in endpoint: an HTTP server with a child process, as the Lambda environments are LocalStack's."""
    from scones.harness.endpoint import free_port

    port = free_port()
    script = ("import subprocess, sys, http.server;"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
              f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.BaseHTTPRequestHandler).serve_forever()")
    server = subprocess.Popen([sys.executable, "-c", script])
    assert stack.wait_until(lambda: stack.port_open(port), 20)
    assert stack.wait_until(lambda: len(stack.process_tree([server.pid])) == 2, 20)
    tree = stack.process_tree([server.pid])
    write_record(local_record_path(tmp_path), {"outputs": outputs(), "endpoint": {"pid": server.pid, "port": port}})

    assert stack.status(tmp_path)["parts"]["endpoint"]["alive"]
    result = CliRunner().invoke(down, ["--state-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    server.wait(5)
    assert not any(stack.pid_alive(pid) for pid in tree)
    assert not stack.port_open(port)
    assert not local_record_path(tmp_path).exists()


@pytest.mark.parametrize("flags, parts", [([], ("test",)), (["--upload-train"], ("train", "test"))])
def test_up_uploads_test_images_only_unless_asked_for_train(tmp_path, monkeypatch, flags, parts):
    """`up`'s deploy phase hands the local target's plan the dataset parts to upload (deploy/local.py LocalConfig)."""
    from scones.harness.commands.local import up

    configs = []

    def fake_deploy(config, **kwargs):
        configs.append(config)
        raise stack.StackError("stopped at the deploy")

    monkeypatch.setattr(stack.local_target, "deploy_local_stack", fake_deploy)
    monkeypatch.setattr(stack.local_target, "sagemaker_mode", lambda session, wanted=None, default="route": default)

    def fake_up(config, progress):
        stack.deploy_stack(config, tmp_path, progress)

    monkeypatch.setattr(stack, "up", fake_up)
    result = CliRunner().invoke(up, ["--state-dir", str(tmp_path), "--model", str(tmp_path), *flags])
    assert "stopped at the deploy" in result.output
    assert [config.dataset_parts for config in configs] == [parts]


@pytest.fixture
def answering_server():
    """An HTTP server on 127.0.0.1 that answers 200 to every GET, standing in for a container's port."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def compose_record(localstack_port: int, endpoint_port: int) -> dict:
    """What harness/compose/deploy.py writes: ports and URLs, no pids."""
    return {"managed_by": "docker compose", "outputs": outputs(),
            "localstack": {"pid": None, "port": localstack_port, "url": f"http://127.0.0.1:{localstack_port}"},
            "endpoint": {"pid": None, "port": endpoint_port, "url": f"http://127.0.0.1:{endpoint_port}"}}


def test_status_of_a_compose_stack_reports_what_answers(tmp_path, answering_server):
    from scones.harness.endpoint import free_port

    write_record(local_record_path(tmp_path), compose_record(answering_server, answering_server))
    result = CliRunner().invoke(status, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "managed by docker compose" in result.output and "harness/compose/stack.sh down" in result.output
    assert result.output.count(" answers, listening") == 2
    assert stack.status(tmp_path)["up"]   # so the pytest plugin attaches to it

    silent = free_port()
    write_record(local_record_path(tmp_path), compose_record(silent, answering_server))
    result = CliRunner().invoke(status, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "DEGRADED, managed by docker compose" in result.output
    assert re.search(rf"localstack .* does not answer: http://127.0.0.1:{silent}/_localstack/health failed: "
                     r".*refused.*, not listening", result.output), result.output


def test_down_refuses_a_compose_stack_and_names_the_command(tmp_path, answering_server):
    write_record(local_record_path(tmp_path), compose_record(answering_server, answering_server))
    result = CliRunner().invoke(down, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "managed by docker compose" in result.output and "harness/compose/stack.sh down" in result.output
    assert local_record_path(tmp_path).exists() and stack.port_open(answering_server)


def test_compose_deploy_writes_the_manager_the_stack_recognises():
    from scones.deploy.record import MANAGED_BY_COMPOSE as MANAGED_BY

    assert stack.managed_by_compose({"managed_by": MANAGED_BY})


def test_run_accepts_keys_bucket_keys_and_s3_uris():
    import click

    from scones.harness.commands.local import workflow_input

    assert workflow_input("test/a.png", None) == "test/a.png"
    assert workflow_input("test/a.png", "other") == {"s3_bucket": "other", "s3_key": "test/a.png"}
    assert workflow_input("s3://b/test/a.png", None) == {"s3_bucket": "b", "s3_key": "test/a.png"}
    with pytest.raises(click.BadParameter, match="not an s3://bucket/key URI"):
        workflow_input("s3://only-bucket", None)


def test_status_reports_an_endpoint_stopped_with_sigstop_as_unhealthy(tmp_path, answering_server):
    """Issue 12: `status` said "up" while the endpoint was stopped with SIGSTOP, because the process lived and
    its port accepted connections (the kernel queues them). The real endpoint server, frozen, must be named."""
    import signal

    from scones.harness.endpoint import EndpointServer, free_port
    from scones.testing import build_stub_model

    endpoint = EndpointServer(build_stub_model(tmp_path / "model"), port=free_port(), mode="subprocess",
                              log_path=tmp_path / "endpoint.log").start()
    try:
        write_record(local_record_path(tmp_path), {
            "outputs": outputs(),
            # LocalStack's stand-in: this process, and a server that answers every GET with 200.
            "localstack": {"pid": os.getpid(), "port": answering_server, "url": f"http://127.0.0.1:{answering_server}"},
            "endpoint": {"pid": endpoint.pid, "port": endpoint.port, "url": endpoint.url},
        })
        assert stack.status(tmp_path)["up"]

        os.kill(endpoint.pid, signal.SIGSTOP)
        try:
            report = stack.status(tmp_path)
            result = CliRunner().invoke(status, ["--state-dir", str(tmp_path)])
        finally:
            os.kill(endpoint.pid, signal.SIGCONT)
        frozen = report["parts"]["endpoint"]
        assert not report["up"]
        assert frozen["alive"] and frozen["listening"] and not frozen["healthy"]
        assert f"{endpoint.url}/ping did not answer within {stack.HEALTH_TIMEOUT_S:g} s" in frozen["problem"]
        assert report["parts"]["localstack"]["healthy"]
        assert result.exit_code == 1, result.output
        assert re.search(r"endpoint .* running, listening, UNHEALTHY: .*/ping did not answer", result.output)
        assert "unhealthy: endpoint;" in result.output

        assert stack.wait_until(lambda: stack.status(tmp_path)["up"], 10)   # answers again once continued
    finally:
        endpoint.stop()


def test_the_endpoint_server_gets_only_local_credentials(tmp_path, monkeypatch):
    """Issue 12: the endpoint server inherited the caller's AWS_SESSION_TOKEN beside its local test
    credentials. Read the environment the real subprocess got, from /proc."""
    from pathlib import Path

    from scones.harness.endpoint import free_port
    from scones.testing import build_stub_model

    caller = {"AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN", "AWS_PROFILE": "production",
              "AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP", "AWS_SECRET_ACCESS_KEY": "real-looking-secret",
              "AWS_ENDPOINT_URL": "https://example.com", "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/admin"}
    for name, value in caller.items():
        monkeypatch.setenv(name, value)
    model_dir = build_stub_model(tmp_path / "model").parent
    config = stack.StackConfig(state_dir=tmp_path / "state", data_dir=tmp_path, localstack_port=free_port(),
                               endpoint_port=free_port())
    server = stack.endpoint_part(config, Path(model_dir)).server().start(wait=False)
    try:
        # /proc/<pid>/environ is the parent's copy until the child has exec'd the server.
        poll(lambda: b"scones.harness.commands.endpoint" in Path(f"/proc/{server.pid}/cmdline").read_bytes(), timeout=30,
             interval=0.01, what="the endpoint server's exec")
        raw = Path(f"/proc/{server.pid}/environ").read_bytes()
    finally:
        server.stop(10)
    environment = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    aws = {name: value for name, value in environment.items() if name.startswith("AWS_")}
    assert aws == {"AWS_ENDPOINT_URL_S3": config.localstack_url, "AWS_ACCESS_KEY_ID": "test",
                   "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def test_a_signal_while_a_process_starts_is_held_until_its_handle_is_kept():
    """`up` must know what it started before a SIGTERM can unwind it; else the new process is orphaned."""
    import signal

    kept = []
    with stack._StopSignals() as signals:
        with pytest.raises(stack.StopSignal) as stopped:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)   # arrives while the process is being started
                kept.append("handle")
        assert kept == ["handle"] and stopped.value.signum == signal.SIGTERM and not stopped.value.stack_left_up
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the caller's handler is back


def test_a_signal_after_the_stack_is_complete_leaves_it_up_and_says_so(tmp_path, monkeypatch):
    import signal

    def complete_then_signalled(config, progress, signals):
        signals.armed = False
        os.kill(os.getpid(), signal.SIGHUP)
        return {"written": "record"}

    monkeypatch.setattr(stack, "_up", complete_then_signalled)
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)   # a run under nohup inherits SIG_IGN
    try:
        with pytest.raises(stack.StopSignal) as stopped:
            stack.up(stack.StackConfig(state_dir=tmp_path, data_dir=tmp_path))
    finally:
        signal.signal(signal.SIGHUP, inherited)
    assert stopped.value.signum == signal.SIGHUP and stopped.value.stack_left_up


def test_a_sighup_ignored_by_the_caller_stays_ignored(tmp_path):
    """`nohup scones up` asks to survive a hang-up: `up` must not turn SIGHUP into a stop."""
    import signal

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stack._StopSignals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
