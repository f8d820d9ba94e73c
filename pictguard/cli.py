"""The ``pictguard`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pictguard.settings import Settings, load_settings
from pipeline.errors import PictguardError
from pipeline.logs import setup_logging
from pipeline.settings import SettingsError, secret_values
from pipeline.state.shared import SharedTables

if TYPE_CHECKING:
    from pictguard.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(
    name="pictguard",
    help="Keep CSAM and unwanted sexual content out of fediverse image stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

console = Console()
err_console = Console(stderr=True)


class EventLoop(StrEnum):
    AUTO = "auto"
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


@dataclass
class Options:
    config: Path | None = None
    debug: bool = False
    event_loop: EventLoop = EventLoop.AUTO

    def settings(self, **overrides: Any) -> Settings:
        settings = load_settings(self.config, **overrides)
        setup_logging(settings.log, debug=self.debug, secrets=secret_values(settings))
        return settings


# Set by the root callback; the role commands mounted below read it the same way.
_options: ContextVar[Options | None] = ContextVar("pictguard_options", default=None)


def options(ctx: typer.Context | None = None) -> Options:
    return _options.get() or Options()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML settings file", envvar="PICTGUARD_CONFIG"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Verbose logs and tracebacks")] = False,
    event_loop: Annotated[
        EventLoop,
        typer.Option(
            "--event-loop",
            help="auto: uvloop where installed (faster HTTP and bus I/O), else asyncio's own",
            envvar="PICTGUARD_EVENT_LOOP",
        ),
    ] = EventLoop.AUTO,
) -> None:
    ctx.obj = Options(config=config, debug=debug, event_loop=event_loop)
    _options.set(ctx.obj)


def admin_error(exc: BaseException) -> PictguardError | None:
    """``exc`` if its message tells the admin what to fix; for a group of concurrent
    failures (a task group), the first one, when every one of them is such an error."""
    if isinstance(exc, BaseExceptionGroup):
        found = [admin_error(e) for e in exc.exceptions]
        return found[0] if all(found) else None
    return exc if isinstance(exc, PictguardError) else None


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on: uvloop when chosen or (auto) installed; None is asyncio's."""
    if choice is EventLoop.ASYNCIO:
        return None
    try:
        import uvloop
    except ImportError:
        if choice is EventLoop.UVLOOP:
            raise typer.BadParameter("uvloop is not installed", param_hint="--event-loop") from None
        return None
    return uvloop.new_event_loop


def run_async(opts: Options, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; pictguard's own errors become one clear line and their exit status."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(opts.event_loop)) as runner:
            return runner.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 — the admin gets one line, --debug the rest
        if opts.debug:
            traceback.print_exc()
        known = admin_error(exc)
        if known is not None:
            err_console.print(f"[bold red]error:[/] {known}", highlight=False, soft_wrap=True)
            raise typer.Exit(known.exit_code) from None
        err_console.print(
            f"[bold red]error:[/] unexpected {exc.__class__.__name__}: {exc} "
            "(run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def load(ctx: typer.Context | None, **overrides: Any) -> tuple[Options, Settings]:
    opts = options(ctx)
    try:
        return opts, opts.settings(**overrides)
    except SettingsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def scan(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="s3://bucket, s3://bucket/prefix or a folder")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; touch nothing")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the checkpoint of an interrupted scan")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Scan a bucket or folder end to end in this process and print a summary."""
    from pictguard.scan import run_scan

    opts, settings = load(ctx)
    if dry_run:
        settings.enforce.dry_run = True
    show_progress = sys.stderr.isatty() and not as_json
    progress = Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>8.1f} obj/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show_progress,
    )
    task = progress.add_task("scan", total=None, rate=0.0)

    def listed(n: int) -> None:
        current = progress.tasks[0].total or 0
        progress.update(task, total=current + n)

    def done(n: int) -> None:
        elapsed = progress.tasks[0].elapsed or 0.0
        progress.update(task, completed=n, rate=n / elapsed if elapsed else 0.0)

    with progress:
        summary = run_async(
            opts, run_scan(settings, target, resume=not restart, on_listed=listed, on_done=done)
        )
    print_summary(summary, settings, as_json=as_json)
    if not summary.completed:
        raise typer.Exit(1)


def print_summary(summary: Any, settings: Settings, *, as_json: bool) -> None:
    from pipeline.events import Decision

    if as_json:
        out = {
            "target": summary.target,
            "scanned": summary.scanned,
            "clean": summary.decisions[Decision.ALLOW],
            "flagged": summary.flagged,
            "flag_csam": summary.decisions[Decision.FLAG_CSAM],
            "flag_nsfw": summary.decisions[Decision.FLAG_NSFW],
            "errors": summary.decisions[Decision.ERROR],
            "actions": dict(summary.actions),
            "elapsed_s": round(summary.elapsed_s, 3),
            "startup_s": round(summary.startup_s, 3),
            "objects_per_s": round(summary.rate, 2),
            "dry_run": settings.enforce.dry_run,
            "guard_trip": summary.guard_trip,
            "held": summary.held,
            "items": [
                {
                    "object": v.object.id if v.object else None,
                    "decision": v.decision.value,
                    "reason": v.reason.value if v.reason else None,
                    "matched": v.matched,
                    "action": a.action.value if a else None,
                    "outcome": a.outcome.value if a else None,
                }
                for v, a in summary.notable
            ],
        }
        console.print_json(json.dumps(out))
        return
    table = Table(title=f"pictguard scan of {summary.target}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("scanned", str(summary.scanned))
    table.add_row("clean", str(summary.decisions[Decision.ALLOW]))
    table.add_row(
        "flagged",
        f"{summary.flagged} (csam {summary.decisions[Decision.FLAG_CSAM]}, "
        f"nsfw {summary.decisions[Decision.FLAG_NSFW]})",
    )
    table.add_row("errors", str(summary.decisions[Decision.ERROR]))
    actions = ", ".join(f"{k} {v}" for k, v in sorted(summary.actions.items())) or "none"
    table.add_row("actions", actions + (" (dry run)" if settings.enforce.dry_run else ""))
    table.add_row("elapsed", f"{summary.elapsed_s:.2f} s (+ {summary.startup_s:.1f} s start-up)")
    table.add_row("objects/s", f"{summary.rate:.1f}")
    console.print(table)
    if summary.notable:
        detail = Table(title="flagged and failed objects")
        for col in ("object", "decision", "why", "action", "outcome"):
            detail.add_column(col)
        for verdict, action in summary.notable[:50]:
            why = verdict.matched or (verdict.reason.value if verdict.reason else "")
            if verdict.detail and verdict.decision is Decision.ERROR:
                why = f"{why}: {verdict.detail}"[:80]
            detail.add_row(
                verdict.object.id if verdict.object else verdict.request_id,
                verdict.decision.value,
                why,
                action.action.value if action else "-",
                action.outcome.value if action else "-",
            )
        console.print(detail)
        if len(summary.notable) > 50:
            console.print(f"… and {len(summary.notable) - 50} more (see `pictguard audit`)")


@app.command("run")
def run_role_cmd(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="ingest, classify, enforce or api")],
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            help="classify only: pull scan requests from this instance's API over HTTPS "
            "(a remote worker: no Kafka, no storage access; token in "
            "PICTGUARD_CLASSIFY__WORKER__TOKEN); default: classify.worker.url",
        ),
    ] = None,
) -> None:
    """Run one role as its own process on Kafka (distributed mode) until SIGTERM."""
    from pictguard.processes import run_remote_worker, run_role
    from pictguard.roles import ROLES

    if role not in ROLES:
        err_console.print(f"[bold red]error:[/] unknown role {role!r}: choose {', '.join(ROLES)}")
        raise typer.Exit(2)
    if remote is not None and role != "classify":
        err_console.print("[bold red]error:[/] --remote is for `pictguard run classify` only")
        raise typer.Exit(2)
    opts, settings = load(ctx)
    if role == "classify":
        remote = remote or settings.classify.worker.url
    if remote is not None:
        run_async(opts, run_remote_worker(settings, remote))
        return
    run_async(opts, run_role(settings, role))


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run everything in this process: validate API, classify, enforce and ingest sources."""
    from pictguard.processes import run_serve

    opts, settings = load(ctx)
    run_async(opts, run_serve(settings))


@app.command()
def backfill(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="s3://bucket, s3://bucket/prefix or a folder")],
    restart: Annotated[bool, typer.Option("--restart", help="Ignore the checkpoint")] = False,
    since: Annotated[
        str | None, typer.Option(help="Only objects modified since: 7d, 12h or an ISO date")
    ] = None,
    prefix: Annotated[
        list[str] | None, typer.Option(help="List these prefixes (repeatable), in parallel")
    ] = None,
    parallel: Annotated[int | None, typer.Option(help="Prefixes listed at once")] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="At most this many scan requests per second")
    ] = None,
) -> None:
    """Publish a bucket or folder listing to Kafka as scan requests (resumable)."""
    from ingest.pacing import Progress as ListingProgress
    from pictguard.processes import run_backfill
    from pipeline.timeparse import parse_since

    opts, settings = load(ctx)
    options: dict[str, Any] = {
        "prefixes": prefix or None,
        "parallel": parallel,
        "rate_limit": rate_limit,
    }
    if since:
        try:
            options["since"] = parse_since(since)
        except ValueError as exc:
            err_console.print(f"[bold red]error:[/] --since {since!r}: {exc}")
            raise typer.Exit(2) from None
    progress = Progress(
        TextColumn("[bold]publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f} obj/s"),
        TextColumn("ETA {task.fields[eta]}"),
        console=err_console,
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task("backfill", total=None, rate=0.0, eta="?")

    def update(p: ListingProgress) -> None:
        eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
        progress.update(task, completed=p.produced, total=p.total, rate=p.rate, eta=eta)

    with progress:
        n = run_async(
            opts, run_backfill(settings, target, resume=not restart, on_progress=update, **options)
        )
    console.print(f"published {n} scan requests to {settings.topic('scan-requests.bulk')}")


@app.command()
def reconcile(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="s3://bucket, s3://bucket/prefix or a folder")],
) -> None:
    """Enqueue objects changed since the last run that have no verdict (run it from cron)."""
    from pictguard.processes import run_reconcile_once

    opts, settings = load(ctx)
    n = run_async(opts, run_reconcile_once(settings, target))
    console.print(f"reconcile of {target}: {n} objects without a verdict enqueued")


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create pictguard's Kafka topics (partitions and retention from settings)."""
    from pipeline.bus.kafka import create_topics

    opts, settings = load(ctx)
    created = run_async(opts, create_topics(settings.kafka))
    for name in created:
        console.print(f"created {name}")
    if not created:
        console.print("all topics already exist")


@contextlib.asynccontextmanager
async def _admin_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Bus, stores, state and tables for one admin command, per ``storage.backend``."""
    from pictguard.runtime import open_runtime
    from pipeline.context import Mode

    mode = Mode.DISTRIBUTED if settings.storage.backend == "kafka" else Mode.SINGLE
    async with open_runtime(settings, mode=mode) as rt:
        await rt.start_tables()
        try:
            yield rt
        finally:
            await rt.aclose()


def _mount_role_commands() -> None:
    """Commands owned by the roles: hash lists and models (classify), admin flows (enforce)."""
    from classify.cli import register as register_classify
    from enforce.admin import EnforceContext
    from enforce.cli import register as register_enforce

    def root_settings() -> Settings:
        return load(None)[1]

    @contextlib.asynccontextmanager
    async def tables() -> AsyncIterator[SharedTables]:
        async with _admin_runtime(root_settings()) as rt:
            yield rt.tables

    @contextlib.asynccontextmanager
    async def enforce_context() -> AsyncIterator[EnforceContext]:
        settings = root_settings()
        async with _admin_runtime(settings) as rt:
            yield EnforceContext(
                settings,
                rt.stores,
                rt.state,
                rt.bus,
                rt.tables.hashlists,
                media_roots=settings.ingest.watch.roots,
            )

    register_classify(app, tables, lambda: root_settings().classify)
    register_enforce(app, enforce_context)


_mount_role_commands()


def main() -> None:
    logging.captureWarnings(True)
    app()


if __name__ == "__main__":
    main()
