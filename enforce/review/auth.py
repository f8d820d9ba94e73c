"""Who may review: the admin token (with a name typed at sign-in) or a reviewer's own token.

A sign-in becomes a random session id in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS); the state file keeps only its sha256. Every POST carries the session's CSRF token
(a synchroniser token in each form); the sign-in form, before any session exists, uses a
double-submit cookie instead. Failed sign-ins are counted per client address and refused
for a while after too many.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass

from pydantic import SecretStr

from enforce.review.settings import REVIEWER_NAME, ReviewSettings
from pipeline.errors import PictguardError
from pipeline.tokens import secret_matches

SESSION_COOKIE = "pictguard_review"
LOGIN_COOKIE = "pictguard_review_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# Failed sign-ins allowed per client address in the window before refusing.
MAX_FAILURES = 10
FAILURE_WINDOW_S = 600.0


class SignInRefused(PictguardError, ValueError):
    """The token or name given at sign-in is not accepted; the message may be shown."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, and with what."""

    reviewer: str
    via: str


class Reviewers:
    """The tokens that open the console."""

    def __init__(
        self,
        settings: ReviewSettings,
        admin_token: str | SecretStr | None,
        *,
        local_token: str | None = None,
    ) -> None:
        secret = (
            admin_token.get_secret_value() if isinstance(admin_token, SecretStr) else admin_token
        )
        self._admin = secret or None
        # ``pictguard review`` without any configured token makes one for its own run.
        self._local = local_token or None
        self._reviewers = {n: t.get_secret_value() for n, t in settings.reviewers.items()}

    @property
    def enabled(self) -> bool:
        """Whether any token can sign in at all."""
        return bool(self._admin or self._local or self._reviewers)

    @property
    def needs_name(self) -> bool:
        """Whether a sign-in may need a typed name (the admin or local token)."""
        return bool(self._admin or self._local)

    def identify(self, token: str, name: str) -> Identity:
        """The reviewer a token (and, for a shared token, a typed name) stands for."""
        given = token.strip()
        found: Identity | None = None
        # Compare against every token, so the time taken says nothing about which matched.
        for reviewer, expected in self._reviewers.items():
            if secret_matches(given, expected):
                found = Identity(reviewer, "reviewer token")
        for shared, via in ((self._admin, "admin token"), (self._local, "one-time token")):
            if secret_matches(given, shared) and found is None:
                typed = name.strip()
                if not REVIEWER_NAME.match(typed):
                    raise SignInRefused(
                        "type your name (letters, digits, . _ @ -): the audit records who "
                        "reviewed what"
                    )
                found = Identity(typed, via)
        if found is None:
            raise SignInRefused("wrong token")
        return found


class FailedSignIns:
    """Counts failed sign-ins per client address within a sliding window."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._now = time.monotonic

    def blocked(self, peer: str) -> bool:
        """Whether ``peer`` failed too often lately."""
        recent = self._recent(peer)
        return len(recent) >= MAX_FAILURES

    def failed(self, peer: str) -> None:
        """Count a failure of ``peer``."""
        self._recent(peer).append(self._now())

    def _recent(self, peer: str) -> deque[float]:
        window = self._failures.setdefault(peer, deque())
        cutoff = self._now() - FAILURE_WINDOW_S
        while window and window[0] < cutoff:
            window.popleft()
        return window


def new_secret() -> str:
    """A random, URL-safe secret (session ids, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison that is False when either side is missing."""
    return bool(given) and secret_matches(given, expected)
