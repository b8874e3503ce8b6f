"""SageMaker runtime on LocalStack's gateway: InvokeEndpoint reaches the endpoint server serving that name.

LocalStack 4.14 community has no SageMaker, so a function's `boto3.client("sagemaker-runtime")`,
which goes to the AWS_ENDPOINT_URL every environment gets, used to fail with "not included in
your current license plan or not yet emulated". With this, LocalStack answers it as AWS would:

- `PUT /_scones/sagemaker-endpoints/<name>` with `{"url": "http://127.0.0.1:8080"}` says which
  endpoint server serves an endpoint name (`scones up` and the compose deploy send it, see
  deploy/local.py); `GET /_scones/sagemaker-endpoints` lists them. The registry lives as long
  as LocalStack, like every other resource of LocalStack's free edition; an endpoint server
  restarted on its URL needs nothing new.
- InvokeEndpoint for a registered name is forwarded to that server's own runtime route
  (`POST /endpoints/<name>/invocations`, harness/serving/server.py), with the request's body,
  Content-Type, Accept and X-Amzn-* headers, and its reply (status, body, Content-Type and
  X-Amzn-* headers such as x-Amzn-Invoked-Production-Variant or a ModelError's
  x-amzn-ErrorType) comes back unchanged.
- Any sagemaker-runtime call for a name nobody registered gets 400 ValidationError "Endpoint
  <name> of account <account> not found.", worded as AWS words it. InvokeEndpointAsync and
  InvokeEndpointWithResponseStream are not emulated: a registered name gets a clear 501.

The same hook adds the `sagemaker` control plane (harness/sagemaker/api.py): CreateModel,
CreateEndpointConfig, CreateEndpoint ... start endpoint servers and point this registry at them.

How: LocalStack runs `install_sagemaker_runtime` at start as a `localstack.hooks.on_infra_start` hook (the entry
point is in names.py, registered by harness/localstack.py). It adds the registry's routes to
LocalStack's edge router and the forwarder to its custom service request handlers, the two
places LocalStack itself uses for such additions (its Lambda's `/_aws/lambda` routes, S3's CORS
handler). The forwarder runs after the request is parsed as sagemaker-runtime and before
LocalStack would load a service for it. Both are additions, not replacements of LocalStack code.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from typing import Callable
from urllib.parse import quote, urlsplit

import urllib3
from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.aws.connect import connect_to
from localstack.http import Response
from localstack.runtime import hooks
from rolo import Request, route

from scones.harness.lambda_executor.names import SAGEMAKER_ENDPOINTS_PATH
from scones.harness.sagemaker.api import SageMakerHandler
from scones.harness.sagemaker.control import (
    SPARE_AT_START,
    Caller,
    ControlPlane,
    Environment,
    default_python,
    default_root,
)

LOG = logging.getLogger(__name__)

SERVICE = "sagemaker-runtime"
FORWARDED_OPERATION = "InvokeEndpoint"
# InvokeEndpoint's own limit is 60 s for the model's answer (botocore's default read timeout too);
# past this the endpoint server is stuck, and the caller gets ServiceUnavailable instead of a hang.
FORWARD_TIMEOUT = urllib3.Timeout(connect=5.0, read=75.0)
# The session name of SageMaker's calls with a job's or a model's execution role, as AWS's denials show it
# ("assumed-role/<role>/SageMaker", e.g. wpilibsuite/DetectCoral#20).
EXECUTION_ROLE_SESSION = "SageMaker"
# The EndpointName shape of botocore/data/sagemaker/*/service-2.json: at most 63, letters, digits, inner hyphens.
ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
FORWARDED_REQUEST_HEADERS = ("content-type", "accept")


def _passes(header: str, fixed: tuple[str, ...]) -> bool:
    lowered = header.lower()
    return lowered in fixed or lowered.startswith("x-amzn-")


class EndpointRegistry:
    """Endpoint name -> base URL of the endpoint server that serves it, set over LocalStack's gateway."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()
        # Whether the control plane can start endpoint hosts here (deploy/local.py sagemaker_mode's "auto" asks).
        self.serves_endpoints: Callable[[], bool] = lambda: False

    def url_for(self, name: str) -> str | None:
        return self._urls.get(name)

    def point(self, name: str, url: str | None) -> None:
        """Serve name from url from the next request on (None: no longer served); the control plane's switch."""
        with self._lock:
            if url is None:
                self._urls.pop(name, None)
            else:
                self._urls[name] = url.rstrip("/")
        LOG.info("sagemaker-runtime endpoint %s is served by %s", name, url)

    @route(SAGEMAKER_ENDPOINTS_PATH, methods=["GET"])
    def list_endpoints(self, request: Request) -> dict:
        with self._lock:
            urls = dict(self._urls)
        return {"endpoints": urls, "serves_endpoints": self.serves_endpoints()}

    @route(f"{SAGEMAKER_ENDPOINTS_PATH}/<name>", methods=["PUT"])
    def register(self, request: Request, name: str) -> Response | dict:
        if not ENDPOINT_NAME.match(name):
            return _bad_request(f"endpoint name {name!r} is not a SageMaker endpoint name "
                                "(letters, digits and hyphens, at most 63, starting with a letter or digit)")
        document = request.get_json(silent=True)
        url = document.get("url") if isinstance(document, dict) else None
        if not isinstance(url, str):
            return _bad_request('the body must be JSON {"url": "http://HOST:PORT"} naming the endpoint server')
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            return _bad_request(f"url {url!r} is not an endpoint server's base URL such as http://127.0.0.1:8080")
        with self._lock:
            self._urls[name] = url.rstrip("/")
        LOG.info("sagemaker-runtime endpoint %s is served by %s", name, url)
        return {"name": name, "url": self._urls[name]}


def _bad_request(message: str) -> Response:
    return Response.for_json({"message": message}, status=400)


class InvokeEndpointForwarder:
    """A request handler: sagemaker-runtime calls go to the registered endpoint server, or fail as on AWS."""

    def __init__(self, registry: EndpointRegistry) -> None:
        self.registry = registry
        # Many concurrent executions call one endpoint server: keep a connection for each. No retries:
        # the caller's botocore retries as it would against AWS. (urllib3 reads no proxy settings.)
        self.http = urllib3.PoolManager(num_pools=8, maxsize=64, retries=False, timeout=FORWARD_TIMEOUT)

    def __call__(self, chain: HandlerChain, context: RequestContext, response: Response) -> None:
        if context.service is None or context.service.service_name != SERVICE or context.operation is None:
            return
        name = context.service_request["EndpointName"]
        url = self.registry.url_for(name)
        if url is None:
            raise CommonServiceException("ValidationError", f"Endpoint {name} of account {context.account_id} not found.",
                                         status_code=400, sender_fault=True)
        if context.operation.name != FORWARDED_OPERATION:
            raise NotImplementedError(f"sagemaker-runtime {context.operation.name} is not emulated locally: "
                                      f"the endpoint server of {name} ({url}) answers {FORWARDED_OPERATION} only")
        reply = self._forward(context, name, url)
        response.status_code = reply.status
        response.data = reply.data
        response.headers.pop("Content-Type", None)   # werkzeug's default; the endpoint's own (if any) follows
        for key, value in reply.headers.items():
            if _passes(key, ("content-type",)):
                response.headers[key] = value
        chain.stop()

    def _forward(self, context: RequestContext, name: str, url: str) -> urllib3.BaseHTTPResponse:
        request = context.request
        headers = {key: value for key, value in request.headers.items() if _passes(key, FORWARDED_REQUEST_HEADERS)}
        try:
            reply = self.http.request("POST", f"{url}/endpoints/{quote(name, safe='')}/invocations",
                                      body=request.get_data(), headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise CommonServiceException(
                "ServiceUnavailable",
                f"Endpoint {name} is served by {url} (as registered at {SAGEMAKER_ENDPOINTS_PATH}), "
                f"but that endpoint server did not answer: {type(error).__name__}: {error}",
                status_code=503,
            ) from error
        return reply


REGISTRY = EndpointRegistry()


def _sagemaker_control_plane() -> SageMakerHandler:
    """The `sagemaker` API's handler (harness/sagemaker): its processes run with the project's Python."""
    def s3_for(caller: Caller):
        return connect_to(aws_access_key_id=caller.access_key, aws_secret_access_key=caller.secret_key,
                          aws_session_token=caller.session_token, region_name=caller.region).s3

    def assume_role(caller: Caller, role_arn: str) -> Caller:
        sts = connect_to(aws_access_key_id=caller.access_key, aws_secret_access_key=caller.secret_key,
                         aws_session_token=caller.session_token, region_name=caller.region).sts
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=EXECUTION_ROLE_SESSION)["Credentials"]
        return dataclasses.replace(caller, access_key=credentials["AccessKeyId"],
                                   secret_key=credentials["SecretAccessKey"], session_token=credentials["SessionToken"])

    gateway = "http://" + os.environ.get("GATEWAY_LISTEN", "127.0.0.1:4566").split(",")[0]
    control = ControlPlane(Environment(default_root(), s3_for, default_python(), assume_role), REGISTRY.point)
    REGISTRY.serves_endpoints = control.environment.serves_endpoints
    if SPARE_AT_START:   # `scones up`: its endpoint comes seconds from now, while LocalStack still boots
        control.environment.warm_spare()
    return SageMakerHandler(control, gateway)


@hooks.on_infra_start()
def install_sagemaker_runtime() -> None:
    """Add the registry's routes, the forwarder and the SageMaker control plane to LocalStack's gateway
    (once, at LocalStack's start)."""
    from localstack.aws.handlers import serve_custom_service_request_handlers
    from localstack.services.edge import ROUTER

    ROUTER.add(REGISTRY)
    serve_custom_service_request_handlers.append(InvokeEndpointForwarder(REGISTRY))
    serve_custom_service_request_handlers.append(_sagemaker_control_plane())
