"""Fault rules for the local stack: make an AWS call fail, or answer late, on purpose and per attempt.

A rule names an AWS operation as botocore names it (service + operation, e.g. `sagemaker-runtime`
`InvokeEndpoint`), optionally a resource, and what to do to the matching calls:

    {"service": "sagemaker-runtime", "operation": "InvokeEndpoint", "resource": "scones-classifier",
     "error": "ThrottlingException", "times": 2}

- `resource`: a Lambda function's name or ARN, an endpoint name, a state machine's name or ARN; for
  S3 a prefix of "bucket/key" (e.g. "scones-bucket/test/"). Left out: every call of the operation.
- what to do, one of:
  - `error`: an error code, answered as AWS shapes it for that service (the HTTP status comes from
    botocore's model of the service, or from AWS's common errors for codes that are not in it, such
    as ThrottlingException 400 or S3's SlowDown 503), or an object {"code", "status", "message",
    ...more members of the error shape, e.g. "OriginalStatusCode" of a ModelError};
  - `function_error` (Lambda Invoke only): "timeout", "out_of_memory" or "init_error": the invoke
    answers 200 with FunctionError Unhandled and the payload AWS's Lambda sends for a sandbox timed
    out, killed for memory, or a runtime that exited during init;
  - `latency_ms` alone: the call goes through, that much later (with an error: the error, later).
- which calls: `after` (skip the first N matching calls), `times` (fire at most N times; default
  every time), `nth` (only the Nth matching call: after N-1, once), `probability` (0..1, drawn per
  call from the rule's own random generator, seeded with `seed`, so a seed gives the same sequence
  every time).

Rules are checked in the order they were added; latency adds up, the first rule answering with an
error answers. Each rule counts the calls it `matched` and the ones it `fired` on.

This module holds the rules and their decisions (no LocalStack import, so tests and clients use
it as is); harness/lambda_executor/faults_gateway.py applies them on LocalStack's gateway, and
`FaultsClient` reaches that over HTTP (the pytest `faults` fixture and `scones faults` use it).
"""
from __future__ import annotations

import functools
import itertools
import json
import random
import threading
import urllib.error
from dataclasses import dataclass, field
from typing import Any

from scones import loopback
from scones.errors import SconesError
from scones.harness.lambda_executor.names import FAULTS_PATH, TIME_SCALE_PATH

# Errors AWS documents outside a service's own model, with the status and message AWS answers:
# ThrottlingException and the other common errors: https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html
# (and every service's CommonErrors page); S3's SlowDown, InternalError, ServiceUnavailable:
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList
COMMON_ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (400, "Rate exceeded"),
    "InternalFailure": (500, "The request processing has failed because of an unknown error, exception or failure."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
    "SlowDown": (503, "Please reduce your request rate."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
}
# What AWS's Lambda answers for a function that failed on its own (FunctionError Unhandled), as the
# executor (harness/lambda_executor/executor.py) answers it too: errorType and errorMessage.
FUNCTION_ERRORS: dict[str, tuple[str, str]] = {
    "timeout": ("Sandbox.Timedout", "Task timed out after {timeout:.2f} seconds"),
    "out_of_memory": ("Runtime.OutOfMemory", "Runtime exited with error: signal: killed"),
    "init_error": ("Runtime.ExitError", "Runtime exited with error: exit status 1"),
}
RULE_FIELDS = {"service", "operation", "resource", "error", "function_error", "latency_ms", "after", "times",
               "nth", "probability", "seed"}


class FaultRuleError(SconesError, ValueError):
    """A rule that cannot be applied; the message names the field and what is wrong with it."""


@functools.cache
def _service_model(service: str):
    import botocore.exceptions
    import botocore.loaders
    import botocore.model

    try:
        return botocore.model.ServiceModel(botocore.loaders.create_loader().load_service_model(service, "service-2"),
                                           service_name=service)
    except botocore.exceptions.UnknownServiceError:
        return None


def _modelled_status(service: str, code: str) -> int | None:
    """The HTTP status of error `code` in botocore's model of `service` (its shape's `error` trait)."""
    model = _service_model(service)
    for shape in model.error_shapes if model is not None else ():
        trait = shape.metadata.get("error", {})
        if code in (shape.name, trait.get("code")):
            return trait.get("httpStatusCode", 400)
    return None


@dataclass(frozen=True)
class ErrorAnswer:
    code: str
    status: int
    message: str
    members: dict[str, Any] = field(default_factory=dict)   # further members of the error shape

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "status": self.status, "message": self.message, **self.members}


def _error_answer(service: str, spec: Any) -> ErrorAnswer:
    document = {"code": spec} if isinstance(spec, str) else spec
    if not isinstance(document, dict) or not isinstance(document.get("code"), str) or not document["code"]:
        raise FaultRuleError(f"error: expected an error code such as \"ThrottlingException\" or an object with a "
                             f"\"code\", got {spec!r}")
    document = dict(document)
    code = document.pop("code")
    common = COMMON_ERRORS.get(code)
    status = document.pop("status", None) or _modelled_status(service, code) or (common[0] if common else None)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise FaultRuleError(f"error: {code} is neither in botocore's model of {service} nor one of AWS's common "
                             f"errors ({', '.join(COMMON_ERRORS)}): give its HTTP status as \"status\" (400-599)")
    message = document.pop("message", None) or (common[1] if common else f"{code} (injected by a scones fault rule)")
    return ErrorAnswer(code, status, str(message), document)


@dataclass
class Rule:
    id: str
    service: str
    operation: str
    resource: str | None = None
    error: ErrorAnswer | None = None
    function_error: str | None = None
    latency_ms: float = 0.0
    after: int = 0
    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    matched: int = 0
    fired: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def matches(self, service: str, operation: str, resources: tuple[str, ...]) -> bool:
        if service != self.service or operation != self.operation:
            return False
        if self.resource is None:
            return True
        if service == "s3":
            return any(candidate.startswith(self.resource) for candidate in resources)
        return self.resource in resources

    def decide(self) -> bool:
        """Count one matching call; True when the rule fires on it. Call under the rules' lock."""
        self.matched += 1
        if self.matched <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        if self.probability < 1.0 and self._random.random() >= self.probability:
            return False
        self.fired += 1
        return True

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"id": self.id, "service": self.service, "operation": self.operation}
        optional = {"resource": self.resource, "error": self.error.to_dict() if self.error else None,
                    "function_error": self.function_error, "latency_ms": self.latency_ms or None,
                    "after": self.after or None, "times": self.times,
                    "probability": self.probability if self.probability < 1.0 else None, "seed": self.seed}
        document.update({key: value for key, value in optional.items() if value is not None})
        return {**document, "matched": self.matched, "fired": self.fired}


def _count(document: dict, name: str, minimum: int) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FaultRuleError(f"{name}: expected a whole number >= {minimum}, got {value!r}")
    return value


def parse_rule(document: Any, rule_id: str) -> Rule:
    """A Rule from its JSON form (see the module's docstring); FaultRuleError names what is wrong."""
    if not isinstance(document, dict):
        raise FaultRuleError(f"a rule is a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - RULE_FIELDS)
    if unknown:
        raise FaultRuleError(f"unknown field(s) {', '.join(unknown)}; a rule has {', '.join(sorted(RULE_FIELDS))}")
    service, operation = document.get("service"), document.get("operation")
    model = _service_model(service) if isinstance(service, str) else None
    if model is None or not isinstance(service, str):
        raise FaultRuleError(f"service: {service!r} is not an AWS service botocore knows (e.g. \"sagemaker-runtime\", "
                             "\"lambda\", \"s3\", \"stepfunctions\")")
    if not isinstance(operation, str) or operation not in model.operation_names:
        raise FaultRuleError(f"operation: {service} has no operation {operation!r} (botocore's names, e.g. "
                             f"{', '.join(model.operation_names[:4])})")
    resource = document.get("resource")
    if resource is not None and (not isinstance(resource, str) or not resource):
        raise FaultRuleError(f"resource: expected a non-empty name, ARN or S3 \"bucket/key\" prefix, got {resource!r}")
    function_error = document.get("function_error")
    if function_error is not None:
        if (service, operation) != ("lambda", "Invoke"):
            raise FaultRuleError("function_error: only a Lambda Invoke (service \"lambda\", operation \"Invoke\") "
                                 "can fail inside the function")
        if function_error not in FUNCTION_ERRORS:
            raise FaultRuleError(f"function_error: expected one of {', '.join(FUNCTION_ERRORS)}, got {function_error!r}")
    error = _error_answer(service, document["error"]) if document.get("error") is not None else None
    if error is not None and function_error is not None:
        raise FaultRuleError("error and function_error: give one of them (an API error, or a failure inside the function)")
    latency = document.get("latency_ms", 0) or 0
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= 900_000:
        raise FaultRuleError(f"latency_ms: expected milliseconds between 0 and 900000, got {latency!r}")
    if error is None and function_error is None and not latency:
        raise FaultRuleError("a rule needs something to do: \"error\", \"function_error\" or \"latency_ms\"")
    after, times, nth = _count(document, "after", 0), _count(document, "times", 1), _count(document, "nth", 1)
    if nth is not None:
        if after is not None or times is not None:
            raise FaultRuleError("nth: fires on the Nth matching call only; leave out \"after\" and \"times\" with it")
        after, times = nth - 1, 1
    probability = document.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 < probability <= 1:
        raise FaultRuleError(f"probability: expected a number in (0, 1], got {probability!r}")
    seed = document.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FaultRuleError(f"seed: expected a whole number, got {seed!r}")
    if probability < 1 and seed is None:
        raise FaultRuleError("seed: a rule with a probability needs a seed, so that a run can be repeated")
    return Rule(id=rule_id, service=service, operation=operation, resource=resource, error=error,
                function_error=function_error, latency_ms=float(latency), after=after or 0, times=times,
                probability=float(probability), seed=seed)


@dataclass(frozen=True)
class Decision:
    latency_s: float
    answer: Rule | None       # the rule whose error or function error answers the call, if any


class RuleSet:
    """The rules in force, their counts, and the decision for each call (thread-safe)."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._rules)   # read without the lock: the gateway's check when no rule is set

    def add(self, document: Any) -> Rule:
        with self._lock:
            rule = parse_rule(document, f"r{next(self._ids)}")
            self._rules.append(rule)
            return rule

    def snapshot(self) -> list[dict[str, Any]]:
        """Every rule with its counts, in order."""
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def clear(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Remove every rule (or the one with `rule_id`); returns what was removed, with its counts."""
        with self._lock:
            removed = [rule for rule in self._rules if rule_id is None or rule.id == rule_id]
            self._rules = [rule for rule in self._rules if rule not in removed]
            return [rule.to_dict() for rule in removed]

    def decide(self, service: str, operation: str, resources: tuple[str, ...],
               applicable=lambda rule: True) -> Decision | None:
        """What to do to one call; None when no rule fires. `applicable` can exclude rules (e.g. a
        function error for an asynchronous invoke) before they count the call."""
        latency, answer = 0.0, None
        with self._lock:
            for rule in self._rules:
                if answer is None or not (rule.error or rule.function_error):
                    if rule.matches(service, operation, resources) and applicable(rule) and rule.decide():
                        latency += rule.latency_ms / 1000
                        if rule.error or rule.function_error:
                            answer = rule
        return Decision(latency, answer) if latency or answer else None


def function_error_payload(rule: Rule, request_id: str, timeout_s: float) -> dict[str, str]:
    """The Invoke payload of an Unhandled function error, worded as AWS's Lambda (and our executor) words it."""
    assert rule.function_error is not None
    error_type, message = FUNCTION_ERRORS[rule.function_error]
    return {"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message.format(timeout=timeout_s)}"}


# --- the client: the HTTP API on LocalStack's gateway ---------------------------------------------

class FaultsAPIError(SconesError, RuntimeError):
    """LocalStack refused a request to the fault API, or could not be reached; the message says which."""


def describe(rule: dict[str, Any]) -> str:
    """A rule (as listed, with its counts) in one line: `scones faults list` and the pytest summary print it."""
    target = f"{rule['service']} {rule['operation']}" + (f" {rule['resource']}" if rule.get("resource") else "")
    if rule.get("error"):
        action = f"error {rule['error']['code']} (HTTP {rule['error']['status']})"
    elif rule.get("function_error"):
        action = f"function error {rule['function_error']}"
    else:
        action = "latency only"
    if rule.get("latency_ms"):
        action += f" after {rule['latency_ms']:g} ms"
    when = []
    if rule.get("after"):
        when.append(f"after {rule['after']} calls")
    if rule.get("times") is not None:
        when.append(f"{rule['times']} times")
    if rule.get("probability") is not None:
        when.append(f"p={rule['probability']:g} seed {rule['seed']}")
    return (f"{rule['id']:>4}  {target}: {action}{' (' + ', '.join(when) + ')' if when else ''}"
            f"  matched {rule['matched']}, fired {rule['fired']}")


class FaultsClient:
    """The fault rules and the Step Functions time scale of the LocalStack at `localstack_url`."""

    def __init__(self, localstack_url: str, timeout: float = 10.0) -> None:
        self.url = localstack_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        try:
            _, reply = loopback.request(f"{self.url}{path}", data, method=method,
                                        headers={"Content-Type": "application/json"}, timeout=self.timeout)
            return json.loads(reply or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["message"]
            except (ValueError, KeyError, TypeError):
                pass
            hint = (" (this LocalStack was started without the fault rules: restart it, e.g. `scones down` then "
                    "`scones up`)" if error.code == 404 else "")
            raise FaultsAPIError(f"{method} {path}: HTTP {error.code}: {detail}{hint}") from None
        except OSError as error:
            raise FaultsAPIError(f"could not reach LocalStack at {self.url} ({error}): is the local stack up? "
                                 "`scones status` says") from None

    def add(self, rule: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Add one rule (a dict, or its fields as keywords); returns it with its id."""
        return self._call("POST", FAULTS_PATH, {**(rule or {}), **fields})["rule"]

    def get(self, rule_id: str) -> dict[str, Any]:
        rules = self.list()
        for rule in rules:
            if rule["id"] == rule_id:
                return rule
        raise FaultsAPIError(f"no fault rule {rule_id!r} (the rules are {[r['id'] for r in rules]})")

    def clear(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self._call("DELETE", f"{FAULTS_PATH}/{rule_id}" if rule_id else FAULTS_PATH)["removed"]

    def time_scale(self) -> dict[str, Any]:
        return self._call("GET", TIME_SCALE_PATH)

    def set_time_scale(self, scale: float) -> dict[str, Any]:
        return self._call("PUT", TIME_SCALE_PATH, {"scale": scale})

    def list(self) -> list[dict[str, Any]]:   # last: inside the class, `list` names this method from here on
        return self._call("GET", FAULTS_PATH)["rules"]
