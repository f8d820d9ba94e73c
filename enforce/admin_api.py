"""Admin HTTP endpoints (allow, block, restore, resume, status, audit) behind a bearer token.

The token is ``enforce.admin_token``, separate from any token that scan clients use. With
no token configured every endpoint answers 503, so the admin surface is off by default.

A target that is a file path must be media pictguard knows (a folder it watches, or an
object it has a verdict for): the CLI on the host may name any file, but over HTTP the
admin token must not become a way to read or move arbitrary files of the API's host.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr

from enforce.admin import AdminError, EnforceAdmin, NotFound, object_id_of
from enforce.cli import ContextFactory
from pipeline.storage import StorageError

T = TypeVar("T")


class ResumeRequest(BaseModel):
    """Body of ``POST /admin/enforce/resume``."""

    discard: bool = Field(False, description="Drop the held actions instead of performing them")
    reason: str = ""
    dry_run: bool = False


class TargetRequest(BaseModel):
    """Body of ``POST /admin/allow`` and ``POST /admin/restore``."""

    target: str = Field(description="sha256, s3://bucket/key, a file path, or a verdict id")
    reason: str = ""
    author: str = "admin-api"
    dry_run: bool = False


class BlockRequest(TargetRequest):
    """Body of ``POST /admin/block``."""

    category: Literal["csam", "nsfw"] = "csam"


def admin_router(
    context: ContextFactory,
    *,
    token: str | SecretStr | None,
    prefix: str = "/admin",
) -> APIRouter:
    """The admin endpoints, for the API to ``include_router``.

    ``context`` opens what one request needs (wrap a running process's objects with
    :func:`enforce.admin.static_context`); ``token`` is the admin bearer token.
    """
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    bearer = HTTPBearer(auto_error=False)

    # A default, not Annotated[...]: string annotations cannot see this local ``bearer``.
    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not secret:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "admin API disabled: set PICTGUARD_ENFORCE__ADMIN_TOKEN to enable it",
            )
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong admin token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix=prefix, tags=["admin"], dependencies=[Depends(authorised)])

    async def run(
        dry_run: bool, work: Callable[[EnforceAdmin], Awaitable[T]], target: str | None = None
    ) -> T:
        try:
            async with context() as ctx, EnforceAdmin(ctx, dry_run=dry_run) as admin:
                if target is not None:
                    await _known_media(admin, target)
                return await work(admin)
        except NotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except AdminError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        except StorageError as exc:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None

    @router.get("/enforce/status")
    async def enforce_status() -> dict[str, Any]:
        """Policy, guard state, held actions and quarantine warnings."""
        return await run(False, lambda admin: admin.status())

    @router.post("/enforce/resume")
    async def enforce_resume(body: ResumeRequest) -> dict[str, Any]:
        """Re-arm the guard and release (or discard) the held actions."""
        result = await run(
            body.dry_run, lambda admin: admin.resume(discard=body.discard, reason=body.reason)
        )
        return result.as_json()

    @router.post("/allow")
    async def allow(body: TargetRequest) -> dict[str, Any]:
        """Allowlist an image and restore it from quarantine."""
        result = await run(
            body.dry_run,
            lambda admin: admin.allow(body.target, reason=body.reason, author=body.author),
            body.target,
        )
        return result.as_json()

    @router.post("/block")
    async def block(body: BlockRequest) -> dict[str, Any]:
        """Blocklist an image and act on its known copies."""
        result = await run(
            body.dry_run,
            lambda admin: admin.block(
                body.target, reason=body.reason, author=body.author, category=body.category
            ),
            body.target,
        )
        return result.as_json()

    @router.post("/restore")
    async def restore(body: TargetRequest) -> dict[str, Any]:
        """Restore quarantined objects named by verdict id, object, key or sha256."""
        result = await run(
            body.dry_run, lambda admin: admin.restore(body.target, reason=body.reason), body.target
        )
        return result.as_json()

    @router.get("/audit")
    async def audit(
        since: str | None = None,
        decision: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> list[dict[str, Any]]:
        """Recorded actions, newest first."""
        actions = await run(
            False,
            lambda admin: admin.audit(
                since=since, decision=decision, action=action, outcome=outcome, limit=limit
            ),
        )
        return [a.model_dump(mode="json", exclude_none=True) for a in actions]

    return router


async def _known_media(admin: EnforceAdmin, target: str) -> None:
    """Refuse a file path that is neither under ``ingest.watch.roots`` nor a scanned object."""
    object_id = object_id_of(target.strip())
    if object_id is None or not object_id.startswith("file://"):
        return
    path = Path(object_id.removeprefix("file://"))
    roots = [root.expanduser().resolve() for root in admin.ctx.media_roots]
    if any(path.is_relative_to(root) for root in roots):
        return
    if await admin.records.latest_verdict_for(object_id=object_id) is not None:
        return
    if await admin.records.quarantined(object_id=object_id):
        return
    raise AdminError(
        f"{target!r} is not media pictguard knows: over the admin API a file must lie under "
        "ingest.watch.roots or have a verdict; name the image by its sha256 or verdict id, "
        "or run the command on the host (`pictguard allow|block|restore PATH`)"
    )
