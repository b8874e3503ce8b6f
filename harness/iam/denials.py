"""What the gateway denied (harness/iam/gateway.py), read from a running LocalStack for `scones status`, the report
and the pytest plugin's summary. Manager side: no LocalStack imports."""
from __future__ import annotations

import urllib.error
from collections import Counter
from typing import Any

from scones import loopback
from scones.harness.iam.names import DENIALS_PATH

FETCH_TIMEOUT_S = 2.0
SHOWN = 5    # distinct denials a summary names; the count says how many more


def localstack_url_of(target) -> str | None:
    """The LocalStack a loaded local target calls (None: AWS, which enforces IAM itself, or no LocalStack)."""
    if getattr(target, "name", None) != "local":
        return None
    return getattr(getattr(target, "session", None), "default_endpoint_url", None)


def fetch(localstack_url: str, timeout: float = FETCH_TIMEOUT_S) -> dict[str, Any] | None:
    """{"mode": ..., "denials": [...]} from LocalStack; mode "off" when the checks are not installed
    (SCONES_IAM=off answers 404); None when LocalStack does not answer, or not with a listing."""
    try:
        listing = loopback.get_json(f"{localstack_url.rstrip('/')}{DENIALS_PATH}", timeout=timeout)
    except urllib.error.HTTPError as error:
        return {"mode": "off", "denials": []} if error.code == 404 else None
    except (OSError, ValueError):
        return None
    # something else on that port (not our gateway) answers whatever it answers
    return listing if isinstance(listing, dict) and {"mode", "denials"} <= listing.keys() else None


def distinct(denials: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each (principal, action, resource) once, with how often it was denied, most frequent first."""
    counts = Counter((d["principal"], d["action"], d["resource"]) for d in denials)
    first: dict[tuple[str, str, str], dict[str, Any]] = {}
    for denial in denials:
        first.setdefault((denial["principal"], denial["action"], denial["resource"]), denial)
    return [(first[key], count) for key, count in counts.most_common()]


def summary_lines(listing: dict[str, Any] | None) -> list[str]:
    """The lines `scones status` and the pytest summary print: the mode, then each distinct denial."""
    if listing is None:
        return ["IAM checks: cannot be read (LocalStack does not answer with its list of denials)"]
    mode, denials = listing["mode"], listing["denials"]
    if mode == "off":
        return ["IAM checks: off (`scones up --iam enforce` checks each role's calls)"]
    verb = "denied" if mode == "enforce" else "would deny (report mode)"
    if not denials:
        return [f"IAM checks: {mode}, nothing denied"]
    grouped = distinct(denials)
    lines = [f"IAM checks: {mode}, {len(denials)} request(s) {verb}:"]
    for denial, count in grouped[:SHOWN]:
        times = f" ({count}x)" if count > 1 else ""
        lines.append(f"  {denial['service']} {denial['operation']}{times}: {denial['message']}")
    if len(grouped) > SHOWN:
        lines.append(f"  ... and {len(grouped) - SHOWN} more: GET {DENIALS_PATH} lists them all")
    return lines
