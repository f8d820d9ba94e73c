"""ed25519 keys for feeds: generate, store, load, sign, verify.

The private key is a PKCS#8 PEM file only the publisher reads (``pictguard feeds
keygen``); the public key travels as one line of text, ``ed25519:<base64 of the 32 raw
bytes>``, which subscribers pass to ``pictguard feeds subscribe --key``.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from pipeline.errors import PictguardError

PREFIX = "ed25519:"


class FeedKeyError(PictguardError, ValueError):
    """A feed key cannot be read or written; the message says which and why."""


def generate(path: Path, *, overwrite: bool = False) -> str:
    """Write a new private key to ``path`` (mode 0600) and its public key to
    ``<path>.pub``; returns the public key text."""
    if path.exists() and not overwrite:
        raise FeedKeyError(
            f"{path} exists: a new key would orphan every subscriber of the feed it signs; "
            "pass --overwrite if that is what you want"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = public_text(key.public_key())
    path.with_name(path.name + ".pub").write_text(public + "\n", encoding="utf-8")
    return public


def load_private(path: Path) -> Ed25519PrivateKey:
    """The private key in ``path`` (from :func:`generate`)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise FeedKeyError(f"cannot read the feed key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise FeedKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FeedKeyError(f"{path} is not an ed25519 key (make one with pictguard feeds keygen)")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64>`` of a public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def parse_public(text: str) -> Ed25519PublicKey:
    """A public key from ``ed25519:<base64>`` (or a file holding that line)."""
    value = text.strip()
    if not value.startswith(PREFIX) and Path(value).is_file():
        value = Path(value).read_text(encoding="utf-8").strip()
    if not value.startswith(PREFIX):
        raise FeedKeyError(
            f"{text[:60]!r} is not a feed public key: expected ed25519:<base64> as "
            "pictguard feeds keygen prints it (or the .pub file it writes)"
        )
    try:
        raw = base64.b64decode(value[len(PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise FeedKeyError(f"{value[:60]!r} is not a valid ed25519 public key: {exc}") from None


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """The base64 signature of ``data``."""
    return base64.b64encode(key.sign(data)).decode()


def verify(key: Ed25519PublicKey, signature: str, data: bytes) -> bool:
    """Whether ``signature`` (base64) is ``key``'s signature of ``data``."""
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
