"""Settings of the validate_api role (section ``api``).

pict-rs sends no auth header, so the client id in the URL (``/api/v1/scan/<id>``) is what
identifies a caller; a token (``?token=`` or ``Authorization: Bearer``) and CIDR allowlists
narrow it further.

Which decisions pict-rs is told to refuse is ``api.reject``; unset, it follows enforce's
action policy (:func:`rejected_decisions`), so an upload is refused exactly when enforce
would take the same image out of storage.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.events import Decision
from pipeline.policy import DESTRUCTIVE, ActionPolicy
from pipeline.settings import SharedConfig, StrongSecret

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# pict-rs waits 30 s for validation; Lemmy gives thumbnails and proxying only 10 s in all.
PICTRS_TIMEOUT_S = 30.0
LEMMY_THUMBNAIL_TIMEOUT_S = 10.0

Rejectable = Literal["flag_csam", "flag_nsfw"]


def _networks(values: list[str] | str) -> list[IpNetwork]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values]


class ApiClient(BaseModel):
    """One caller: a pict-rs instance or a script."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="The id in /api/v1/scan/<id>; IPADDR means by IP")
    token: StrongSecret = Field(
        None, description="Also required when set (?token= or Bearer); at least 16 characters"
    )
    cidrs: list[IpNetwork] = Field(default_factory=list, description="Allowed caller networks")

    @field_validator("cidrs", mode="before")
    @classmethod
    def _parse_cidrs(cls, value: object) -> object:
        return _networks(value) if isinstance(value, (str, list)) else value  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _ipaddr_needs_cidrs(self) -> ApiClient:
        if self.id == "IPADDR" and not self.cidrs:
            raise ValueError("the IPADDR client authorises by caller IP and needs cidrs")
        if self.token is None and not self.cidrs:
            # An id alone is in every URL pict-rs is given: it must not open the API to all.
            raise ValueError(
                f"client {self.id!r} has neither a token nor cidrs, so anyone who knows the id "
                "could call it: give it cidrs (the networks it calls from) or a token"
            )
        return self


class ApiSettings(BaseModel):
    """The synchronous validation API."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("0.0.0.0", description="Address the API listens on")
    port: int = Field(8080, ge=0, le=65535, description="Port of the API (pict-rs calls it)")
    clients: list[ApiClient] = Field(
        default_factory=list, description="Who may call the API; see the item table below"
    )
    trusted_proxies: list[IpNetwork] = Field(
        default_factory=list,
        description="Peers whose X-Forwarded-For is believed (e.g. the ingress controller)",
    )
    deadline_s: float = Field(8.0, gt=0, description="Answer by then, whatever happens")
    force_deadline: bool = Field(
        False, description="Allow a deadline at or above Lemmy's 10 s / pict-rs's 30 s"
    )
    reject: list[Rejectable] | None = Field(
        None,
        description="Decisions pict-rs is told to refuse (406); the others are accepted (200, "
        "the decision in the JSON) and enforced on the stored object per enforce's policy. "
        "Unset: flag_csam, plus flag_nsfw when enforce.on_flag_nsfw is quarantine or delete",
    )
    on_timeout: Literal["accept", "reject"] = Field(
        "accept",
        description="When no verdict arrives in time (or the broker/classify is down). accept: "
        "the stored object is rescanned from the bucket and enforced there",
    )
    on_error: Literal["accept", "reject"] = Field(
        "accept",
        description="When the upload cannot be classified: corrupt, unsupported or "
        "unscannable type, over a classify limit, model failure (reject: 422)",
    )
    video: Literal["scan", "accept", "reject"] = Field(
        "scan",
        description="Videos, told from the bytes (never the Content-Type): scan samples their "
        "frames like any upload; accept lets them through unscanned; reject answers 415",
    )
    max_body_bytes: int = Field(40 * 1024 * 1024, gt=0, description="Larger bodies get 413")
    max_inflight: int = Field(
        256,
        gt=0,
        description="Uploads in progress, counted from the start of their body; beyond: "
        "api.on_overload",
    )
    on_overload: Literal["accept", "reject"] = Field(
        "reject",
        description="Above max_inflight or max_buffered_bytes. reject: 503 with Retry-After, "
        "pict-rs refuses the upload. accept: 200 unverified, unscanned (pictrs-safety's 'Queue "
        "Full'); the stored object is scanned from storage later",
    )
    max_buffered_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Bytes of upload bodies held in memory across all uploads. Beyond, the "
        "upload still being received that holds the most is answered per api.on_overload (a "
        "stalled big upload gives way to small ones). At least max_body_bytes",
    )
    max_connections: int = Field(
        512,
        gt=0,
        description="Open connections and requests in progress; beyond, new requests get 503 "
        "at once",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's headers must arrive within this of the connection opening "
        "(or of the previous answer); else 408 and the connection is closed (slowloris)",
    )
    body_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A request's body must arrive within this of its headers; else 408 and "
        "the connection is closed. pict-rs sends a whole stored file at once",
    )
    keepalive_timeout_s: int = Field(
        5, gt=0, description="An idle keep-alive connection is closed after this many seconds"
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Request line and headers; larger get 431 and the connection is closed",
    )
    retry_after_s: int = Field(
        2, ge=0, description="`Retry-After` header of the 503 answer when overloaded"
    )
    degraded_after: int = Field(
        5,
        ge=1,
        description="Consecutive uploads without a verdict (timeout, broker or classify "
        "unreachable) before /readyz and pictguard_api_classifier_down say the classifier "
        "path is down (readiness itself stays up)",
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        description="Names this replica's reply topic; unique per replica",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        return _networks(value) if isinstance(value, (str, list)) else value  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _deadline_below_timeouts(self) -> ApiSettings:
        if self.deadline_s >= LEMMY_THUMBNAIL_TIMEOUT_S and not self.force_deadline:
            raise ValueError(
                f"deadline_s={self.deadline_s} is at or above Lemmy's "
                f"{LEMMY_THUMBNAIL_TIMEOUT_S:g} s thumbnail timeout (pict-rs waits "
                f"{PICTRS_TIMEOUT_S:g} s): uploads would fail before pictguard answers; use a "
                "lower value or set api.force_deadline=true"
            )
        ids = [c.id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("api.clients has duplicate ids")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes={self.max_buffered_bytes} is below max_body_bytes="
                f"{self.max_body_bytes}: an upload of the largest allowed size could never be "
                "read; raise PICTGUARD_API__MAX_BUFFERED_BYTES or lower "
                "PICTGUARD_API__MAX_BODY_BYTES"
            )
        return self


def rejected_decisions(
    settings: ApiSettings, policy: ActionPolicy | None = None
) -> frozenset[Decision]:
    """The decisions answered 406: ``api.reject``, or when unset ``flag_csam`` and, if
    enforce's ``policy`` removes nudity from storage (quarantine or delete), ``flag_nsfw``.

    Dry run does not matter here: it decides what enforce does to stored objects, not what
    the instance wants kept out.
    """
    if settings.reject is not None:
        return frozenset(Decision(d) for d in settings.reject)
    rejected = {Decision.FLAG_CSAM}
    if policy is not None and policy.action_for(Decision.FLAG_NSFW) in DESTRUCTIVE:
        rejected.add(Decision.FLAG_NSFW)
    return frozenset(rejected)


class ApiConfig(SharedConfig, Protocol):
    """What the validate API reads of the whole configuration."""

    @property
    def api(self) -> ApiSettings: ...
