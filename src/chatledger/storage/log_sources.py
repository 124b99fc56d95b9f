"""What a sequencer reads of the ledger's own collections: events to sequence, receipts and holds.

The log's collections are :class:`~chatledger.storage.merkle.MerkleStore`'s; these reads
are on the events, audit and threads collections, kept apart so each class says one thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING

from chatledger.storage.documents import HOLD_FIELDS, held_filter
from chatledger.storage.driver import cursor_list
from chatledger.storage.events import BATCH_SIZE, EventStore
from chatledger.storage.gate import Gate
from chatledger.storage.receipts import ReceiptStore
from chatledger.storage.threads import ThreadStore

__all__ = ["EVENTS_BY_TIME", "LogSources"]

#: On the events collection: a sequencing run reads only the events created since its
#: watermark (less a look-back), so its cost follows the backlog, not the log.
EVENTS_BY_TIME: Final = "tenant_created_at"


class LogSources:
    """The event, receipt and thread reads a sequencer and a prover need (never the log's own collections)."""

    def __init__(self, gate: Gate, events: EventStore, receipts: ReceiptStore, threads: ThreadStore) -> None:
        self.gate = gate
        self.events = events
        self._receipts = receipts
        self._threads = threads

    # ------------------------------------------------------------------ events to sequence

    async def event_keys(self, tenant: str | None, after: str | None, limit: int) -> list[str]:
        """Return up to ``limit`` keys of a tenant's live events (``None``: no tenant) after ``after``.

        In ``_id`` order, which the primary index serves on every engine; only keys are read.
        """
        query: dict[str, Any] = {"tenant_id": tenant, "removed": {"$exists": False}}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.events.collection.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(limit)
        docs = await self.gate.call("read events", cursor_list(cursor.batch_size(limit)))
        return [d["_id"] for d in docs if type(d.get("_id")) is str]

    async def events_since(
        self, tenant: str | None, since: datetime, batch: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield, in lists of at most ``batch``, a tenant's live events created at or after ``since``.

        An equality and a range on the ``(tenant_id, created_at)`` index: on MongoDB it reads
        only those events. Unsorted, so no engine has to hold the range in memory.
        """
        query = {"tenant_id": tenant, "created_at": {"$gte": since}, "removed": {"$exists": False}}
        cursor = self.events.collection.find(query).hint(EVENTS_BY_TIME).batch_size(min(batch, BATCH_SIZE))
        docs: list[dict[str, Any]] = []
        async with self.gate.translated("read events"):
            async for doc in cursor:
                docs.append(doc)
                if len(docs) >= batch:
                    yield docs
                    docs = []
        if docs:
            yield docs

    async def count_since(self, tenant: str | None, since: datetime) -> int:
        """Return how many live events of a tenant were created at or after ``since``."""
        return await self.events.tallies.count({"tenant_id": tenant, "created_at": {"$gte": since}})

    # ------------------------------------------------------------------ receipts, holds and events by key

    async def receipts(self) -> list[dict[str, Any]]:
        """Return every receipt in the ledger's audit collection (not its configuration documents)."""
        cursor = self._receipts.collection.find({"kind": {"$ne": "config"}}).batch_size(BATCH_SIZE)
        return await self.gate.call("read receipts", cursor_list(cursor))

    async def receipt(self, receipt_id: str) -> dict[str, Any] | None:
        """Return one receipt as stored (an ``_id`` lookup), or ``None``."""
        query = {"_id": receipt_id, "kind": {"$ne": "config"}}
        doc: dict[str, Any] | None = await self.gate.call(
            "read receipt", self._receipts.collection.find_one(query)
        )
        return doc

    async def held_threads(self) -> list[dict[str, Any]]:
        """Return ``_id`` and holds of every thread document that carries a legal hold."""
        cursor = self._threads.collection.find(held_filter(), dict.fromkeys(HOLD_FIELDS, 1))
        return await self.gate.call("read threads", cursor_list(cursor.batch_size(BATCH_SIZE)))

    async def events_by_key(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Return the events with these keys, as stored (one query)."""
        if not keys:
            return []
        cursor = self.events.collection.find({"_id": {"$in": list(keys)}}).batch_size(BATCH_SIZE)
        return await self.gate.call("read events", cursor_list(cursor))

    async def existing_events(self, keys: Sequence[str]) -> set[str]:
        """Return which of these events have a document (live or hollowed by a removal): ``_id`` only."""
        if not keys:
            return set()
        cursor = self.events.collection.find({"_id": {"$in": list(keys)}}, {"_id": 1})
        docs = await self.gate.call("read events", cursor_list(cursor.batch_size(BATCH_SIZE)))
        return {str(d.get("_id")) for d in docs}

    async def removal_receipt_id(self, thread_id: str) -> str | None:
        """Return the id of the receipt that removed a thread (its tombstone names it), or ``None``."""
        doc = await self._threads.get_raw(thread_id)
        removed = doc.get("removed") if doc is not None else None
        receipt = removed.get("receipt_id") if isinstance(removed, Mapping) else None
        return receipt if type(receipt) is str else None

    async def base_offsets(self, thread_ids: Sequence[str]) -> dict[str, int]:
        """Return the ``base_offset`` (a branch's fork point) of these threads' documents."""
        if not thread_ids:
            return {}
        cursor = self._threads.collection.find({"_id": {"$in": list(thread_ids)}}, {"base_offset": 1})
        docs = await self.gate.call("read threads", cursor_list(cursor))
        return {str(d.get("_id")): d["base_offset"] for d in docs if type(d.get("base_offset")) is int}

    async def count_events(self, tenant: str | None) -> int:
        """Return how many live events a tenant's scope holds (a progress total)."""
        return await self.events.tallies.count({"tenant_id": tenant})
