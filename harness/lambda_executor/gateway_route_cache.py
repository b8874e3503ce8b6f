"""Throughput patch for LocalStack 4.14.0's gateway: a request that no edge route matches is known as such.

Why: every request LocalStack serves first goes through `aws/handlers/legacy.py::EdgeRouterHandler`,
which matches it against every rule of the edge router (`services/edge.py::ROUTER`: LocalStack's
internal and service routes, host-based ones among them, and ours) with werkzeug's
StateMachineMatcher, before the AWS service handlers get it. Almost none of an execution's requests
(Step Functions, Lambda, S3, the sandboxes' calls) match a rule, and finding that out for the same
host, path and method again each time cost about 20% of LocalStack's GIL time (py-spy:
`StateMachineMatcher.match` under `Router.dispatch`) during concurrent Scones executions. Here the
(host, raw path, method) triples that matched no rule are remembered for the router's current rule
map: such a request raises NotFound at once, as the matcher would; a matched request is dispatched
as before, and any change to the rules (Router.add and Router.remove install a new map) starts over.

Pinned: applied only to localstack-core 4.14.0 (rolo as it pins it), where `Router.dispatch` was read;
SCONES_GATEWAY_ROUTE_CACHE=0 turns it off (e.g. to measure the difference). Its status (hits, misses)
is in GET /_scones/executor.
"""
from __future__ import annotations

from collections import OrderedDict

from scones.harness.lambda_executor import pinned
from scones.settings import GATEWAY_ROUTE_CACHE as ROUTE_CACHE_ENV

MAX_UNMATCHED = 4096   # S3 object paths vary; the least recently seen goes first


def _install() -> None:
    from localstack.services.edge import ROUTER
    from rolo.request import get_raw_path
    from werkzeug.exceptions import NotFound

    unmatched: OrderedDict[tuple[str, str, str], None] = OrderedDict()
    current: dict[str, object] = {"map": None}

    def dispatch(request):
        url_map = ROUTER.url_map
        raw_path = get_raw_path(request)
        key = (request.host, raw_path, request.method)
        with PATCH.lock:
            if current["map"] is not url_map:
                unmatched.clear()
                current["map"] = url_map
            elif key in unmatched:
                unmatched.move_to_end(key)
                PATCH.state["hits"] += 1
                raise NotFound()
        # rolo's Router.dispatch, with the matcher's NotFound remembered (not a handler's own NotFound).
        try:
            handler, args = url_map.bind(server_name=request.host).match(raw_path, method=request.method)
        except NotFound:
            with PATCH.lock:
                if current["map"] is url_map:
                    unmatched[key] = None
                    PATCH.state["misses"] += 1
                    while len(unmatched) > MAX_UNMATCHED:
                        unmatched.popitem(last=False)
            raise
        args.pop("__host__", None)
        return ROUTER.dispatcher(request, handler, args)

    ROUTER.dispatch = dispatch


PATCH = pinned.Patch("Gateway route cache (requests no edge route matches are remembered)", ROUTE_CACHE_ENV, _install,
                     hits=0, misses=0)
apply = PATCH.apply
status = PATCH.status
