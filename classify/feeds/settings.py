"""Settings of hash-list feeds (section ``classify.feeds``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FeedsSettings(BaseModel):
    """Publishing this instance's hash lists as a signed feed, and pulling the feeds it
    subscribed to (``pictguard feeds subscribe``; the subscriptions live in the hash-list
    table, not here)."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(
        default=300.0,
        gt=0,
        description="How often subscribed feeds are pulled (and, with publish_to, this "
        "instance's feed published)",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for one feed file to download"
    )
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0, description="Largest feed file pulled")
    name: str | None = Field(
        default=None,
        description="This instance's feed name, e.g. its domain (instance-a.example): what "
        "subscribers see as the source of its entries; needed to publish",
    )
    key_file: Path | None = Field(
        default=None,
        description="ed25519 private key that signs this instance's feed (made by "
        "`pictguard feeds keygen`); needed to publish",
    )
    publish_to: str | None = Field(
        default=None,
        description="Folder or s3://bucket/prefix this instance's feed is published to on "
        "every interval (serve it from any static host); unset: only `pictguard feeds "
        "publish` publishes",
    )
    publish_sources: list[str] = Field(
        default_factory=lambda: ["local"],
        description="Whose entries are published: local (added here by admins); add the "
        "labels of imported lists only where their licence allows sharing them",
    )
