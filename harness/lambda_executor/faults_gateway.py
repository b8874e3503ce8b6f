"""Fault rules on LocalStack's gateway: every AWS call, from outside or from inside LocalStack, meets them.

The rules and their decisions are harness/faults.py's; this applies them. `install_faults` runs at
LocalStack's start as a `localstack.hooks.on_infra_start` hook (entry point names.FAULTS_HOOK,
registered by harness/localstack.py) and adds:

- a request handler at the head of LocalStack's custom service request handlers: it runs once the
  request is parsed (service, operation and parameters known) and before any service answers, so it
  also sees the sagemaker-runtime calls our forwarder answers (sagemaker_runtime.py). Step Functions'
  calls to Lambda go through the same chain: with IN_MEMORY_CLIENT=1 LocalStack's internal clients
  hand each request to the gateway's handler chain in memory (localstack/aws/client.py,
  GatewayShortCircuit), so a rule on Lambda Invoke fires for a state machine's tasks too. The events
  Step Functions and S3 emit to EventBridge are not such calls (service_events_in_process.py).
  With no rule set it costs one truth test per request (benchmarks/faults.py measures it).
- the HTTP API, on LocalStack's port: `GET /_scones/faults` lists the rules with their counts,
  `POST` adds one (400 with the reason for a bad one), `DELETE` clears them all (or `/<id>` one)
  and returns what it removed with the counts.

The same hook installs the Step Functions time scale and its API (sfn_time_scale.py).

An error is raised as LocalStack's CommonServiceException with the rule's code, status, message and
members, which LocalStack's own serializer writes in the service's protocol (JSON for Lambda and
sagemaker-runtime, XML for S3), as its providers' errors are. A function error is the 200 answer
AWS's Lambda gives for a function that failed inside: X-Amz-Function-Error: Unhandled and the payload.

SCONES_FAULTS_PATCH=0 leaves the handler and the API out (to measure without them).
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.http import Response
from localstack.runtime import hooks
from rolo import Request, route

from scones import settings
from scones.harness.faults import FaultRuleError, Rule, RuleSet, function_error_payload
from scones.harness.lambda_executor.names import FAULTS_PATCH_ENV, FAULTS_PATH

LOG = logging.getLogger(__name__)

RULES = RuleSet()
DEFAULT_FUNCTION_TIMEOUT_S = 3.0   # Lambda's default timeout, when the function's own cannot be read
# Where a request names its resource, per service (the parameter names of botocore's models).
RESOURCE_PARAMETERS = ("FunctionName", "EndpointName", "stateMachineArn", "executionArn", "name")


def _resources(service: str, request: dict) -> tuple[str, ...]:
    """The names a rule's `resource` may give for this request: a name and its ARN, or S3's bucket/key."""
    if service == "s3":
        bucket = request.get("Bucket") or ""
        return (f"{bucket}/{request.get('Key') or ''}",)
    names: list[str] = []
    for parameter in RESOURCE_PARAMETERS:
        value = request.get(parameter)
        if isinstance(value, str):
            names.append(value)
            if value.startswith("arn:"):
                # arn:aws:lambda:region:account:function:NAME[:qualifier], arn:aws:states:...:stateMachine:NAME
                parts = value.split(":")
                if len(parts) >= 7:
                    names.append(parts[6])
    return tuple(names)


def _applicable(request: dict):
    def applicable(rule: Rule) -> bool:
        # An asynchronous invoke answers 202 before the function runs: nothing inside it can fail its answer.
        return not (rule.function_error and request.get("InvocationType") in ("Event", "DryRun"))
    return applicable


class FaultHandler:
    """The request handler: applies the first firing rule's answer, after the latency of every firing rule."""

    def __call__(self, chain: HandlerChain, context: RequestContext, response: Response) -> None:
        if not RULES or context.service is None or context.operation is None:
            return
        service = context.service.service_name
        request = context.service_request or {}
        decision = RULES.decide(service, context.operation.name, _resources(service, request), _applicable(request))
        if decision is None:
            return
        if decision.latency_s:
            time.sleep(decision.latency_s)
        rule = decision.answer
        if rule is None:
            return
        if rule.error is not None:
            LOG.info("fault rule %s: %s %s answers %s", rule.id, service, context.operation.name, rule.error.code)
            error = CommonServiceException(rule.error.code, rule.error.message, status_code=rule.error.status,
                                           sender_fault=rule.error.status < 500)
            for member, value in rule.error.members.items():
                setattr(error, member, value)
            raise error
        LOG.info("fault rule %s: %s Invoke fails inside the function (%s)", rule.id, service, rule.function_error)
        request_id = str(uuid.uuid4())
        payload = function_error_payload(rule, request_id, _function_timeout(context, request))
        response.status_code = 200
        response.data = json.dumps(payload).encode()
        response.headers["Content-Type"] = "application/json"
        response.headers["X-Amz-Function-Error"] = "Unhandled"
        response.headers["X-Amz-Executed-Version"] = "$LATEST"
        response.headers["x-amzn-RequestId"] = request_id
        chain.stop()


def _function_timeout(context: RequestContext, request: dict) -> float:
    """The function's configured timeout (for "Task timed out after N.NN seconds"), from LocalStack's store."""
    try:
        from localstack.services.lambda_.api_utils import get_name_and_qualifier
        from localstack.services.lambda_.invocation.models import lambda_stores

        name, _ = get_name_and_qualifier(request["FunctionName"], request.get("Qualifier"), context)
        function = lambda_stores[context.account_id][context.region].functions[name]
        return float(function.latest().config.timeout)
    except Exception:   # a function unknown here still gets the answer, with Lambda's default timeout
        return DEFAULT_FUNCTION_TIMEOUT_S


def _bad_request(message: str) -> Response:
    return Response.for_json({"message": message}, status=400)


class FaultsAPI:
    @route(FAULTS_PATH, methods=["GET"])
    def list_rules(self, request: Request) -> Response:
        return Response.for_json({"rules": RULES.snapshot()})

    @route(FAULTS_PATH, methods=["POST"])
    def add_rule(self, request: Request) -> Response:
        try:
            document = json.loads(request.get_data() or b"null")
        except ValueError as error:
            return _bad_request(f"the body is not JSON: {error}")
        try:
            rule = RULES.add(document)
        except FaultRuleError as error:
            return _bad_request(f"fault rule refused: {error}")
        LOG.info("fault rule added: %s", rule.to_dict())
        return Response.for_json({"rule": rule.to_dict()}, status=201)

    @route(FAULTS_PATH, methods=["DELETE"])
    def clear_rules(self, request: Request) -> Response:
        return Response.for_json({"removed": RULES.clear()})

    @route(f"{FAULTS_PATH}/<rule_id>", methods=["DELETE"])
    def remove_rule(self, request: Request, rule_id: str) -> Response:
        removed = RULES.clear(rule_id)
        if not removed:
            return Response.for_json({"message": f"no fault rule {rule_id!r}"}, status=404)
        return Response.for_json({"removed": removed})


@hooks.on_infra_start()
def install_faults() -> None:
    """Put the fault handler first among the custom service request handlers and add the API (once, at start)."""
    from localstack.aws.handlers import serve_custom_service_request_handlers
    from localstack.services.edge import ROUTER

    from scones.harness.lambda_executor import sfn_time_scale

    sfn_time_scale.install()
    if settings.switched_off(FAULTS_PATCH_ENV):
        LOG.info("fault rules off (%s=0)", FAULTS_PATCH_ENV)
        return
    ROUTER.add(FaultsAPI())
    serve_custom_service_request_handlers.handlers.insert(0, FaultHandler())
