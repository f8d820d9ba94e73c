"""The worker API on the wire: what a pictguard worker and the server exchange.

    POST /api/v1/workers/lease              {"max": 32, "wait_s": 20}  → Leased
    GET  /api/v1/workers/leases/<id>/content                         → the bytes
    POST /api/v1/workers/verdicts           {"results": [...]}        → Answered

Every call carries ``Authorization: Bearer <worker token>``. A lease is the right, until
``expires_in_s`` from the answer, to send one result for one scan request; the bytes are
fetched per lease (the server reads bulk objects from storage and ships them, so a worker
holds no storage credentials). The fedi-safety protocol (``/api/v1/pop``) is the other way
in, for existing fedi-safety workers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline.events import Findings, Lane

PREFIX = "/api/v1/workers"
LEASE_PATH = f"{PREFIX}/lease"
CONTENT_PATH = PREFIX + "/leases/{lease}/content"
VERDICTS_PATH = f"{PREFIX}/verdicts"
POP_PATH = "/api/v1/pop"


class LeaseCall(BaseModel):
    """Body of ``POST /api/v1/workers/lease``."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(1, ge=1, le=1024, description="Most requests wanted (the server caps it)")
    wait_s: float = Field(
        0.0, ge=0, le=60, description="Wait this long for work before answering empty"
    )


class LeasedJob(BaseModel):
    """One leased scan request: where to fetch its bytes and how to classify them."""

    lease: str = Field(description="Lease id: fetch the bytes and answer under it")
    request_id: str
    lane: Lane
    content_type: str | None = None
    size: int = Field(description="Bytes to expect from the content URL")
    content: str = Field(description="Path of the bytes on this server")


class Leased(BaseModel):
    """Answer of ``POST /api/v1/workers/lease``: possibly no jobs, after ``wait_s``."""

    worker: str = Field(description="The worker id the token belongs to")
    expires_in_s: float = Field(description="Answer each job within this time")
    jobs: list[LeasedJob] = Field(default_factory=list)


class Result(BaseModel):
    """What a worker concluded about one leased request."""

    model_config = ConfigDict(extra="forbid")

    lease: str
    findings: Findings


class ResultsCall(BaseModel):
    """Body of ``POST /api/v1/workers/verdicts``."""

    model_config = ConfigDict(extra="forbid")

    results: list[Result] = Field(max_length=1024)


class Answered(BaseModel):
    """Answer of ``POST /api/v1/workers/verdicts``, per lease."""

    accepted: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(
        default_factory=dict, description="Lease id → why (expired, not_leased, mismatch)"
    )


class FediSafetyResult(BaseModel):
    """Body of ``POST /api/v1/pop``, as fedi-safety's worker sends it."""

    image: str
    is_csam: bool
    is_nsfw: bool = False
