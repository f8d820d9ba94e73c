"""The ``pictguard`` command line.

Exit statuses (``pictguard scan`` follows clamscan's convention: 0 nothing found, 1 found):

=====  =====================================================================================
0      done; nothing flagged
1      done; something was flagged (``scan``); or what the command says (``models``: a
       configured classifier has no weights; ``allow``, ``block``, ``restore``: the request
       cannot be carried out as asked)
2      stopped by something the admin must fix: a setting, the store, the state file, the
       broker, a port already in use, a missing package (one line says what to fix);
       ``scan``: the filters skipped every object it listed, so nothing was scanned
3      ``scan``: the blast-radius guard tripped; deletes and quarantines are held
70     an unexpected error (a bug: ``--debug`` shows the traceback)
130    stopped with Ctrl-C (SIGINT); ``scan`` keeps its checkpoint
=====  =====================================================================================

Importing this module stays cheap (``pictguard --help`` answers in well under a second):
settings, stores, models and the roles' own commands are imported when a command runs.
"""

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
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from pipeline.errors import PictguardError

if TYPE_CHECKING:
    from pictguard.runtime import Runtime
    from pictguard.scan import ScanSummary
    from pictguard.settings import Settings

T = TypeVar("T")


class ExitStatus(IntEnum):
    """What the ``pictguard`` process exits with (see the module docstring)."""

    OK = 0
    FLAGGED = 1
    ADMIN_ERROR = 2
    GUARD_HELD = 3
    UNEXPECTED = 70  # EX_SOFTWARE in sysexits.h
    INTERRUPTED = 130


# The roles' own commands (classify: hashes, feeds, models; enforce: audit, allow, block, restore,
# enforce) import numpy, faiss, the S3 client and the notifiers, so they are loaded only
# when one of them runs; ``--help`` lists them with these lines (a test keeps them equal
# to the commands' own help).
ROLE_COMMANDS: dict[str, str] = {
    "models": "List the configured classifiers and whether their weights are present.",
    "audit": "Show what enforcement did, newest first (never shows images).",
    "allow": "Allowlist an image (a false positive) and restore it from quarantine.",
    "block": "Blocklist an image and act on every stored copy pictguard knows of.",
    "restore": "Put a quarantined image back under its original key, byte-identical.",
    "hashes": "Allowlist and blocklist of image hashes.",
    "feeds": "Signed hash-list feeds: share what this instance blocks and allows, follow "
    "other instances'.",
    "enforce": "The blast-radius guard: see why it tripped, release held actions.",
    "review": "Serve the review console on 127.0.0.1 only, over this machine's state.",
    "evidence": "Evidence packages for a report to the authorities (never sent by pictguard).",
}


class RootGroup(TyperGroup):
    """The root command: lists the roles' commands cheaply, loads them to run one."""

    _roles_loaded = False

    # ``ctx`` is typer's click Context (typer ≥ 0.24 bundles its own click).
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return names + [name for name in ROLE_COMMANDS if name not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in ROLE_COMMANDS:
            # A stand-in for the command list of --help; resolve_command loads the real one.
            return TyperCommand(cmd_name, help=ROLE_COMMANDS[cmd_name])
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in ROLE_COMMANDS:
            self.load_role_commands()
        return super().resolve_command(ctx, args)

    def load_role_commands(self) -> None:
        """Add the roles' commands (hashes, models, audit, allow, …) to this group."""
        if self._roles_loaded:
            return
        self._roles_loaded = True
        roles = typer.Typer(pretty_exceptions_enable=False)
        _register_role_commands(roles)
        group = typer.main.get_command(roles)
        assert isinstance(group, TyperGroup)
        for name, command in group.commands.items():
            plain_flags(command)
            self.add_command(command, name)


def plain_flags(command: Any) -> Any:
    """Drop the ``<bool>`` type that typer shows beside every on/off flag in ``--help``."""
    # --help is made on first use and kept: made here, it gets the same treatment.
    help_option = command.get_help_option(typer.Context(command, **command.context_settings))
    for param in [*command.params, help_option]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            plain_flags(sub)
    return command


app = typer.Typer(
    name="pictguard",
    cls=RootGroup,
    help="Keep CSAM and unwanted sexual content out of fediverse image stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

console = Console()
err_console = Console(stderr=True)

# Optional packages by the extra that installs them, for "pip install 'pictguard[…]'".
_EXTRAS = {
    "open_clip": "clip",
    "torch": "clip",
    "torchvision": "clip",
    "moto": "demo",
    "boto3": "demo",
    "opentelemetry": "otlp",
}


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
        from pictguard.settings import load_settings
        from pipeline.logs import setup_logging
        from pipeline.settings import secret_values

        settings = load_settings(self.config, **overrides)
        setup_logging(settings.log, debug=self.debug, secrets=secret_values(settings))
        return settings


# Set by the root callback; the role commands mounted below read it the same way.
_options: ContextVar[Options | None] = ContextVar("pictguard_options", default=None)


def options(ctx: typer.Context | None = None) -> Options:
    return _options.get() or Options()


def _print_version(value: bool) -> None:
    if value:
        from pictguard import __version__

        console.print(f"pictguard {__version__}", highlight=False)
        raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit", callback=_print_version, is_eager=True
        ),
    ] = False,
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


def _missing_package(exc: BaseException) -> str | None:
    """The advice for an optional package that is not installed, if that is the failure."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return None
    return (
        f"the Python package {top!r} is not installed: pip install 'pictguard[{extra}]' "
        "(or use the image that includes it)"
    )


def fail(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as one line (plus the traceback with ``--debug``); the exit status."""
    if debug:
        traceback.print_exception(exc)
    known = admin_error(exc)
    advice = _missing_package(exc)
    if known is not None or advice is not None:
        err_console.print(
            f"[bold red]error:[/] {escape(str(advice or known))}", highlight=False, soft_wrap=True
        )
        return known.exit_code if known is not None else ExitStatus.ADMIN_ERROR
    err_console.print(
        f"[bold red]error:[/] unexpected {exc.__class__.__name__}: {escape(str(exc))} "
        "(run with --debug for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    return ExitStatus.UNEXPECTED


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
    """Run ``coro``; known failures become one clear line and exit status 2."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(opts.event_loop)) as runner:
            return runner.run(coro)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(ExitStatus.INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 — the admin gets one line, --debug the rest
        raise typer.Exit(fail(exc, debug=opts.debug)) from None


def load(ctx: typer.Context | None, **overrides: Any) -> tuple[Options, Settings]:
    from pipeline.settings import SettingsError

    opts = options(ctx)
    try:
        return opts, opts.settings(**overrides)
    except SettingsError as exc:
        message = f"[bold red]error:[/] {escape(str(exc))}"
        err_console.print(message, highlight=False, soft_wrap=True)
        raise typer.Exit(ExitStatus.ADMIN_ERROR) from None


SCAN_HELP = (
    "Scan a bucket or folder end to end in this process and print a summary.\n\n"
    "Exit status: 0 nothing flagged; 1 something flagged; 2 a setting, the store or the "
    "state is wrong (one line says what to fix), or the filters skipped every object "
    "listed; 3 the blast-radius guard held actions; 130 interrupted (run the same command "
    "again to continue)."
)


@app.command(help=SCAN_HELP, short_help=SCAN_HELP.split("\n", 1)[0])
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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
            opts,
            run_scan(
                settings,
                target,
                resume=not restart,
                on_listed=listed,
                on_done=done,
                handle_signals=True,
            ),
        )
    print_summary(summary, settings, as_json=as_json)
    status = scan_exit_status(summary)
    if status is not ExitStatus.OK:
        raise typer.Exit(status)


def _held(summary: ScanSummary) -> tuple[bool, int]:
    """Whether the blast-radius guard is tripped after the scan, and what it holds."""
    return summary.guard_trip is not None or summary.held > 0, summary.held


def scan_exit_status(summary: ScanSummary) -> ExitStatus:
    """0 nothing flagged, 1 flagged, 2 the filters skipped everything, 3 guard held
    actions, 130 interrupted."""
    if summary.interrupted:
        return ExitStatus.INTERRUPTED
    if _held(summary)[0]:
        return ExitStatus.GUARD_HELD
    if summary.flagged:
        return ExitStatus.FLAGGED
    if summary.skipped_everything:
        return ExitStatus.ADMIN_ERROR
    return ExitStatus.OK


def _skip_reasons(summary: ScanSummary) -> str:
    """``remote media (mastodon_media=local) 400, excluded extension 12``: most first."""
    return ", ".join(f"{why} {n}" for why, n in summary.skipped.most_common())


def _skipped_row(summary: ScanSummary) -> str:
    total = summary.skipped.total()
    if not total:
        return f"none of {summary.listed} listed"
    return f"{total} of {summary.listed} listed: {_skip_reasons(summary)}"


def _nothing_scanned(summary: ScanSummary) -> str | None:
    """The line that says the filters left nothing to scan (None when they did not)."""
    if not summary.skipped_everything:
        return None
    return (
        f"nothing was scanned: the filters skipped all {summary.listed} objects listed under "
        f"{summary.target} ({_skip_reasons(summary)}). Check ingest.preset, "
        "ingest.mastodon_media and the other ingest filters, or scan another folder or prefix."
    )


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, keeping its end (the file name) whole."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    name = text[text.rfind("/") :] if "/" in text else ""
    if not name or len(name) + 4 > width:
        return "…" + text[-(width - 1) :]
    return text[: width - 1 - len(name)] + "…" + name


def _relative(object_id: str, target: str) -> str:
    """An object id relative to the scanned target, which the summary's title names."""
    base = target if target.endswith("/") else target + "/"
    for prefix in (base, "file://" + base):
        if object_id.startswith(prefix) and len(object_id) > len(prefix):
            return object_id[len(prefix) :]
    return object_id


def _warnings(summary: ScanSummary) -> list[str]:
    found = []
    if not summary.csam_capable:
        why = summary.missing.get("clip") or "clip is not in classify.classifiers"
        found.append(
            "no CSAM-capable classifier ran: only images already on your hash lists can be "
            f"flagged as CSAM ({why}). Run `pictguard models` to see why and how to enable "
            "CLIP."
        )
    return found


def print_summary(summary: ScanSummary, settings: Settings, *, as_json: bool) -> None:
    from pipeline.events import Decision

    trip, held = _held(summary)
    warnings = _warnings(summary)
    nothing = _nothing_scanned(summary)
    if as_json:
        out = {
            "target": summary.target,
            "completed": summary.completed,
            "interrupted": summary.interrupted,
            "resumed_after": summary.resumed_after,
            "scanned": summary.scanned,
            "clean": summary.decisions[Decision.ALLOW],
            "flagged": summary.flagged,
            "flag_csam": summary.decisions[Decision.FLAG_CSAM],
            "flag_nsfw": summary.decisions[Decision.FLAG_NSFW],
            "errors": summary.decisions[Decision.ERROR],
            "actions": dict(summary.actions),
            "already_handled": dict(summary.already_handled),
            "listed": summary.listed,
            "skipped": summary.skipped.total(),
            "skipped_by": dict(summary.skipped.most_common()),
            "nothing_scanned": summary.skipped_everything,
            "guard_trip": summary.guard_trip,
            "held": held,
            "quarantine": summary.quarantine,
            "classifiers": summary.classifiers,
            "classifiers_missing": summary.missing,
            "csam_detection": summary.csam_capable,
            "warnings": [nothing, *warnings] if nothing else warnings,
            "elapsed_s": round(summary.elapsed_s, 3),
            "startup_s": round(summary.startup_s, 3),
            "objects_per_s": round(summary.rate, 2),
            "dry_run": settings.enforce.dry_run,
            "exit_status": int(scan_exit_status(summary)),
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
    table = Table(title=f"pictguard scan of {escape(summary.target)}", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", justify="right")
    if summary.interrupted:
        table.add_row(
            "status", "[bold yellow]interrupted[/]: run the same command again to continue"
        )
    if summary.resumed_after:
        after = _relative(summary.resumed_after, summary.target)
        table.add_row("resumed", f"after {escape(after)} (the checkpoint; --restart ignores it)")
    table.add_row("scanned", str(summary.scanned))
    table.add_row("clean", str(summary.decisions[Decision.ALLOW]))
    table.add_row(
        "flagged",
        f"{summary.flagged} (csam {summary.decisions[Decision.FLAG_CSAM]}, "
        f"nsfw {summary.decisions[Decision.FLAG_NSFW]})",
    )
    table.add_row("errors", str(summary.decisions[Decision.ERROR]))
    table.add_row("skipped by filters", escape(_skipped_row(summary)))
    actions = ", ".join(f"{k} {v}" for k, v in sorted(summary.actions.items())) or "none"
    table.add_row("actions", actions + (" (dry run)" if settings.enforce.dry_run else ""))
    if summary.already_handled:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.already_handled.items()))
        table.add_row(
            "already handled",
            f"{summary.already_handled.total()} skipped, decided by an earlier run ({skipped})",
        )
    if trip:
        why = escape(summary.guard_trip or "tripped earlier")
        table.add_row(
            "guard",
            f"[bold red]TRIPPED[/]: {why}; {held} actions held — `pictguard enforce status`",
        )
    if summary.quarantine is not None:
        table.add_row("quarantine to", escape(summary.quarantine))
    ran = ", ".join(summary.classifiers) or "none"
    off = ", ".join(f"{name} off" for name in summary.missing)
    table.add_row("classifiers", ran + (f" ({off})" if off else ""))
    table.add_row("elapsed", f"{summary.elapsed_s:.2f} s (+ {summary.startup_s:.1f} s start-up)")
    table.add_row("objects/s", f"{summary.rate:.1f}")
    console.print(table)
    if summary.notable:
        _print_notable(summary)
    for warning in warnings:
        console.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False)
    if nothing is not None:
        # Exit status 2: like every other "fix this" line, on stderr.
        err_console.print(f"[bold red]error:[/] {escape(nothing)}", highlight=False, soft_wrap=True)


def _print_notable(summary: ScanSummary) -> None:
    from pipeline.events import Decision

    rows = []
    for verdict, action in summary.notable[:50]:
        why = verdict.matched or (verdict.reason.value if verdict.reason else "")
        if verdict.detail and verdict.decision is Decision.ERROR:
            why = f"{why}: {verdict.detail}"[:80]
        name = verdict.object.id if verdict.object else verdict.request_id
        rows.append(
            (
                _relative(name, summary.target),
                verdict.decision.value,
                why,
                action.action.value if action else "-",
                action.outcome.value if action else "-",
            )
        )
    # The object column keeps the end of long keys (the file name), at any terminal width:
    # what is left beside the short columns (and 16 for borders and padding) and 20 for why.
    headers = ("object", "decision", "why", "action", "outcome")
    fixed = sum(max(len(headers[i]), *(len(r[i]) for r in rows)) for i in (1, 3, 4)) + 16 + 20
    width = max(20, console.width - fixed)
    detail = Table(title="flagged and failed objects")
    detail.add_column(headers[0], no_wrap=True)
    detail.add_column(headers[1], no_wrap=True)
    detail.add_column(headers[2], min_width=20, overflow="fold")
    detail.add_column(headers[3], no_wrap=True)
    detail.add_column(headers[4], no_wrap=True)
    for row in rows:
        detail.add_row(*(escape(cell) for cell in (shorten(row[0], width), *row[1:])))
    console.print(detail)
    if len(summary.notable) > 50:
        console.print(f"… and {len(summary.notable) - 50} more (see `pictguard audit`)")


@app.command("run")
def run_role_cmd(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="ingest, classify, enforce, api or feeds")],
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
        raise typer.Exit(ExitStatus.ADMIN_ERROR)
    if remote is not None and role != "classify":
        err_console.print("[bold red]error:[/] --remote is for `pictguard run classify` only")
        raise typer.Exit(ExitStatus.ADMIN_ERROR)
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

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
            err_console.print(f"[bold red]error:[/] --since {since!r}: {escape(str(exc))}")
            raise typer.Exit(ExitStatus.ADMIN_ERROR) from None
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
    console.print(f"reconcile of {escape(target)}: {n} objects without a verdict enqueued")


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


def _register_role_commands(target: typer.Typer) -> None:
    """Commands owned by the roles: hash lists, feeds and models (classify), admin flows
    (enforce)."""
    from classify.cli import register as register_classify
    from classify.decode import entry_hashes
    from classify.feeds.cli import register as register_feeds
    from enforce.admin import EnforceContext
    from enforce.cli import register as register_enforce
    from pipeline.state.shared import SharedTables

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
                hasher=entry_hashes,
            )

    @contextlib.asynccontextmanager
    async def runtime() -> AsyncIterator[Runtime]:
        async with _admin_runtime(root_settings()) as rt:
            yield rt

    register_classify(target, tables, lambda: root_settings().classify)
    register_feeds(target, runtime)
    register_enforce(target, enforce_context)


def command() -> RootGroup:
    """The root click command, with the ``<bool>`` types dropped from its flags."""
    root = typer.main.get_command(app)
    assert isinstance(root, RootGroup)
    plain_flags(root)
    return root


def main(args: list[str] | None = None) -> None:
    """The ``pictguard`` entry point: every error ends as one line and an exit status."""
    logging.captureWarnings(True)
    try:
        command().main(args=args, prog_name="pictguard")
    except Exception as exc:  # noqa: BLE001 — anything the commands did not turn into a line
        opts = _options.get() or Options()
        sys.exit(int(fail(exc, debug=opts.debug)))


if __name__ == "__main__":
    main()
