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


def _aws_record(state_dir, **extra):
    from scones.deploy.record import write_record

    write_record(state_dir / "aws" / "deploy-record.json", {**extra, "outputs": {
        "region": "eu-west-1", "bucket": "scones-123", "endpoint_name": "scones-classifier",
        "state_machine_arn": "arn:aws:states:eu-west-1:123456789012:stateMachine:scones-workflow",
        "function_arns": {}, "capture_s3_uri": "s3://scones-123/data_capture"}})


@pytest.fixture
def clean_aws_environment(monkeypatch, tmp_path):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STEPFUNCTIONS", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.mark.parametrize("url", ["http://127.1:4566", "http://0x7f000001:4566", "http://[::1]:4566"])
def test_run_against_an_aws_target_that_would_reach_this_machine_is_refused(url, tmp_path, monkeypatch,
                                                                           clean_aws_environment):
    from click.testing import CliRunner

    from scones.harness.commands.local import run
    from scones.harness.targets import TargetRefused, load_target

    _aws_record(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    with pytest.raises(TargetRefused, match="would go to a local endpoint"):
        load_target("aws", tmp_path)

    outcome = CliRunner().invoke(run, ["--target", "aws", "--state-dir", str(tmp_path), "test/a.png"])
    assert outcome.exit_code == 1 and "would go to a local endpoint" in outcome.output
    assert "Traceback" not in outcome.output


def test_a_profile_that_points_at_localhost_is_refused(tmp_path, monkeypatch, clean_aws_environment):
    """The AWS config file's endpoint_url setting (AWS SDKs and Tools reference guide, "Service-specific
    endpoints"), here for the profile the deploy record names."""
    from scones.harness.targets import TargetRefused, load_target

    config = tmp_path / "aws-config"
    config.write_text("[profile local]\nendpoint_url = http://localhost:4566\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    _aws_record(tmp_path, profile="local")
    with pytest.raises(TargetRefused, match="profile 'local'"):
        load_target("aws", tmp_path)


def test_an_aws_target_with_aws_endpoints_loads(tmp_path, clean_aws_environment):
    from scones.harness.targets import load_target

    _aws_record(tmp_path)
    assert "amazonaws.com" in load_target("aws", tmp_path).client("stepfunctions").meta.endpoint_url


def test_an_emulator_may_stand_in_for_aws_when_asked_by_name(tmp_path, monkeypatch, clean_aws_environment):
    from scones.harness.targets import load_target

    _aws_record(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("SCONES_ALLOW_LOCAL_AWS_ENDPOINTS", "1")
    assert load_target("aws", tmp_path).client("s3").meta.endpoint_url == "http://127.0.0.1:5000"
