"""A time- and size-bounded window of notifications already turned into scan requests.

Every store delivers notifications at least once, and an admin may point two paths at
pictguard (a Kafka target and a webhook). An object is recognised by
``(bucket, key, version or eTag)``; where the store gives more, it is used:

- AWS and MinIO ``sequencer`` orders writes to one key (hex, compared after right-padding
  with zeros): a sequencer not above the last one seen for the key is a repeat or a stale
  event, and a higher one is a new write, scanned even when the bytes are the same (the
  object may have been deleted and uploaded again).
- Ceph and B2 ``eventId`` names one event across redeliveries.

The window is remembered only after the scan requests are acknowledged by the bus, so a
failed produce never hides the retry. It lives in memory: after a restart a redelivered
notification is scanned again, which costs a verdict-cache hit, not a model run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ingest.sources.common import ObjectEvent


def _seq_norm(sequencer: str) -> str:
    return sequencer.strip().upper()


def sequencer_after(new: str, old: str) -> bool:
    """Whether sequencer ``new`` is later than ``old`` (AWS rule: right-pad, then compare)."""
    a, b = _seq_norm(new), _seq_norm(old)
    width = max(len(a), len(b))
    return a.ljust(width, "0") > b.ljust(width, "0")


def _digest(*parts: str) -> bytes:
    # 16-byte digests instead of the names themselves: a window of 100,000 objects then
    # takes tens of megabytes, not hundreds. A collision (2^-128) would only delay a scan
    # until reconciliation.
    return hashlib.blake2b(
        "\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


def object_token(bucket: str, key: str) -> bytes:
    """The token of a bucket and key, whatever their version."""
    return _digest("k", bucket, key)


@dataclass(frozen=True, slots=True)
class Identity:
    """How one notification is recognised when it comes again (as digests)."""

    where: bytes
    object_key: bytes
    event_key: bytes | None = None
    order_key: bytes | None = None
    sequencer: str | None = None

    @classmethod
    def of(cls, event: ObjectEvent) -> Identity:
        where = object_token(event.bucket, event.key)
        if event.version_id:
            version = _digest("v", event.bucket, event.key, event.version_id)
        else:
            version = _digest("e", event.bucket, event.key, event.etag or "")
        return cls(
            where=where,
            object_key=version,
            event_key=_digest("id", event.bucket, event.event_id) if event.event_id else None,
            # Versioned objects are told apart by version id; ordering across them says
            # nothing about whether one was scanned.
            order_key=where if event.sequencer and not event.version_id else None,
            sequencer=event.sequencer,
        )

    def tokens(self) -> tuple[bytes, ...]:
        return (self.object_key,) if self.event_key is None else (self.object_key, self.event_key)


class DedupeWindow:
    """Remembers identities for ``ttl_s`` seconds, at most ``max_entries`` of each kind.

    Not thread-safe; one event loop owns it.
    """

    def __init__(
        self,
        ttl_s: float = 600.0,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        # Each maps a token to its expiry (the sequencer too, for ordered keys); insertion
        # order is expiry order because the TTL is fixed, so expiring pops from the front.
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._sequencers: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        # Object token -> expiry of its removal mark: what was seen before is void.
        self._removed: OrderedDict[bytes, float] = OrderedDict()
        # Identity tokens being produced right now, shared by every source using this
        # window, so that two concurrent deliveries of one object produce it once.
        self.inflight: dict[bytes, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._seen) + len(self._sequencers) + len(self._removed)

    def is_repeat(self, ident: Identity) -> bool:
        """Whether a notification with ``ident`` was already turned into a scan request."""
        if self.ttl_s <= 0:
            return False
        self._expire(self._clock())
        if ident.order_key is not None and ident.sequencer is not None:
            last = self._sequencers.get(ident.order_key)
            if last is not None:
                # The sequencer decides alone: a higher one is a new write of the key.
                return not sequencer_after(ident.sequencer, last[0])
        removed = self._removed.get(ident.where)
        for token in ident.tokens():
            expiry = self._seen.get(token)
            # Same TTL everywhere: a later expiry means remembered after the removal.
            if expiry is not None and (removed is None or expiry > removed):
                return True
        return False

    def remember(self, ident: Identity) -> None:
        """Record ``ident`` as scanned (call after the bus acknowledged its request)."""
        if self.ttl_s <= 0:
            return
        expiry = self._clock() + self.ttl_s
        for token in ident.tokens():
            self._seen.pop(token, None)
            self._seen[token] = expiry
        if ident.order_key is not None and ident.sequencer is not None:
            last = self._sequencers.get(ident.order_key)
            if last is None or sequencer_after(ident.sequencer, last[0]):
                self._sequencers.pop(ident.order_key, None)
                self._sequencers[ident.order_key] = (ident.sequencer, expiry)
        self._trim()

    def forget_object(self, bucket: str, key: str) -> None:
        """Void what is known about ``bucket``/``key`` (it was removed).

        A removal ends the object's story: the same bytes uploaded again later must be
        scanned again, so its eTag may not suppress that upload.
        """
        if self.ttl_s <= 0:
            return
        where = object_token(bucket, key)
        self._sequencers.pop(where, None)
        self._removed.pop(where, None)
        self._removed[where] = self._clock() + self.ttl_s
        self._trim()

    def _expire(self, now: float) -> None:
        for entries in (self._seen, self._removed):
            while entries:
                token, expiry = next(iter(entries.items()))
                if expiry > now:
                    break
                del entries[token]
        while self._sequencers:
            token, (_, expiry) = next(iter(self._sequencers.items()))
            if expiry > now:
                break
            del self._sequencers[token]

    def _trim(self) -> None:
        for entries in (self._seen, self._sequencers, self._removed):
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
