"""``chatledger stats``: totals."""

from __future__ import annotations

from typing import Any

import typer

from chatledger.admin import ThreadFilter, collect_stats, count_events, count_threads
from chatledger.cli.render import Renderer, iso
from chatledger.cli.run import require_ledger_data
from chatledger.cli.shared import add_ledger_wide

__all__ = ["register", "stats_body"]


async def stats_body(db: Any, ui: Renderer, *, tenant: str | None = None, allow_empty: bool = False) -> int:
    """Print totals: threads, roots, branches, held, events, messages, bytes, activity range.

    A database without ChatLedger data is an error (exit 1) unless ``allow_empty``.
    """
    await require_ledger_data(db, allow_empty, tenant=tenant)
    with ui.progress("counting") as tick:
        # Two count commands give both phases a known total before the long reads start.
        threads = await count_threads(db, ThreadFilter(tenant_id=tenant))
        events = await count_events(db, tenant_id=tenant)
        tick.stage("counting threads", threads)
        reading_events = False

        def on_event(done: int) -> None:
            nonlocal reading_events
            if not reading_events:
                tick.stage("reading events", events)
                reading_events = True
            tick.to(done)

        stats = await collect_stats(db, tenant_id=tenant, on_thread=tick, on_event=on_event)
    totals = {
        **stats.to_dict(),
        "oldest_activity": iso(stats.oldest_activity),
        "newest_activity": iso(stats.newest_activity),
    }
    if ui.as_json:
        ui.json("stats", {"tenant_id": tenant, **totals})
        return 0
    ui.table(
        "chatledger stats" + (f" (tenant {tenant})" if tenant else ""),
        ("total", "value"),
        ((key.replace("_", " "), value) for key, value in totals.items()),
        show_header=False,
    )
    return 0


def register(app: typer.Typer) -> None:
    """Add ``stats`` to ``app``."""
    add_ledger_wide(
        app,
        "stats",
        stats_body,
        "Totals: threads, branches, events, messages, bytes, oldest and newest activity.",
    )
