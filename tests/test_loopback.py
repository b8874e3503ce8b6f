"""scones.loopback: our own servers are reached directly whatever HTTP_PROXY / HTTPS_PROXY / NO_PROXY say.

How the clients decide (read in their sources): urllib's ProxyHandler() reads getproxies() and skips hosts
listed in no_proxy (proxy_bypass_environment); botocore's EndpointCreator reads get_environ_proxies() only when
the client's Config gives no `proxies`, and that too honours NO_PROXY.
"""
from __future__ import annotations

import http.server
import threading

import boto3
import pytest

from scones import loopback
from scones.harness.endpoint import free_port


@pytest.fixture
def dead_proxy(monkeypatch):
    """Every proxy variable pointing at a port nothing listens on."""
    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return proxy


@pytest.fixture
def server():
    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "Healthy"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_loopback_client_ignores_a_dead_proxy(dead_proxy, server):
    import urllib.request

    # What a plain opener does: it asks the dead proxy. (A fresh one: urlopen's global opener keeps the
    # proxies of the environment it first saw, whatever this test sets.)
    with pytest.raises(OSError):
        urllib.request.build_opener().open(f"{server}/ping", timeout=2)
    assert loopback.get_json(f"{server}/ping") == {"status": "Healthy"}


def test_a_local_boto3_client_has_no_proxy(dead_proxy):
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    plain = session.client("s3", endpoint_url="http://127.0.0.1:4566")
    local = session.client("s3", endpoint_url="http://127.0.0.1:4566", config=loopback.CLIENT_CONFIG)
    assert plain._endpoint.http_session._proxy_config.proxy_url_for("http://127.0.0.1:4566/") == dead_proxy
    assert local._endpoint.http_session._proxy_config.proxy_url_for("http://127.0.0.1:4566/") is None


def test_the_local_targets_clients_have_no_proxy(dead_proxy, tmp_path):
    from scones.deploy.record import write_record
    from scones.harness.targets import load_target

    write_record(tmp_path / "local" / "stack.json", {"outputs": {
        "region": "us-east-1", "bucket": "b", "state_machine_arn": "arn:aws:states:us-east-1:000000000000:stateMachine:m",
        "function_arns": {}, "endpoint_name": "e", "capture_s3_uri": "s3://b/data_capture",
        "endpoint_urls": {"default": "http://127.0.0.1:4566", "sagemaker-runtime": "http://127.0.0.1:8080"}}})
    target = load_target("local", tmp_path)
    for service in ("s3", "stepfunctions", "sagemaker-runtime"):
        assert target.client(service)._endpoint.http_session._proxy_config.proxy_url_for(
            target.client(service).meta.endpoint_url) is None
        assert target.session.client(service)._endpoint.http_session._proxy_config.proxy_url_for(
            target.client(service).meta.endpoint_url) is None


def test_exempting_loopback_keeps_what_no_proxy_said_and_adds_this_machine():
    environ = {"NO_PROXY": "corp.example, .internal", "HTTP_PROXY": "http://proxy:3128"}
    loopback.exempt_loopback(environ)
    assert environ["NO_PROXY"] == environ["no_proxy"] == "corp.example,.internal,127.0.0.1,localhost,::1"
    assert environ["HTTP_PROXY"] == "http://proxy:3128"


def test_an_exempted_environment_sends_plain_clients_direct(dead_proxy, server, monkeypatch):
    import urllib.request

    exempted = loopback.environment()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, exempted[name])
    with urllib.request.urlopen(f"{server}/ping", timeout=2) as reply:
        assert reply.status == 200
