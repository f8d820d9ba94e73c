"""Settings of the review console (section ``enforce.review``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

REVIEWER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_TOKEN_CHARS = 16


class ReviewSettings(BaseModel):
    """The review console at ``/admin/review`` and ``pictguard review``."""

    model_config = ConfigDict(extra="forbid")

    reviewers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Reviewer name → personal sign-in token (16+ characters); the admin token "
        "signs in too, with a name typed at sign-in. In the environment one JSON object: "
        'PICTGUARD_ENFORCE__REVIEW__REVIEWERS=\'{"ana": "…"}\'',
    )
    port: int = Field(
        8090, ge=0, le=65535, description="Port of `pictguard review` (always on 127.0.0.1)"
    )
    session_hours: float = Field(
        12.0, gt=0, le=168, description="A sign-in lasts at most this long"
    )
    idle_minutes: float = Field(
        30.0, gt=0, le=1440, description="A session unused this long is signed out"
    )
    allow_reveal: bool = Field(
        True,
        description="Whether a reviewer may reveal one unblurred image (each reveal is audited); "
        "false hides it for everyone",
    )
    reveal_minutes: float = Field(
        5.0, gt=0, le=60, description="How long a reveal shows the unblurred image"
    )
    secure_cookie: bool | None = Field(
        None,
        description="Mark the session cookie Secure; unset: when the request came over HTTPS "
        "(set true behind a TLS-terminating proxy)",
    )

    @field_validator("reviewers")
    @classmethod
    def _names_and_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        tokens: set[str] = set()
        for name, token in value.items():
            if not REVIEWER_NAME.match(name):
                raise ValueError(
                    f"reviewer name {name!r}: use letters, digits and . _ @ - (at most 64)"
                )
            secret = token.get_secret_value()
            if len(secret) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"the token of reviewer {name!r} is shorter than {MIN_TOKEN_CHARS} "
                    "characters: generate one with `openssl rand -hex 24`"
                )
            if secret in tokens:
                raise ValueError(f"reviewer {name!r} shares a token with another reviewer")
            tokens.add(secret)
        return value
