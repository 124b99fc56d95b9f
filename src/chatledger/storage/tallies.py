"""Totals and bulk reads over the events of many threads: the admin tools' side of ``events``.

One query (or one per chunk of :data:`~chatledger.storage.events.CHUNK` threads) instead
of one per thread, in bounded batches, so an operator's command over a large deployment
keeps its memory and its round trips bounded. The ledger's own reads and writes are in
:mod:`chatledger.storage.events`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING

from chatledger.storage.documents import check_event
from chatledger.storage.driver import aggregate_list, cursor_list
from chatledger.storage.events import (
    BATCH_SIZE,
    CHUNK,
    SEQ_INDEX,
    SUMMARY,
    SUMMARY_FIELDS,
    EventStore,
    chunks,
    event_key,
)
from chatledger.storage.filters import ThreadFilter, events_match
from chatledger.storage.spool import EventSpool

__all__ = ["EventTallies"]


class EventTallies:
    """Totals and bulk reads over many threads' events (sharing the events store's gate and collection)."""

    def __init__(self, events: EventStore) -> None:
        self.events = events
        self.gate = events.gate
        self.collection = events.collection

    async def first_roles(self, thread_id: str) -> set[str]:
        """Return the roles of the messages of a thread's first own event (empty if none): one read.

        What kind of records a thread holds (a session's snapshots, a workflow run's
        checkpoints) shows in its first event's roles; only the roles are read.
        """
        cursor = (
            self.collection.find({"thread_id": thread_id}, {"messages.role": 1})
            .sort("seq", ASCENDING)
            .hint(SEQ_INDEX)
            .limit(1)
        )
        docs = await self.events.hinted("read events", SEQ_INDEX, lambda: cursor_list(cursor))
        messages = docs[0].get("messages") if docs else None
        if not isinstance(messages, list):
            return set()
        return {str(m.get("role")) for m in messages if isinstance(m, Mapping)}

    # ------------------------------------------------------------------ one ordered pass

    def ordered(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every stored document of the collection, raw, sorted on ``(thread_id, seq)``.

        One query, streamed in bounded batches: the unique ``(thread_id, seq)`` index serves
        the sort (named as a hint), so each thread's documents come together, oldest first,
        whatever their ``seq`` holds (BSON orders numbers before strings). Claims and
        hollowed positions are included; admin tools judge them as stored.
        """
        return self.events.in_index_order({}, None, [("thread_id", ASCENDING), ("seq", ASCENDING)])

    async def spool(self, on_progress: Callable[[int, int | None], None] | None = None) -> EventSpool:
        """Return every stored event, read in one ordered pass and kept on local disk by thread.

        See :mod:`chatledger.storage.spool`. The caller closes the spool.

        Args:
            on_progress: Called every :data:`BATCH_SIZE` documents with ``(read so far,
                the collection's estimated size)``, and once at the end.
        """
        total = await self.estimated_total() if on_progress is not None else None
        spool = EventSpool(getattr(self.collection, "codec_options", None))
        try:
            async for doc in self.ordered():
                spool.add(doc)
                if on_progress is not None and spool.documents % BATCH_SIZE == 0:
                    on_progress(spool.documents, total)
        except BaseException:
            spool.close()
            raise
        if on_progress is not None:
            on_progress(spool.documents, total)
        return spool

    async def estimated_total(self) -> int:
        """Return the number of stored documents from the collection's metadata (a progress total)."""
        return int(await self.gate.call("count events", self.collection.estimated_document_count()))

    def live_counts(self, thread_ids: Sequence[str] | None = None) -> AsyncIterator[dict[str, int]]:
        """Yield ``{thread_id: live documents}`` in chunks, for these threads (``None``: every thread).

        Live: not a hollowed position nor a removal's claim. See :meth:`thread_ids`.
        """
        match: dict[str, Any] = {"removed": {"$ne": True}}
        if thread_ids is not None:
            match["thread_id"] = {"$in": list(thread_ids)}
        return self.thread_ids(match)

    def scan_matching(self, thread_filter: ThreadFilter | None) -> AsyncIterator[dict[str, Any]]:
        """Yield every live event whose scope a filter selects, raw, in bounded batches, in no set order."""
        return self.scan(events_match(thread_filter))

    async def count_matching(self, thread_filter: ThreadFilter | None) -> int:
        """Return how many live events a filter's scope selects (a progress total)."""
        return await self.count(events_match(thread_filter))

    async def any_sealed(self, thread_ids: Sequence[str]) -> bool:
        """Return whether any live event of these threads holds a sealed message (one query)."""
        query = {"thread_id": {"$in": list(thread_ids)}, "messages.sealed": {"$exists": True}}
        doc = await self.gate.call("probe sealed events", self.collection.find_one(query, {"_id": 1}))
        return doc is not None

    async def counts(self, thread_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Return ``{thread_id: (events, messages)}`` for the threads that have events."""
        out: dict[str, list[int]] = {}
        for chunk in chunks(sorted(thread_ids)):
            # One accumulator per $group: FerretDB v1.24.2 returns 0 for every $sum after
            # the first in a $group stage (checked against the server).
            for index, total in ((0, 1), (1, "$count")):
                rows = await self.gate.call(
                    "count events",
                    aggregate_list(
                        self.collection,
                        [
                            {"$match": {"thread_id": {"$in": chunk}, "removed": {"$exists": False}}},
                            {"$group": {"_id": "$thread_id", "n": {"$sum": total}}},
                        ],
                    ),
                )
                for row in rows:
                    n = row.get("n")
                    out.setdefault(str(row["_id"]), [0, 0])[index] = n if type(n) is int else 0
        return {tid: (v[0], v[1]) for tid, v in out.items()}

    async def thread_ids(
        self, match: Mapping[str, Any] | None = None, *, chunk: int = 10_000
    ) -> AsyncIterator[dict[str, int]]:
        """Yield ``{thread_id: events}`` of every thread that has events matching ``match``, in chunks.

        Memory stays bounded on both sides whatever the number of threads: each chunk is
        one aggregate over at most ``chunk`` events, taken in ``thread_id`` order after
        the previous chunk's last thread (a range on the ``(thread_id, seq)`` index), so
        the whole collection is read once. A thread the limit cuts is counted again from
        its start in the next chunk; one with more than ``chunk`` events is counted alone.
        Events whose ``thread_id`` is not a string (tampering) come first, in one chunk.
        """

        def counted(rows: list[dict[str, Any]]) -> dict[str, int]:
            return {str(r["_id"]): int(r["n"]) if type(r.get("n")) is int else 0 for r in rows}

        async def group(condition: Mapping[str, Any], limit: int | None) -> dict[str, int]:
            pipeline: list[dict[str, Any]] = [{"$match": {"$and": [dict(match or {}), dict(condition)]}}]
            if limit is not None:
                pipeline += [{"$sort": {"thread_id": ASCENDING}}, {"$limit": limit}]
            pipeline.append({"$group": {"_id": "$thread_id", "n": {"$sum": 1}}})
            return counted(await self.gate.call("count events", aggregate_list(self.collection, pipeline)))

        odd = await group({"thread_id": {"$not": {"$type": "string"}}}, None)
        if odd:
            yield odd
        after: str | None = None
        while True:
            found = await group(
                {"thread_id": {"$type": "string"} if after is None else {"$gt": after}}, chunk
            )
            ids = sorted(found)
            if sum(found.values()) < chunk:
                if found:
                    yield found
                return
            if len(ids) == 1:
                # One thread fills the whole chunk: count it by itself.
                found = await group({"thread_id": ids[0]}, None)
            else:
                del found[ids[-1]]  # possibly cut by the limit: counted whole in the next chunk
                ids.pop()
            yield found
            after = ids[-1]

    def scan(
        self, match: Mapping[str, Any], *, projection: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every live event matching a scope filter, raw, in bounded batches, in no set order.

        For totals over many threads: one query instead of one per thread. Events of
        removed threads (hollowed positions) are left out.
        """
        return self._scan(match, projection)

    async def _scan(
        self, match: Mapping[str, Any], projection: Mapping[str, Any] | None
    ) -> AsyncIterator[dict[str, Any]]:
        live = {**match, "removed": {"$exists": False}}
        cursor = self.collection.find(live, projection).batch_size(BATCH_SIZE)
        async with self.gate.translated("read events"):
            async for doc in cursor:
                yield doc

    async def count(self, match: Mapping[str, Any]) -> int:
        """Return how many live events match a scope filter (a progress total)."""
        live = {**match, "removed": {"$exists": False}}
        return int(await self.gate.call("count events", self.collection.count_documents(live)))

    async def delete_ids(self, event_ids: Sequence[str]) -> int:
        """Delete the events with exactly these ``_id`` values; return how many were deleted.

        Undoes what one operation wrote (an import stopped part-way): nothing but the
        named documents is touched, whatever else shares their threads.
        """
        deleted = 0
        for chunk in chunks([str(i) for i in event_ids]):
            result = await self.gate.call(
                "remove events", self.collection.delete_many({"_id": {"$in": chunk}})
            )
            deleted += int(result.deleted_count)
        return deleted

    async def seq_totals(self, thread_ids: Sequence[str]) -> dict[str, int]:
        """Return ``{thread_id: sum of its live events' seq}`` (one ``$group`` per chunk of threads).

        With the count of events, this tells whether a thread's events are exactly the
        contiguous run after its fork point, so its head can be fetched by key.
        """
        out: dict[str, int] = {}
        for chunk in chunks(sorted(thread_ids)):
            rows = await self.gate.call(
                "count events",
                aggregate_list(
                    self.collection,
                    [
                        {"$match": {"thread_id": {"$in": chunk}, "removed": {"$exists": False}}},
                        {"$group": {"_id": "$thread_id", "n": {"$sum": "$seq"}}},
                    ],
                ),
            )
            for row in rows:
                n = row.get("n")
                out[str(row["_id"])] = n if type(n) is int else -1
        return out

    async def heads_at(self, expected: Mapping[str, int]) -> dict[str, dict[str, Any]]:
        """Return the newest event of many threads by key: one ``_id`` query per chunk of threads.

        ``expected`` maps each thread to the seq its head should have. A thread is in
        the result only if its event at that seq exists and none follows it; for the
        others the caller asks :meth:`head`, which never guesses.
        """
        out: dict[str, dict[str, Any]] = {}
        items = sorted(expected.items())
        for start in range(0, len(items), CHUNK):
            part = items[start : start + CHUNK]
            keys = [event_key(t, s) for t, s in part] + [event_key(t, s + 1) for t, s in part]
            cursor = self.collection.find(
                {"_id": {"$in": keys}}, {**SUMMARY, "created_at": 1, "removed": 1}
            ).batch_size(BATCH_SIZE)
            found = {str(d["_id"]): d for d in await self.gate.call("read heads", cursor_list(cursor))}
            for tid, seq in part:
                doc = found.get(event_key(tid, seq))
                if doc is None or doc.get("removed") or event_key(tid, seq + 1) in found:
                    continue
                if doc.get("thread_id") != tid or doc.get("seq") != seq:
                    continue  # stored under a key that does not match: let head() judge it
                out[tid] = check_event(doc, fields=SUMMARY_FIELDS)
        return out
