"""IAM on LocalStack's gateway: a request signed with an assumed role's credentials must be allowed by that role.

LocalStack 4.14's free edition checks no permissions. This handler, added to the gateway at start
(`install_iam_checks`, a `localstack.hooks.on_infra_start` hook registered by harness/localstack.py, like
the sagemaker-runtime route), does what AWS does for such a request:

- the access key id of the request's signature is looked up among the sessions LocalStack's STS issued
  (moto's `sts_backends[...].assumed_roles`, which LocalStack's AssumeRole fills; LocalStack's own Lambda
  service assumes each function's execution role, session named after the function, and hands those
  credentials to the environment); keys that belong to no session (the user's own `test`/admin keys,
  LocalStack's internal clients) are not checked, as an administrator's;
- the operation becomes IAM checks (actions.py), evaluated (evaluate.py) against the role's inline and
  attached policies as stored in LocalStack's IAM and, for S3, the bucket policy;
- a denial is answered with the service's access-denied error and AWS's message, and recorded: LocalStack's
  log and `GET /_scones/iam/denials` list it;
- GetObject/HeadObject of a missing key by a caller without s3:ListBucket on the bucket answers 403, not 404
  (Amazon S3 API reference, GetObject, "Permissions").

A role that LocalStack's IAM does not hold (an ARN written by hand; the local deploy makes deploy/iam.py's roles) is not
checked, with one warning per role. SCONES_IAM=enforce (default) | report (log, let through) | off.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.http import Response
from localstack.runtime import hooks
from localstack.utils.aws.request_context import extract_access_key_id_from_auth_header
from rolo import Request, route

from scones.harness.iam.actions import Check, Where, checks_for
from scones.harness.iam.evaluate import PolicyError, Principal, Result, denial_message, evaluate
from scones.harness.iam.evaluate import Request as IamRequest
from scones.harness.iam.names import DEFAULT_MODE, DENIALS_PATH, MODE_ENV, MODES

LOG = logging.getLogger(__name__)

# (error code, HTTP status) of an access denied error, per service as AWS answers it; JSON-protocol
# services answer AccessDeniedException with 400, query-protocol ones AccessDenied with 403.
DENIED_AS = {
    "s3": ("AccessDenied", 403), "lambda": ("AccessDeniedException", 403),
    "sts": ("AccessDenied", 403), "iam": ("AccessDenied", 403), "sns": ("AuthorizationError", 403),
    "cloudwatch": ("AccessDenied", 403),
}
DEFAULT_DENIED_AS = ("AccessDeniedException", 400)
KEPT_DENIALS = 1000


@dataclass(frozen=True)
class Session:
    principal: Principal
    role_name: str


@lru_cache(maxsize=512)
def _parsed(document: str) -> dict:
    return json.loads(document)


class IamChecks:
    """The request handler, with the session cache and the denials it recorded."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._sessions: dict[str, Session | None] = {}
        self._warned_roles: set[str] = set()
        self.denials: deque[dict[str, Any]] = deque(maxlen=KEPT_DENIALS)
        self._lock = threading.Lock()

    # --- who is calling -----------------------------------------------------------------------

    def session(self, access_key_id: str, account_id: str, partition: str) -> Session | None:
        if access_key_id in self._sessions:
            return self._sessions[access_key_id]
        from moto.sts.models import sts_backends

        found = None
        assumed = sts_backends[account_id][partition].get_assumed_role_from_access_key(access_key_id)
        if assumed is not None:
            role_name = assumed.role_arn.split("/")[-1]
            found = Session(Principal(assumed.arn, assumed.account_id, assumed.role_arn), role_name)
        if assumed is not None or not access_key_id.startswith(("ASIA", "LSIA")):
            self._sessions[access_key_id] = found      # a key's session never changes once issued
        return found

    def policies(self, session: Session, partition: str) -> list[dict] | None:
        from moto.iam.models import iam_backends

        try:
            role = iam_backends[session.principal.account_id][partition].get_role(session.role_name)
        except Exception:   # moto's NoSuchEntity (IAMNotFoundException)
            return None
        documents = [_parsed(document) for document in role.policies.values()]
        for policy in role.managed_policies.values():
            default = next(version for version in policy.versions if version.is_default)
            documents.append(_parsed(default.document))
        return documents

    # --- the handler --------------------------------------------------------------------------

    def __call__(self, chain: HandlerChain, context: RequestContext, response: Response) -> None:
        if context.service is None or context.operation is None:
            return
        try:
            self.check(context)
        except CommonServiceException:
            raise
        except PolicyError as error:
            # IAM refuses such a document at PutRolePolicy; LocalStack stored it: say so instead of guessing.
            code, status = DENIED_AS.get(context.service.service_name, DEFAULT_DENIED_AS)
            raise CommonServiceException(code, f"IAM check: a policy of the caller's role is malformed: {error}",
                                         status_code=status, sender_fault=True) from None
        except Exception:
            # A request our table cannot read (a parameter shape we did not foresee) must not become a 500.
            LOG.exception("IAM check of %s %s failed: not checked", context.service.service_name, context.operation.name)

    def check(self, context: RequestContext) -> None:
        assert context.service is not None and context.operation is not None
        access_key_id = extract_access_key_id_from_auth_header(context.request.headers)
        if not access_key_id:
            return
        session = self.session(access_key_id, context.account_id, context.partition)
        if session is None:
            return
        service, operation = context.service.service_name, context.operation.name
        where = Where(context.region, context.account_id, context.partition)
        checks = checks_for(service, operation, context.service_request or {}, where)
        if not checks:
            return
        policies = self.policies(session, context.partition)
        if policies is None:
            if session.role_name not in self._warned_roles:
                self._warned_roles.add(session.role_name)
                LOG.warning("IAM: role %s is not in LocalStack's IAM: calls with its credentials are not checked",
                            session.role_name)
            return
        for check in checks:
            result, message = self._decide(check, session, policies, service, context)
            if result is not None:
                self._deny(service, operation, session, check, message)
        if service == "s3" and operation in ("GetObject", "HeadObject"):
            self._missing_key_needs_list_bucket(context, session, policies, where)

    def _decide(self, check: Check, session: Session, policies: list[dict], service: str,
                context: RequestContext) -> tuple[Result | None, str]:
        request = IamRequest(check.action, check.resource, session.principal, check.context)
        result = evaluate(request, policies, self._resource_policies(service, context))
        if result.allowed:
            return None, ""
        shown = IamRequest(check.action, f'"{check.resource}"' if service == "s3" else check.resource, session.principal)
        return result, denial_message(shown, result)

    def _resource_policies(self, service: str, context: RequestContext) -> list[dict]:
        bucket = (context.service_request or {}).get("Bucket") if service == "s3" else None
        if not bucket:
            return []
        from localstack.services.s3.models import s3_stores

        owner = s3_stores[context.account_id][context.region].global_bucket_map.get(bucket, context.account_id)
        found = s3_stores[owner][context.region].buckets.get(bucket)
        policy = getattr(found, "policy", None)
        return [_parsed(policy) if isinstance(policy, str) else policy] if policy else []

    def _missing_key_needs_list_bucket(self, context: RequestContext, session: Session, policies: list[dict],
                                       where: Where) -> None:
        params = context.service_request
        check = Check("s3:ListBucket", f"arn:{where.partition}:s3:::{params['Bucket']}")
        result, message = self._decide(check, session, policies, "s3", context)
        if result is None:
            return
        from localstack.services.s3.models import s3_stores

        bucket = s3_stores[context.account_id][context.region].buckets.get(params["Bucket"])
        if bucket is not None and bucket.objects.get(params["Key"]) is None:
            self._deny("s3", context.operation.name, session, check, message)

    def _deny(self, service: str, operation: str, session: Session, check: Check, message: str) -> None:
        record = {"principal": session.principal.arn, "role": session.role_name, "service": service,
                  "operation": operation, "action": check.action, "resource": check.resource,
                  "message": message, "enforced": self.mode == "enforce"}
        with self._lock:
            self.denials.append(record)
        LOG.warning("IAM %s: %s", "denied" if self.mode == "enforce" else "would deny (report mode)", message)
        if self.mode == "enforce":
            code, status = DENIED_AS.get(service, DEFAULT_DENIED_AS)
            raise CommonServiceException(code, message, status_code=status, sender_fault=True)

    def listing(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "denials": list(self.denials)}


class DenialsRoute:
    """`GET /_scones/iam/denials` (a router needs an object that is not itself a handler)."""

    def __init__(self, checks: IamChecks) -> None:
        self.checks = checks

    @route(DENIALS_PATH, methods=["GET"])
    def list_denials(self, request: Request) -> dict:
        return self.checks.listing()


def mode_from_environment() -> str:
    mode = (os.environ.get(MODE_ENV) or DEFAULT_MODE).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={os.environ.get(MODE_ENV)!r}: expected one of {', '.join(MODES)}")
    return mode


@hooks.on_infra_start()
def install_iam_checks() -> None:
    """Put the checks first among LocalStack's custom service request handlers (before the sagemaker-runtime
    forwarder, which answers and stops the chain), unless SCONES_IAM=off."""
    mode = mode_from_environment()
    if mode == "off":
        LOG.info("IAM checks are off (%s=off)", MODE_ENV)
        return
    from localstack.aws.handlers import serve_custom_service_request_handlers
    from localstack.services.edge import ROUTER

    checks = IamChecks(mode)
    ROUTER.add(DenialsRoute(checks))
    serve_custom_service_request_handlers.handlers.insert(0, checks)
    LOG.info("IAM checks installed (%s=%s)", MODE_ENV, mode)
