"""boto3 clients, created on first use and reused across warm invocations.

Endpoints come only from the standard AWS SDK settings (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, AWS_ENDPOINT_URL_CLOUDWATCH), never from this code.
"""
from __future__ import annotations

import functools

import boto3
from botocore.config import Config

from . import config

_SAGEMAKER_RUNTIME_CONFIG = Config(
    connect_timeout=config.ENDPOINT_CONNECT_TIMEOUT_S,
    read_timeout=config.ENDPOINT_READ_TIMEOUT_S,
    retries={"mode": config.ENDPOINT_RETRY_MODE, "total_max_attempts": config.ENDPOINT_MAX_ATTEMPTS},
)
# S3, Step Functions and CloudWatch: botocore's standard retries, four attempts in all (the first and three
# retries). botocore's Config counts `max_attempts` as retries after the first and `total_max_attempts` as all
# attempts (botocore/config.py; botocore/args.py _compute_retry_max_attempts adds the one).
_SERVICE_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 4})


@functools.cache
def s3():
    return boto3.client("s3", config=_SERVICE_CONFIG)


@functools.cache
def sagemaker_runtime():
    return boto3.client("sagemaker-runtime", config=_SAGEMAKER_RUNTIME_CONFIG)


@functools.cache
def stepfunctions():
    return boto3.client("stepfunctions", config=_SERVICE_CONFIG)


@functools.cache
def cloudwatch():
    return boto3.client("cloudwatch", config=_SERVICE_CONFIG)


def reset() -> None:
    """Forget the cached clients (tests change endpoints and credentials between cases)."""
    s3.cache_clear()
    cloudwatch.cache_clear()
    sagemaker_runtime.cache_clear()
    stepfunctions.cache_clear()
