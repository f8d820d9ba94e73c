"""The foundation's settings: broker, storage, state, metrics and logs, and how they load.

Each role owns the model of its own section (``classify.settings``, ``enforce.settings``…);
the composition root (``pictguard.settings``) puts them together on top of
:class:`PipelineSettings`. Precedence: environment (``PICTGUARD_<SECTION>__<FIELD>``) over
the YAML file given with ``--config`` over defaults. Invalid values stop start-up with
:class:`SettingsError`, whose message names the setting and the allowed values.
"""

from __future__ import annotations

from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as PydanticSettingsError,
)

from pipeline.errors import PictguardError

ENV_PREFIX = "PICTGUARD_"
_config_file: ContextVar[Path | None] = ContextVar("pictguard_config_file", default=None)


class SettingsError(PictguardError, ValueError):
    """Settings that cannot work; the message is meant for the admin."""


# Tokens that open an endpoint (scan clients, the admin API, bucket webhooks) and keys that
# sign what pictguard sends: anything shorter is guessable or a placeholder left in place.
MIN_SECRET_LENGTH = 16
_SHORT_SECRET = "short_secret"  # noqa: S105 — an error type, not a secret


def _blank_is_unset(value: Any) -> Any:
    """An empty value (``PICTGUARD_…=""``, ``token: ""``) means the secret is not set."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _long_enough(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
        raise PydanticCustomError(
            _SHORT_SECRET,
            "shorter than {minimum} characters; generate one with `openssl rand -hex 32`",
            {"minimum": MIN_SECRET_LENGTH},
        )
    return value


#: A secret that opens or signs something: empty means unset (the endpoint stays off),
#: and one shorter than :data:`MIN_SECRET_LENGTH` stops start-up, naming the setting.
StrongSecret = Annotated[
    SecretStr | None, BeforeValidator(_blank_is_unset), AfterValidator(_long_enough)
]


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSettings(BaseModel):
    """Connection to the Kafka-protocol broker (distributed mode only)."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field(
        "localhost:9092", description="Comma-separated `host:port` list of the brokers"
    )
    topic_prefix: str = Field(
        "pictguard.", description="Prefix of every topic name (`pictguard.verdicts`, …)"
    )
    client_id: str = Field(
        "pictguard", description="Client id the broker sees in its logs and quotas"
    )
    security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="TLS and/or SASL toward the broker"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; needs `sasl_username` and `sasl_password`"
    )
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: str | None = Field(
        None, repr=False, description="SASL password (secret: prefer the environment variable)"
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the broker certificates"
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mutual TLS")
    ssl_check_hostname: bool = Field(True, description="Check the broker certificate's host name")
    partitions: int = Field(
        12,
        ge=1,
        description=(
            "Partitions per topic created by `pictguard topics create`; the most classify "
            "replicas that can share the bulk lane"
        ),
    )
    replication_factor: int = Field(
        1, ge=1, description="Replicas per topic created by `pictguard topics create`"
    )
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="Retention of the non-compacted topics in ms (default: 7 days; -1: forever)",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="How long to wait for the broker at start-up"
    )
    wait_for_broker_s: float = Field(
        0.0,
        ge=0,
        description="At start-up, keep retrying an unreachable broker this long (with backoff, "
        "one log line per attempt) before giving up; 0 fails at once. Roles that may start "
        "before Kafka (Kubernetes, compose) set e.g. 300",
    )
    max_poll_records: int = Field(256, ge=1, description="Most records one consumer poll returns")
    linger_ms: int = Field(0, ge=0, description="Producer linger; produce_many batches anyway")
    max_request_size: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest record produced or fetched; sync uploads travel inline (base64)",
    )
    group_prefix: str = Field(
        "pictguard-", description="Prefix of every consumer group (`pictguard-classify`, …)"
    )
    low_latency_fetch_wait_ms: int = Field(
        10, ge=0, description="Broker wait per fetch on the sync lane and reply topics"
    )
    consumer_overrides: dict[str, int] = Field(
        default_factory=dict,
        description="Extra aiokafka consumer settings, e.g. session_timeout_ms",
    )


class S3Settings(BaseModel):
    """Access to S3-compatible storage; empty keys use the standard AWS credential chain."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph RGW, Garage, B2, R2…); unset: AWS"
    )
    region: str = Field("us-east-1", description="Region for request signing")
    access_key_id: str | None = Field(
        None, description="Access key; unset: the standard AWS credential chain"
    )
    secret_access_key: str | None = Field(
        None, repr=False, description="Secret key (secret: prefer the environment variable)"
    )
    session_token: str | None = Field(
        None, repr=False, description="Session token for temporary credentials"
    )
    path_style: bool = Field(
        False, description="Path-style addressing (`http://host/bucket/key`): MinIO, Ceph, Garage"
    )
    max_pool_connections: int = Field(
        64, ge=1, description="Concurrent HTTP connections to the store"
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout per S3 call")
    read_timeout_s: float = Field(30.0, gt=0, description="Read timeout per S3 call")
    max_attempts: int = Field(3, ge=1, description="Tries per S3 call (retries back off)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        # Caught here, where the error can name the setting; the S3 client would only
        # say "Invalid endpoint" once the first command is already running.
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be a URL such as http://minio:9000 or https://s3.example.org")
        return value


class StorageSettings(BaseModel):
    """Where state lives."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(
        Path(".pictguard"),
        description=(
            "Folder of the SQLite state file `pictguard.sqlite3` (verdicts, checkpoints, "
            "audit, guard state; hash lists and verdict cache in single-process mode)"
        ),
    )
    backend: Literal["sqlite", "kafka"] = Field(
        "sqlite",
        description="Where admin commands (hashes, allow, block, restore) read and write hash "
        "lists and the verdict cache: sqlite for a single-process install, kafka when the "
        "roles run distributed (`pictguard run`)",
    )
    allowed_locations: list[str] = Field(
        default_factory=list,
        description="Buckets (s3://bucket[/prefix]) and folders pictguard may scan and act on; "
        "events, verdicts and admin targets naming anything else are refused. Added to it: "
        "the scan/backfill target given on the command line, ingest.watch.roots and "
        "ingest.reconcile.locations. Empty with nothing to add: any location (webhook and "
        "SQS receivers then refuse to start)",
    )

    @property
    def state_file(self) -> Path:
        return self.state_dir / "pictguard.sqlite3"


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "Port of `/metrics`, `/healthz` and `/readyz` for ingest, classify and enforce "
            "(the API serves them on its own port); unset: each role's own, ingest 9101, "
            "classify 9102, enforce 9103, so roles can share a host; 0 picks a free port. "
            "A role that cannot listen there stops"
        ),
    )
    host: str = Field("0.0.0.0", description="Address the metrics server listens on")


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    format: Literal["console", "json"] = Field(
        "console", description="`console` for people, `json` for log collectors"
    )


class PipelineSettings(BaseSettings):
    """The sections every role shares; ``pictguard.settings.Settings`` adds the roles' own."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def topic(self, name: str) -> str:
        """Full topic name for a short name such as ``verdicts``."""
        return f"{self.kafka.topic_prefix}{name}"

    def group(self, role: str) -> str:
        """Full consumer-group name for a short name such as ``classify``."""
        return f"{self.kafka.group_prefix}{role}"

    @field_validator("kafka", "s3", "storage", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


class SharedConfig(Protocol):
    """What any role may read of the whole configuration; each role's settings module
    extends it with its own section, and the composition root's ``Settings`` fits them all."""

    @property
    def kafka(self) -> KafkaSettings: ...

    @property
    def s3(self) -> S3Settings: ...

    @property
    def storage(self) -> StorageSettings: ...

    def topic(self, name: str) -> str: ...

    def group(self, role: str) -> str: ...


def secret_values(model: BaseModel) -> set[str]:
    """Every secret in ``model``: SecretStr values and fields declared with ``repr=False``
    (passwords, tokens, webhook URLs), so the logs can redact them wherever they appear."""
    found: set[str] = set()
    for name, info in type(model).model_fields.items():
        _collect_secrets(getattr(model, name), not info.repr, found)
    return {value for value in found if value}


def _collect_secrets(value: Any, hidden: bool, found: set[str]) -> None:
    if isinstance(value, SecretStr):
        found.add(value.get_secret_value())
    elif isinstance(value, BaseModel):
        found |= secret_values(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_secrets(item, hidden, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_secrets(item, hidden, found)
    elif hidden and isinstance(value, str):
        found.add(value)


_SECRET_WORDS = ("token", "secret", "password", "key")


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    env = ENV_PREFIX + "__".join(p.upper() for p in loc if not p.isdigit())
    dotted = ".".join(loc)
    msg = str(error["msg"]).removeprefix("Value error, ")
    ctx = error.get("ctx") or {}
    expected = ctx.get("expected")
    if expected:
        msg = f"allowed values are {expected}"
    value = error.get("input")
    # A secret's value never goes into the message (it would reach the log and the shell).
    hidden = (
        isinstance(value, (dict, SecretStr))
        or error["type"] == _SHORT_SECRET
        or bool(loc and any(word in loc[-1] for word in _SECRET_WORDS))
    )
    shown = "" if hidden else f" = {value!r}"
    if not loc:  # a check across sections: its message names the settings itself
        return msg.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {dotted} ({env}); check the spelling against the README"
    return f"invalid setting {dotted} ({env}){shown}: {msg}"


AnySettings = TypeVar("AnySettings", bound=PipelineSettings)


def load_into(cls: type[AnySettings], config: Path | None = None, **overrides: Any) -> AnySettings:
    """Read ``cls`` from the environment and ``config``; raise :class:`SettingsError`."""
    if config is not None:
        if not config.is_file():
            raise SettingsError(f"config file {config} not found")
        try:
            yaml.safe_load(config.read_text())
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {config} is not valid YAML: {exc}") from None
    token = _config_file.set(config)
    try:
        return cls(**overrides)
    except PydanticSettingsError as exc:
        # e.g. a list or dict variable that is not JSON: PICTGUARD_API__CLIENTS='[{"id":…}]'
        raise SettingsError(
            f"{exc} — list and dict settings in the environment are JSON, e.g. "
            "PICTGUARD_API__TRUSTED_PROXIES='[\"10.0.0.0/8\"]'"
        ) from None
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(e) for e in exc.errors())) from None  # type: ignore[arg-type]
    finally:
        _config_file.reset(token)
