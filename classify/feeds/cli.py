"""``pictguard feeds …``: keys, publishing, subscriptions and the review queue.

The main CLI mounts this with :func:`register`, passing ``open_context()``: an async
context manager yielding a started :class:`~pipeline.context.RoleContext` (hash-list
table, stores, settings) for one command.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from classify.feeds import keys, subscriber
from classify.feeds.feed import Published
from classify.feeds.role import publisher
from classify.feeds.subscriber import FeedStatus, FeedSubscriber, Subscription, Trust
from classify.settings import ClassifyConfig
from pipeline.context import RoleContext
from pipeline.errors import PictguardError
from pipeline.hashlists import HashEntry, HashListStore, check_name

T = TypeVar("T")
OpenContext = Callable[[], AbstractAsyncContextManager[RoleContext[ClassifyConfig]]]

console = Console()
err_console = Console(stderr=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except PictguardError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _author() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def make_feeds_app(open_context: OpenContext) -> typer.Typer:
    """The ``feeds`` command group."""
    app = typer.Typer(
        help="Signed hash-list feeds: share what this instance blocks and allows, follow "
        "other instances'.",
        no_args_is_help=True,
    )

    def lists(ctx: RoleContext[ClassifyConfig]) -> HashListStore:
        return HashListStore(ctx.tables.hashlists)

    @app.command("keygen")
    def keygen(
        path: Annotated[Path, typer.Argument(help="Private key file to write (mode 0600)")],
        overwrite: Annotated[
            bool, typer.Option(help="Replace an existing key (its subscribers are lost)")
        ] = False,
    ) -> None:
        """Make the ed25519 key that signs this instance's feed; prints the public key."""
        try:
            public = keys.generate(path, overwrite=overwrite)
        except keys.FeedKeyError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        console.print(f"private key: {path} (keep it secret; set classify.feeds.key_file)")
        console.print(f"public key, also in {path}.pub — give it to subscribers:", highlight=False)
        typer.echo(public)

    @app.command("publish")
    def publish_cmd(
        target: Annotated[
            str | None,
            typer.Argument(help="Folder or s3://bucket/prefix; default classify.feeds.publish_to"),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Feed name; default classify.feeds.name")
        ] = None,
        key_file: Annotated[
            Path | None, typer.Option(help="Signing key; default classify.feeds.key_file")
        ] = None,
        source: Annotated[
            list[str] | None,
            typer.Option(help="Publish entries of this source (repeatable); default local"),
        ] = None,
    ) -> None:
        """Append what changed in this instance's lists to its feed, and sign it."""

        async def run() -> Published:
            async with open_context() as ctx:
                publish = publisher(
                    ctx,
                    ctx.settings.classify.feeds,
                    target,
                    name=name,
                    key_file=key_file,
                    sources=source,
                )
                return await publish()

        done = _run(run())
        if done.changed:
            console.print(
                f"published {done.added} added and {done.removed} removed entries to "
                f"{done.target} (seq {done.seq})",
                highlight=False,
            )
        else:
            console.print(f"{done.target} is up to date (seq {done.seq})", highlight=False)

    @app.command("subscribe")
    def subscribe_cmd(
        url: Annotated[str, typer.Argument(help="https URL of the feed.jsonl (or its folder/)")],
        key: Annotated[
            str, typer.Option(help="The publisher's public key (ed25519:…) or its .pub file")
        ],
        trust: Annotated[
            str,
            typer.Option(
                help="block: its entries act at once; review: they wait for "
                "`pictguard feeds accept`"
            ),
        ],
        name: Annotated[
            str | None, typer.Option(help="Name shown as the source; default: the URL's host")
        ] = None,
    ) -> None:
        """Follow another instance's feed (pulled every classify.feeds.interval_s)."""
        if trust not in ("block", "review"):
            raise typer.BadParameter("--trust must be block or review")
        level: Trust = "block" if trust == "block" else "review"

        async def run() -> Subscription:
            async with open_context() as ctx:
                return await subscriber.subscribe(
                    lists(ctx), url, key, level, name=name, author=_author()
                )

        sub = _run(run())
        console.print(
            f"subscribed to {sub.name} ({sub.url}), trust {sub.trust}; pulled every "
            "classify.feeds.interval_s by pictguard serve (or the feeds role), or now with "
            "`pictguard feeds pull`",
            highlight=False,
        )

    @app.command("unsubscribe")
    def unsubscribe_cmd(
        name: Annotated[str, typer.Argument(help="Subscription name")],
        keep_entries: Annotated[
            bool, typer.Option(help="Keep the entries it brought (as they are)")
        ] = False,
    ) -> None:
        """Stop following a feed; its entries go too unless --keep-entries."""

        async def run() -> int:
            async with open_context() as ctx:
                return await subscriber.unsubscribe(lists(ctx), name, keep_entries=keep_entries)

        removed = _run(run())
        console.print(f"unsubscribed from {name}; {removed} entries removed", highlight=False)

    @app.command("pull")
    def pull_cmd(
        name: Annotated[str | None, typer.Argument(help="One subscription; default all")] = None,
    ) -> None:
        """Pull subscribed feeds now (what the feeds loop does every interval)."""

        async def run() -> tuple[list[FeedStatus], dict[str, int]]:
            async with open_context() as ctx:
                feeds = ctx.settings.classify.feeds
                puller = FeedSubscriber(
                    lists(ctx), timeout_s=feeds.timeout_s, max_bytes=feeds.max_bytes
                )
                try:
                    subs = await subscriber.subscriptions(lists(ctx))
                    if name is not None:
                        subs = [s for s in subs if s.name == name]
                        if not subs:
                            raise subscriber.FeedError(f"no subscription named {name!r}")
                    pulled = [await puller.pull(s) for s in subs]
                finally:
                    await puller.close()
                return pulled, await subscriber.pending_counts(lists(ctx))

        failed = 0
        pulled, pending = _run(run())
        for status in pulled:
            if status.last_error:
                failed += 1
                console.print(f"{status.name}: not applied: {status.last_error}", highlight=False)
            else:
                console.print(
                    f"{status.name}: applied up to seq {status.applied_seq} "
                    f"({pending.get(status.name, 0)} pending review)",
                    highlight=False,
                )
        if failed:
            raise typer.Exit(1)

    @app.command("status")
    def status_cmd(as_json: Json = False) -> None:
        """Subscriptions, what was applied of each, and why a pull was refused."""

        async def run() -> tuple[list[tuple[Subscription, FeedStatus | None]], dict[str, int]]:
            async with open_context() as ctx:
                subs = await subscriber.subscriptions(lists(ctx))
                states = await subscriber.statuses(lists(ctx))
                pending = await subscriber.pending_counts(lists(ctx))
                return [(s, states.get(s.name)) for s in subs], pending

        rows, pending = _run(run())
        if as_json:
            out = [
                {
                    **sub.model_dump(mode="json"),
                    "status": None if state is None else state.model_dump(mode="json"),
                    "pending": pending.get(sub.name, 0),
                }
                for sub, state in rows
            ]
            typer.echo(json.dumps(out, indent=2))
            return
        table = Table("feed", "trust", "url", "seq", "pending", "last pull", "problem")
        for sub, state in rows:
            when = (
                state.last_pull.strftime("%Y-%m-%d %H:%M:%S") if state and state.last_pull else "-"
            )
            table.add_row(
                sub.name,
                sub.trust,
                sub.url,
                str(state.applied_seq) if state else "-",
                str(pending.get(sub.name, 0)),
                when,
                (state.last_error or "") if state else "not pulled yet",
            )
        console.print(table)
        if any(state is not None and state.last_error for _, state in rows):
            raise typer.Exit(1)

    @app.command("pending")
    def pending_cmd(
        feed: Annotated[str | None, typer.Option(help="One feed only")] = None,
        as_json: Json = False,
    ) -> None:
        """Entries from feeds trusted for review, waiting for an admin."""

        async def run() -> list[HashEntry]:
            async with open_context() as ctx:
                return [e async for e in subscriber.pending_entries(lists(ctx), _name(feed))]

        entries = _run(run())
        if as_json:
            rows = [{"key": e.key, **e.model_dump(mode="json", exclude_none=True)} for e in entries]
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("key", "list", "category", "reason", "time")
        for entry in entries:
            table.add_row(
                entry.key, entry.list, entry.category, entry.reason, entry.created_at.isoformat()
            )
        console.print(table)
        console.print(f"{len(entries)} pending", highlight=False)

    def settle(keep: bool) -> Callable[..., None]:
        verb = "accepted" if keep else "rejected"

        def command(
            keys_: Annotated[
                list[str] | None,
                typer.Argument(metavar="[KEY]...", help="Entry keys (see `feeds pending`)"),
            ] = None,
            feed: Annotated[str | None, typer.Option(help="One feed only")] = None,
            all_: Annotated[bool, typer.Option("--all", help="Every pending entry")] = False,
        ) -> None:
            if not keys_ and not all_:
                raise typer.BadParameter("name entry keys, or give --all")

            async def run() -> int:
                async with open_context() as ctx:
                    action = subscriber.accept if keep else subscriber.reject
                    return await action(lists(ctx), _name(feed), set(keys_) if keys_ else None)

            console.print(f"{verb} {_run(run())} entries", highlight=False)

        return command

    accept_cmd = settle(True)
    accept_cmd.__doc__ = "Let pending feed entries match (they keep the feed as source)."
    app.command("accept")(accept_cmd)
    reject_cmd = settle(False)
    reject_cmd.__doc__ = "Drop pending feed entries."
    app.command("reject")(reject_cmd)
    return app


def _name(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value.removeprefix("feed:"), "feed")
    except PictguardError as exc:
        raise typer.BadParameter(str(exc)) from None


def register(app: typer.Typer, open_context: OpenContext) -> None:
    """Mount ``feeds`` on the main ``pictguard`` app."""
    app.add_typer(make_feeds_app(open_context), name="feeds")
