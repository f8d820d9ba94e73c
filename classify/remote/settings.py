"""Settings of remote classifier workers: ``classify.remote`` (the server that leases scan
requests to workers) and ``classify.worker`` (a worker pulling from that server)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.settings import MIN_SECRET_LENGTH, StrongSecret


class WorkerProtocol(StrEnum):
    """How a worker talks to the server."""

    PICTGUARD = "pictguard"  # `pictguard run classify --remote`: batches, full findings
    FEDI_SAFETY = "fedi-safety"  # an existing fedi-safety worker: GET/POST /api/v1/pop


class WorkerAccount(BaseModel):
    """One remote worker allowed to classify for this instance."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Names the worker in logs, metrics and verdicts (letters, digits, . _ -)",
    )
    token: StrongSecret = Field(
        description=f"The worker's secret (at least {MIN_SECRET_LENGTH} characters, e.g. "
        "`openssl rand -hex 32`): `Authorization: Bearer` for pictguard workers, the `apikey` "
        "header (PICTRS_SAFETY_APIKEY) for fedi-safety workers. It opens the worker API only"
    )
    protocol: WorkerProtocol = Field(
        WorkerProtocol.PICTGUARD,
        description="pictguard (`pictguard run classify --remote`) or fedi-safety (the "
        "/api/v1/pop protocol of pictrs-safety)",
    )
    revoked: bool = Field(
        False,
        description="Refuse this worker (its token stays known so the log says 'revoked'); "
        "`POST /admin/workers/<id>/revoke` does the same at run time until a restart",
    )

    @model_validator(mode="after")
    def _has_token(self) -> WorkerAccount:
        if self.token is None:
            raise ValueError(f"worker {self.id} needs a token (`openssl rand -hex 32`)")
        return self

    @property
    def secret(self) -> str:
        """The token's value (set: checked at start-up)."""
        assert self.token is not None
        return self.token.get_secret_value()


class RemoteSettings(BaseModel):
    """The server side: lease scan requests to remote workers over HTTPS.

    Served on the validate API (``pictguard serve``, ``pictguard run api``): workers only
    make outbound requests, and hold no broker or storage credentials — the server fetches
    each object and ships its bytes.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Serve the worker API and lease scan requests to remote workers"
    )
    local: bool = Field(
        False,
        description="pictguard's own models classify as well: `pictguard serve` runs "
        "classify.classifiers in this process next to the workers (distributed: set it when "
        "`pictguard run classify` replicas share the scan requests); /readyz then does not "
        "wait for a worker. false: the server only checks hash lists and the verdict cache, "
        "and every model verdict comes from a worker",
    )
    workers: list[WorkerAccount] = Field(
        default_factory=list, description="The workers allowed in, each with its own token"
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        description="A worker must answer a leased request within this time, or the request "
        "goes to another worker; above the time one batch takes on the slowest worker",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Leases of one request that may expire unanswered before it gets an error "
        "verdict (an image that crashes every worker must not circle forever)",
    )
    max_batch: int = Field(
        64, gt=0, description="Most requests one lease call hands out (workers ask for less)"
    )
    long_poll_s: float = Field(
        20.0,
        ge=0,
        le=55,
        description="Longest a lease call waits for work before answering empty (below the "
        "idle timeout of reverse proxies, often 60 s)",
    )
    stale_s: float = Field(
        30.0,
        gt=0,
        description="A worker not heard from for this long counts as disconnected (metrics, "
        "/readyz, and no more requests are taken from the bus for it)",
    )
    max_outstanding: int = Field(
        256,
        gt=0,
        description="Scan requests per lane held for remote workers at once (queued or leased)",
    )
    rate_per_s: float = Field(
        50.0,
        gt=0,
        description="Worker API calls per second each worker may make (content downloads of "
        "its leases not counted); beyond: 429 with Retry-After",
    )
    burst: int = Field(100, gt=0, description="Calls a worker may make at once above the rate")
    max_result_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest verdict upload a worker may send"
    )

    @model_validator(mode="after")
    def _distinct(self) -> RemoteSettings:
        ids = [w.id for w in self.workers]
        if len(ids) != len(set(ids)):
            raise ValueError("classify.remote.workers has duplicate ids")
        tokens = [w.secret for w in self.workers]
        if len(tokens) != len(set(tokens)):
            raise ValueError("classify.remote.workers: each worker needs a token of its own")
        if self.enabled and not self.workers:
            raise ValueError(
                "classify.remote.enabled needs at least one entry in classify.remote.workers"
            )
        return self


class WorkerSettings(BaseModel):
    """A remote worker: where it pulls scan requests from, and with which token."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="The instance's API (https://…); `--remote URL` sets it. http:// only to "
        "a loopback address",
    )
    token: StrongSecret = Field(
        None, description="This worker's token (one of the server's classify.remote.workers)"
    )
    ca_file: str | None = Field(
        None, description="CA bundle (PEM) to verify the server with; default: the system's"
    )
    pullers: int = Field(
        2,
        gt=0,
        description="Lease calls kept open at once: one waits for work while another batch "
        "is classified",
    )
    max_batch: int | None = Field(
        None,
        gt=0,
        description="Requests asked for per lease; default: classify.max_batch (size it for "
        "the GPU)",
    )
    timeout_s: float = Field(30.0, gt=0, description="Connect/read timeout of one request")
