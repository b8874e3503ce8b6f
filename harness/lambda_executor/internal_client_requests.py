"""Throughput patch for LocalStack 4.14.0's internal clients: a call between its services skips work no reader needs.

Why: LocalStack's services call each other through botocore clients (`aws/connect.py::InternalClientFactory`)
whose requests never leave the process (`aws/client.py::GatewayShortCircuit` hands them to the gateway). Step
Functions invoking a Lambda function is one per Task state; EventBridge invoking one is another. On each,
botocore computed a SigV4 signature (CRT) that nothing verifies, and built its User-Agent string twice from
components (`useragent.py`): about half of botocore's side of the call (an Invoke answered in memory: 0.42 ms
of CPU, 0.21 ms without them; in a running LocalStack, Step Functions' RequestSigner.sign went from 0.39-0.59 ms
to about 0.2 ms of thread time per Task state).

What the gateway reads of such a request stays: the Authorization header names the caller's access key and
the credential scope (date, region, signing name), as a SigV4 header does, so LocalStack's account and region
lookup and our IAM checks (harness/iam/gateway.py: the access key of an assumed role's session) see what
they saw; X-Amz-Date and X-Amz-Security-Token are set as botocore sets them. Only the signature is not
computed (UNCOMPUTED_SIGNATURE). The User-Agent is the client's own string, built once when the client is made.
Left alone: clients of another endpoint (a real service's signature is checked), S3's clients (their payload
hash header has meaning to S3), and every non-SigV4 signer.

Pinned: applied only to localstack-core 4.14.0, where the factory's post-creation hook was read; clients made
before it applies keep botocore's own work. SCONES_INTERNAL_CLIENT_REQUESTS=0 turns it off (e.g. to measure the
difference). Its status (clients changed) is in GET /_scones/executor.
"""
from __future__ import annotations

import datetime
import functools

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.exceptions import NoCredentialsError

from scones.harness.lambda_executor import pinned
from scones.settings import INTERNAL_CLIENT_REQUESTS as INTERNAL_CLIENT_REQUESTS_ENV

UNCOMPUTED_SIGNATURE = "0" * 64
SIGNED_AS_PAYLOAD = frozenset({"s3", "s3control"})   # their X-Amz-Content-SHA256 says how to read the body


class FixedUserAgent:
    """Stands in for a client's botocore UserAgentString: the string it built once, which the request gets when
    botocore builds it (BaseClient._convert_to_request_dict), so nothing rebuilds it when the request is made."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent

    def to_string(self) -> str:
        return self.user_agent


class ScopeOnlySigV4Auth(SigV4Auth):
    """A SigV4 signer that writes the headers a SigV4 signature has, without computing the signature."""

    def add_auth(self, request) -> None:
        if self.credentials is None:
            raise NoCredentialsError()
        request.context["timestamp"] = datetime.datetime.now(datetime.timezone.utc).strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)   # X-Amz-Date, X-Amz-Security-Token, as SigV4Auth
        signed_headers = "host;x-amz-date;x-amz-security-token" if self.credentials.token else "host;x-amz-date"
        request.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.scope(request)}, "
                                            f"SignedHeaders={signed_headers}, Signature={UNCOMPUTED_SIGNATURE}")


def lighten(client) -> bool:
    """Make `client`'s requests skip the signature's computation and the User-Agent's rebuilding; False if left alone."""
    from botocore.crt.auth import CrtSigV4Auth  # botocore's CRT signer needs awscrt, which LocalStack's venv has
    from localstack.aws.connect import get_service_endpoint

    if client.meta.service_model.service_name in SIGNED_AS_PAYLOAD:
        return False
    if get_service_endpoint() not in (client.meta.endpoint_url or ""):
        return False
    signer = client._request_signer
    get_auth_instance = signer.get_auth_instance

    @functools.wraps(get_auth_instance)
    def scope_only(signing_name, region_name, signature_version=None, request_credentials=None, **kwargs):
        auth = get_auth_instance(signing_name, region_name, signature_version, request_credentials, **kwargs)
        if type(auth) in (SigV4Auth, CrtSigV4Auth):
            return ScopeOnlySigV4Auth(auth.credentials, signing_name, region_name)
        return auth

    signer.get_auth_instance = signer.get_auth = scope_only
    built = client._user_agent_creator
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.unregister(f"request-created.{service_id}", built.rebuild_and_replace_user_agent_handler)
    client._user_agent_creator = FixedUserAgent(built.to_string())
    return True


def _install() -> None:
    from localstack.aws.connect import InternalClientFactory

    post_hook = InternalClientFactory._get_client_post_hook

    @functools.wraps(post_hook)
    def lightened_post_hook(self, client):
        client = post_hook(self, client)
        if lighten(client):
            with PATCH.lock:
                PATCH.state["clients"] += 1
        return client

    InternalClientFactory._get_client_post_hook = lightened_post_hook


PATCH = pinned.Patch("Internal client requests (no SigV4 computation nor User-Agent rebuild between LocalStack's "
                     "services)", INTERNAL_CLIENT_REQUESTS_ENV, _install, clients=0)
apply = PATCH.apply
status = PATCH.status
