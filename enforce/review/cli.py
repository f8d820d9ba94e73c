"""``pictguard review`` (the console on loopback) and ``pictguard evidence export``."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from enforce.cli import ContextFactory
from enforce.review.auth import new_secret
from enforce.review.journal import AuditRow
from pipeline.errors import PictguardError


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "admin"


def print_review_audit(rows: list[AuditRow], as_json: bool) -> None:
    """``pictguard audit --reviews``: the review audit as a table or JSON."""
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if not rows:
        Console().print("no review events recorded")
        return
    table = Table(header_style="bold")
    for column in ("time (UTC)", "reviewer", "event", "item", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        detail = row.detail.get("reason") or row.detail.get("via") or row.detail.get("why") or ""
        if row.event == "view_queue":
            detail = f"{len(row.detail.get('items', []))} item(s) listed"
        table.add_row(
            row.at.strftime("%Y-%m-%d %H:%M:%S"),
            row.reviewer,
            row.event,
            row.item_id or "",
            str(detail),
        )
    Console().print(table)


def register(app: typer.Typer, context: ContextFactory) -> None:
    """Add ``review`` and the ``evidence`` group (``export``) to ``app``."""

    def fail(exc: Exception) -> typer.Exit:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return typer.Exit(exc.exit_code if isinstance(exc, PictguardError) else 1)

    @app.command("review")
    def review(
        port: Annotated[
            int | None, typer.Option(help="Port on 127.0.0.1 (default enforce.review.port)")
        ] = None,
    ) -> None:
        """Serve the review console on 127.0.0.1 only, over this machine's state.

        Sign in with the admin token or a reviewer's token; with neither configured, a
        one-time token is printed for this run. Images are shown blurred and grey.
        """
        from enforce.review.server import serve_console

        console = Console()

        async def main() -> None:
            local: str | None = None
            async with context() as ctx:
                config = ctx.settings.enforce
                configured = config.admin_token is not None or bool(config.review.reviewers)
            if not configured:
                local = new_secret()
                console.print(
                    "no admin token or reviewer tokens are configured: sign in with this "
                    f"one-time token (valid while this command runs):\n  {local}",
                    highlight=False,
                    soft_wrap=True,
                )

            def listening(url: str) -> None:
                console.print(
                    f"review console on {url} (this machine only; Ctrl-C stops it)",
                    highlight=False,
                    soft_wrap=True,
                )

            await serve_console(context, port=port, local_token=local, on_listening=listening)

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except PictguardError as exc:
            raise fail(exc) from None

    evidence_app = typer.Typer(
        help="Evidence packages for a report to the authorities (never sent by pictguard).",
        no_args_is_help=True,
    )

    @evidence_app.command("export")
    def export(
        targets: Annotated[
            list[str], typer.Argument(help="Item ids (review console), verdict ids or sha256s")
        ],
        out: Annotated[Path, typer.Option("--out", help="Folder to write the package into")] = Path(
            "."
        ),
        include_file: Annotated[
            bool,
            typer.Option(
                "--include-file", help="Put the file itself in the package (off by default)"
            ),
        ] = False,
        as_zip: Annotated[
            bool, typer.Option("--zip", help="One zip file instead of a folder")
        ] = False,
        allow_unconfirmed: Annotated[
            bool,
            typer.Option(
                "--allow-unconfirmed",
                help="Export a model-only verdict no reviewer confirmed (check it yourself)",
            ),
        ] = False,
        exporter: Annotated[str, typer.Option("--by", help="Who exports (audited)")] = _user(),
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    ) -> None:
        """Write an evidence package: hashes, timestamps, source, verdict, audit trail."""
        from enforce.evidence import EvidenceExporter

        async def main() -> object:
            async with context() as ctx:
                exporter_ = EvidenceExporter(ctx.state, ctx.stores, ctx.hashlists)
                return await exporter_.export(
                    targets,
                    out,
                    exporter=exporter,
                    include_file=include_file,
                    as_zip=as_zip,
                    allow_unconfirmed=allow_unconfirmed,
                )

        try:
            result = asyncio.run(main())
        except (PictguardError, OSError) as exc:
            raise fail(exc) from None
        from enforce.evidence import ExportResult

        assert isinstance(result, ExportResult)
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "path": str(result.path),
                        "items": result.items,
                        "files_included": result.files_included,
                        "warnings": result.warnings,
                    },
                    indent=2,
                )
            )
            return
        console = Console()
        console.print(
            f"wrote {result.path} ({len(result.items)} item(s), "
            f"{'with' if include_file else 'without'} the files); nothing was sent anywhere",
            highlight=False,
        )
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)

    app.add_typer(evidence_app, name="evidence")
