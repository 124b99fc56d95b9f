"""``chatledger export | import``: JSON Lines out of and into a database."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger.admin import ThreadFilter, count_threads, export_jsonl, import_jsonl
from chatledger.admin.browse import get_thread
from chatledger.admin.catalog import as_ledger
from chatledger.admin.records import missing_thread
from chatledger.cli.options import AllowEmptyOption, TenantOption, UserOption, open_for_writing
from chatledger.cli.render import Renderer, counted
from chatledger.cli.run import require_ledger_data
from chatledger.cli.shared import Connection, shared
from chatledger.errors import InvalidInputError

__all__ = ["export_body", "import_body", "register"]


def _counts(summary: Any, *names: str) -> dict[str, Any]:
    """Return the named fields of an export or import summary, in order (the ``--json`` document)."""
    return {name: getattr(summary, name) for name in names}


async def export_body(
    db: Any,
    ui: Renderer,
    *,
    path: str,
    thread: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
    force: bool = False,
    allow_empty: bool = False,
    audit: bool | None = None,
) -> int:
    """Write threads as JSON Lines to ``path`` (``-`` for stdout).

    ``audit``: also write the audit receipts and key tombstones (``None``: only for a
    whole-database export), so a restore keeps the audit trail and "removed stays removed".

    A file is written whole or not at all: to a temporary file beside it, renamed over
    ``path`` only once the export is complete, so an interrupted export leaves any old
    file as it was. An existing file is replaced only with ``force``. A database without
    ChatLedger data is an error (exit 1) unless ``allow_empty``.
    """
    if thread is not None and (tenant is not None or user is not None):
        # The scope is their intersection: a thread outside the tenant exported nothing, exit 0.
        raise InvalidInputError("export one thread (--thread) or a tenant's / user's threads, not both")
    if path == "-" and ui.as_json:
        raise InvalidInputError("--json needs --output FILE (the export itself would be on stdout)")
    target = None if path == "-" else Path(path)
    if target is not None and target.exists() and not force:
        raise InvalidInputError(f"--output: {path!r} exists; pass --force to replace it")
    scope = ThreadFilter(thread_id=thread, tenant_id=tenant, user_id=user)
    ledger = as_ledger(db)
    await require_ledger_data(ledger, allow_empty, tenant=tenant, user=user)
    if thread is not None and await get_thread(ledger, thread) is None:
        raise await missing_thread(ledger, thread)  # "was removed", or "no thread"
    # Opened before anything is read: a missing folder is a usage error, not a traceback later.
    partial = None if target is None else target.with_name(f".{target.name}.{os.getpid()}.partial")
    stream = sys.stdout if partial is None else open_for_writing(str(partial), "--output")
    try:
        with ui.progress("exporting") as tick:
            # One thread comes with its ancestors and branches: no total known up front.
            threads = None if thread is not None else await count_threads(ledger, scope)
            tick.stage("exporting", threads)
            whole = thread is None and tenant is None and user is None
            summary = await export_jsonl(
                ledger,
                stream,
                scope,
                on_thread=tick.phase("exporting", threads),
                on_progress=tick.counting("reading events"),
                audit=whole if audit is None else audit,
            )
        if partial is not None and target is not None:
            stream.flush()
            os.fsync(stream.fileno())
            stream.close()
            partial.replace(target)  # atomic: the old file, or the whole new one
    finally:
        if stream is not sys.stdout:
            stream.close()
        if partial is not None:
            partial.unlink(missing_ok=True)  # an interrupted export leaves no fragment
    result = {
        "output": None if path == "-" else path,
        **_counts(summary, "threads", "events", "receipts", "key_tombstones"),
    }
    if ui.as_json:
        ui.json("export", result)
    else:
        ui.note(
            f"exported {counted(summary.threads, 'thread')}, {counted(summary.events, 'event')}, "
            f"{counted(summary.receipts, 'receipt')}, {counted(summary.key_tombstones, 'key tombstone')}"
        )
    return 0


def _announced_threads(path: Path) -> int | None:
    """Return the thread count an export's header line announces (a progress total), if it has one."""
    try:
        with path.open(encoding="utf-8") as stream:
            header = json.loads(stream.readline())
    except (OSError, ValueError):
        return None  # import_jsonl reports what is wrong with the file
    threads = header.get("threads") if isinstance(header, dict) else None
    return threads if type(threads) is int and threads >= 0 else None


async def import_body(db: Any, ui: Renderer, *, path: str, force: bool = False) -> int:
    """Restore a JSON Lines export; the file is checked whole before anything is written."""
    if not Path(path).is_file():  # noqa: ASYNC240 - a CLI run does nothing else concurrently
        raise InvalidInputError(f"no such file: {path!r}")
    with ui.progress("importing", _announced_threads(Path(path))) as tick:
        summary = await import_jsonl(db, path, on_thread=tick, force=force)
    result = _counts(
        summary,
        *("threads", "events", "threads_present", "events_present", "holds", "forced"),
        *("receipts", "receipts_present", "key_tombstones", "key_tombstones_present"),
    )
    if ui.as_json:
        ui.json("import", result)
    else:
        ui.line(
            f"imported {counted(summary.threads, 'thread')} and {counted(summary.events, 'event')} "
            f"({counted(summary.threads_present, 'thread')}, {counted(summary.events_present, 'event')} "
            "were already present)"
        )
        if (
            summary.receipts
            or summary.receipts_present
            or summary.key_tombstones
            or summary.key_tombstones_present
        ):
            ui.line(
                f"restored {counted(summary.receipts, 'receipt')} and "
                f"{counted(summary.key_tombstones, 'key tombstone')} "
                f"({counted(summary.receipts_present, 'receipt')}, "
                f"{counted(summary.key_tombstones_present, 'key tombstone')} were already present)"
            )
    return 0


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``import`` to ``app``."""

    @app.command("export")
    @shared()
    def export_(
        connection: Connection,
        path: Annotated[str, typer.Option("--output", "-o", help="File to write; - for stdout.")] = "-",
        thread: Annotated[
            str | None, typer.Option("--thread", help="One thread (with ancestors and branches).")
        ] = None,
        tenant: TenantOption = None,
        user: UserOption = None,
        force: Annotated[
            bool, typer.Option("--force", help="Replace the --output file if it exists.")
        ] = False,
        audit: Annotated[
            bool | None,
            typer.Option(
                "--audit/--no-audit",
                help="Include the audit receipts and key tombstones (default: only in a whole-database "
                "export), so a restore keeps the audit trail and removed data stays removed.",
                show_default=False,
            ),
        ] = None,
        allow_empty: AllowEmptyOption = False,
    ) -> None:
        """Export threads as JSON Lines: one thread, a tenant's or user's, or all."""
        connection.run(
            lambda db, ui: export_body(
                db,
                ui,
                path=path,
                thread=thread,
                tenant=tenant,
                user=user,
                force=force,
                allow_empty=allow_empty,
                audit=audit,
            )
        )

    @app.command("import")
    @shared()
    def import_(
        connection: Connection,
        path: Annotated[str, typer.Argument(help="A file written by 'chatledger export'.")],
        force: Annotated[
            bool,
            typer.Option(
                "--force",
                help="Also restore threads that removal receipts say were removed (leaves an import.forced "
                "receipt). Threads whose tombstones are still in the database are never restored.",
            ),
        ] = False,
    ) -> None:
        """Restore an export exactly (re-running it changes nothing)."""
        connection.run(lambda db, ui: import_body(db, ui, path=path, force=force))
