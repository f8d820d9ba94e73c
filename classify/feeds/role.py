"""The feeds loop: pull every subscribed feed on an interval (and publish this
instance's, when ``classify.feeds.publish_to`` is set). ``pictguard serve`` runs it; on
Kafka it is the ``feeds`` role (``pictguard run feeds``), one replica."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from classify.feeds import keys
from classify.feeds.feed import FeedError, Published, open_target, publish
from classify.feeds.settings import FeedsSettings
from classify.feeds.subscriber import FeedSubscriber
from classify.settings import ClassifyConfig
from pipeline.context import RoleContext
from pipeline.hashlists import HashListStore, check_name
from pipeline.retry import pause
from pipeline.storage.locations import parse_location


def publisher(
    ctx: RoleContext[ClassifyConfig],
    settings: FeedsSettings,
    target: str | None = None,
    *,
    name: str | None = None,
    key_file: Path | None = None,
    sources: list[str] | None = None,
) -> Callable[[], Awaitable[Published]]:
    """A function that publishes this instance's feed to ``target`` (default
    ``publish_to``); the name and key are checked now, not at the first publish."""
    where = target or settings.publish_to
    feed_name = name or settings.name
    path = key_file or settings.key_file
    if where is None:
        raise FeedError("publish where? give a folder or s3://bucket/prefix (or set publish_to)")
    if feed_name is None:
        raise FeedError(
            "the feed needs a name subscribers will see: classify.feeds.name "
            "(PICTGUARD_CLASSIFY__FEEDS__NAME=instance-a.example) or --name"
        )
    if path is None:
        raise FeedError(
            "the feed needs a signing key: classify.feeds.key_file or --key-file "
            "(make one with pictguard feeds keygen)"
        )
    key = keys.load_private(Path(path))
    location = parse_location(where)
    store = open_target(location, ctx.stores.for_location)
    return functools.partial(
        publish,
        HashListStore(ctx.tables.hashlists),
        store,
        location.prefix,
        key,
        check_name(feed_name, "feed name"),
        sources=sources or settings.publish_sources,
    )


async def tasks(
    ctx: RoleContext[ClassifyConfig], *, wait: Callable[[], Awaitable[bool]] | None = None
) -> list[Coroutine[Any, Any, None]]:
    """The feeds loop; ``wait`` (default: ``interval_s`` or until stop) separates pulls."""
    settings = ctx.settings.classify.feeds
    subscriber = FeedSubscriber(
        HashListStore(ctx.tables.hashlists),
        timeout_s=settings.timeout_s,
        max_bytes=settings.max_bytes,
    )
    ctx.cleanups.push_async_callback(subscriber.close)
    also = publisher(ctx, settings) if settings.publish_to else None
    if wait is None:
        wait = functools.partial(pause, ctx.stop, settings.interval_s)
    return [subscriber.run(ctx.stop, wait, also=also)]
