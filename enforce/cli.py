"""Admin commands: ``audit``, ``allow``, ``block``, ``restore``, ``enforce resume|status``.

The main CLI mounts them with :func:`register` and supplies the context factory that opens
settings, stores, state and bus for one command.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from enforce.admin import AdminResult, EnforceAdmin, EnforceContext
from pipeline.errors import PictguardError
from pipeline.events import EnforcementAction

T = TypeVar("T")
ContextFactory = Callable[[], AbstractAsyncContextManager[EnforceContext]]

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "admin"


def register(app: typer.Typer, context: ContextFactory) -> None:
    """Add the enforce admin commands to ``app``.

    ``context`` opens what one command needs (settings, stores, state, bus) and closes it
    afterwards. Adds ``audit``, ``allow``, ``block``, ``restore`` and the ``enforce`` group
    with ``resume`` and ``status``.
    """

    def run(dry_run: bool, work: Callable[[EnforceAdmin], Awaitable[T]]) -> T:
        async def main() -> T:
            async with context() as ctx, EnforceAdmin(ctx, dry_run=dry_run) as admin:
                return await work(admin)

        try:
            return asyncio.run(main())
        except PictguardError as exc:
            _console().print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    def show(result: AdminResult, as_json: bool) -> None:
        if as_json:
            typer.echo(json.dumps(result.as_json(), indent=2))
            return
        _console().print(result.summary, highlight=False)
        if result.actions:
            _console().print(_table(result.actions))

    @app.command("audit")
    def audit(
        since: Annotated[
            str | None, typer.Option(help="Only newer actions: 30m, 2h, 7d, or a date")
        ] = None,
        decision: Annotated[
            str | None, typer.Option(help="flag_csam, flag_nsfw, error or allow")
        ] = None,
        action: Annotated[
            str | None,
            typer.Option(help="report, delete, quarantine, restore, purge, reimport or moderate"),
        ] = None,
        outcome: Annotated[
            str | None,
            typer.Option(help="done, dry_run, already_absent, duplicate, held, kept or failed"),
        ] = None,
        limit: Annotated[int, typer.Option(min=1, help="At most this many rows")] = 200,
        reviews: Annotated[
            bool,
            typer.Option(
                "--reviews", help="The review audit instead: views, reveals, decisions, exports"
            ),
        ] = False,
        as_json: Json = False,
    ) -> None:
        """Show what enforcement did, newest first (never shows images)."""
        if reviews:
            from enforce.review.cli import print_review_audit

            rows = run(False, lambda admin: _review_rows(admin, since, limit))
            print_review_audit(rows, as_json)
            return
        actions = run(
            False,
            lambda admin: admin.audit(
                since=since, decision=decision, action=action, outcome=outcome, limit=limit
            ),
        )
        if as_json:
            typer.echo(
                json.dumps(
                    [a.model_dump(mode="json", exclude_none=True) for a in actions], indent=2
                )
            )
        elif not actions:
            _console().print("no actions recorded for these filters")
        else:
            _console().print(_table(actions))

    @app.command("allow")
    def allow(
        target: Annotated[str, typer.Argument(help="sha256, s3://bucket/key, or a file path")],
        reason: Annotated[str, typer.Option(help="Why this image is fine (kept in the list)")],
        author: Annotated[str, typer.Option(help="Who decided")] = _default_author(),
        dry_run: DryRun = False,
        as_json: Json = False,
    ) -> None:
        """Allowlist an image (a false positive) and restore it from quarantine."""
        show(run(dry_run, lambda a: a.allow(target, reason=reason, author=author)), as_json)

    @app.command("block")
    def block(
        target: Annotated[str, typer.Argument(help="sha256, s3://bucket/key, or a file path")],
        reason: Annotated[str, typer.Option(help="Why this image is blocked")],
        category: Annotated[
            str, typer.Option(help="csam or nsfw: decides the action, as for a verdict")
        ] = "csam",
        author: Annotated[str, typer.Option(help="Who decided")] = _default_author(),
        dry_run: DryRun = False,
        as_json: Json = False,
    ) -> None:
        """Blocklist an image and act on every stored copy pictguard knows of."""
        if category not in ("csam", "nsfw"):
            _console().print("[bold red]error:[/] --category must be csam or nsfw")
            raise typer.Exit(2)
        cat: Literal["csam", "nsfw"] = "csam" if category == "csam" else "nsfw"
        show(
            run(dry_run, lambda a: a.block(target, reason=reason, author=author, category=cat)),
            as_json,
        )

    @app.command("restore")
    def restore(
        target: Annotated[
            str,
            typer.Argument(
                help="verdict id, s3://bucket/key (original or quarantined), a key, or a sha256"
            ),
        ],
        reason: Annotated[str, typer.Option(help="Noted in the audit trail")] = "",
        dry_run: DryRun = False,
        as_json: Json = False,
    ) -> None:
        """Put a quarantined image back under its original key, byte-identical."""
        show(run(dry_run, lambda a: a.restore(target, reason=reason)), as_json)

    enforce_app = typer.Typer(
        help="The blast-radius guard: see why it tripped, release held actions.",
        no_args_is_help=True,
    )

    @enforce_app.command("status")
    def status(as_json: Json = False) -> None:
        """Policy, guard state, held actions, quarantine warnings."""
        data = run(False, lambda admin: admin.status())
        if as_json:
            typer.echo(json.dumps(data, indent=2, default=str))
            return
        _print_status(_console(), data)

    @enforce_app.command("resume")
    def resume(
        discard: Annotated[
            bool, typer.Option("--discard", help="Drop the held actions instead of doing them")
        ] = False,
        reason: Annotated[str, typer.Option(help="Noted in the audit trail")] = "",
        dry_run: DryRun = False,
        as_json: Json = False,
    ) -> None:
        """Re-arm the guard and release (or --discard) what it held, after review."""
        show(run(dry_run, lambda a: a.resume(discard=discard, reason=reason)), as_json)

    app.add_typer(enforce_app, name="enforce")

    # The review console and evidence packages: their own module, the same context.
    from enforce.review.cli import register as register_review

    register_review(app, context)


async def _review_rows(admin: EnforceAdmin, since: str | None, limit: int) -> list[Any]:
    from enforce.review.journal import Journal
    from pipeline.timeparse import parse_since

    journal = Journal(admin.ctx.state)
    await journal.start()
    return await journal.audit(since=parse_since(since) if since else None, limit=limit)


def _console() -> Console:
    # Made per command so that it follows the terminal (and COLUMNS) at the time of use.
    return Console()


def _table(actions: list[EnforcementAction]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for column in ("time (UTC)", "decision", "action", "outcome", "object", "detail", "verdict"):
        table.add_column(column, overflow="fold")
    styles = {"failed": "red", "held": "yellow", "done": "green", "dry_run": "cyan"}
    for a in actions:
        table.add_row(
            a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            a.decision.value,
            a.action.value,
            f"[{styles.get(a.outcome.value, 'white')}]{a.outcome.value}[/]",
            a.object.id if a.object else "(inline upload)",
            a.detail or "",
            a.verdict_id,
        )
    return table


def _print_status(console: Console, data: dict[str, Any]) -> None:
    guard = data["guard"]
    if not guard["enabled"]:
        state = "[yellow]disabled[/]"
    elif guard["tripped"]:
        state = f"[bold red]TRIPPED[/] since {guard['since']}: {guard['reason']}"
    else:
        state = "[green]armed[/]"
    ratio = guard["flagged_ratio"]
    lines = [
        f"dry run: {'[cyan]on[/]' if data['dry_run'] else 'off'}",
        "policy: " + ", ".join(f"{k} → {v}" for k, v in data["policy"].items()),
        f"quarantine: {data['quarantine']}",
        f"guard: {state}",
        f"  destructive actions: {guard['destructive_last_minute']} in the last minute, "
        f"{guard['destructive_last_hour']} in the last hour",
        "  flagged ratio: "
        + (f"{ratio:.0%} of the last {guard['window']} verdicts" if ratio is not None else "n/a"),
        f"held actions: {data['held']}",
    ]
    lines += [f"[bold red]warning:[/] {w}" for w in data["quarantine_warnings"]]
    if guard["tripped"] or data["held"]:
        lines.append("next: pictguard audit --outcome held, then pictguard enforce resume")
    for line in lines:
        console.print(line, highlight=False)
