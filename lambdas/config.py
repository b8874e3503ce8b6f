"""Every environment variable and shared constant of the Lambda part, in one place.

Precedence: an explicit argument beats the function's environment, which beats the default.
Nothing here knows which target (LocalStack or AWS) the functions run on.
"""
from __future__ import annotations

import os

from .errors import InvalidConfiguration

# Environment variable names the functions read.
ENDPOINT_NAME = "ENDPOINT_NAME"
THRESHOLD = "THRESHOLD"
# The scheduled drift monitor (lambdas/drift_monitor.py): where the endpoint's capture lies, where the
# monitor keeps its baseline, state and run summaries, the CloudWatch namespace, the drift tests' alpha.
CAPTURE_S3_URI = "CAPTURE_S3_URI"
MONITOR_S3_URI = "MONITOR_S3_URI"
METRIC_NAMESPACE = "METRIC_NAMESPACE"
DRIFT_ALPHA = "DRIFT_ALPHA"
RESULTS_BUCKET = "RESULTS_BUCKET"        # writeResult: the bucket that holds results/
RESULTS_PREFIX = "RESULTS_PREFIX"        # writeResult: where each photo's result goes (lambdas/run_results.py)

DEFAULT_ENDPOINT_NAME = "scones-classifier"
DEFAULT_THRESHOLD = 0.93
DEFAULT_RESULTS_PREFIX = "results/"

# Index i of an inference is the probability of CLASSES[i].
CLASSES = ("bicycle", "motorcycle")

# The model is invoked with PNG bytes, as in the original project.
IMAGE_CONTENT_TYPE = "image/png"

# InvokeEndpoint from classifyImage: botocore's "standard" retry mode retries connection errors, read
# timeouts, throttling and HTTP 500/502/503/504 (botocore/retries/standard.py) with jittered exponential
# backoff; a 4xx (ModelError 424 for an image the model refuses, ValidationError 400) fails at once.
# What outlasts these attempts, the state machine retries as EndpointUnavailable (state_machine/).
ENDPOINT_RETRY_MODE = "standard"
ENDPOINT_MAX_ATTEMPTS = 5              # in all, the first one included (botocore's total_max_attempts)
ENDPOINT_CONNECT_TIMEOUT_S = 2       # a listening endpoint accepts within milliseconds
ENDPOINT_READ_TIMEOUT_S = 70         # InvokeEndpoint may take up to 60 s on AWS
# The longest classifyImage waits on the endpoint: one full invocation, every other attempt failing on
# connect, and the longest backoffs standard mode can draw between them (throttling: 1, 2, 4, 8 s; others
# far less). The function's timeout (deploy/packaging.py) is set above it.
ENDPOINT_TIME_BUDGET_S = (ENDPOINT_READ_TIMEOUT_S + (ENDPOINT_MAX_ATTEMPTS - 1) * ENDPOINT_CONNECT_TIMEOUT_S
                          + sum(min(2 ** attempt, 20) for attempt in range(ENDPOINT_MAX_ATTEMPTS - 1)))

# classifyImage stops waiting for the endpoint this long before the function's own timeout, so a hung endpoint
# ends in EndpointUnavailable, which the state machine retries, rather than in the Lambda timeout
# (Sandbox.Timedout), which nothing retries. The budget is read from the Lambda context each invocation.
ENDPOINT_REPORT_RESERVE_S = 3.0

# Step Functions caps every state's input/output at 256 KiB of UTF-8 JSON; the base64
# image travels inside the state, so serializeImageData must refuse anything bigger.
STATE_PAYLOAD_LIMIT_BYTES = 262_144


def endpoint_name(explicit: str | None = None) -> str:
    name = explicit or os.environ.get(ENDPOINT_NAME, "").strip() or DEFAULT_ENDPOINT_NAME
    return name


def threshold(explicit: float | None = None) -> float:
    if explicit is not None:
        raw: object = explicit
    else:
        raw = os.environ.get(THRESHOLD, "").strip()
        if not raw:
            return DEFAULT_THRESHOLD
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidConfiguration(
            f"{THRESHOLD}={raw!r} in the function's environment is not a number between 0 and 1"
        ) from None
    if not 0.0 < value <= 1.0:
        raise InvalidConfiguration(
            f"{THRESHOLD}={raw!r} in the function's environment is outside (0, 1]"
        )
    return value


def results_bucket(explicit: str | None = None) -> str:
    name = explicit or os.environ.get(RESULTS_BUCKET, "").strip()
    if not name:
        raise InvalidConfiguration(f"{RESULTS_BUCKET} is not set in the function's environment: no bucket to write results to")
    return name


def results_prefix(explicit: str | None = None) -> str:
    return explicit or os.environ.get(RESULTS_PREFIX, "").strip() or DEFAULT_RESULTS_PREFIX
