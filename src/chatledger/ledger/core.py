"""The ledger: append, read, branch and lineage over a MongoDB database handle.

This is the only module that talks to MongoDB for conversation data, and the one
place where driver errors become ChatLedger's own exceptions.

Concurrency control is nothing but the unique index on ``(thread_id, seq)``: an append
inserts the event at ``cursor.offset + 1``; if another event already holds that
position, the append either was already committed (same ``event_id``: a retry) or the
thread moved on, and the event is written to a new branch forked at the cursor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import bson
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    PyMongoError,
)

from chatledger._maf import Message
from chatledger.codec import decode_message, encode_messages
from chatledger.errors import (
    BatchTooLargeError,
    ConcurrencyError,
    IntegrityError,
    InvalidCursorError,
    InvalidInputError,
    StorageError,
    StorageUnavailableError,
    UnknownThreadError,
)
from chatledger.hashing import GENESIS_HASH, event_hash
from chatledger.models import (
    EVENT_SCHEMA_VERSION,
    Cursor,
    ForkPoint,
    ThreadRecord,
    utc_now_ms,
    validate_thread_id,
)
from chatledger.storage.driver import cursor_list

__all__ = [
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "MAX_EVENT_BYTES",
    "AppendResult",
    "Ledger",
    "Position",
    "Segment",
    "event_key",
    "new_thread_id",
]

DEFAULT_THREADS_COLLECTION: Final = "threads"
DEFAULT_EVENTS_COLLECTION: Final = "events"
DEFAULT_AUDIT_COLLECTION: Final = "audit"
#: MongoDB's document size limit. We check it ourselves so every engine (mongomock
#: included) refuses an oversized batch the same way, before anything is written.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
#: How many thread records / event heads each ledger keeps in memory. Both are
#: immutable once written, so caching them is safe.
_CACHE_SIZE: Final = 10_000

#: The fields a page read needs.
_PAGE: Final = {"first_message": 1, "count": 1, "messages": 1}

_T = TypeVar("_T")


def new_thread_id() -> str:
    """Return a fresh, random thread id."""
    return uuid.uuid4().hex


def event_key(thread_id: str, seq: int) -> str:
    """Return the ``_id`` of the event at ``seq`` in ``thread_id``: ``"<thread_id>#<seq>"``.

    A deterministic ``_id`` makes "the event at this position" a primary-key lookup on
    every engine; FerretDB's SQLite back end pushes down nothing but ``_id`` equality
    and scans the collection for every other filter. The seq after the last ``#`` is
    unambiguous whatever the thread id contains.
    """
    return f"{thread_id}#{seq}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One thread's share of a line of conversation: events ``(lo_seq, hi_seq]``."""

    thread_id: str
    lo_seq: int
    hi_seq: int
    lo_message: int
    hi_message: int


@dataclass(frozen=True, slots=True)
class Position:
    """A validated cursor, with what appending and paging at it need to know."""

    cursor: Cursor
    #: The thread the cursor names; ``None`` while a new thread has no event yet.
    thread: ThreadRecord | None
    #: Number of messages visible at the cursor.
    messages: int
    #: ``hash`` of the event at the cursor (the genesis hash at offset 0).
    head_hash: str

    @property
    def thread_id(self) -> str:
        """The id of the thread the cursor names."""
        return self.cursor.thread_id

    @property
    def offset(self) -> int:
        """The ``seq`` of the last event visible at the cursor."""
        return self.cursor.offset

    def segments(self) -> list[Segment]:
        """Return the lineage as non-empty segments, root first, ending at this cursor."""
        lineage = self.thread.lineage if self.thread is not None else ()
        out: list[Segment] = []
        lo_seq = lo_msg = 0
        for fork in lineage:
            out.append(Segment(fork.thread_id, lo_seq, fork.offset, lo_msg, fork.messages))
            lo_seq, lo_msg = fork.offset, fork.messages
        out.append(Segment(self.thread_id, lo_seq, self.offset, lo_msg, self.messages))
        return [s for s in out if s.hi_seq > s.lo_seq]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: where the conversation now stands, and whether it branched."""

    position: Position
    event_id: str
    #: True when the cursor was behind its thread's head and a new branch was written.
    branched: bool
    #: True when this exact event (same ``event_id``) had already been committed.
    replayed: bool = False


class Ledger:
    """Appends and replays conversation events in one MongoDB database.

    Args:
        database: A PyMongo ``AsyncDatabase`` (primary), a Motor database, or a
            mongomock-motor database.
        threads_collection: Name of the collection of thread documents.
        events_collection: Name of the collection of event documents.
        audit_collection: Name of the collection of admin receipts.
        operation_timeout: Seconds one database operation may take before it fails
            with :class:`~chatledger.errors.StorageUnavailableError`; ``None`` leaves
            it to the client's own timeouts.
        write_attempts: How many times an append is tried when the connection fails
            before its outcome is known. Retries reuse the event id, so they can never
            duplicate an event.
    """

    def __init__(
        self,
        database: Any,
        *,
        threads_collection: str = DEFAULT_THREADS_COLLECTION,
        events_collection: str = DEFAULT_EVENTS_COLLECTION,
        audit_collection: str = DEFAULT_AUDIT_COLLECTION,
        operation_timeout: float | None = None,
        write_attempts: int = 3,
    ) -> None:
        for name in (threads_collection, events_collection, audit_collection):
            if type(name) is not str or not name or name.startswith("system.") or "$" in name:
                raise InvalidInputError(f"invalid collection name {name!r}")
        if write_attempts < 1:
            raise InvalidInputError("write_attempts must be at least 1")
        self.database = database
        self.threads = database[threads_collection]
        self.events = database[events_collection]
        self.audit = database[audit_collection]
        self.operation_timeout = operation_timeout
        self.write_attempts = write_attempts
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()
        self._thread_cache: OrderedDict[str, ThreadRecord] = OrderedDict()
        # (thread_id, seq) -> (messages visible after that event, its hash)
        self._head_cache: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()

    # ------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def translated(self, what: str) -> AsyncIterator[None]:
        """Turn driver errors raised inside the block into ChatLedger errors."""
        try:
            yield
        except DuplicateKeyError:
            raise  # callers decide what a clash means
        except (ConnectionFailure, TimeoutError) as e:
            raise StorageUnavailableError(f"{what}: database unavailable: {e}") from e
        except DocumentTooLarge as e:
            raise BatchTooLargeError(f"{what}: {e}") from e
        except PyMongoError as e:
            raise StorageError(f"{what}: {e}") from e

    async def call(self, what: str, awaitable: Awaitable[_T]) -> _T:
        """Return the result of one database operation, driver errors translated, timeout applied."""
        async with self.translated(what):
            if self.operation_timeout is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, self.operation_timeout)

    async def ensure_indexes(self) -> None:
        """Create the ledger's indexes if they are missing (idempotent, cached per ledger)."""
        if self._indexes_ready:
            return
        async with self._index_lock:
            if self._indexes_ready:
                return
            # The unique (thread_id, seq) index IS the concurrency control.
            await self.call(
                "create index",
                self.events.create_index(
                    [("thread_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="thread_seq_unique"
                ),
            )
            # Paging by message number is a range on this index, never a skip.
            await self.call(
                "create index",
                self.events.create_index(
                    [("thread_id", ASCENDING), ("first_message", ASCENDING)], name="thread_first_message"
                ),
            )
            # Recognising a retried append that ended up on a branch. Not unique: a
            # unique index must be prefixed by the shard key (thread_id) when sharded.
            await self.call(
                "create index", self.events.create_index([("event_id", ASCENDING)], name="event_id")
            )
            for field in ("root_id", "tenant_id", "user_id"):
                await self.call("create index", self.threads.create_index([(field, ASCENDING)], name=field))
            self._indexes_ready = True

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    def forget(self, thread_ids: Sequence[str] | None = None) -> None:
        """Drop cached thread records and heads (admin operations that remove threads call this)."""
        if thread_ids is None:
            self._thread_cache.clear()
            self._head_cache.clear()
            return
        gone = set(thread_ids)
        for tid in gone:
            self._thread_cache.pop(tid, None)
        for key in [k for k in self._head_cache if k[0] in gone]:
            del self._head_cache[key]

    # ------------------------------------------------------------------ threads

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        """Return the thread record, or ``None`` if no such thread exists.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
        """
        validate_thread_id(thread_id)
        cached = self._thread_cache.get(thread_id)
        if cached is not None:
            return cached
        doc = await self.call("read thread", self.threads.find_one({"_id": thread_id}))
        if doc is None:
            return None
        record = ThreadRecord.model_validate(doc)
        if record.legal_hold is None:
            # Only the immutable part is cached; hold status is re-read by admin code.
            self._remember(self._thread_cache, thread_id, record)
        return record

    async def _insert_thread(self, record: ThreadRecord) -> None:
        try:
            await self.call("create thread", self.threads.insert_one(record.to_document()))
        except DuplicateKeyError:
            # Another writer (or our own earlier, interrupted try) created it: fine, thread
            # documents are written once and only events decide the content. Theirs is
            # the record that counts, so ours is not cached.
            return
        self._remember(self._thread_cache, record.id, record)

    def _new_root(
        self,
        thread_id: str,
        *,
        tenant_id: str | None,
        user_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> ThreadRecord:
        return ThreadRecord.model_validate(
            {
                "_id": thread_id,
                "parent": None,
                "root_id": thread_id,
                "depth": 0,
                "lineage": (),
                "base_offset": 0,
                "base_messages": 0,
                "created_at": utc_now_ms(),
                "tenant_id": tenant_id,
                "user_id": user_id,
                "metadata": dict(metadata) if metadata else None,
            }
        )

    def _new_branch(self, at: Position) -> ThreadRecord:
        parent = at.thread
        fork = ForkPoint(thread_id=at.thread_id, offset=at.offset, messages=at.messages)
        lineage = (*parent.lineage, fork) if parent is not None else (fork,)
        branch_id = new_thread_id()
        return ThreadRecord.model_validate(
            {
                "_id": branch_id,
                "parent": {"thread_id": at.thread_id, "offset": at.offset},
                "root_id": parent.root_id if parent is not None else at.thread_id,
                "depth": (parent.depth + 1) if parent is not None else 1,
                "lineage": lineage,
                "base_offset": at.offset,
                "base_messages": at.messages,
                "created_at": utc_now_ms(),
                "tenant_id": parent.tenant_id if parent is not None else None,
                "user_id": parent.user_id if parent is not None else None,
                "metadata": parent.metadata if parent is not None else None,
            }
        )

    # ------------------------------------------------------------------ positions

    async def head(self, thread_id: str) -> Cursor:
        """Return the cursor at the newest event of a thread (offset 0 if it has none).

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
        """
        record = await self.get_thread(thread_id)
        if record is None:
            # Checked first: a primary-key read, where the head query below may be a scan
            # on some engines; a brand-new session's thread never needs it.
            return Cursor(thread_id=thread_id, offset=0)
        doc = await self.call(
            "read head",
            self.events.find_one({"thread_id": thread_id}, {"seq": 1}, sort=[("seq", DESCENDING)]),
        )
        return Cursor(thread_id=thread_id, offset=int(doc["seq"]) if doc is not None else record.base_offset)

    async def resolve(self, cursor: Cursor | Mapping[str, Any]) -> Position:
        """Return the validated position of a cursor.

        A cursor on a branch that points before the branch's fork point is moved to the
        ancestor thread that holds that event, so appending there branches correctly.

        Raises:
            InvalidCursorError: the cursor is malformed or points past its thread's head.
            UnknownThreadError: the cursor names a thread that does not exist.
        """
        cur = Cursor.from_state(cursor)
        record = await self.get_thread(cur.thread_id)
        if record is None:
            if cur.offset == 0:
                # A thread that has never been written to is still a valid, empty place.
                return Position(cur, None, 0, GENESIS_HASH)
            raise UnknownThreadError(f"no thread {cur.thread_id!r}")
        if cur.offset < record.base_offset:
            # Before the fork point (offset 0 included): the cursor is really on the
            # ancestor holding that event, and appending there must branch from it.
            owner = record.holder(cur.offset)
            cur = Cursor(thread_id=owner, offset=cur.offset)
            owner_record = await self.get_thread(owner)
            if owner_record is None:
                raise IntegrityError(f"thread {record.id!r} descends from missing thread {owner!r}")
            record = owner_record
        if cur.offset == 0:
            return Position(cur, record, 0, GENESIS_HASH)
        messages, head_hash = await self._event_summary(record, cur.offset)
        return Position(cur, record, messages, head_hash)

    async def _event_summary(self, record: ThreadRecord, seq: int) -> tuple[int, str]:
        """Return (messages visible after event ``seq``, its hash) along ``record``'s lineage."""
        owner = record.holder(seq)
        cached = self._head_cache.get((owner, seq))
        if cached is not None:
            return cached
        doc = await self.call(
            "read event",
            self.events.find_one({"_id": event_key(owner, seq)}, {"first_message": 1, "count": 1, "hash": 1}),
        )
        if doc is None:
            raise InvalidCursorError(f"offset {seq} is past the head of thread {record.id!r}")
        summary = (int(doc["first_message"]) + int(doc["count"]), str(doc["hash"]))
        self._remember(self._head_cache, (owner, seq), summary)
        return summary

    # ------------------------------------------------------------------ append

    def _event_document(
        self, at: Position, thread_id: str, stored: list[dict[str, Any]], event_id: str
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": event_key(thread_id, at.offset + 1),
            "v": EVENT_SCHEMA_VERSION,
            "thread_id": thread_id,
            "seq": at.offset + 1,
            "first_message": at.messages,
            "count": len(stored),
            "messages": stored,
            "event_id": event_id,
            "created_at": utc_now_ms(),
            "prev_hash": at.head_hash,
        }
        doc["hash"] = event_hash(at.head_hash, doc)
        if len(bson.encode(doc)) > MAX_EVENT_BYTES:
            raise BatchTooLargeError(
                f"a batch of {len(stored)} messages does not fit in one {MAX_EVENT_BYTES} byte document; "
                "split it into several add_messages calls"
            )
        return doc

    async def _insert_event(self, doc: dict[str, Any]) -> None:
        """Insert an event, retrying lost connections with the same event id.

        Raises:
            DuplicateKeyError: the position is taken (by this event on an earlier try,
                or by another event).
            StorageUnavailableError: the database stayed unreachable.
        """
        for attempt in range(1, self.write_attempts + 1):
            try:
                await self.call("append event", self.events.insert_one(doc))
                return
            except StorageUnavailableError:
                if attempt == self.write_attempts:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    async def _find_event_id(self, event_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self.call(
            "read event", self.events.find_one({"event_id": event_id})
        )
        return doc

    async def _position_after(self, doc: Mapping[str, Any]) -> Position:
        cursor = Cursor(thread_id=str(doc["thread_id"]), offset=int(doc["seq"]))
        record = await self.get_thread(cursor.thread_id)
        messages = int(doc["first_message"]) + int(doc["count"])
        self._remember(self._head_cache, (cursor.thread_id, cursor.offset), (messages, str(doc["hash"])))
        return Position(cursor, record, messages, str(doc["hash"]))

    async def append(
        self,
        at: Position | Cursor | Mapping[str, Any],
        messages: Sequence[Message],
        *,
        event_id: str | None = None,
        strict: bool = False,
        tenant_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append one event holding ``messages`` after the cursor ``at``.

        On the happy path this is one insert (two for a brand-new thread). If the
        cursor is behind its thread's head, the event goes to a new branch forked at the
        cursor, unless ``strict`` is set. Retrying with the same ``event_id`` after an
        error is always safe: an event that was already committed is recognised.

        Args:
            at: Where to append: a resolved position, a cursor, or its dict form.
            messages: The batch; stored as one immutable event.
            event_id: Idempotency key; a fresh one is generated when omitted.
            strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of
                branching when the cursor is behind the head.
            tenant_id: Stored on the thread if this append creates it.
            user_id: Stored on the thread if this append creates it.
            metadata: Stored on the thread if this append creates it.

        Returns:
            The new position, the event id, and whether the append branched.

        Raises:
            InvalidMessageError: a message cannot be stored.
            BatchTooLargeError: the batch does not fit in one document.
            ConcurrencyError: ``strict`` and another writer appended at this cursor first.
            StorageUnavailableError: the database could not be reached.
        """
        return await self.append_encoded(
            at,
            encode_messages(messages),
            event_id=event_id,
            strict=strict,
            tenant_id=tenant_id,
            user_id=user_id,
            metadata=metadata,
        )

    async def append_encoded(
        self,
        at: Position | Cursor | Mapping[str, Any],
        stored: list[dict[str, Any]],
        *,
        event_id: str | None = None,
        strict: bool = False,
        tenant_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """:meth:`append` a batch already encoded by :func:`chatledger.codec.encode_messages`.

        The adapters encode a batch once (they also need its digest); encoding is most of
        an append's client-side cost.
        """
        if event_id is None:
            event_id = uuid.uuid4().hex
        elif type(event_id) is not str or not event_id:
            raise InvalidInputError("event_id must be a non-empty str")
        for name, value in (("tenant_id", tenant_id), ("user_id", user_id)):
            if value is not None and type(value) is not str:
                raise InvalidInputError(f"{name} must be a str")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError("metadata must be a mapping")
        position = at if isinstance(at, Position) else await self.resolve(at)
        if position.thread is not None and position.offset < position.thread.base_offset:
            # Writing here would put an event below the branch's fork point, inside its
            # ancestors' numbering; resolve() never produces such a position.
            raise InvalidCursorError(
                f"cursor {position.cursor.to_state()} lies before its thread's fork point; resolve it first"
            )
        if not stored:
            return AppendResult(position, event_id, branched=False)
        doc = self._event_document(position, position.thread_id, stored, event_id)
        await self.ensure_indexes()
        if position.thread is None:
            await self._insert_thread(
                self._new_root(position.thread_id, tenant_id=tenant_id, user_id=user_id, metadata=metadata)
            )
        try:
            await self._insert_event(doc)
            return AppendResult(await self._position_after(doc), event_id, branched=False)
        except DuplicateKeyError:
            pass
        # The position is taken. Either an earlier try of this very append committed
        # (its reply was lost), or another writer got there first.
        taken = await self.call("read event", self.events.find_one({"_id": doc["_id"]}))
        existing = taken if taken is not None and taken.get("event_id") == event_id else None
        if existing is None:
            # It may have landed on a branch on an earlier try (its first try clashed too).
            existing = await self._find_event_id(event_id)
        if existing is not None:
            return AppendResult(await self._position_after(existing), event_id, branched=False, replayed=True)
        if strict:
            raise ConcurrencyError(
                f"thread {position.thread_id!r} already has an event at seq {position.offset + 1}; "
                "re-read the head and retry, or append without strict to branch"
            )
        if position.thread is None:
            # Created concurrently by another writer: our branch needs its record.
            position = await self.resolve(position.cursor)
        branch = self._new_branch(position)
        await self._insert_thread(branch)
        branch_doc = self._event_document(position, branch.id, stored, event_id)
        await self._insert_event(branch_doc)
        return AppendResult(await self._position_after(branch_doc), event_id, branched=True)

    # ------------------------------------------------------------------ read

    async def read(
        self, at: Position | Cursor | Mapping[str, Any], *, offset: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Return the messages visible at a cursor, sliced like ``all_messages[offset:][:limit]``.

        The cost is proportional to the page (plus the lineage depth), not to the
        length of the conversation: each segment is an index range on
        ``(thread_id, first_message)``.

        Args:
            at: A resolved position, a cursor, or its dict form.
            offset: Index of the first message; negative counts from the end.
            limit: Most messages to return; ``None`` for all.

        Raises:
            InvalidInputError: ``offset`` or ``limit`` is not an int, or ``limit`` < 0.
            InvalidCursorError: the cursor is malformed or points past its thread's head.
        """
        if type(offset) is not int:
            raise InvalidInputError("offset must be an int")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError("limit must be a non-negative int or None")
        position = at if isinstance(at, Position) else await self.resolve(at)
        start, stop, _ = slice(offset, None).indices(position.messages)
        if limit is not None:
            stop = min(stop, start + limit)
        if start >= stop:
            return []
        docs: list[dict[str, Any]] = []
        for seg in position.segments():
            lo, hi = max(start, seg.lo_message), min(stop, seg.hi_message)
            if lo < hi:
                docs.extend(await self._read_segment(seg, lo, hi))
        out: list[Message] = []
        for doc in docs:
            first = int(doc["first_message"])
            for index, stored in enumerate(doc["messages"]):
                if start <= first + index < stop:
                    out.append(decode_message(stored))
        if len(out) != stop - start:
            raise IntegrityError(
                f"thread {position.thread_id!r} is missing events: expected {stop - start} messages "
                f"in [{start}, {stop}), found {len(out)}"
            )
        return out

    async def _read_segment(self, seg: Segment, lo: int, hi: int) -> list[dict[str, Any]]:
        """Return, oldest first, the events of one segment that hold messages ``[lo, hi)``.

        One range query on ``(thread_id, first_message)``, newest first from just below
        ``hi``. Its limit is estimated from the segment's average batch size, so a page
        of 20 messages in 10-message events reads 3 events, not 20; only when batch sizes
        vary so much that the estimate falls short does a further query continue below
        the oldest event read.
        """
        per_event = max(1, (seg.hi_message - seg.lo_message) // max(1, seg.hi_seq - seg.lo_seq))
        found: list[dict[str, Any]] = []
        upper = hi
        while upper > lo:
            wanted = upper - lo
            # Every event overlapping [lo, upper) holds at least one of its messages, so
            # `wanted` events always suffice; the estimate is usually far fewer.
            limit = min(wanted, -(-wanted // per_event) + 1)
            cursor = (
                self.events.find({"thread_id": seg.thread_id, "first_message": {"$lt": upper}}, _PAGE)
                .sort("first_message", DESCENDING)
                .limit(limit)
            )
            batch = await self.call("read events", cursor_list(cursor))
            found.extend(batch)
            if len(batch) < limit:
                break  # the segment has nothing older; read() reports any gap
            upper = int(batch[-1]["first_message"])
        found.reverse()
        return [d for d in found if int(d["first_message"]) + int(d["count"]) > lo]

    async def lineage(self, thread_id: str) -> list[ThreadRecord]:
        """Return the thread records from the root down to ``thread_id``.

        Raises:
            UnknownThreadError: the thread (or one of its ancestors) does not exist.
        """
        record = await self.get_thread(thread_id)
        if record is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        out: list[ThreadRecord] = []
        for fork in record.lineage:
            ancestor = await self.get_thread(fork.thread_id)
            if ancestor is None:
                raise UnknownThreadError(
                    f"thread {thread_id!r} descends from missing thread {fork.thread_id!r}"
                )
            out.append(ancestor)
        out.append(record)
        return out
