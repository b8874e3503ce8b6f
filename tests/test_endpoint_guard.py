"""deploy/endpoint_guard.py: an AWS target refuses every spelling of an endpoint that would not reach AWS.

What a spelling reaches is what the socket layer makes of it: glibc's inet_aton reads `127.1`,
`2130706433`, `0x7f000001` and `0177.0.0.1` as 127.0.0.1 and `0` as 0.0.0.0 (inet(3)); the
private, loopback and link-local ranges are RFC 1918, RFC 4193, RFC 1122 and RFC 3927/4291's.
AWS's own DNS suffixes come from botocore's partitions.json.
"""
from __future__ import annotations

import boto3
import pytest

from scones.deploy.endpoint_guard import LocalEndpointRefused, is_local_endpoint, refuse_local_endpoints

LOCAL = [
    "http://localhost:4566", "http://LOCALHOST:4566", "http://[::1]:4566", "http://127.0.0.1.:4566",
    "http://127.1:4566", "http://2130706433:4566", "http://0x7f000001:4566", "http://0177.0.0.1:4566",
    "http://0:4566", "http://0.0.0.0:4566", "http://[::]:4566", "http://[::ffff:127.0.0.1]:4566",
    "http://[::ffff:7f00:1]:4566", "http://127.255.255.254:4566", "http://10.0.0.7:4566", "http://10.1:4566",
    "http://0xa000001:4566", "http://172.16.5.4:4566", "http://192.168.1.20:4566", "http://169.254.169.254",
    "http://[fe80::1%25eth0]:4566", "http://[fd00::5]:4566", "http://[::ffff:192.168.0.1]:4566",
    "https://localhost.localstack.cloud:4566", "http://s3.localhost:4566", "http://localstack:4566",
    "http://host.docker.internal:4566",
]
AWS = [
    "https://sts.eu-west-1.amazonaws.com", "https://s3.cn-north-1.amazonaws.com.cn",
    "https://sagemaker.us-east-1.api.aws", "https://vpce-0a1b-xyz.sts.eu-west-1.vpce.amazonaws.com",
]


@pytest.mark.parametrize("url", LOCAL)
def test_every_spelling_of_a_local_address_is_refused(url):
    assert is_local_endpoint(url, resolver=lambda host: []) is True


@pytest.mark.parametrize("url", AWS)
def test_aws_endpoints_pass(url):
    assert is_local_endpoint(url, resolver=lambda host: ["52.94.133.131"]) is False


def test_a_name_that_resolves_to_loopback_is_refused():
    hosts = {"dev-box.example": ["127.0.1.1"], "aws-proxy.corp.example": ["10.20.30.40"],
             "v6.example": ["::1"], "far.example": ["93.184.215.14"]}
    resolver = hosts.__getitem__
    assert is_local_endpoint("http://dev-box.example:4566", resolver)
    assert is_local_endpoint("http://aws-proxy.corp.example", resolver)
    assert is_local_endpoint("http://v6.example", resolver)
    assert not is_local_endpoint("https://far.example", resolver)


def test_the_real_resolver_sees_this_machines_own_name():
    """localhost-style names in /etc/hosts resolve through getaddrinfo as the HTTP client would."""
    import socket

    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    from scones.deploy.endpoint_guard import literal_address, not_public
    expected = any(not_public(literal_address(found)) for found in addresses)   # type: ignore[arg-type]
    assert is_local_endpoint(f"http://{name}:4566") is expected


def test_aws_names_may_resolve_to_a_vpc_endpoint_but_not_to_this_machine():
    """A VPC interface endpoint with private DNS makes sts.<region>.amazonaws.com resolve to a private address
    (AWS PrivateLink docs, "Private DNS"); /etc/hosts pointing it at 127.0.0.1 is LocalStack in disguise."""
    assert not is_local_endpoint("https://sts.eu-west-1.amazonaws.com", lambda host: ["10.0.12.34"])
    assert is_local_endpoint("https://sts.eu-west-1.amazonaws.com", lambda host: ["127.0.0.1"])


@pytest.mark.parametrize("url", ["http://127.1:4566", "http://2130706433:4566", "http://localhost:4566"])
def test_a_session_with_a_local_endpoint_is_refused(url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    session = boto3.Session(aws_access_key_id="AKIAIOSFODNN7EXAMPL3", aws_secret_access_key="x", region_name="us-east-1")
    with pytest.raises(LocalEndpointRefused, match="stepfunctions -> " + url.replace(".", r"\.")):
        refuse_local_endpoints(session, "us-east-1", what="run --target aws")
