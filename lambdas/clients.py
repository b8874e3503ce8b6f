"""boto3 clients, created on first use and reused across warm invocations.

Endpoints come only from the standard AWS SDK settings (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME), never from this code.
"""
from __future__ import annotations

import functools

import boto3
from botocore.config import Config

# InvokeEndpoint may take up to 60 s on AWS; wait a little longer than that for the reply.
_SAGEMAKER_RUNTIME_CONFIG = Config(
    connect_timeout=5,
    read_timeout=70,
    retries={"mode": "standard", "max_attempts": 2},
)
_S3_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})


@functools.cache
def s3():
    return boto3.client("s3", config=_S3_CONFIG)


@functools.cache
def sagemaker_runtime():
    return boto3.client("sagemaker-runtime", config=_SAGEMAKER_RUNTIME_CONFIG)


def reset() -> None:
    """Forget the cached clients (tests change endpoints and credentials between cases)."""
    s3.cache_clear()
    sagemaker_runtime.cache_clear()
