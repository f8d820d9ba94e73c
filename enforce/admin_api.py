"""Admin HTTP endpoints (allow, block, restore, resume, status, audit) behind a bearer token.

The token is ``enforce.admin_token``, separate from any token that scan clients use. With
no token configured every endpoint answers 503, so the admin surface is off by default.

Where the work happens is the backend's choice: in this process (``pictguard serve``, where
the API and enforce share one state), or, in distributed mode, in the enforce role, reached
over the bus (:mod:`enforce.admin_bus`), so that there is one guard, one set of held
actions and one audit trail, enforce's.

A target that names an object must be media pictguard knows: a file under a folder it
watches or may act on (``storage.allowed_locations``), a bucket it may act on, or an
object it has a verdict for. Paths are resolved (symlinks too) before that check, and a
path spelled with ``..`` is refused outright. The CLI on the host may name any file (it
only reads a file it never scanned), but over HTTP the admin token must not become a way to
read, hash or move arbitrary files of the API's host or objects of other buckets — with or
without ``dry_run``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr

from enforce.admin import AdminError, EnforceAdmin, NotFound
from enforce.cli import ContextFactory
from pipeline.events import AdminOperation, StoreKind
from pipeline.storage import StorageError
from pipeline.storage.locations import UnsafePath, check_path_text
from pipeline.tokens import secret_matches


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


class AdminUnavailable(AdminError):
    """The enforce role did not answer an admin request (distributed mode): 503."""


class AdminBackend(Protocol):
    """Runs one admin operation and returns its JSON result; raises :class:`NotFound`,
    :class:`AdminError`, :class:`AdminUnavailable` or ``StorageError``."""

    async def __call__(
        self, operation: AdminOperation, arguments: dict[str, Any], dry_run: bool
    ) -> Any: ...


async def perform(admin: EnforceAdmin, operation: str, arguments: dict[str, Any]) -> Any:
    """Run ``operation`` with ``arguments`` (the endpoints' bodies) on ``admin``.

    The one dispatch for both ways an admin request reaches enforce: in this process
    (:func:`local_backend`) and over the bus (:mod:`enforce.admin_bus`). Returns plain JSON.
    """
    a = arguments
    target = a.get("target")
    if isinstance(target, str):
        await _known_media(admin, target)
    result: Any
    if operation == "status":
        result = await admin.status()
    elif operation == "resume":
        done = await admin.resume(discard=bool(a.get("discard")), reason=str(a.get("reason", "")))
        result = done.as_json()
    elif operation == "allow":
        done = await admin.allow(str(target), reason=a["reason"], author=a["author"])
        result = done.as_json()
    elif operation == "block":
        done = await admin.block(
            str(target), reason=a["reason"], author=a["author"], category=a["category"]
        )
        result = done.as_json()
    elif operation == "restore":
        result = (await admin.restore(str(target), reason=str(a.get("reason", "")))).as_json()
    elif operation == "audit":
        actions = await admin.audit(
            since=a.get("since"),
            decision=a.get("decision"),
            action=a.get("action"),
            outcome=a.get("outcome"),
            limit=int(a.get("limit", 200)),
        )
        result = [x.model_dump(mode="json", exclude_none=True) for x in actions]
    else:
        raise AdminError(f"unknown admin operation {operation!r}")
    # Plain JSON whichever way it travels (datetimes and paths as strings).
    return json.loads(json.dumps(result, default=str))


def local_backend(context: ContextFactory) -> AdminBackend:
    """Admin operations on the enforce state this process opened (single process, CLI)."""

    async def call(operation: AdminOperation, arguments: dict[str, Any], dry_run: bool) -> Any:
        async with context() as ctx, EnforceAdmin(ctx, dry_run=dry_run) as admin:
            return await perform(admin, operation, arguments)

    return call


def admin_router(
    context: ContextFactory | None,
    *,
    token: str | SecretStr | None,
    prefix: str = "/admin",
    backend: AdminBackend | None = None,
) -> APIRouter:
    """The admin endpoints, for the API to ``include_router``.

    ``context`` opens what one request needs (wrap a running process's objects with
    :func:`enforce.admin.static_context`); ``backend`` instead sends each request elsewhere
    (distributed mode: to the enforce role over the bus, :class:`enforce.admin_bus.AdminClient`);
    ``token`` is the admin bearer token.
    """
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    bearer = HTTPBearer(auto_error=False)
    if backend is None:
        if context is None:
            raise ValueError("admin_router needs a context or a backend")
        backend = local_backend(context)
    call = backend

    # A default, not Annotated[...]: string annotations cannot see this local ``bearer``.
    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not secret:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "admin API disabled: set PICTGUARD_ENFORCE__ADMIN_TOKEN to enable it",
            )
        given = credentials.credentials if credentials is not None else ""
        if not secret_matches(given, secret):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong admin token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix=prefix, tags=["admin"], dependencies=[Depends(authorised)])

    async def run(operation: AdminOperation, arguments: dict[str, Any], dry_run: bool) -> Any:
        try:
            return await call(operation, arguments, dry_run)
        except NotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except AdminUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        except AdminError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        except StorageError as exc:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None

    @router.get("/enforce/status")
    async def enforce_status() -> dict[str, Any]:
        """Policy, guard state, held actions and quarantine warnings."""
        result: dict[str, Any] = await run("status", {}, False)
        return result

    @router.post("/enforce/resume")
    async def enforce_resume(body: ResumeRequest) -> dict[str, Any]:
        """Re-arm the guard and release (or discard) the held actions."""
        args = {"discard": body.discard, "reason": body.reason}
        result: dict[str, Any] = await run("resume", args, body.dry_run)
        return result

    @router.post("/allow")
    async def allow(body: TargetRequest) -> dict[str, Any]:
        """Allowlist an image and restore it from quarantine."""
        args = body.model_dump(exclude={"dry_run"})
        result: dict[str, Any] = await run("allow", args, body.dry_run)
        return result

    @router.post("/block")
    async def block(body: BlockRequest) -> dict[str, Any]:
        """Blocklist an image and act on its known copies."""
        args = body.model_dump(exclude={"dry_run"})
        result: dict[str, Any] = await run("block", args, body.dry_run)
        return result

    @router.post("/restore")
    async def restore(body: TargetRequest) -> dict[str, Any]:
        """Restore quarantined objects named by verdict id, object, key or sha256."""
        args = body.model_dump(exclude={"dry_run", "author"})
        result: dict[str, Any] = await run("restore", args, body.dry_run)
        return result

    @router.get("/audit")
    async def audit(
        since: str | None = None,
        decision: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> list[dict[str, Any]]:
        """Recorded actions, newest first."""
        args = {
            "since": since,
            "decision": decision,
            "action": action,
            "outcome": outcome,
            "limit": limit,
        }
        result: list[dict[str, Any]] = await run("audit", args, False)
        return result

    return router


async def _known_media(admin: EnforceAdmin, target: str) -> None:
    """Refuse an object target that is not media pictguard knows (see the module doc)."""
    text = target.strip()
    if text.startswith("file://") or not text.startswith("s3://"):
        try:
            check_path_text(text)
        except UnsafePath as exc:
            raise AdminError(str(exc)) from None
    ref = admin.parse_target(text)
    if ref is None:
        return  # a sha256 or a verdict id
    if ref.store is StoreKind.FILE:
        path = os.path.join(ref.bucket, ref.key)
        if any(_within(path, root) for root in admin.media_roots()):
            return
    elif admin.ctx.stores.scope.refusal(ref) is None:
        return  # a bucket it may act on (any, while storage.allowed_locations is empty)
    if await admin.records.latest_verdict_for(object_id=ref.id) is not None:
        return
    if await admin.records.quarantined(object_id=ref.id):
        return
    where = (
        "lie under ingest.watch.roots or storage.allowed_locations"
        if ref.store is StoreKind.FILE
        else "be in a bucket of storage.allowed_locations"
    )
    raise AdminError(
        f"{target!r} is not media pictguard knows: over the admin API an object must {where} "
        "or have a verdict; name the image by its sha256 or verdict id, or run the command on "
        "the host (`pictguard allow|block|restore PATH`)"
    )


def _within(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")
