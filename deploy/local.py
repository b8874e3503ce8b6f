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

from scones import contract
from scones.deploy.record import StackOutputs
from scones.deploy.workflow import WorkflowResources

ACCOUNT_ID = "000000000000"          # LocalStack's default account
REGION = "us-east-1"
ACCESS_KEY_ID = "test"               # LocalStack accepts any credentials; "test" maps to ACCOUNT_ID
SECRET_ACCESS_KEY = "test"
HOST = "127.0.0.1"

DEFAULT_BUCKET = "scones-local"
DEFAULT_PREFIX = "scones"
DEFAULT_ENDPOINT_NAME = contract.ENDPOINT_NAME
DEFAULT_THRESHOLD = contract.THRESHOLD
DEFAULT_LOCALSTACK_PORT = 4566
DEFAULT_ENDPOINT_PORT = 8080
CAPTURE_PREFIX = contract.CAPTURE_PREFIX
# What a local stack uploads of the staged images: the workflow reads test/ (training runs from the
# host's folder); `scones up --upload-train` adds train/.
DATASET_PARTS = ("test",)

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


def stack_outputs(*, bucket: str, resources: WorkflowResources, endpoint_name: str, localstack: str,
                  endpoint_server: str) -> StackOutputs:
    """A local stack's outputs: AWS's keys, and the URLs its clients go to instead of AWS."""
    if resources.state_machine_arn is None:  # deploy_workflow() always sets it
        raise ValueError("the local workflow has no state machine ARN: deploy it before recording its outputs")
    return StackOutputs(region=REGION, bucket=bucket, state_machine_arn=resources.state_machine_arn,
                        function_arns=dict(resources.function_arns), endpoint_name=endpoint_name,
                        capture_s3_uri=capture_s3_uri(bucket),
                        endpoint_urls={"default": localstack, "sagemaker-runtime": endpoint_server})



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
