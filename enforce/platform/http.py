"""One JSON-over-HTTP client shape for pict-rs, Lemmy and Mastodon.

Errors become :class:`PlatformError` with a message an admin can act on: the system, the
call, the status and the platform's own error code, never a secret (tokens travel in
headers, which are never put into messages). A call is tried again only when it cannot
have been carried out twice: the connection failed before the request went out, or a read
(GET) was answered 502/503/504 (a proxy in front of it, or it is starting).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from pipeline.errors import PictguardError
from pipeline.retry import retrying

log = logging.getLogger(__name__)

_RETRY_STATUS = (502, 503, 504)


class PlatformError(PictguardError):
    """A call to pict-rs, Lemmy or Mastodon failed; the message says which and why."""

    # The platform, not the configuration, failed (most of the time): retry later.
    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class _Transient(PictguardError):
    """A gateway error on a read, tried again (never leaves this module)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.ConnectError, _Transient))


def error_code(response: httpx.Response) -> str | None:
    """The platform's error code: pict-rs ``code``, Lemmy and Mastodon ``error``."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return None
    if isinstance(body, dict):
        for name in ("code", "error"):
            if isinstance(body.get(name), str):
                return str(body[name])
    return None


class JsonApi:
    """Requests to one platform: a base URL, default headers, a timeout, a few retries."""

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        attempts: int = 3,
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            headers=dict(headers or {}),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request (retried when it cannot have been carried out); any status returns."""
        try:
            async for attempt in retrying(
                _retryable, first_s=0.5, max_s=4.0, max_attempts=self.attempts
            ):
                with attempt:
                    response = await self.client.request(
                        method,
                        path,
                        params=params,
                        json=json_body,
                        data=data,
                        files=files,
                        headers=headers,
                    )
                    # A gateway's 502/503/504 may come after the platform acted: only reads
                    # are sent again on them.
                    if method == "GET" and response.status_code in _RETRY_STATUS:
                        raise _Transient(response)
                    return response
        except _Transient as exc:
            return exc.response
        except httpx.TimeoutException as exc:
            raise PlatformError(
                f"{self.system} did not answer {method} {path} in time ({exc.__class__.__name__})"
            ) from None
        except httpx.HTTPError as exc:
            raise PlatformError(
                f"{self.system} at {self.base_url} cannot be reached for {method} {path}: "
                f"{exc.__class__.__name__}: {exc}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - retrying always ends above

    def failure(self, what: str, response: httpx.Response, hint: str = "") -> PlatformError:
        """A :class:`PlatformError` for an unexpected answer."""
        code = error_code(response)
        text = f"{self.system} {what} failed: HTTP {response.status_code}"
        if code:
            text += f" ({code})"
        if hint:
            text += f" — {hint}"
        return PlatformError(text, status=response.status_code, code=code)


def json_of(response: httpx.Response, system: str, what: str) -> Any:
    """The JSON body, or a :class:`PlatformError` saying the answer was not JSON."""
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        raise PlatformError(
            f"{system} {what}: the answer is not JSON (HTTP {response.status_code}); is the "
            "URL the API's?"
        ) from None
