"""``pictguard hashes …`` and ``pictguard models``: the classify part of the command line.

The main CLI mounts these with :func:`register` (or :func:`make_hashes_app` and
:func:`make_models_command` separately), passing two callables so this module never reads
configuration itself:

- ``open_tables()`` → an async context manager yielding the configured
  :class:`~classify.base.ClassifyTables` (started; closed on exit);
- ``load_settings()`` → the :class:`~classify.settings.ClassifySettings` in effect.

Both take no arguments; inside a command, ``click.get_current_context()`` reaches the root
context (``--config``, ``--debug``) if they need it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from classify.base import ClassifyTables
from classify.decode import DecodeError
from classify.hashing import sha256_hex
from classify.hashlists import FileFormat, HashLists
from classify.registry import ClassifierError
from classify.settings import ClassifySettings
from pipeline.errors import PictguardError
from pipeline.hashlists import (
    Category,
    HashEntry,
    ListName,
)

T = TypeVar("T")
OpenTables = Callable[[], AbstractAsyncContextManager[ClassifyTables]]
LoadSettings = Callable[[], ClassifySettings]

console = Console()
err_console = Console(stderr=True)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except DecodeError as exc:
        err_console.print(f"[bold red]error:[/] not a usable image: {exc}", highlight=False)
        raise typer.Exit(2) from None
    except PictguardError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # a file the admin named cannot be read or written
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "cli"


def _describe(entry: HashEntry) -> str:
    pdq = f"pdq={entry.pdq} (quality {entry.pdq_quality})" if entry.pdq else "no pdq"
    return f"{entry.list}list {entry.category} sha256={entry.sha256 or '-'} {pdq}"


def make_hashes_app(open_tables: OpenTables, load_settings: LoadSettings) -> typer.Typer:
    """The ``hashes`` command group: add, remove, import, export."""
    app = typer.Typer(help="Allowlist and blocklist of image hashes.", no_args_is_help=True)

    def lists(tables: ClassifyTables) -> HashLists:
        settings = load_settings()
        return HashLists(
            tables.hashlists,
            pdq_max_distance=settings.pdq_max_distance,
            pdq_min_quality=settings.pdq_min_quality,
        )

    @app.command("add")
    def add(
        paths: Annotated[
            list[Path] | None, typer.Argument(help="Image files to hash and add", exists=True)
        ] = None,
        allow: Annotated[
            bool, typer.Option("--allow/--block", help="Allowlist (false positive) or blocklist")
        ] = False,
        sha256: Annotated[str | None, typer.Option(help="Add a known sha256")] = None,
        pdq: Annotated[str | None, typer.Option(help="Add a known PDQ hash (64 hex)")] = None,
        reason: Annotated[
            str, typer.Option(help="Why (kept with the entry, shown in verdicts)")
        ] = "",
        author: Annotated[str | None, typer.Option(help="Who; default: the current user")] = None,
        category: Annotated[str, typer.Option(help="Blocklist category: csam or nsfw")] = "csam",
    ) -> None:
        """Add images (by file) or known hashes to the allowlist or blocklist."""
        if not paths and not sha256 and not pdq:
            raise typer.BadParameter("give image files, --sha256 or --pdq")
        if category not in ("csam", "nsfw"):
            raise typer.BadParameter("--category must be csam or nsfw")
        settings = load_settings()
        which: ListName = "allow" if allow else "block"
        who = author or _default_author()
        cat: Category = "nsfw" if category == "nsfw" else "csam"

        async def run() -> list[HashEntry]:
            async with open_tables() as tables:
                hl = lists(tables)
                added = []
                for path in paths or []:
                    added.append(
                        await hl.add_image(
                            path,
                            list=which,
                            reason=reason,
                            author=who,
                            category=cat,
                            hash_size=settings.hash_size,
                            max_pixels=settings.max_pixels,
                        )
                    )
                if sha256 or pdq:
                    added.append(
                        await hl.add(
                            sha256=sha256,
                            pdq=pdq,
                            list=which,
                            reason=reason,
                            author=who,
                            category=cat,
                        )
                    )
                return added

        for entry in _run(run()):
            console.print(f"added {_describe(entry)}", highlight=False)
            if entry.pdq and (entry.pdq_quality or 0) < settings.pdq_min_quality:
                console.print(
                    f"  note: PDQ quality {entry.pdq_quality} < {settings.pdq_min_quality}: "
                    "this entry matches exact copies only",
                    highlight=False,
                )

    @app.command("remove")
    def remove(
        paths: Annotated[
            list[Path] | None, typer.Argument(help="Image files whose entries to remove")
        ] = None,
        sha256: Annotated[str | None, typer.Option(help="Remove the entry of this sha256")] = None,
        pdq: Annotated[str | None, typer.Option(help="Remove a PDQ-only entry")] = None,
    ) -> None:
        """Remove entries, by image file, sha256 or (for PDQ-only entries) PDQ."""
        if not paths and not sha256 and not pdq:
            raise typer.BadParameter("give image files, --sha256 or --pdq")

        async def run() -> list[tuple[str, bool]]:
            async with open_tables() as tables:
                hl = lists(tables)
                done = []
                for path in paths or []:
                    digest = sha256_hex(await asyncio.to_thread(path.read_bytes))
                    done.append((digest, await hl.remove(sha256=digest)))
                if sha256 or pdq:
                    done.append((sha256 or pdq or "", await hl.remove(sha256=sha256, pdq=pdq)))
                return done

        missing = 0
        for key, removed in _run(run()):
            console.print(f"{'removed' if removed else 'not listed'} {key}", highlight=False)
            missing += not removed
        if missing:
            raise typer.Exit(1)

    @app.command("import")
    def import_(
        file: Annotated[Path, typer.Argument(help="CSV or JSONL file", exists=True)],
        fmt: Annotated[
            str | None, typer.Option("--format", help="csv or jsonl; default: from the name")
        ] = None,
        allow: Annotated[
            bool | None,
            typer.Option(
                "--allow/--block",
                help="List for rows without a list column (needed unless every row has one)",
            ),
        ] = None,
        reason: Annotated[str | None, typer.Option(help="Reason for rows without one")] = None,
        author: Annotated[str | None, typer.Option(help="Author for rows without one")] = None,
        category: Annotated[str | None, typer.Option(help="Category for rows without one")] = None,
    ) -> None:
        """Import entries (columns: list, sha256, pdq, pdq_quality, category, reason, author).

        Say which list with --allow or --block unless every row has a list column.
        """
        file_format = _format(fmt)
        which: ListName | None = None if allow is None else ("allow" if allow else "block")
        cat: Category | None = None
        if category is not None:
            if category not in ("csam", "nsfw"):
                raise typer.BadParameter("--category must be csam or nsfw")
            cat = "nsfw" if category == "nsfw" else "csam"

        async def run() -> int:
            async with open_tables() as tables:
                return await lists(tables).import_file(
                    file,
                    file_format,
                    list=which,
                    reason=reason,
                    author=author or _default_author(),
                    category=cat,
                )

        console.print(f"imported {_run(run())} entries from {file}", highlight=False)

    @app.command("export")
    def export(
        file: Annotated[Path, typer.Argument(help="CSV or JSONL file to write")],
        fmt: Annotated[
            str | None, typer.Option("--format", help="csv or jsonl; default: from the name")
        ] = None,
        only: Annotated[str | None, typer.Option("--list", help="allow or block only")] = None,
    ) -> None:
        """Export entries with their reasons to a CSV or JSONL file."""
        file_format = _format(fmt)
        if only not in (None, "allow", "block"):
            raise typer.BadParameter("--list must be allow or block")
        which: ListName | None = None if only is None else ("allow" if only == "allow" else "block")

        async def run() -> int:
            async with open_tables() as tables:
                return await lists(tables).export(file, file_format, list=which)

        console.print(f"exported {_run(run())} entries to {file}", highlight=False)

    return app


def _format(value: str | None) -> FileFormat | None:
    if value is None:
        return None
    if value not in ("csv", "jsonl"):
        raise typer.BadParameter("--format must be csv or jsonl")
    return "csv" if value == "csv" else "jsonl"


def make_models_command(load_settings: LoadSettings) -> Callable[..., None]:
    """The ``models`` command: what is configured, where weights come from, are they here."""

    def models(
        download: Annotated[
            bool, typer.Option("--download", help="Fetch the CLIP weights (needs network)")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    ) -> None:
        """List the configured classifiers and whether their weights are present."""
        from classify import registry

        settings = load_settings()
        if download and "clip" in settings.classifiers:
            from classify.models.clip import download_weights

            try:
                path = download_weights(settings.clip)
            except (ClassifierError, OSError, RuntimeError) as exc:
                message = f"[bold red]error:[/] download failed: {escape(str(exc))}"
                err_console.print(message, highlight=False)
                raise typer.Exit(2) from None
            console.print(f"CLIP weights in {path}", highlight=False)
        infos = [registry.describe(name, settings) for name in settings.classifiers]
        if as_json:
            rows = [
                {
                    "order": i,
                    "name": info.name,
                    "source": info.source,
                    "location": info.location,
                    "present": info.present,
                    "detail": info.detail,
                }
                for i, info in enumerate(infos, start=1)
            ]
            console.print_json(json.dumps(rows))
        else:
            table = Table("#", "classifier", "present", "weights from", "location")
            for i, info in enumerate(infos, start=1):
                present = "yes" if info.present else "[bold red]no[/]"
                table.add_row(str(i), info.name, present, info.source, info.location or "-")
            console.print(table)
            for info in infos:
                if info.detail:  # long advice reads better as text than in a table cell
                    # markup off: "pip install 'pictguard[clip]'" must print as written
                    console.print(f"{info.name}: {info.detail}", highlight=False, markup=False)
        if not all(info.present for info in infos):
            raise typer.Exit(1)

    return models


def register(app: typer.Typer, open_tables: OpenTables, load_settings: LoadSettings) -> None:
    """Mount ``hashes`` and ``models`` on the main ``pictguard`` app."""
    app.add_typer(make_hashes_app(open_tables, load_settings), name="hashes")
    app.command("models")(make_models_command(load_settings))
