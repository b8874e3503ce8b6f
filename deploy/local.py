"""What is special about the local target: where its endpoints are, its fake account and roles.

Everything else (functions, state machine, data upload) goes through the code path the AWS
target uses too; this module only says where "AWS" is when it is LocalStack plus our
SageMaker-compatible endpoint server on this machine.
"""
from __future__ import annotations

import os
from typing import Mapping

import boto3
from botocore.exceptions import ClientError

ACCOUNT_ID = "000000000000"          # LocalStack's default account
REGION = "us-east-1"
ACCESS_KEY_ID = "test"               # LocalStack accepts any credentials; "test" maps to ACCOUNT_ID
SECRET_ACCESS_KEY = "test"
HOST = "127.0.0.1"

DEFAULT_BUCKET = "scones-local"
DEFAULT_PREFIX = "scones"
DEFAULT_ENDPOINT_NAME = "scones-classifier"
DEFAULT_THRESHOLD = 0.93
DEFAULT_LOCALSTACK_PORT = 4566
DEFAULT_ENDPOINT_PORT = 8080
CAPTURE_PREFIX = "data_capture"

# LocalStack does not enforce IAM, but Lambda and Step Functions still want a well-formed role.
LAMBDA_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/scones-lambda-role"
STATES_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/scones-states-role"
EVENTS_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/scones-events-role"   # EventBridge's role to start the workflow


def localstack_url(port: int = DEFAULT_LOCALSTACK_PORT) -> str:
    return f"http://{HOST}:{port}"


def endpoint_url(port: int = DEFAULT_ENDPOINT_PORT) -> str:
    return f"http://{HOST}:{port}"


def capture_s3_uri(bucket: str = DEFAULT_BUCKET) -> str:
    return f"s3://{bucket}/{CAPTURE_PREFIX}"


class EndpointRegistrationError(RuntimeError):
    """LocalStack did not take an endpoint's registration; the message says why and what to do."""


def register_endpoint(localstack: str, endpoint_name: str, endpoint_server_url: str, timeout: float = 10.0) -> None:
    """Tell LocalStack which endpoint server serves `endpoint_name`.

    LocalStack then answers sagemaker-runtime InvokeEndpoint for that name by forwarding it there
    (harness/lambda_executor/sagemaker_runtime.py), so a Lambda's default client, which goes to the
    AWS_ENDPOINT_URL every function gets, reaches the endpoint as it does on AWS: the functions
    need no endpoint setting of their own. LocalStack keeps this until it stops, like its other
    resources; an endpoint server restarted on the same URL needs no new registration.
    """
    import json
    import urllib.error
    import urllib.request

    from scones.harness.lambda_executor.names import SAGEMAKER_ENDPOINTS_PATH

    url = f"{localstack}{SAGEMAKER_ENDPOINTS_PATH}/{endpoint_name}"
    request = urllib.request.Request(url, data=json.dumps({"url": endpoint_server_url}).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(request, timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        hint = (" (this LocalStack predates that route: restart it, e.g. `scones down` then `scones up`)"
                if error.code == 404 else "")
        raise EndpointRegistrationError(f"LocalStack at {localstack} refused to register endpoint {endpoint_name} -> "
                           f"{endpoint_server_url}: HTTP {error.code} {detail}{hint}") from error
    except OSError as error:
        raise EndpointRegistrationError(f"could not register endpoint {endpoint_name} with LocalStack at {localstack}: {error}") from error


def endpoint_server_environment(localstack: str, inherited: Mapping[str, str] = os.environ) -> dict[str, str | None]:
    """Environment for the endpoint server, so its capture writer puts records in LocalStack's S3.

    Only local credentials: every other AWS_* setting of the caller (a session token, a profile, endpoints)
    is unset (None), and no AWS config or credentials file is read, so nothing real can leak into a
    process that talks to local services.
    """
    local = {
        "AWS_ENDPOINT_URL_S3": localstack,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return {**{name: None for name in inherited if name.startswith("AWS_")}, **local}


class EndpointSession(boto3.Session):
    """A boto3 Session whose clients go to fixed endpoint URLs: one per service, else a default.

    `session.client("s3")` then reaches LocalStack and `session.client("sagemaker-runtime")`
    the endpoint server, without touching the process environment.
    """

    def __init__(self, *, default_endpoint_url: str | None = None,
                 service_endpoint_urls: dict[str, str] | None = None, **session_kwargs):
        super().__init__(**session_kwargs)
        self.default_endpoint_url = default_endpoint_url
        self.service_endpoint_urls = dict(service_endpoint_urls or {})

    def endpoint_url_for(self, service_name: str) -> str | None:
        return self.service_endpoint_urls.get(service_name, self.default_endpoint_url)

    def client(self, service_name, *args, **kwargs):
        if not args and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url_for(service_name)
        return super().client(service_name, *args, **kwargs)

    def resource(self, service_name, *args, **kwargs):
        if not args and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url_for(service_name)
        return super().resource(service_name, *args, **kwargs)


def local_session(localstack: str, sagemaker_runtime: str | None = None,
                  region: str = REGION) -> EndpointSession:
    services = {"sagemaker-runtime": sagemaker_runtime} if sagemaker_runtime else {}
    return EndpointSession(
        default_endpoint_url=localstack,
        service_endpoint_urls=services,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=region,
    )


def ensure_bucket(session: boto3.Session, bucket: str) -> None:
    s3 = session.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket)
