"""``chatledger verify | heads``: hash chains, and head anchors kept outside the database."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger.admin import Anchor, ThreadFilter, count_threads, list_threads, verify
from chatledger.cli.options import AllowEmptyOption, TenantOption
from chatledger.cli.render import Renderer, counted
from chatledger.cli.run import require_ledger_data
from chatledger.cli.shared import Connection, add_ledger_wide, shared
from chatledger.errors import InvalidInputError

__all__ = ["heads_body", "read_anchors", "register", "verify_body"]


def _finite(text: str) -> float:
    # json accepts 1e999 (inf) and NaN; a head_seq that is not a finite number is bad input.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _not_a_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def read_anchors(path: str) -> list[Anchor]:
    """Return the anchors in a file written by ``chatledger heads`` (JSON Lines, or its ``--json`` document).

    Raises:
        InvalidInputError: the file cannot be read or is not a file of head anchors.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read anchors {path!r}: {e}") from e
    try:
        records: list[Any] = [
            json.loads(line, parse_float=_finite, parse_constant=_not_a_constant)
            for line in text.splitlines()
            if line.strip()
        ]
        if len(records) == 1 and isinstance(records[0], dict) and records[0].get("command") == "heads":
            records = list(records[0].get("heads") or [])
        return [Anchor.from_dict(record) for record in records]
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        raise InvalidInputError(f"{path}: not a file of head anchors: {e}") from e


async def verify_body(
    db: Any,
    ui: Renderer,
    *,
    thread: str | None = None,
    tenant: str | None = None,
    anchors: str | None = None,
    allow_empty: bool = False,
) -> int:
    """Recompute the hash chains; exit status 1 when anything fails, or the database holds no ledger.

    A database without ChatLedger data is an error (exit 1) unless ``allow_empty``:
    a misspelled name must not verify as OK.
    """
    pinned = read_anchors(anchors) if anchors else []
    await require_ledger_data(db, allow_empty, tenant=tenant)
    with ui.progress("verifying") as tick:
        threads = await count_threads(db, ThreadFilter(thread_id=thread, tenant_id=tenant))
        tick.stage("verifying", threads)
        # A whole-database run reads every event first (one ordered pass), then walks the
        # threads: each phase shows its own count (and ETA) on the one bar.
        report = await verify(
            db,
            thread_id=thread,
            tenant_id=tenant,
            anchors=pinned,
            on_thread=tick.phase("verifying", threads),
            on_progress=tick.counting("reading events"),
        )
    if ui.as_json:
        ui.json("verify", report.to_dict())
        return 0 if report.ok else 1
    for problem in report.problems:
        ui.line(
            ("FAIL", "red"),
            f" thread {problem.thread_id}",
            f" seq {problem.seq}" if problem.seq is not None else "",
            f" (event {problem.event_id})" if problem.event_id else "",
            f": {problem.reason}",
        )
    ui.line(
        ("OK", "green") if report.ok else (counted(len(report.problems), "problem"), "red"),
        f": {counted(report.threads, 'thread')}, {counted(report.events, 'event')}, "
        f"{counted(report.anchors, 'anchor')} checked",
    )
    return 0 if report.ok else 1


async def heads_body(db: Any, ui: Renderer, *, tenant: str | None = None, allow_empty: bool = False) -> int:
    """Print every thread's head hash, to keep outside the database for ``verify --anchors``.

    Threads are streamed (bounded memory); JSON Lines are printed as they come, while
    ``--json``'s one document is printed at the end. A database without ChatLedger data
    is an error (exit 1) unless ``allow_empty``.
    """
    await require_ledger_data(db, allow_empty, tenant=tenant)
    scope = ThreadFilter(tenant_id=tenant)
    heads: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    if ui.tsv:
        ui.tsv_row(("thread_id", "head_seq", "head_hash"))
    with ui.progress("reading heads") as tick:
        tick.stage("reading heads", await count_threads(db, scope))
        async for summary in list_threads(db, scope, on_thread=tick):
            act = summary.activity
            if act.damaged is not None:
                # No head to anchor: named (exit 1 at the end), every other thread goes on.
                problems.append({"thread_id": act.thread_id, "reason": act.damaged})
                if not ui.as_json:
                    ui.warn(f"thread {act.thread_id}: no head anchored: {act.damaged}")
                continue
            if act.head_seq <= 0:
                continue  # nothing written yet: nothing to anchor (as head_anchors)
            head = {"thread_id": act.thread_id, "head_seq": act.head_seq, "head_hash": act.head_hash}
            if ui.as_json:
                heads.append(head)
            elif ui.tsv:
                ui.tsv_row(head.values())
            else:
                ui.json_line(head)
    if ui.as_json:
        ui.json("heads", {"heads": heads, "problems": problems})
    return 1 if problems else 0


def register(app: typer.Typer) -> None:
    """Add ``verify`` and ``heads`` to ``app``."""

    @app.command("verify")
    @shared()
    def verify_(
        connection: Connection,
        thread: Annotated[str | None, typer.Option("--thread", help="Only this thread.")] = None,
        tenant: TenantOption = None,
        anchors: Annotated[
            str | None, typer.Option(help="Head hashes written by 'chatledger heads'.")
        ] = None,
        allow_empty: AllowEmptyOption = False,
    ) -> None:
        """Recompute hash chains; name the first failing event of each thread; exit 1 on failure."""
        connection.run(
            lambda db, ui: verify_body(
                db, ui, thread=thread, tenant=tenant, anchors=anchors, allow_empty=allow_empty
            )
        )

    add_ledger_wide(
        app,
        "heads",
        heads_body,
        "Print each thread's head hash (JSON Lines; --json: one document) for 'verify --anchors'.",
    )
