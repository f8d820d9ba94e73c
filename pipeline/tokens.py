"""Checking shared secrets sent by callers: one constant-time comparison, one Bearer parser.

The scan API's client tokens, the admin token and the webhook tokens all go through here, so
an empty secret can never match and no comparison leaks timing.
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def secret_matches(given: str | None, secret: SecretStr | str | None) -> bool:
    """Whether ``given`` is ``secret``, compared in constant time. An unset or empty secret
    matches nothing (empty means unset: it must close an endpoint, never open it)."""
    expected = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not expected:
        return False
    return hmac.compare_digest((given or "").encode(), expected.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for another scheme or
    no header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
