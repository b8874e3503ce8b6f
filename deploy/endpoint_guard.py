"""Would a request to this endpoint URL reach AWS, or something on this machine or a private network?

The guard judges where the request would really go, as the socket layer would send it: every
numeric spelling of an IPv4 address that `inet_aton` accepts (`127.1`, `2130706433`, `0x7f000001`,
`0177.0.0.1`, `0`), IPv6 (v4-mapped included), a trailing dot, and host names resolved with
getaddrinfo (a name in /etc/hosts or a DNS record pointing at 127.0.0.1). Loopback, unspecified,
private and link-local addresses are refused.

One exception: a name under one of AWS's own DNS suffixes (botocore's partitions.json) may resolve to
a private address, because that is what a VPC interface endpoint with private DNS does; it is refused
only when it resolves to this machine (loopback or unspecified).
"""
from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterable
from urllib.parse import urlsplit

import boto3
from botocore.loaders import create_loader

from scones.deploy.waiting import DeployError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]

# Names that mean "an emulator", whatever they resolve to (localstack's *.localhost.localstack.cloud
# resolves to 127.0.0.1 through public DNS, but a guard must not need the network to say so).
LOCAL_HOSTNAMES = ("localhost", "host.docker.internal")
# The services a deployed stack is used through by `scones run`, `evaluate`, `monitor` and `status`.
RUN_SERVICES = ("sts", "s3", "stepfunctions", "lambda", "sagemaker", "sagemaker-runtime", "cloudwatch", "logs",
                "events", "application-autoscaling")


class LocalEndpointRefused(DeployError):
    """An AWS target's session would send its calls to this machine or a private network instead of AWS."""


@lru_cache(maxsize=1)
def aws_dns_suffixes() -> tuple[str, ...]:
    """Every partition's DNS suffixes (amazonaws.com, api.aws, amazonaws.com.cn, ...), from botocore."""
    partitions = create_loader().load_data("partitions")["partitions"]
    return tuple(sorted({partition["outputs"][key] for partition in partitions
                         for key in ("dnsSuffix", "dualStackDnsSuffix")}))


def literal_address(host: str) -> Address | None:
    """The address a host spelled as a number stands for, as the socket layer reads it; None for a name."""
    host = host.strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))   # 127.1, 2130706433, 0x7f000001, 0177.0.0.1, 0
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def on_this_machine(address: Address) -> bool:
    return address.is_loopback or address.is_unspecified


def not_public(address: Address) -> bool:
    return on_this_machine(address) or address.is_private or address.is_link_local


def resolve(host: str) -> list[str]:
    """The addresses getaddrinfo gives for host; none when it does not resolve (then nothing is reached)."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
    except (OSError, UnicodeError):
        return []


@lru_cache(maxsize=256)
def _resolved(host: str) -> tuple[str, ...]:
    return tuple(resolve(host))


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def is_local_endpoint(url: str, resolver: Resolver | None = None) -> bool:
    """An endpoint on this machine or a private network (an emulator such as LocalStack), not AWS."""
    host = _host(url)
    if host in LOCAL_HOSTNAMES or host.endswith(".localhost") or "localstack" in host:
        return True
    address = literal_address(host)
    if address is not None:
        return not_public(address)
    names = resolver(host) if resolver is not None else _resolved(host)
    addresses = [found for found in map(literal_address, names) if found is not None]
    under_aws = any(host == suffix or host.endswith("." + suffix) for suffix in aws_dns_suffixes())
    judge = on_this_machine if under_aws else not_public
    return any(judge(found) for found in addresses)


def local_endpoints(session: boto3.Session, region: str, services: Iterable[str] = RUN_SERVICES,
                    resolver: Resolver | None = None) -> dict[str, str]:
    """service -> URL of each of this session's clients that would not reach AWS.

    botocore itself resolves the endpoint each client would use (AWS_ENDPOINT_URL and
    AWS_ENDPOINT_URL_<SERVICE>, the profile's endpoint_url and its `services` section, and
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS), so this judges what the calls would really reach.
    """
    urls = {service: session.client(service, region_name=region).meta.endpoint_url for service in services}
    if resolver is None:   # look the names up at once, not one after another (offline each takes a while to fail)
        names = {host for url in urls.values() if (host := _host(url)) and literal_address(host) is None}
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(_resolved, names))
    return {service: url for service, url in urls.items() if is_local_endpoint(url, resolver)}


def refuse_local_endpoints(session: boto3.Session, region: str, services: Iterable[str] = RUN_SERVICES,
                           what: str = "this AWS target's calls", resolver: Resolver | None = None) -> None:
    """Raise LocalEndpointRefused when any of the services' clients would reach a local endpoint."""
    local = local_endpoints(session, region, services, resolver)
    if local:
        where = ", ".join(f"{service} -> {url}" for service, url in local.items())
        profile = session.profile_name or "default"
        raise LocalEndpointRefused(
            f"{what} would go to a local endpoint ({where}), not to AWS: it comes from "
            f"AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> or from endpoint_url in profile {profile!r} (or its "
            f"services section) of the AWS config file; unset it, or set AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true"
        )
