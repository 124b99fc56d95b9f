"""Totals for operators: threads, branches, events, messages, bytes, oldest and newest activity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from chatledger.admin.catalog import ThreadFilter, as_ledger, aware
from chatledger.ledger import storage_of
from chatledger.storage.documents import holds_of
from chatledger.storage.encoding import encoded_size

__all__ = ["Stats", "collect_stats", "count_events"]

#: How often (in events) ``on_event`` hears about progress.
_EVENT_TICK: Final = 256


async def count_events(target: Any, *, tenant_id: str | None = None) -> int:
    """Return how many events :func:`collect_stats` would read (one ``count`` command; a progress total)."""
    return await storage_of(as_ledger(target)).tallies.count_matching(ThreadFilter(tenant_id=tenant_id))


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


async def collect_stats(
    target: Any,
    *,
    tenant_id: str | None = None,
    on_thread: Callable[[str], None] | None = None,
    on_event: Callable[[int], None] | None = None,
) -> Stats:
    """Return totals over every thread, or one tenant's, in bounded memory.

    Two streamed queries, whatever the number of threads: the thread documents (only
    the fields counted here), then the events of the scope (sizes need the whole
    documents; each is counted and dropped). Dates are the oldest and newest event
    ``created_at`` (min/max are computed here because FerretDB's ``$group`` has no
    ``$min``/``$max``). Events are selected by the scope they carry, so events whose
    thread document is missing are counted too (``verify`` names those).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        tenant_id: Only this tenant's threads and events.
        on_thread: Called with each thread id counted (progress reporting).
        on_event: Called with the number of events counted so far, every few hundred
            events (progress reporting).
    """
    storage = storage_of(as_ledger(target))
    scope = ThreadFilter(tenant_id=tenant_id)
    stats = Stats()
    # Only the fields the totals need (documents are never held: counted and dropped).
    async for doc in storage.threads.matching(scope, view="holds"):
        stats.threads += 1
        if doc.get("parent"):
            stats.branches += 1
        else:
            stats.roots += 1
        stats.held += holds_of(doc).held
        if on_thread is not None:
            on_thread(str(doc["_id"]))
    async for event in storage.tallies.scan_matching(scope):
        stats.events += 1
        count = event.get("count")
        stats.messages += count if type(count) is int else 0  # a malformed count is verify's to name
        stats.bytes += encoded_size(event)
        when = aware(event.get("created_at"))
        if when is not None:
            if stats.oldest_activity is None or when < stats.oldest_activity:
                stats.oldest_activity = when
            if stats.newest_activity is None or when > stats.newest_activity:
                stats.newest_activity = when
        if on_event is not None and stats.events % _EVENT_TICK == 0:
            on_event(stats.events)
    if on_event is not None:
        on_event(stats.events)
    return stats
