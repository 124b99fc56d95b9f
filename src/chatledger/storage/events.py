"""The ``events`` collection: one immutable document per append.

Every query here has the shape its index serves: an equality on ``thread_id`` plus a
range on ``seq`` or ``first_message``, sorted on that field, limited, and with the
index named as a hint, so MongoDB cannot pick another plan. "The event at a
position" is a primary-key lookup (``_id`` is ``"<thread_id>#<seq>"``), the one filter
every engine pushes down.

A hint naming a missing index fails on MongoDB and DocumentDB (events restored without
their indexes, or an index dropped by hand): such a read creates the indexes, as the first
append does, and runs again; if they cannot be created, it fails with a
:class:`~chatledger.errors.StorageError` naming the index and how to create it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from chatledger.errors import (
    ConcurrencyError,
    IntegrityError,
    StorageError,
    StorageUnavailableError,
    ThreadRemovedError,
)
from chatledger.storage.documents import check_event
from chatledger.storage.driver import cursor_list
from chatledger.storage.gate import CollectionStore

if TYPE_CHECKING:
    from chatledger.storage.tallies import EventTallies

__all__ = [
    "BATCH_SIZE",
    "CHUNK",
    "EVENT_INDEXES",
    "HOLLOW_DROP",
    "SEQ_INDEX",
    "SUMMARY",
    "SUMMARY_FIELDS",
    "WITHDRAWN",
    "EventStore",
    "PositionTakenError",
    "chunks",
    "event_key",
]

_T = TypeVar("_T")

#: Documents per reply batch. FerretDB refuses replies over 48 MB, so no query may let
#: the server put a whole long thread in one reply; 256 events of 10 messages stay small.
BATCH_SIZE: Final = 256
#: How many thread ids one ``$in`` query carries, so no query document grows unbounded.
CHUNK: Final = 500
#: How many messages before a page the event running into it is first looked for. A range
#: bounded on both ends keeps the read O(page) on engines that sort what the range matches
#: instead of scanning the index backwards (DocumentDB); a larger event widens the window.
BEFORE_WINDOW: Final = 256
#: The head query sorts at most this many events, after narrowing the head down with
#: queries of ``HEAD_PROBES`` point lookups (``EventStore._head_floor``). Each event a
#: query returns costs DocumentDB ~25-70 µs, a round trip ~1 ms: measured, these are best.
HEAD_WINDOW: Final = 256
HEAD_PROBES: Final = 16

SEQ_INDEX: Final = "thread_seq_unique"
_MESSAGE_INDEX: Final = "thread_first_message"
_COMPACTION_INDEX: Final = "thread_compaction"
#: The indexes of the events collection: (name, keys, options).
EVENT_INDEXES: Final[tuple[tuple[str, list[tuple[str, int]], dict[str, Any]], ...]] = (
    # The unique (thread_id, seq) index IS the concurrency control.
    (SEQ_INDEX, [("thread_id", ASCENDING), ("seq", ASCENDING)], {"unique": True}),
    # Paging by message number is a range on this index, never a skip.
    (_MESSAGE_INDEX, [("thread_id", ASCENDING), ("first_message", ASCENDING)], {}),
    # Recognising a retried append that ended up on a branch. Not unique: a unique
    # index must be prefixed by the shard key (thread_id) when sharded.
    ("event_id", [("event_id", ASCENDING)], {}),
    # Erasure by subject and removal sweeps find every event of a lineage or a user.
    ("root_id", [("root_id", ASCENDING)], {}),
    ("user_id", [("user_id", ASCENDING)], {}),
    # The newest compaction summary of a thread: a range on this index over the few
    # compaction events (every other event has no ``compaction`` and sorts below 1).
    (_COMPACTION_INDEX, [("thread_id", ASCENDING), ("compaction.last_seq", ASCENDING)], {}),
)

SUMMARY: Final = {"first_message": 1, "count": 1, "hash": 1, "seq": 1, "thread_id": 1, "removed": 1}
SUMMARY_FIELDS: Final = ("seq", "first_message", "count", "thread_id", "hash")
#: A compaction summary event holds no transcript message (count 0) and shares its
#: ``first_message`` with the next event: a page must never take it for that event.
_HOLDS_MESSAGES: Final = {"count": {"$gt": 0}}

_PAGE: Final = {
    "first_message": 1,
    "count": 1,
    "messages": 1,
    "seq": 1,
    "thread_id": 1,
    "hash": 1,
    "removed": 1,
    "v": 1,
}


class PositionTakenError(ConcurrencyError):
    """The position an event was written to already holds an event (internal to the ledger)."""


def event_key(thread_id: str, seq: int) -> str:
    """Return the ``_id`` of the event at ``seq`` in ``thread_id``: ``"<thread_id>#<seq>"``.

    The seq after the last ``#`` is unambiguous whatever the thread id contains.
    """
    return f"{thread_id}#{seq}"


#: The one field ever added to a live event: a checkpoint record withdrawn by
#: ``MongoCheckpointStorage.delete`` carries the id of its ``checkpoint.deleted`` receipt
#: here, so a load sees the withdrawal in the one document it reads. It is outside the
#: hash (the receipt is the audit record; this is its index), and a removal drops it.
WITHDRAWN: Final = "withdrawn"

#: The fields a removal strips from an event: all but ``_id``, ``thread_id``, ``seq`` and
#: ``root_id`` (its position, so no stale writer can take it, and its lineage).
HOLLOW_DROP: Final = (
    "v",
    "first_message",
    "count",
    "messages",
    "event_id",
    "created_at",
    "prev_hash",
    "hash",
    "tenant_id",
    "user_id",
    "source_id",
    "thread_digest",
    # A summary's range and messages: erasure leaves no summary text behind either.
    "compaction",
    WITHDRAWN,
)


def _removed(doc: Mapping[str, Any]) -> ThreadRemovedError:
    return ThreadRemovedError(
        f"thread {doc.get('thread_id')!r} was removed (retention or erasure): nothing can be read from "
        "or appended to it"
    )


def _live(doc: Mapping[str, Any]) -> dict[str, Any]:
    if doc.get("removed"):
        raise _removed(doc)
    return check_event(doc)


def chunks(ids: Sequence[str]) -> list[list[str]]:
    """Return ``ids`` cut into lists of at most :data:`CHUNK` (one ``$in`` query each)."""
    return [list(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)]


class EventStore(CollectionStore):
    """Named operations on the events collection."""

    async def insert(self, doc: Mapping[str, Any]) -> None:
        """Insert one event.

        Raises:
            PositionTakenError: its ``(thread_id, seq)`` (or ``_id``) is already taken.
            StorageUnavailableError: the database could not be reached.
        """
        try:
            await self.gate.call("append event", self.collection.insert_one(dict(doc)))
        except DuplicateKeyError as e:
            raise PositionTakenError(
                f"seq {doc.get('seq')} of thread {doc.get('thread_id')!r} is taken"
            ) from e

    async def insert_many(self, docs: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert events, unordered; return the indexes (into ``docs``) that clashed with existing ones.

        Raises:
            StorageError: a write failed for a reason other than a duplicate key.
        """
        if not docs:
            return []

        async def insert() -> list[dict[str, Any]]:
            try:
                await self.collection.insert_many([dict(d) for d in docs], ordered=False)
            except BulkWriteError as e:
                # Duplicates are expected on a re-run; the caller checks them one by one.
                errors: list[dict[str, Any]] = e.details.get("writeErrors", [])
                return errors
            return []

        errors = await self.gate.call("import events", insert())
        other = [(err.get("code"), err.get("errmsg")) for err in errors if err.get("code") != 11000]
        if other:
            raise IntegrityError(f"import events: {other[:3]}")
        return sorted(int(err["index"]) for err in errors)

    async def at(self, thread_id: str, seq: int, *, full: bool = False) -> dict[str, Any] | None:
        """Return the event at ``seq`` of ``thread_id`` (its summary fields unless ``full``)."""
        doc = await self.gate.call(
            "read event",
            self.collection.find_one({"_id": event_key(thread_id, seq)}, None if full else SUMMARY),
        )
        if doc is None:
            return None
        if doc.get("removed"):
            raise _removed(doc)
        if doc.get("thread_id") != thread_id or doc.get("seq") != seq:
            raise IntegrityError(
                f"event {doc.get('_id')!r} is stored under a key that does not match its position"
            )
        return check_event(doc, fields=None if full else SUMMARY_FIELDS)

    async def mark_withdrawn(self, key: str, event_hash: str, receipt_id: str) -> bool:
        """Mark the live event stored under ``key`` (its ``_id``) withdrawn; return whether this call did.

        Only the event with this hash, not removed and not marked before, is marked: the
        first withdrawal's receipt id stays, and a hollowed or replaced event is left alone.
        """
        result = await self.gate.call(
            "withdraw event",
            self.collection.update_one(
                {
                    "_id": key,
                    "hash": event_hash,
                    "removed": {"$exists": False},
                    WITHDRAWN: {"$exists": False},
                },
                {"$set": {WITHDRAWN: receipt_id}},
            ),
        )
        return bool(result.modified_count)

    async def occupied(self, thread_id: str, seq: int) -> bool:
        """Return whether ``seq`` of ``thread_id`` holds anything (an event, a closing mark, a hollow).

        One read of an exact ``_id`` (an index lookup on MongoDB and DocumentDB; on
        FerretDB v1 still a scan that stops at the key, about ten times cheaper than a
        query on any other field), returning only the key: a reader that remembers the head
        it last saw asks whether the position after it is still free, which it is until
        an append or a removal's closing mark takes it.
        """
        doc = await self.gate.call(
            "read head", self.collection.find_one({"_id": event_key(thread_id, seq)}, {"_id": 1})
        )
        return doc is not None

    async def head(self, thread_id: str, *, full: bool = False) -> dict[str, Any] | None:
        """Return the summary of the newest live event of ``thread_id`` (all of it if ``full``), or ``None``.

        Events of a removed thread are not live: a writer that still had the thread cached
        then appends into a hollowed position or a closing mark and gets ``ThreadRemovedError``.

        The newest event is looked for from a floor close below the head up (see
        :meth:`_head_floor`), and in the whole thread only if none there is live.
        """

        def query(floor: int | None) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
            condition: dict[str, Any] = {"thread_id": thread_id, "removed": {"$exists": False}}
            if floor is not None:
                condition["seq"] = {"$gte": floor}
            return lambda: cursor_list(
                self.collection.find(condition, None if full else {**SUMMARY, "created_at": 1})
                .sort("seq", DESCENDING)
                .hint(SEQ_INDEX)
                .limit(1)
            )

        floor = await self._head_floor(thread_id)
        # Below HEAD_WINDOW the whole thread is no more to sort than a window, and the
        # unbounded query also meets a damaged newest event (a ``seq`` that is not a
        # number sorts above every number, where ``$gte`` would pass it by).
        docs = await self.hinted("read head", SEQ_INDEX, query(floor)) if floor > HEAD_WINDOW else []
        if not docs:
            # No probed position, or the newest events are removed: the whole thread, as stored.
            docs = await self.hinted("read head", SEQ_INDEX, query(None))
        return check_event(docs[0], fields=None if full else SUMMARY_FIELDS) if docs else None

    async def _head_floor(self, thread_id: str) -> int:
        """Return a ``seq`` of the thread at most ``HEAD_WINDOW`` below its head (0: none found).

        DocumentDB never reads an index in order (its planner sorts whatever a range
        matches), so ``sort(seq: -1).limit(1)`` over a whole thread reads all of it there.
        A thread's own events hold contiguous ``seq``, so which of a few positions exist
        (``_id`` lookups, :func:`event_key`, one query a round) brackets the head: first
        between two powers of two, then ``HEAD_PROBES`` times narrower a round until the
        bracket is at most ``HEAD_WINDOW`` wide, and the head query sorts that much: one
        probe query below 512 events, two below 8,192, three below 131,072. With gaps
        (tampering) the floor is lower, never above the head; 0 when no power of two is a
        position of the thread (an empty thread, a branch shorter than its fork point).
        """
        probes = [1 << k for k in range(63)]
        floor = span = 0
        while True:
            seqs = await self._present(thread_id, probes)
            if not seqs:
                return floor
            # The head is below the next power of two, then below the next probe.
            span = span // HEAD_PROBES if floor else max(seqs)
            floor = max(seqs)
            if span <= HEAD_WINDOW:
                return floor
            step = span // HEAD_PROBES
            probes = [floor + j * step for j in range(1, HEAD_PROBES)]

    async def _present(self, thread_id: str, seqs: list[int]) -> list[int]:
        """Return which of ``seqs`` are positions of the thread (removed or not): one ``_id`` query."""
        keys = [event_key(thread_id, seq) for seq in seqs]
        found = self.collection.find({"_id": {"$in": keys}}, {"thread_id": 1, "seq": 1})
        docs = await self.gate.call("read head", cursor_list(found))
        return [d["seq"] for d in docs if d.get("thread_id") == thread_id and type(d.get("seq")) is int]

    async def with_event_id(self, event_id: str, seq: int) -> list[dict[str, Any]]:
        """Return the events (a few at most) at ``seq`` of any thread that carry ``event_id``."""

        def query() -> Awaitable[list[dict[str, Any]]]:
            return cursor_list(
                self.collection.find({"event_id": event_id, "seq": seq}).hint("event_id").limit(8)
            )

        docs = await self.hinted("read event", "event_id", query)
        return [check_event(d) for d in docs if not d.get("removed")]

    async def page(self, thread_id: str, lo: int, hi: int) -> list[dict[str, Any]]:
        """Return, oldest first, the events of ``thread_id`` that hold messages ``[lo, hi)``.

        Two queries whatever the batch sizes (more only after an event of over
        ``BEFORE_WINDOW`` messages): every event starting inside the window (a range on
        ``first_message``), and, unless one starts exactly at ``lo``, the single event that
        starts before ``lo`` and runs into the window, looked for in a range ending at
        ``lo`` that widens sixteenfold while it finds nothing.
        """

        def inside() -> Awaitable[list[dict[str, Any]]]:
            return cursor_list(
                self.collection.find(
                    {"thread_id": thread_id, "first_message": {"$gte": lo, "$lt": hi}, **_HOLDS_MESSAGES},
                    _PAGE,
                )
                .sort("first_message", ASCENDING)
                .hint(_MESSAGE_INDEX)
                .limit(hi - lo)
                .batch_size(BATCH_SIZE)
            )

        def before(floor: int) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
            return lambda: cursor_list(
                self.collection.find(
                    {"thread_id": thread_id, "first_message": {"$gte": floor, "$lt": lo}, **_HOLDS_MESSAGES},
                    _PAGE,
                )
                .sort("first_message", DESCENDING)
                .hint(_MESSAGE_INDEX)
                .limit(1)
            )

        docs = [_live(d) for d in await self.hinted("read events", _MESSAGE_INDEX, inside)]
        if not docs or docs[0]["first_message"] != lo:
            width = BEFORE_WINDOW
            while True:
                floor = max(0, lo - width)
                found = await self.hinted("read events", _MESSAGE_INDEX, before(floor))
                if found or floor == 0:
                    break
                width *= 16
            earlier = [_live(d) for d in found]
            docs = [d for d in earlier if d["first_message"] + d["count"] > lo] + docs
        return docs

    async def newest_compaction(self, segments: Sequence[tuple[str, int, int]]) -> dict[str, Any] | None:
        """Return the newest compaction summary event among ``(thread_id, lo_seq, hi_seq]`` segments.

        One query whatever the number of segments. Along a line every summary's range
        reaches past the previous one's, so the newest is the one with the greatest
        ``compaction.last_seq``: each clause is a range on the compaction index that
        visits compaction events only, never the ordinary events.
        """
        if not segments:
            return None
        clauses = [
            {"thread_id": tid, "compaction.last_seq": {"$gte": 1}, "seq": {"$gt": lo, "$lte": hi}}
            for tid, lo, hi in segments
        ]
        query = (
            self.collection.find(clauses[0] if len(clauses) == 1 else {"$or": clauses})
            .sort("compaction.last_seq", DESCENDING)
            .limit(1)
        )
        docs = await self.gate.call("read events", cursor_list(query))
        return _live(docs[0]) if docs else None

    async def positions(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """Return the stored events at ``(thread_id, seq)`` positions, raw, by key: one ``_id`` query.

        For checks of a few positions (a compaction summary's range): each document holds
        the summary fields and its own ``compaction.last_seq``; types are the caller's to judge.
        """
        if not keys:
            return {}
        ids = sorted({event_key(t, s) for t, s in keys})
        cursor = self.collection.find({"_id": {"$in": ids}}, {**SUMMARY, "compaction.last_seq": 1})
        docs = await self.gate.call("read events", cursor_list(cursor))
        by_id = {str(d["_id"]): d for d in docs}
        return {(t, s): by_id[event_key(t, s)] for t, s in keys if event_key(t, s) in by_id}

    async def withdrawn_in(self, thread_ids: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """Yield the live events of these threads marked :data:`WITHDRAWN`: position, first message, mark."""
        ids = sorted(set(thread_ids))
        projection = {"thread_id": 1, "seq": 1, "first_message": 1, WITHDRAWN: 1}
        for start in range(0, len(ids), CHUNK):
            query = {
                "thread_id": {"$in": ids[start : start + CHUNK]},
                WITHDRAWN: {"$exists": True},
                "removed": {"$exists": False},
            }
            async with self.gate.translated("read events"):
                async for doc in self.collection.find(query, projection).batch_size(BATCH_SIZE):
                    yield doc

    async def stream(
        self, thread_id: str, *, after_seq: int | None = 0, projection: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield a thread's own events in ``seq`` order, in bounded batches (never all at once).

        Documents are yielded raw: verify and export must see malformed events as they are.

        Args:
            thread_id: The thread.
            after_seq: Only events after this position. ``None``: every document of the
                thread whatever its ``seq`` holds: a range never matches a ``seq`` stored as
                a string, so verify reads this way to name a poisoned event, not skip it
                (BSON orders numbers before strings, so such events come last).
            projection: The fields to return (all by default).
        """
        query: dict[str, Any] = {"thread_id": thread_id}
        if after_seq is not None:
            query["seq"] = {"$gt": after_seq}
        async for doc in self.in_index_order(query, projection, [("seq", ASCENDING)]):
            yield doc

    async def in_index_order(
        self, query: Mapping[str, Any], projection: Mapping[str, Any] | None, sort: list[tuple[str, int]]
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield raw documents sorted on (a prefix of) the ``(thread_id, seq)`` index, hinting it, in batches.

        A missing index (refused hint) is created and the read run again, once.
        """
        for attempt in range(2):
            cursor = self.collection.find(query, projection).sort(sort).hint(SEQ_INDEX).batch_size(BATCH_SIZE)
            yielded = False
            try:
                async with self.gate.translated("read events"):
                    async for doc in cursor:
                        yielded = True
                        yield doc
                return
            except StorageError as e:
                # A missing index fails the first batch, before anything was yielded.
                if yielded or attempt or not await self._index_repaired(SEQ_INDEX, e):
                    raise

    async def hollow_event(self, thread_id: str, seq: int) -> None:
        """Strip one event down to its position (a writer cleaning up after itself)."""
        await self.gate.call(
            "remove event",
            self.collection.update_one(
                {"_id": event_key(thread_id, seq)},
                {"$set": {"removed": True}, "$unset": dict.fromkeys(HOLLOW_DROP, "")},
            ),
        )

    async def ensure_indexes(self) -> None:
        """Create the events indexes (one per command: FerretDB panics on multi-index re-runs)."""
        for name, keys, options in EVENT_INDEXES:
            await self.gate.create_index("create index", self.collection, keys, name=name, **options)

    @cached_property
    def tallies(self) -> EventTallies:
        """The totals over many threads' events (:class:`~chatledger.storage.tallies.EventTallies`)."""
        from chatledger.storage.tallies import EventTallies  # it builds on this module

        return EventTallies(self)

    async def hinted(self, what: str, index: str, query: Callable[[], Awaitable[_T]]) -> _T:
        """Run a read that hints ``index``; if the index is missing, create the indexes and run it again."""
        try:
            return await self.gate.call(what, query())
        except StorageError as e:
            if not await self._index_repaired(index, e):
                raise
        return await self.gate.call(what, query())

    async def _index_repaired(self, index: str, error: StorageError) -> bool:
        """After a hinted read failed: create the indexes if the hint was refused; return whether so.

        MongoDB and DocumentDB refuse a hint naming a missing index with code 2 (BadValue).
        The indexes are not listed first: the application's role (``chatledger roles
        create``) may create indexes but not list them. Creating them is idempotent, so
        another BadValue costs one round of ``createIndex`` and fails again on the retry.

        Raises:
            StorageError: creating the indexes failed (no ``createIndex`` privilege, an
                index with the same keys under another name, or stored events that break
                the unique index).
        """
        cause = error.__cause__
        if isinstance(error, StorageUnavailableError) or not isinstance(cause, OperationFailure):
            return False
        if cause.code != 2:
            return False
        try:
            await self.ensure_indexes()
        except (StorageError, DuplicateKeyError) as e:  # stored events that break the unique index
            raise StorageError(
                f"the events collection {self.collection.name!r} has no index {index!r}, which reads need, "
                f"and creating it failed ({e}): create the ledger's indexes with Ledger.ensure_indexes() "
                "as a user allowed createIndex (`chatledger roles create` prints such a role)"
            ) from e
        return True
