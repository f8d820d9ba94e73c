"""Keeping secrets out of what pictguard writes down: log lines and trace spans.

Two nets, both applied to every text: each configured secret (as is, URL-quoted and
JSON-escaped) wherever it appears, and, whatever the configuration, the values of
credential-like URL parameters (``?token=…``, ``X-Amz-Signature=…``) and the password of a
``scheme://user:password@`` URL. The first catches a secret in a message or an exception;
the second a token nobody configured (a client's mistyped one, a presigned URL).

The process's configured secrets are registered once (:func:`register`, from the runtime
that loaded the settings) and read by the log formatter and the span exporter alike.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "[redacted]"
# Shorter values would redact ordinary words; settings refuse tokens under 16 characters.
_MIN_LENGTH = 4

# Query or form parameters whose value is a credential, in any service's spelling.
_PARAMS = (
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "auth",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "passwd",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
)
_QUERY = re.compile(
    r"(?i)((?:^|[?&;])(?:" + "|".join(re.escape(p) for p in _PARAMS) + r")=)[^&#;\s\"'<>]+"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/@\s:]*:)[^/@\s]+@")

# Span attribute and header names whose whole value is a credential.
_SENSITIVE_NAMES = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "api-key",
    "api_key",
    "signature",
)


def sensitive_name(name: str) -> bool:
    """Whether an attribute or header called ``name`` carries a credential as its value."""
    lowered = name.lower()
    return any(word in lowered for word in _SENSITIVE_NAMES)


class Redactor:
    """Replaces secrets in text with :data:`REDACTED`; more can be added while in use."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._variants: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact ``secrets`` (each as is, URL-quoted and JSON-escaped)."""
        new = {
            v
            for s in secrets
            if len(s) >= _MIN_LENGTH
            for v in (s, quote(s, safe=""), json.dumps(s)[1:-1])
        }
        with self._lock:
            # Longest first, so a secret that contains another is replaced whole.
            self._variants = sorted(set(self._variants) | new, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with every known secret and credential-like URL part redacted."""
        for secret in self._variants:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "=" in text:
            text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
        if "@" in text:
            text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        return text


#: The secrets of this process's configuration; see :func:`register`.
configured = Redactor()


def register(secrets: Iterable[str]) -> None:
    """Add the configuration's secrets to what logs and spans redact (idempotent)."""
    configured.add(secrets)
