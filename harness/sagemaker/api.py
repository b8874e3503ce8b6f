"""LocalStack gateway handler for the `sagemaker` control-plane API (JSON 1.1, `X-Amz-Target: SageMaker.<Op>`).

LocalStack parses the request against botocore's `sagemaker` model before its custom service request
handlers run (harness/lambda_executor/sagemaker_runtime.py adds this one beside the runtime's), so
context.service tells `sagemaker` from `sagemaker-runtime` (both sign as "sagemaker"; the target
header and the host tell them apart) and context.service_request is the parsed input. This module
checks that input against the model's constraints as AWS's front end does (required members,
lengths, ranges, enums, the name patterns), with AWS's wording:

    1 validation error detected: Value 'a_b' at 'endpointName' failed to satisfy constraint:
    Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}

then calls control.ControlPlane and serialises its answer, or its ApiError as AWS's error shape
(`__type` and `message`, HTTP 400). Operations we do not answer get a clear 501.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.aws.protocol.serializer import create_serializer
from localstack.http import Response

from scones.harness.sagemaker.control import ApiError, Caller, ControlPlane

LOG = logging.getLogger(__name__)

SERVICE = "sagemaker"
OPERATIONS = {
    "CreateModel": "create_model", "DescribeModel": "describe_model", "DeleteModel": "delete_model",
    "ListModels": "list_models",
    "CreateEndpointConfig": "create_endpoint_config", "DescribeEndpointConfig": "describe_endpoint_config",
    "DeleteEndpointConfig": "delete_endpoint_config", "ListEndpointConfigs": "list_endpoint_configs",
    "CreateEndpoint": "create_endpoint", "DescribeEndpoint": "describe_endpoint", "UpdateEndpoint": "update_endpoint",
    "DeleteEndpoint": "delete_endpoint", "ListEndpoints": "list_endpoints",
    "CreateTrainingJob": "create_training_job", "DescribeTrainingJob": "describe_training_job",
    "StopTrainingJob": "stop_training_job", "ListTrainingJobs": "list_training_jobs",
}
MAX_REPORTED_ERRORS = 10


# --- validation against the service model ---------------------------------------------------------

@lru_cache(maxsize=None)
def _pattern(text: str) -> re.Pattern | None:
    try:
        return re.compile(text)
    except re.error:   # a Java-only construct: AWS checks it, we cannot
        return None


def _value_text(value: Any) -> str:
    return "null" if value is None else f"'{value}'"


def _length_errors(value, path: str, meta: dict) -> list[str]:
    """A list's or a string's min/max length, in AWS's wording."""
    errors = []
    if "min" in meta and len(value) < meta["min"]:
        errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                      f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                      f"Member must have length less than or equal to {meta['max']}")
    return errors


def constraint_errors(shape: Any, value: Any, path: str) -> list[str]:
    """AWS's messages for every constraint of botocore shape `shape` that `value` breaks (path: lowerCamel)."""
    errors: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure":
        for member, member_shape in shape.members.items():
            member_path = f"{path}.{member[0].lower()}{member[1:]}" if path else f"{member[0].lower()}{member[1:]}"
            member_value = value.get(member) if isinstance(value, dict) else None
            if member_value is None:
                if member in shape.required_members:
                    errors.append(f"Value null at '{member_path}' failed to satisfy constraint: Member must not be null")
                continue
            errors += constraint_errors(member_shape, member_value, member_path)
    elif shape.type_name == "list" and isinstance(value, list):
        errors += _length_errors(value, path, meta)
        for index, item in enumerate(value, start=1):
            errors += constraint_errors(shape.member, item, f"{path}.{index}.member")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += constraint_errors(shape.value, item, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        errors += _length_errors(value, path, meta)
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.fullmatch(value):
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                          f"Member must satisfy regular expression pattern: {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                          f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "min" in meta and value < meta["min"]:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                          f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: "
                          f"Member must have value less than or equal to {meta['max']}")
    return errors


def validate(operation: Any, request: dict) -> None:
    if operation.input_shape is None:
        return
    errors = constraint_errors(operation.input_shape, request, "")
    if errors:
        count = len(errors)
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        raise ApiError("ValidationException", f"{count} validation error{'s' if count > 1 else ''} detected: {shown}")


# --- the handler ----------------------------------------------------------------------------------

def _access_key(context: RequestContext) -> str:
    match = re.search(r"Credential=([^/,\s]+)/", context.request.headers.get("Authorization", ""))
    return match.group(1) if match else "test"


class SageMakerHandler:
    """A request handler: `sagemaker` calls are answered by the control plane; everything else passes by."""

    def __init__(self, control: ControlPlane, gateway_url: str) -> None:
        self.control = control
        self.gateway_url = gateway_url

    def __call__(self, chain: HandlerChain, context: RequestContext, response: Response) -> None:
        if context.service is None or context.service.service_name != SERVICE or context.operation is None:
            return
        name = context.operation.name
        method = OPERATIONS.get(name)
        if method is None:
            raise CommonServiceException("NotImplemented", f"SageMaker {name} is not emulated locally; the local "
                                         f"control plane answers {', '.join(sorted(OPERATIONS))}.", status_code=501)
        request = dict(context.service_request or {})
        caller = Caller(account=context.account_id or "000000000000", region=context.region or "us-east-1",
                        access_key=_access_key(context), gateway=self.gateway_url)
        try:
            validate(context.operation, request)
            result = getattr(self.control, method)(caller, request)
        except ApiError as error:
            raise CommonServiceException(error.code, error.message, status_code=error.status, sender_fault=True) from None
        serializer = create_serializer(context.service)
        answer = serializer.serialize_to_response(_shaped(result, context.operation.output_shape), context.operation,
                                                  context.request.headers, context.request_id)
        response.update_from(answer)
        chain.stop()


def _shaped(result: dict, shape: Any) -> dict:
    """Only the members the output shape has (a stored request holds more, e.g. Tags)."""
    if shape is None:
        return {}
    return {key: value for key, value in result.items() if key in shape.members}
