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
from classify.hashlist_formats import FORMATS, FileFormat, Written
from classify.hashlists import HashLists
from classify.registry import ClassifierError
from classify.settings import ClassifySettings
from pipeline.errors import PictguardError
from pipeline.hashlists import (
    HASH_TYPES,
    LOCAL,
    Category,
    HashEntry,
    HashListError,
    HashType,
    ListName,
    check_name,
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
    hashes = " ".join(
        f"{t}={v}" + (f" (quality {entry.pdq_quality})" if t == "pdq" else "")
        for t, v in entry.hashes().items()
    )
    where = f" [{entry.provenance}]" if entry.provenance else ""
    return f"{entry.list}list {entry.category} {hashes}{where}"


def _list_option(allow: bool | None, what: str) -> ListName:
    if allow is None:
        # Never guess: an allowlist entry added as a block quarantines what it should let by.
        raise typer.BadParameter(f"say which list {what}: --allow or --block")
    return "allow" if allow else "block"


def _category(value: str | None) -> Category | None:
    if value is None:
        return None
    if value not in ("csam", "nsfw"):
        raise typer.BadParameter("--category must be csam or nsfw")
    return "nsfw" if value == "nsfw" else "csam"


def _hash_type(value: str | None) -> HashType | None:
    if value is None:
        return None
    if value not in HASH_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(HASH_TYPES)}")
    return value  # type: ignore[return-value]


def _which(value: str | None) -> ListName | None:
    if value not in (None, "allow", "block"):
        raise typer.BadParameter("--list must be allow or block")
    return None if value is None else ("allow" if value == "allow" else "block")


def _source(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        if value.startswith("feed:"):
            return "feed:" + check_name(value.removeprefix("feed:"), "feed")
        return LOCAL if value == LOCAL else check_name(value, "--source")
    except HashListError as exc:
        raise typer.BadParameter(str(exc)) from None


def make_hashes_app(open_tables: OpenTables, load_settings: LoadSettings) -> typer.Typer:
    """The ``hashes`` command group: add, remove, list, import, export."""
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
            bool | None,
            typer.Option(
                "--allow/--block", help="Allowlist (false positive) or blocklist (required)"
            ),
        ] = None,
        sha256: Annotated[str | None, typer.Option(help="Add a known sha256")] = None,
        md5: Annotated[str | None, typer.Option(help="Add a known MD5 of the file")] = None,
        sha1: Annotated[str | None, typer.Option(help="Add a known SHA-1 of the file")] = None,
        pdq: Annotated[str | None, typer.Option(help="Add a known PDQ hash (64 hex)")] = None,
        reason: Annotated[
            str, typer.Option(help="Why (kept with the entry, shown in verdicts)")
        ] = "",
        author: Annotated[str | None, typer.Option(help="Who; default: the current user")] = None,
        category: Annotated[str, typer.Option(help="Blocklist category: csam or nsfw")] = "csam",
    ) -> None:
        """Add images (by file) or known hashes to the allowlist or blocklist."""
        if not paths and not (sha256 or md5 or sha1 or pdq):
            raise typer.BadParameter("give image files, --sha256, --md5, --sha1 or --pdq")
        which = _list_option(allow, "to add to")
        cat = _category(category) or "csam"
        settings = load_settings()
        who = author or _default_author()

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
                if sha256 or md5 or sha1 or pdq:
                    added.append(
                        await hl.add(
                            sha256=sha256,
                            md5=md5,
                            sha1=sha1,
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
        md5: Annotated[str | None, typer.Option(help="Remove the entry with this MD5")] = None,
        sha1: Annotated[str | None, typer.Option(help="Remove the entry with this SHA-1")] = None,
        pdq: Annotated[str | None, typer.Option(help="Remove a PDQ-only entry")] = None,
    ) -> None:
        """Remove local entries, by image file or hash (feed entries go with their feed)."""
        if not paths and not (sha256 or md5 or sha1 or pdq):
            raise typer.BadParameter("give image files, --sha256, --md5, --sha1 or --pdq")

        async def run() -> list[tuple[str, bool]]:
            async with open_tables() as tables:
                hl = lists(tables)
                done = []
                for path in paths or []:
                    digest = sha256_hex(await asyncio.to_thread(path.read_bytes))
                    done.append((digest, await hl.remove(sha256=digest)))
                if sha256 or md5 or sha1 or pdq:
                    named = sha256 or md5 or sha1 or pdq or ""
                    done.append(
                        (named, await hl.remove(sha256=sha256, md5=md5, sha1=sha1, pdq=pdq))
                    )
                return done

        missing = 0
        for key, removed in _run(run()):
            console.print(f"{'removed' if removed else 'not listed'} {key}", highlight=False)
            missing += not removed
        if missing:
            raise typer.Exit(1)

    @app.command("list")
    def list_(
        only: Annotated[str | None, typer.Option("--list", help="allow or block only")] = None,
        source: Annotated[
            str | None,
            typer.Option(help="local, an imported list's label, or feed:<name> only"),
        ] = None,
        hash_type: Annotated[
            str | None, typer.Option("--type", help="Entries with this hash: " + _TYPES)
        ] = None,
        pending: Annotated[
            bool, typer.Option("--pending", help="Feed entries waiting for review instead")
        ] = False,
        limit: Annotated[int, typer.Option(help="Show at most this many (0: all)")] = 200,
        as_json: Annotated[bool, typer.Option("--json", help="JSON lines, every field")] = False,
    ) -> None:
        """Show entries with their list, hashes, source and reason."""
        which, src, kind = _which(only), _source(source), _hash_type(hash_type)

        async def run() -> list[HashEntry]:
            async with open_tables() as tables:
                found = []
                async for entry in lists(tables).entries(
                    which, source=src, hash_type=kind, pending=pending
                ):
                    found.append(entry)
                return found

        found = sorted(_run(run()), key=lambda e: (e.created_at, e.key))
        shown = found if limit <= 0 else found[-limit:]
        if as_json:
            rows = [{"key": e.key, **e.model_dump(mode="json", exclude_none=True)} for e in shown]
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("list", "category", "hash", "source", "reason", "author", "added")
        for entry in shown:
            table.add_row(
                entry.list,
                entry.category,
                f"{entry.hash_type}:{entry.hash_value[:16]}…",
                entry.source + (" (pending)" if entry.pending else ""),
                entry.reason,
                entry.author,
                entry.created_at.strftime("%Y-%m-%d %H:%M"),
            )
        console.print(table)
        more = (
            f" (the last {len(shown)} shown; --limit 0 for all)" if len(shown) < len(found) else ""
        )
        console.print(f"{len(found)} entries{more}", highlight=False)

    @app.command("import")
    def import_(
        file: Annotated[Path, typer.Argument(help="CSV, JSONL, te or txt file", exists=True)],
        fmt: Annotated[
            str | None,
            typer.Option(
                "--format",
                help="csv, jsonl, te ('pdq <hex>' lines) or txt (one hash per line); "
                "default: from the name, else from the content",
            ),
        ] = None,
        hash_type: Annotated[
            str | None,
            typer.Option("--type", help="Type of bare hashes (txt, te): " + _TYPES),
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
        source: Annotated[
            str | None,
            typer.Option(help="Label the entries with where the list came from (ncmec-2024)"),
        ] = None,
    ) -> None:
        """Import a hash list: CSV or JSONL (columns list, sha256, md5, sha1, pdq,
        pdq_quality, category, reason, author), ThreatExchange/HMA 'pdq <hex>' lines (te),
        or one hash per line with --type (txt).

        Say which list with --allow or --block unless every row has a list column.
        """
        file_format = _format(fmt)
        which: ListName | None = None if allow is None else ("allow" if allow else "block")
        cat, kind, src = _category(category), _hash_type(hash_type), _source(source)

        async def run() -> int:
            async with open_tables() as tables:
                return await lists(tables).import_file(
                    file,
                    file_format,
                    list=which,
                    reason=reason,
                    author=author or _default_author(),
                    category=cat,
                    source=src,
                    hash_type=kind,
                )

        console.print(f"imported {_run(run())} entries from {file}", highlight=False)

    @app.command("export")
    def export(
        file: Annotated[Path, typer.Argument(help="File to write")],
        fmt: Annotated[
            str | None,
            typer.Option("--format", help="csv, jsonl, te or txt; default: from the name"),
        ] = None,
        hash_type: Annotated[
            str | None,
            typer.Option("--type", help="Only entries with this hash (txt: the one written)"),
        ] = None,
        only: Annotated[str | None, typer.Option("--list", help="allow or block only")] = None,
        source: Annotated[
            str | None, typer.Option(help="local, a label, or feed:<name> only")
        ] = None,
    ) -> None:
        """Export entries: CSV/JSONL with every field, te ('pdq <hex>' and 'video_md5 <hex>'
        lines, for ThreatExchange and HMA), or txt (one hash of --type per line)."""
        file_format = _format(fmt)
        which, src, kind = _which(only), _source(source), _hash_type(hash_type)

        async def run() -> Written:
            async with open_tables() as tables:
                return await lists(tables).export(
                    file, file_format, list=which, source=src, hash_type=kind
                )

        written = _run(run())
        console.print(f"exported {written.written} entries to {file}", highlight=False)
        if written.skipped:
            console.print(
                f"  left out {written.skipped} entries with {written.why_skipped}",
                highlight=False,
            )

    return app


_TYPES = "md5, sha1, sha256 or pdq"


def _format(value: str | None) -> FileFormat | None:
    if value is None:
        return None
    if value not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    return value  # type: ignore[return-value]


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
