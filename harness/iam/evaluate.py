"""AWS's policy evaluation logic for one account: explicit deny, then allow, else implicit deny.

    decision = evaluate(Request("s3:GetObject", "arn:aws:s3:::b/k", principal=session), [policy])

What it covers, as the IAM User Guide describes it (reference_policies_evaluation-logic.html,
reference_policies_elements_*.html, reference_policies_elements_condition_operators.html):
- identity policies (inline and attached) and resource policies (an S3 bucket policy) of the same
  account: any applicable Deny wins; otherwise an Allow in either kind allows;
- Action/NotAction (case-insensitive), Resource/NotResource (case-sensitive) with `*` and `?`,
  compared as ArnLike compares ARNs: each of the six colon-separated parts on its own, the last
  part holding everything after the fifth colon;
- Principal/NotPrincipal in resource policies ("*", account ids, role and assumed-role ARNs);
- conditions: operators AND, keys AND, values OR; the String*, Numeric*, Date*, Bool, Arn*,
  IpAddress, Null operators, `...IfExists`, and the ForAllValues:/ForAnyValue: set qualifiers.

Not covered (none of our policies uses them): policy variables, permissions boundaries, session
policies, SCPs, cross-account access.

moto's `moto/iam/access_control.py` was the maintained candidate; it does not fit: its wildcard
match treats `.` as a regex dot and knows no `?`, compares actions case-sensitively, evaluates only
StringEquals (a StringLike condition is ignored, so the statement applies) and turns a condition that
does not match into a Deny.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from scones.errors import SconesError

ContextValue = str | bool | int | float | Sequence[str]


class Decision(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit deny"
    IMPLICIT_DENY = "implicit deny"


class PolicyError(SconesError, ValueError):
    """A policy document that IAM would refuse; the message names the statement and element."""


@dataclass(frozen=True)
class Principal:
    """Who calls: an assumed-role session (arn:aws:sts::<acct>:assumed-role/<role>/<session>)."""

    arn: str
    account_id: str
    role_arn: str | None = None   # arn:aws:iam::<acct>:role/<path><name>, for resource policies naming the role

    @classmethod
    def assumed_role(cls, partition: str, account_id: str, role_name: str, session: str, role_path: str = "/") -> Principal:
        return cls(f"arn:{partition}:sts::{account_id}:assumed-role/{role_name}/{session}", account_id,
                   f"arn:{partition}:iam::{account_id}:role{role_path}{role_name}")


@dataclass(frozen=True)
class Request:
    action: str                                   # "s3:GetObject"
    resource: str                                 # an ARN, or "*" for actions without resource types
    principal: Principal | None = None
    context: Mapping[str, ContextValue] = field(default_factory=dict)   # condition keys, e.g. "s3:prefix"


@dataclass(frozen=True)
class Result:
    decision: Decision
    denied_by: str | None = None      # "identity-based" or "resource-based", for an explicit deny

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


# --- wildcards ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = ("." if char == "?" else ".*" if char == "*" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` any one character, nothing else special."""
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def arn_like(pattern: str, arn: str) -> bool:
    """ArnLike: the six colon-separated parts compared one by one, wildcards within each part."""
    if pattern == "*":
        return True
    wanted = pattern.split(":", 5)
    got = arn.split(":", 5)
    if len(wanted) != 6 or len(got) != 6:
        return matches(pattern, arn)     # not an ARN (e.g. "*" resources): a plain wildcard match
    return all(matches(w, g) for w, g in zip(wanted, got))


# --- conditions --------------------------------------------------------------------------------

def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(value: Any) -> float:
    return float(value)


def _date(value: Any) -> datetime:
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _bool(value: Any) -> str:
    return str(value).lower()


def _ip(policy: Any, actual: Any) -> bool:
    return ipaddress.ip_address(str(actual)) in ipaddress.ip_network(str(policy), strict=False)


# operator -> (compare(policy value, request value), negated)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": lambda p, a: str(p) == str(a),
    "StringEqualsIgnoreCase": lambda p, a: str(p).lower() == str(a).lower(),
    "StringLike": lambda p, a: matches(str(p), str(a)),
    "NumericEquals": lambda p, a: _number(a) == _number(p),
    "NumericLessThan": lambda p, a: _number(a) < _number(p),
    "NumericLessThanEquals": lambda p, a: _number(a) <= _number(p),
    "NumericGreaterThan": lambda p, a: _number(a) > _number(p),
    "NumericGreaterThanEquals": lambda p, a: _number(a) >= _number(p),
    "DateEquals": lambda p, a: _date(a) == _date(p),
    "DateLessThan": lambda p, a: _date(a) < _date(p),
    "DateLessThanEquals": lambda p, a: _date(a) <= _date(p),
    "DateGreaterThan": lambda p, a: _date(a) > _date(p),
    "DateGreaterThanEquals": lambda p, a: _date(a) >= _date(p),
    "Bool": lambda p, a: _bool(p) == _bool(a),
    "ArnEquals": lambda p, a: arn_like(str(p), str(a)),   # AWS: ArnEquals and ArnLike behave alike
    "ArnLike": lambda p, a: arn_like(str(p), str(a)),
    "IpAddress": _ip,
    "BinaryEquals": lambda p, a: str(p) == str(a),
}
_NEGATED = {
    "StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike", "NumericNotEquals": "NumericEquals", "DateNotEquals": "DateEquals",
    "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike", "NotIpAddress": "IpAddress",
}


def _operator(name: str) -> tuple[str | None, str, bool, bool]:
    """'ForAnyValue:StringLikeIfExists' -> (set qualifier, base operator, negated, if-exists)."""
    qualifier = None
    if ":" in name:
        qualifier, name = name.split(":", 1)
        if qualifier not in ("ForAnyValue", "ForAllValues"):
            raise PolicyError(f"unknown condition set qualifier {qualifier!r}")
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base = name[: -len("IfExists")] if if_exists else name
    if base == "Null":
        return qualifier, base, False, if_exists
    negated = base in _NEGATED
    base = _NEGATED.get(base, base)
    if base not in _COMPARE:
        raise PolicyError(f"unknown condition operator {name!r}")
    return qualifier, base, negated, if_exists


def _key_matches(operator: str, policy_values: list, context: Mapping[str, ContextValue], key: str) -> bool:
    qualifier, base, negated, if_exists = _operator(operator)
    found = _lookup(context, key)
    if base == "Null":
        # "true": the key must be absent; "false": present.
        return any(_bool(value) == ("true" if found is None else "false") for value in policy_values)
    if found is None:
        # Absent key: a positive operator fails, a negated one holds; IfExists holds; ForAllValues holds.
        return if_exists or negated or qualifier == "ForAllValues"
    actual = _as_list(found)
    compare = _COMPARE[base]

    def one(value: Any) -> bool:
        hit = any(compare(policy, value) for policy in policy_values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(value) for value in actual)
    return any(one(value) for value in actual)     # single-valued keys, and ForAnyValue


def _lookup(context: Mapping[str, ContextValue], key: str) -> ContextValue | None:
    if key in context:
        return context[key]
    lowered = key.lower()           # condition key names are case-insensitive
    for name, value in context.items():
        if name.lower() == lowered:
            return value
    return None


def conditions_hold(condition: Mapping[str, Mapping[str, Any]] | None, context: Mapping[str, ContextValue]) -> bool:
    if not condition:
        return True
    return all(
        _key_matches(operator, _as_list(values), context, key)
        for operator, keys in condition.items()
        for key, values in keys.items()
    )


# --- statements and policies -------------------------------------------------------------------

def _principal_matches(element: Any, principal: Principal | None) -> bool:
    if element == "*":
        return True
    if principal is None or not isinstance(element, dict):
        return False
    names = {principal.arn, principal.account_id, f"arn:{principal.arn.split(':')[1]}:iam::{principal.account_id}:root"}
    if principal.role_arn:
        names.add(principal.role_arn)
    return any(value == "*" or value in names for value in _as_list(element.get("AWS", [])))


def _one_of(statement: Mapping, element: str, where: str) -> tuple[str, list[str]]:
    plain, negated = element, "Not" + element
    if (plain in statement) == (negated in statement):
        raise PolicyError(f"{where}: a statement needs exactly one of {plain} and {negated}")
    name = plain if plain in statement else negated
    return name, [str(value) for value in _as_list(statement[name])]


def statement_applies(statement: Mapping, request: Request, resource_policy: bool = False, where: str = "statement") -> bool:
    """Whether the statement's Action, Resource, Principal and Condition all match the request."""
    name, actions = _one_of(statement, "Action", where)
    hit = any(matches(pattern, request.action, ignore_case=True) for pattern in actions)
    if hit == (name == "NotAction"):
        return False
    name, resources = _one_of(statement, "Resource", where)
    hit = any(arn_like(pattern, request.resource) for pattern in resources)
    if hit == (name == "NotResource"):
        return False
    if resource_policy:
        if "Principal" in statement:
            if not _principal_matches(statement["Principal"], request.principal):
                return False
        elif "NotPrincipal" in statement:
            if _principal_matches(statement["NotPrincipal"], request.principal):
                return False
        else:
            raise PolicyError(f"{where}: a resource policy statement needs Principal or NotPrincipal")
    return conditions_hold(statement.get("Condition"), request.context)


def statements(policy: Mapping | str) -> list[Mapping]:
    import json

    document = json.loads(policy) if isinstance(policy, str) else policy
    if not isinstance(document, dict) or "Statement" not in document:
        raise PolicyError("a policy document is a JSON object with a Statement")
    found = document["Statement"]
    found = found if isinstance(found, list) else [found]
    for index, statement in enumerate(found):
        if not isinstance(statement, dict) or statement.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError(f"statement {index}: Effect must be Allow or Deny")
    return found


def _effects(policies: Iterable[Mapping | str], request: Request, resource_policy: bool) -> tuple[bool, bool]:
    allowed = denied = False
    for number, policy in enumerate(policies):
        for index, statement in enumerate(statements(policy)):
            where = f"policy {number} statement {statement.get('Sid', index)}"
            if statement_applies(statement, request, resource_policy, where):
                if statement["Effect"] == "Deny":
                    return allowed, True
                allowed = True
    return allowed, denied


def evaluate(request: Request, identity_policies: Iterable[Mapping | str],
             resource_policies: Iterable[Mapping | str] = ()) -> Result:
    """Same-account evaluation: an explicit deny anywhere denies; an allow in either kind allows."""
    identity_allows, identity_denies = _effects(identity_policies, request, resource_policy=False)
    if identity_denies:
        return Result(Decision.EXPLICIT_DENY, "identity-based")
    resource_allows, resource_denies = _effects(resource_policies, request, resource_policy=True)
    if resource_denies:
        return Result(Decision.EXPLICIT_DENY, "resource-based")
    if identity_allows or resource_allows:
        return Result(Decision.ALLOW)
    return Result(Decision.IMPLICIT_DENY)


def denial_message(request: Request, result: Result) -> str:
    """AWS's wording of an access denied error (IAM User Guide, troubleshoot_access-denied.html)."""
    who = request.principal.arn if request.principal else "anonymous"
    head = f"User: {who} is not authorized to perform: {request.action} on resource: {request.resource}"
    if result.decision is Decision.EXPLICIT_DENY:
        return f"{head} with an explicit deny in a{'n' if result.denied_by == 'identity-based' else ''} {result.denied_by} policy"
    return f"{head} because no identity-based policy allows the {request.action} action"
