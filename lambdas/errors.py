"""The errors the workflow can show.

The Lambda runtime reports an unhandled exception's class name as its errorType, and Step
Functions shows that errorType as the failed execution's error; so each class name below is
part of the contract, and each message names what is wrong and where.
"""
from __future__ import annotations


class WorkflowError(Exception):
    """Base class of every error a Scones Lambda raises on purpose."""


class InvalidInput(WorkflowError):
    """The event lacks a field, or a field has the wrong type or is empty."""


class InvalidConfiguration(WorkflowError):
    """The function's environment holds a value it cannot use."""


class ImageNotFound(WorkflowError):
    """The bucket or the key does not exist."""


class ImageReadFailed(WorkflowError):
    """S3 refused or failed the read for another reason (access denied, throttling...)."""


class NotAnImage(WorkflowError):
    """The object's bytes are not a PNG, JPEG, GIF, BMP, WebP or TIFF image (the formats the model reads)."""


class PayloadTooLarge(WorkflowError):
    """The base64 image would push the workflow state past the Step Functions 256 KiB limit."""


class EndpointInvocationFailed(WorkflowError):
    """InvokeEndpoint failed: unknown endpoint, model error, timeout or unreachable endpoint."""


class EndpointUnavailable(EndpointInvocationFailed):
    """The endpoint stayed unreachable, throttled or failing with 5xx through every retry: transient, so the
    state machine retries the task (a 4xx, such as a ModelError for a bad image, is EndpointInvocationFailed)."""


class InvalidInferences(WorkflowError):
    """The inferences are not a list of one probability per class."""


class ThresholdConfidenceNotMet(WorkflowError):
    """The most confident class is below the threshold: fail loudly rather than route wrongly."""
