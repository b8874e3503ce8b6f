"""Traffic to our own servers on this machine: never through a proxy, never waiting long.

A company laptop's HTTP_PROXY / HTTPS_PROXY would otherwise send loopback requests to the proxy:
urllib reads them through `getproxies()`, botocore through `get_environ_proxies()`, and both skip the
proxy only for hosts NO_PROXY lists (urllib's `proxy_bypass_environment`). So:

- `get`/`request` here use an opener with an empty ProxyHandler: the environment is not read at all;
- `CLIENT_CONFIG` gives a botocore client no proxies (a client given `proxies` never reads the
  environment: botocore's EndpointCreator only calls get_environ_proxies when proxies is None);
- `exempt_loopback()` adds the loopback hosts to NO_PROXY / no_proxy, so that every client of this
  process and of the processes it starts (LocalStack, the endpoint server), whose clients we do not all
  build, skips the proxy for this machine; `environment()` is the same for one child's environment.
"""
from __future__ import annotations

import json
import os
import urllib.request
from typing import Any, Mapping, MutableMapping

from botocore.config import Config

HOSTS = ("127.0.0.1", "localhost", "::1")
TIMEOUT_S = 5.0
# A client of a local service: no proxy whatever the environment says.
CLIENT_CONFIG = Config(proxies={})

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(url: str, data: bytes | None = None, *, method: str | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of one request to a server of ours; HTTP errors raise urllib's HTTPError as usual."""
    prepared = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    with _OPENER.open(prepared, timeout=timeout) as reply:
        return reply.status, reply.read()


def get(url: str, timeout: float = TIMEOUT_S) -> tuple[int, bytes]:
    return request(url, timeout=timeout)


def get_json(url: str, timeout: float = TIMEOUT_S) -> Any:
    return json.loads(get(url, timeout)[1])


def exempt_loopback(environ: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Add the loopback hosts to environ's NO_PROXY and no_proxy (default: this process's, so its children
    inherit it) and return it. Traffic to any other host goes where it went before."""
    listed = [host.strip() for name in ("NO_PROXY", "no_proxy") for host in environ.get(name, "").split(",")
              if host.strip()]
    environ["NO_PROXY"] = environ["no_proxy"] = ",".join(dict.fromkeys([*listed, *HOSTS]))
    return environ


def environment(inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of inherited (default: this process's environment) for a child process, loopback exempted."""
    return dict(exempt_loopback(dict(os.environ if inherited is None else inherited)))
