"""Who is calling: client id, token and caller IP checked the way pictrs-safety should have.

The caller IP is the TCP peer, unless that peer is a configured trusted proxy, in which case
X-Forwarded-For is walked from the right and the first address that is not a trusted proxy
is the caller. Network checks use real CIDR arithmetic (the old tool's string prefixes
matched ``100.x`` for ``10`` and left out ``172.31``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pipeline.errors import PictguardError
from pipeline.tokens import secret_matches
from validate_api.settings import ApiClient, ApiSettings, IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Unauthorized(PictguardError):
    """401: the message says why, for the log (never sent with secrets)."""


def _in(ip: IpAddress, networks: list[IpNetwork]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(ip.version == net.version and ip in net for net in networks)


def caller_ip(peer: str | None, forwarded_for: str | None, trusted: list[IpNetwork]) -> IpAddress:
    """The address to authorise; X-Forwarded-For counts only behind a trusted proxy."""
    try:
        ip: IpAddress = ipaddress.ip_address(peer or "")
    except ValueError:
        raise Unauthorized(f"unusable peer address {peer!r}") from None
    if not forwarded_for or not _in(ip, trusted):
        return ip
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            raise Unauthorized(f"malformed X-Forwarded-For entry {hop!r}") from None
        if not _in(ip, trusted):
            return ip
    return ip


@dataclass(frozen=True)
class Caller:
    client_id: str
    ip: str


def authorise(
    settings: ApiSettings,
    client_id: str,
    *,
    token: str | None,
    peer: str | None,
    forwarded_for: str | None,
) -> Caller:
    """The authorised caller, or :class:`Unauthorized`."""
    ip = caller_ip(peer, forwarded_for, settings.trusted_proxies)
    client: ApiClient | None = None
    # Compare against every id so the time taken does not reveal which ids exist.
    for candidate in settings.clients:
        if secret_matches(client_id, candidate.id):
            client = candidate
    if client is None:
        raise Unauthorized("unknown client id")
    if client.token is not None and not secret_matches(token, client.token):
        raise Unauthorized(f"client {client.id}: missing or wrong token")
    if client.cidrs and not _in(ip, client.cidrs):
        raise Unauthorized(f"client {client.id}: caller {ip} outside its networks")
    return Caller(client.id, str(ip))
