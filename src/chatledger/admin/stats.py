"""Totals for operators: threads, branches, events, messages, bytes, oldest and newest activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson

from chatledger.admin.catalog import ThreadFilter, as_ledger, aware, iter_events, load_forest

__all__ = ["Stats", "collect_stats"]


@dataclass(slots=True)
class Stats:
    """What the ledger holds (or one tenant's share of it)."""

    threads: int = 0
    roots: int = 0
    branches: int = 0
    held: int = 0
    events: int = 0
    messages: int = 0
    #: BSON size of the event documents (indexes and the server's overhead excluded).
    bytes: int = 0
    oldest_activity: datetime | None = None
    newest_activity: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("threads", "roots", "branches", "held", "events", "messages", "bytes")
        }
        for name in ("oldest_activity", "newest_activity"):
            value = getattr(self, name)
            out[name] = value.isoformat() if value is not None else None
        return out


async def collect_stats(target: Any, *, tenant_id: str | None = None) -> Stats:
    """Return totals over every thread, or one tenant's.

    Streams every event once (sizes need the documents), one thread at a time; dates
    are the oldest and newest event ``created_at`` (min/max are computed here because
    FerretDB's ``$group`` has no ``$min``/``$max``).
    """
    ledger = as_ledger(target)
    forest = await load_forest(ledger, ThreadFilter(tenant_id=tenant_id), with_family=False)
    stats = Stats(threads=len(forest.docs))
    for tid, doc in forest.docs.items():
        if doc.get("parent"):
            stats.branches += 1
        else:
            stats.roots += 1
        stats.held += forest.held(tid)
        async for event in iter_events(ledger, tid):
            stats.events += 1
            stats.messages += int(event.get("count") or 0)
            stats.bytes += len(bson.encode(event))
            when = aware(event.get("created_at"))
            if when is not None:
                if stats.oldest_activity is None or when < stats.oldest_activity:
                    stats.oldest_activity = when
                if stats.newest_activity is None or when > stats.newest_activity:
                    stats.newest_activity = when
    return stats
