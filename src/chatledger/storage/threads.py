"""The ``threads`` collection: one document per thread, written once (holds aside).

Scope is applied here: an operation on behalf of an application binding takes its
:class:`~chatledger.models.Scope`, and a thread outside it is reported exactly like a
thread that does not exist. Admin operations pass ``scope=None`` explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from chatledger.errors import ThreadRemovedError
from chatledger.models import DEFAULT_SOURCE_ID, Scope, ThreadRecord
from chatledger.storage.documents import (
    HOLD_FIELDS,
    LEGACY_HOLD,
    LiveThread,
    check_thread,
    held_filter,
    live_thread,
)
from chatledger.storage.events import BATCH_SIZE, CHUNK
from chatledger.storage.filters import THREAD_VIEWS, ThreadFilter, ThreadView, threads_query
from chatledger.storage.gate import CollectionStore

__all__ = ["THREAD_INDEXES", "ThreadStore"]

THREAD_INDEXES: Final = ("root_id", "tenant_id", "user_id")


class ThreadStore(CollectionStore):
    """Named operations on the threads collection."""

    async def get(self, thread_id: str, *, scope: Scope | None) -> ThreadRecord | None:
        """Return the thread, or ``None`` if it does not exist or lies outside ``scope``.

        Args:
            thread_id: A validated thread id.
            scope: The binding's scope; ``None`` only for admin code (every thread).

        Raises:
            IntegrityError: the stored document is malformed.
        """
        doc = await self.gate.call("read thread", self.collection.find_one({"_id": thread_id}))
        if doc is None or "removed" in doc:
            return None  # a tombstone: the thread was removed
        record = check_thread(doc)
        if scope is not None and not scope.admits(record):
            return None
        return record

    async def session_ids(self, scope: Scope) -> set[str]:
        """Return the session ids recorded on the root threads of one scope."""
        query: dict[str, Any] = {
            "parent": None,
            "tenant_id": scope.tenant_id,
            "user_id": scope.user_id,
            "metadata.session_id": {"$exists": True},
        }
        # Threads created before scoping carry no source_id: they are the default source's.
        query["source_id"] = (
            {"$in": [scope.source_id, None]} if scope.source_id == DEFAULT_SOURCE_ID else scope.source_id
        )
        found: set[str] = set()
        async for doc in self.select(query, projection={"metadata": 1}):
            metadata = doc.get("metadata")
            session = metadata.get("session_id") if isinstance(metadata, Mapping) else None
            if isinstance(session, str):
                found.add(session)
        return found

    async def get_raw(self, thread_id: str) -> dict[str, Any] | None:
        """Return a thread document as stored, unchecked (verify and export judge it themselves)."""
        doc: dict[str, Any] | None = await self.gate.call(
            "read thread", self.collection.find_one({"_id": thread_id})
        )
        return doc

    async def live(self, thread_id: str) -> LiveThread | None:
        """Return a live thread's root and legal holds (0.1 holds included), or ``None`` if gone."""
        return live_thread(await self.get_raw(thread_id))

    async def insert_once(self, record: ThreadRecord) -> ThreadRecord:
        """Write a thread document unless one with its id exists; return the one that counts.

        Raises:
            IntegrityError: the existing document is malformed.
        """
        try:
            await self.gate.call("create thread", self.collection.insert_one(record.to_document()))
        except DuplicateKeyError:
            raw = await self.get_raw(record.id)
            if raw is None:  # deleted between our insert and our read (a 0.1 removal)
                return await self.insert_once(record)
            if "removed" in raw:
                raise ThreadRemovedError(
                    f"thread {record.id!r} was removed (retention or erasure); its id cannot be used again"
                ) from None
            return check_thread(raw)
        return record

    async def insert_raw(self, doc: Mapping[str, Any]) -> bool:
        """Insert a thread document as given (import); return ``False`` if its id is taken."""
        try:
            await self.gate.call("import thread", self.collection.insert_one(dict(doc)))
        except DuplicateKeyError:
            return False
        return True

    # ------------------------------------------------------------------ by filter (admin)

    def matching(
        self,
        thread_filter: ThreadFilter | None,
        *,
        view: ThreadView = "all",
        created_before: datetime | None = None,
        limit: int | None = None,
        by_root: bool = False,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the live thread documents a filter selects, raw, in bounded batches.

        Args:
            thread_filter: Which threads (``None``: all).
            view: Which fields (:data:`~chatledger.storage.filters.THREAD_VIEWS`).
            created_before: Only threads created before this time.
            limit: At most this many (pushed into the query).
            by_root: Sorted on ``root_id`` (a tree's threads come together) instead of ``_id``.
        """
        query = threads_query(thread_filter, created_before=created_before)
        projection = THREAD_VIEWS[view]
        # Sorted on root_id, the threads of one conversation come out next to each other,
        # so admin code judges one tree at a time; the root_id index serves the sort (the
        # server never buffers the collection to sort it). The order inside a tree is the caller's.
        return self._select(query, limit, projection, "root_id" if by_root else "_id")

    def rest_of_tree(
        self,
        thread_filter: ThreadFilter | None,
        root_id: object,
        seen: Sequence[object],
        *,
        view: ThreadView = "all",
        created_before: datetime | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the threads a filter selects in ``root_id``'s tree, except ``seen`` (a cut tree's rest)."""
        query = threads_query(thread_filter, created_before=created_before)
        rest = {"$and": [c for c in (query, {"root_id": root_id}, {"_id": {"$nin": list(seen)}}) if c]}
        return self.select(rest, projection=THREAD_VIEWS[view])

    async def ids_matching(self, thread_filter: ThreadFilter | None) -> AsyncIterator[str]:
        """Yield the ids of the live threads a filter selects, in id order."""
        async for doc in self.matching(thread_filter, view="ids"):
            yield str(doc["_id"])

    async def count_matching(self, thread_filter: ThreadFilter | None) -> int:
        """Return how many live threads a filter selects (one ``count`` command)."""
        return await self.count(threads_query(thread_filter))

    def select(
        self,
        query: Mapping[str, Any],
        *,
        limit: int | None = None,
        projection: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield raw thread documents matching an admin query, by ``_id``, in bounded batches."""
        return self._select(query, limit, projection, "_id")

    async def _select(
        self, query: Mapping[str, Any], limit: int | None, projection: Mapping[str, Any] | None, order: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        # Tombstones of removed threads are never listed.
        live = {**query, "removed": {"$exists": False}}
        cursor = self.collection.find(live, projection).sort(order, ASCENDING).batch_size(BATCH_SIZE)
        if limit is not None:
            cursor = cursor.limit(limit)
        async with self.gate.translated("read threads"):
            async for doc in cursor:
                yield doc

    async def family(self, root_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return every raw thread document of the trees with these roots."""
        out: list[dict[str, Any]] = []
        ids = sorted(set(root_ids))
        for start in range(0, len(ids), CHUNK):
            async for doc in self.select({"root_id": {"$in": ids[start : start + CHUNK]}}):
                out.append(doc)
        return out

    async def replace_holds(
        self,
        thread_id: str,
        expected: int,
        holds: Sequence[Mapping[str, Any]],
        *,
        legacy: bool = False,
        restore: Mapping[str, Any] | None = None,
    ) -> bool:
        """Replace a thread's legal holds if nobody changed them since revision ``expected``.

        Holds are the one thing admin code ever changes on a thread document. A
        compare-and-set on ``holds_rev`` (rather than ``$push``/``$pull`` with array
        conditions, which FerretDB does not apply) makes two operators racing on the
        same thread both succeed or one retry, never lose the other's hold.

        Args:
            thread_id: The thread.
            expected: The ``holds_rev`` read with the holds (0 if absent).
            holds: The new list of holds.
            legacy: Also clear a ChatLedger 0.1 single hold (:attr:`Holds.legacy
                <chatledger.storage.documents.Holds.legacy>`).
            restore: Put this 0.1 single hold back (undoing a change that cleared it).

        Returns:
            Whether the holds were replaced (``False``: changed meanwhile, or no such thread).
        """
        # Never on a removed thread. (Whether a removal has claimed it is checked by the
        # caller before and after, against the claim, which is the removal's lock.)
        match: dict[str, Any] = {"_id": thread_id, "removed": {"$exists": False}}
        match["holds_rev"] = expected if expected else {"$exists": False}
        update: dict[str, Any] = {"legal_holds": [dict(h) for h in holds], "holds_rev": expected + 1}
        if legacy:
            update[LEGACY_HOLD] = None
        if restore is not None:
            update[LEGACY_HOLD] = dict(restore)
        result = await self.gate.call(
            "change legal holds", self.collection.update_one(match, {"$set": update})
        )
        return bool(result.matched_count)

    async def mark_removing(self, thread_id: str, receipt_id: str) -> bool:
        """Mark a live thread as being removed (after its claim succeeded); return whether it is live.

        The mark is what the ledger and hold changes see cheaply; the lock itself is the
        claim document (:meth:`RemovalMarks.claim`), because an insert against a unique key
        is atomic on every engine while a conditional update is not on FerretDB.
        """
        result = await self.gate.call(
            "mark thread for removal",
            self.collection.update_one(
                {"_id": thread_id, "removed": {"$exists": False}},
                {"$set": {"removing": receipt_id, "removing_at": datetime.now(UTC)}},
            ),
        )
        return bool(result.matched_count)

    async def unmark_removing(self, thread_id: str, receipt_id: str) -> None:
        """Take a removal's mark off a thread (the lineage is skipped)."""
        await self.gate.call(
            "release removal claim",
            self.collection.update_one(
                {"_id": thread_id, "removing": receipt_id}, {"$unset": {"removing": "", "removing_at": ""}}
            ),
        )

    async def tombstone(self, thread_id: str, root_id: str, receipt_id: str, at: Any) -> bool:
        """Replace a claimed thread's document by a tombstone keeping only its id and root.

        Scope, metadata and holds go; the id stays taken, so the thread can never be
        re-created under it (and no stale process can chain onto its old hashes).
        """
        result = await self.gate.call(
            "remove thread",
            # A removal holds the thread's claim (RemovalMarks.claim): that is its lock; a
            # writer cleaning up its own branch is the only one that knows of it.
            self.collection.replace_one(
                {"_id": thread_id, "removed": {"$exists": False}},
                {"_id": thread_id, "root_id": root_id, "removed": {"receipt_id": receipt_id, "at": at}},
            ),
        )
        return bool(result.matched_count)

    async def delete(self, thread_id: str) -> int:
        """Delete one thread document; return how many were deleted (0 or 1)."""
        result = await self.gate.call("remove thread", self.collection.delete_one({"_id": thread_id}))
        return int(result.deleted_count)

    async def ensure_indexes(self) -> None:
        """Create the threads indexes, one per command."""
        for field in THREAD_INDEXES:
            await self.gate.create_index("create index", self.collection, [(field, ASCENDING)], name=field)

    # ------------------------------------------------------------------ admin at scale

    async def count(self, query: Mapping[str, Any]) -> int:
        """Return how many live thread documents match an admin query (a progress total)."""
        live = {**query, "removed": {"$exists": False}}
        return int(await self.gate.call("count threads", self.collection.count_documents(live)))

    # ------------------------------------------------------------------ verify and export

    async def live_among(self, thread_ids: Sequence[str]) -> set[str]:
        """Return which of these ids name a live thread document (one ``_id`` query per chunk)."""
        found: set[str] = set()
        ids = sorted(set(thread_ids))
        for start in range(0, len(ids), CHUNK):
            async for doc in self.select({"_id": {"$in": ids[start : start + CHUNK]}}, projection={"_id": 1}):
                found.add(str(doc["_id"]))
        return found

    def held(self, *, tenant_id: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the live raw thread documents carrying a legal hold (of ``tenant_id`` only), by ``_id``.

        Only the fields a list of holds shows are read: tenant, user and the holds.
        """
        query = held_filter()
        if tenant_id is not None:
            query["tenant_id"] = str(tenant_id)
        fields = {"tenant_id": 1, "user_id": 1, **dict.fromkeys(HOLD_FIELDS, 1)}
        return self._select(query, None, fields, "_id")
