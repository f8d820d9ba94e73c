"""Subscriptions to other instances' feeds: recorded, pulled, verified, applied.

A subscription (``pictguard feeds subscribe``) and its progress are ``meta:`` records in
the hash-list table (:mod:`pipeline.hashlists`), so the CLI, ``pictguard serve`` and, on
Kafka, the ``feeds`` role all see the same ones:

- ``meta:feed-subscriptions``: every subscription (URL, public key, trust), one record the
  loop reads with one lookup per interval — written by the CLI only;
- ``meta:feed-status:<name>``: what was applied (sequence, bytes and their sha256) and the
  last pull's outcome — written by the subscriber only.

Applying a feed writes its entries with the source ``feed:<name>``: under
``feed:<name>:<key>`` for a source trusted to block (they match at once), under
``pending:<name>:<key>`` for one trusted for review (they match once an admin accepts
them). A ``remove`` deletes both. Entries are written before the progress record, so a
pull interrupted halfway is applied again, harmlessly, from where it stood.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from classify.feeds import keys
from classify.feeds.feed import FEED_FILE, SIG_SUFFIX, Feed, FeedError, check
from pipeline.errors import PictguardError
from pipeline.events import utcnow
from pipeline.hashlists import HashEntry, HashListStore, check_name, feed_key

log = logging.getLogger(__name__)

Trust = Literal["block", "review"]
SUBSCRIPTIONS = "feed-subscriptions"
STATUS_PREFIX = "feed-status:"


class Subscription(BaseModel):
    """A feed this instance follows."""

    model_config = ConfigDict(extra="ignore")

    name: str
    url: str
    key: str
    trust: Trust
    author: str = ""
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def feed_url(self) -> str:
        return self.url if not self.url.endswith("/") else self.url + FEED_FILE


class FeedStatus(BaseModel):
    """What a subscriber applied of a feed, and how its last pull went."""

    model_config = ConfigDict(extra="ignore")

    name: str
    feed: str = ""  # the name the publisher gives it (its header)
    applied_seq: int = 0
    applied_bytes: int = 0
    applied_sha256: str = ""
    added: int = 0
    removed: int = 0
    last_pull: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None


def default_name(url: str) -> str:
    """A subscription's name from its URL: the host (``instance-a.example``)."""
    host = urlsplit(url).hostname or ""
    return check_name(host, "feed name (give --name)")


def check_url(url: str) -> str:
    """An http(s) URL of a feed file or of the folder holding ``feed.jsonl``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedError(
            f"{url!r} is not a feed URL: give the http(s) address of its feed.jsonl "
            "(or of the folder that holds it, ending in /)"
        )
    return url


_Subscriptions = TypeAdapter(list[Subscription])


async def subscriptions(lists: HashListStore) -> list[Subscription]:
    """Every recorded subscription, by name."""
    value = await lists.get_meta(SUBSCRIPTIONS)
    if value is None:
        return []
    try:
        return sorted(_Subscriptions.validate_json(value), key=lambda s: s.name)
    except ValidationError as exc:
        raise FeedError(
            f"the feed subscriptions record is unreadable ({exc.errors()[0]['msg']}): "
            "subscribe again to rewrite it"
        ) from None


async def _save_subscriptions(lists: HashListStore, subs: list[Subscription]) -> None:
    await lists.put_meta(SUBSCRIPTIONS, _Subscriptions.dump_json(subs))


async def load_status(lists: HashListStore, name: str) -> FeedStatus | None:
    """The progress record of one subscription, if it was pulled."""
    value = await lists.get_meta(STATUS_PREFIX + name)
    if value is None:
        return None
    try:
        return FeedStatus.model_validate_json(value)
    except ValidationError:
        log.warning("feed %s: its progress record is unreadable; starting over", name)
        return None


async def statuses(lists: HashListStore) -> dict[str, FeedStatus]:
    """The progress record of every subscription that has one."""
    found = {}
    for sub in await subscriptions(lists):
        status = await load_status(lists, sub.name)
        if status is not None:
            found[sub.name] = status
    return found


async def pending_counts(lists: HashListStore) -> dict[str, int]:
    """How many entries wait for review, per feed (one pass over the table)."""
    counts: dict[str, int] = {}
    async for entry in lists.entries(pending=True):
        name = entry.feed or ""
        counts[name] = counts.get(name, 0) + 1
    return counts


async def subscribe(
    lists: HashListStore,
    url: str,
    key: str,
    trust: Trust,
    *,
    name: str | None = None,
    author: str = "",
) -> Subscription:
    """Record a subscription (replacing one of the same name: a new URL, key or trust)."""
    keys.parse_public(key)  # refuse a bad key now, not at the first pull
    public = key.strip()
    if not public.startswith(keys.PREFIX):
        public = keys.public_text(keys.parse_public(key))
    sub = Subscription(
        name=check_name(name, "feed name") if name else default_name(check_url(url)),
        url=check_url(url),
        key=public,
        trust=trust,
        author=author,
    )
    subs = await subscriptions(lists)
    old = next((s for s in subs if s.name == sub.name), None)
    if old is not None and old.key != sub.key:
        # Another key means another publisher: what the old one said is not vouched for.
        await lists.delete_meta(STATUS_PREFIX + sub.name)
    await _save_subscriptions(lists, [s for s in subs if s.name != sub.name] + [sub])
    log.info("feed subscribed", extra={"feed": sub.name, "url": sub.url, "trust": trust})
    return sub


async def unsubscribe(lists: HashListStore, name: str, *, keep_entries: bool = False) -> int:
    """Forget a subscription; its entries go too unless ``keep_entries``. Returns how
    many entries were removed."""
    subs = await subscriptions(lists)
    if not any(s.name == name for s in subs):
        raise FeedError(f"no subscription named {name!r} (see pictguard feeds status)")
    await _save_subscriptions(lists, [s for s in subs if s.name != name])
    await lists.delete_meta(STATUS_PREFIX + name)
    removed = 0
    if not keep_entries:
        async for entry in lists.entries(source=f"feed:{name}", pending=None):
            removed += await lists.delete(entry.key)
    log.info("feed unsubscribed", extra={"feed": name, "entries_removed": removed})
    return removed


async def accept(lists: HashListStore, name: str | None, only: set[str] | None = None) -> int:
    """Make pending entries (of feed ``name``, or of every feed; only the keys in ``only``
    when given) match; returns how many."""
    return await _settle(lists, name, only, keep=True)


async def reject(lists: HashListStore, name: str | None, only: set[str] | None = None) -> int:
    """Drop pending entries; the feed sends them again only if it changes them."""
    return await _settle(lists, name, only, keep=False)


async def _settle(
    lists: HashListStore, name: str | None, only: set[str] | None, *, keep: bool
) -> int:
    source = None if name is None else f"feed:{name}"
    done = 0
    pending = [e async for e in lists.entries(source=source, pending=True)]
    for entry in pending:
        if only is not None and entry.key not in only and entry.base_key not in only:
            continue
        if keep:
            await lists.put(entry.model_copy(update={"pending": False}))
        await lists.delete(entry.key)
        done += 1
    return done


# -- pulling ----------------------------------------------------------------------------


Fetch = Callable[[str], Awaitable[bytes]]


class FeedSubscriber:
    """Pulls every subscribed feed, verifies it and applies what is new."""

    def __init__(
        self,
        lists: HashListStore,
        *,
        timeout_s: float = 30.0,
        max_bytes: int = 256 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.lists = lists
        self.max_bytes = max_bytes
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=True, transport=transport
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def pull_all(self) -> dict[str, FeedStatus]:
        """One pull of every subscription; the status of each afterwards."""
        done = {}
        for sub in await subscriptions(self.lists):
            done[sub.name] = await self.pull(sub)
        return done

    async def pull(self, sub: Subscription) -> FeedStatus:
        """Pull one feed; apply it if every check passes, else change nothing and record
        why."""
        status = await load_status(self.lists, sub.name) or FeedStatus(name=sub.name)
        status.last_pull = utcnow()
        try:
            key = keys.parse_public(sub.key)
            # The signature first: the feed read after it is at least as new.
            signature = await self._get(sub.feed_url + SIG_SUFFIX)
            data = await self._get(sub.feed_url)
            feed = check(
                data,
                signature,
                key,
                applied_bytes=status.applied_bytes,
                applied_sha256=status.applied_sha256,
                applied_seq=status.applied_seq,
            )
        except (FeedError, keys.FeedKeyError, httpx.HTTPError, OSError) as exc:
            why = _describe(exc)
            if why != status.last_error:
                log.warning("feed %s not applied: %s", sub.name, why, extra={"url": sub.url})
            status.last_error = why
            await self._save(status)
            return status
        await self._apply(sub, feed, status)
        return status

    async def _apply(self, sub: Subscription, feed: Feed, status: FeedStatus) -> None:
        pending = sub.trust == "review"
        added = removed = queued = 0
        for record in feed.records:
            if record.seq <= status.applied_seq:
                continue
            active = feed_key(sub.name, record.key)
            waiting = feed_key(sub.name, record.key, pending=True)
            if record.op == "remove":
                removed += await self.lists.delete(active)
                await self.lists.delete(waiting)
                continue
            entry = record.entry(sub.name, pending=pending)
            if pending:
                current = await self.lists.get_key(active)
                if current is not None and record.same_entry(current):
                    await self.lists.delete(waiting)
                    continue
                queued += 1
            else:
                await self.lists.delete(waiting)
                added += 1
            await self.lists.put(entry)
        status.feed = feed.header.feed
        status.applied_seq = feed.seq
        status.applied_bytes = len(feed.signed)
        status.applied_sha256 = hashlib.sha256(feed.signed).hexdigest()
        status.added += added
        status.removed += removed
        status.last_success = status.last_pull
        status.last_error = None
        await self._save(status)
        if added or removed or queued:
            log.info(
                "feed %s applied up to seq %d",
                sub.name,
                feed.seq,
                extra={"added": added, "removed": removed, "pending": queued},
            )

    async def _save(self, status: FeedStatus) -> None:
        await self.lists.put_meta(STATUS_PREFIX + status.name, status.model_dump_json().encode())

    async def _get(self, url: str) -> bytes:
        async with self._client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FeedError(f"GET {url} answered {response.status_code}")
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise FeedError(
                        f"{url} is larger than {self.max_bytes} bytes (classify.feeds.max_bytes)"
                    )
                chunks.append(chunk)
            return b"".join(chunks)

    async def run(
        self,
        stop: asyncio.Event,
        wait: Callable[[], Awaitable[bool]],
        *,
        also: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Pull (and run ``also``, the publisher) now and after every ``wait()``, until
        ``wait`` returns True or ``stop`` is set."""
        while not stop.is_set():
            try:
                if also is not None:
                    await also()
                await self.pull_all()
            except PictguardError as exc:  # storage down, a key file gone: next time
                log.warning("feeds: %s", exc)
            if await wait():
                return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"unreachable ({type(exc).__name__}: {exc})"
    return str(exc)


async def pending_entries(lists: HashListStore, name: str | None) -> AsyncIterator[HashEntry]:
    """Entries waiting for review, of one feed or every feed."""
    source = None if name is None else f"feed:{name}"
    async for entry in lists.entries(source=source, pending=True):
        yield entry
