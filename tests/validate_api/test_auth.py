"""Client, token and CIDR checks, including the cases the old tool got wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from validate_api.auth import Unauthorized, authorise, caller_ip
from validate_api.settings import ApiSettings


def settings(**kw: object) -> ApiSettings:
    base: dict[str, object] = {
        "clients": [
            {"id": "private", "cidrs": ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8"]},
            {"id": "script", "token": "t0ken-0123456789ab"},
            {"id": "IPADDR", "cidrs": ["192.168.1.0/24", "2001:db8::/32"]},
        ],
        "trusted_proxies": ["127.0.0.1/32"],
    }
    base.update(kw)
    return ApiSettings.model_validate(base)


@pytest.mark.parametrize(
    ("ip", "ok"),
    [
        ("10.1.2.3", True),
        ("100.64.0.1", False),  # the old tool's "10" prefix let 100.x in
        ("172.31.255.254", True),  # and left 172.31 out
        ("172.32.0.1", False),
        ("fd12::1", True),
        ("::ffff:10.0.0.7", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("2001:db8::1", False),
    ],
)
def test_private_ranges_by_cidr(ip: str, ok: bool) -> None:
    if ok:
        assert authorise(settings(), "private", token=None, peer=ip, forwarded_for=None)
    else:
        with pytest.raises(Unauthorized):
            authorise(settings(), "private", token=None, peer=ip, forwarded_for=None)


def test_unknown_client_and_tokens() -> None:
    s = settings()
    with pytest.raises(Unauthorized, match="unknown"):
        authorise(s, "nobody", token=None, peer="10.0.0.1", forwarded_for=None)
    with pytest.raises(Unauthorized, match="token"):
        authorise(s, "script", token=None, peer="8.8.8.8", forwarded_for=None)
    with pytest.raises(Unauthorized, match="token"):
        authorise(s, "script", token="t0ken-0123456789ab-", peer="8.8.8.8", forwarded_for=None)
    assert authorise(s, "script", token="t0ken-0123456789ab", peer="8.8.8.8", forwarded_for=None)


def test_ipaddr_mode_authorises_by_caller_ip() -> None:
    s = settings()
    assert authorise(s, "IPADDR", token=None, peer="192.168.1.9", forwarded_for=None)
    assert authorise(s, "IPADDR", token=None, peer="2001:db8:1::5", forwarded_for=None)
    with pytest.raises(Unauthorized):
        authorise(s, "IPADDR", token=None, peer="192.168.2.9", forwarded_for=None)
    with pytest.raises(ValidationError, match="IPADDR"):
        ApiSettings.model_validate({"clients": [{"id": "IPADDR"}]})


def test_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = settings().trusted_proxies
    # Behind the trusted proxy, the right-most untrusted hop is the caller.
    assert str(caller_ip("127.0.0.1", "6.6.6.6, 10.0.0.5", trusted)) == "10.0.0.5"
    # From anyone else the header is ignored: nobody can claim to be 10.x.
    assert str(caller_ip("8.8.8.8", "10.0.0.5", trusted)) == "8.8.8.8"
    with pytest.raises(Unauthorized):
        caller_ip("127.0.0.1", "not-an-ip", trusted)


def test_deadline_refused_at_lemmy_timeout_unless_forced() -> None:
    with pytest.raises(ValidationError, match="10 s thumbnail timeout"):
        ApiSettings(deadline_s=10)
    assert ApiSettings(deadline_s=12, force_deadline=True).deadline_s == 12
