"""The ledger: append, read, branch and lineage, through scoped bindings, over the storage gate.

Concurrency control is nothing but the unique index on ``(thread_id, seq)``: an append
inserts the event at ``cursor.offset + 1``; if another event already holds that
position, the append either was already committed (same ``event_id`` and the same
batch, in this lineage: a retry) or the thread moved on, and the event is written to a
new branch forked at the cursor.

Applications never use a :class:`Ledger` directly for conversation data: they get a
:class:`Binding` (``ledger.bind(scope)``), and every position a binding resolves,
reads or appends at lies inside its scope.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from chatledger._maf import Message
from chatledger.codec import decode_message, encode_messages, stored_digest
from chatledger.errors import (
    BatchTooLargeError,
    ChatLedgerError,
    ConcurrencyError,
    EventIdReusedError,
    IntegrityError,
    InvalidCursorError,
    InvalidInputError,
    InvalidThreadIdError,
    KeyUnavailableError,
    StorageUnavailableError,
    ThreadRemovedError,
    UnknownThreadError,
)
from chatledger.hashing import GENESIS_HASH, event_hash
from chatledger.ledger.pending import PendingAppend, new_event_id
from chatledger.ledger.signing import CursorSigner, mac
from chatledger.models import (
    DEFAULT_SOURCE_ID,
    EVENT_SCHEMA_VERSION,
    Cursor,
    ForkPoint,
    Scope,
    ThreadRecord,
    utc_now_ms,
    validate_metadata,
    validate_thread_id,
)
from chatledger.storage import (
    DEFAULT_AUDIT_COLLECTION,
    DEFAULT_EVENTS_COLLECTION,
    DEFAULT_THREADS_COLLECTION,
    Consistency,
    PositionTakenError,
    Storage,
    event_key,
)
from chatledger.storage.documents import record_problem
from chatledger.storage.encoding import encoded_size

if TYPE_CHECKING:
    from chatledger.sealing import DataKey, Sealer

__all__ = [
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "MAX_EVENT_BYTES",
    "AppendResult",
    "Binding",
    "Ledger",
    "Position",
    "Segment",
    "check_ledger_id",
    "event_key",
    "new_thread_id",
]

#: MongoDB's document size limit. We check it ourselves so every engine (mongomock and
#: FerretDB included) refuses an oversized batch the same way, before anything is written.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
#: How many thread records / event heads each ledger keeps in memory.
_CACHE_SIZE: Final = 10_000
#: Errors a malformed stored message can raise while decoding (JSON, pydantic, shape).
_DECODE_ERRORS: Final = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def new_thread_id() -> str:
    """Return a fresh, random thread id."""
    return uuid.uuid4().hex


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
    """A validated cursor inside one scope, with what appending and paging at it need."""

    cursor: Cursor
    #: The thread the cursor names; ``None`` while a new thread has no event yet.
    thread: ThreadRecord | None
    #: Number of messages visible at the cursor.
    messages: int
    #: ``hash`` of the event at the cursor (the genesis hash at offset 0).
    head_hash: str
    #: The scope the position was resolved in.
    scope: Scope = field(default_factory=Scope)

    @property
    def thread_id(self) -> str:
        """The id of the thread the cursor names."""
        return self.cursor.thread_id

    @property
    def offset(self) -> int:
        """The ``seq`` of the last event visible at the cursor."""
        return self.cursor.offset

    def segments(self) -> list[Segment]:
        """Return the line as non-empty segments, root first, ending at this cursor.

        They reach as far back as the thread document's lineage: on a windowed lineage
        (deeper than :data:`~chatledger.models.LINEAGE_WINDOW`) the line before
        :attr:`earlier` is not among them (:meth:`Binding.read` follows it on demand).
        """
        return _segments(self.thread, self.thread_id, self.offset, self.messages)

    @property
    def earlier(self) -> ForkPoint | None:
        """Where the part of the line that :meth:`segments` does not cover ends, or ``None``.

        That is the first ancestor the windowed lineage lists, at the offset where the
        line left it; its own thread document describes the line above it.
        """
        return _earlier(self.thread)


def _earlier(record: ThreadRecord | None) -> ForkPoint | None:
    return record.lineage[0] if record is not None and record.windowed else None


def _segments(record: ThreadRecord | None, thread_id: str, offset: int, messages: int) -> list[Segment]:
    """Return the non-empty segments of the line up to ``offset`` of ``thread_id``, as ``record`` lists it."""
    lineage = record.lineage if record is not None else ()
    out: list[Segment] = []
    lo_seq = lo_msg = 0
    if lineage and record is not None and record.windowed:
        # The window's first ancestor begins at a fork point only its own document holds.
        lo_seq, lo_msg = lineage[0].offset, lineage[0].messages
        lineage = lineage[1:]
    for fork in lineage:
        out.append(Segment(fork.thread_id, lo_seq, fork.offset, lo_msg, fork.messages))
        lo_seq, lo_msg = fork.offset, fork.messages
    out.append(Segment(thread_id, lo_seq, offset, lo_msg, messages))
    return [s for s in out if s.hi_seq > s.lo_seq]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: where the conversation now stands, and whether it branched."""

    position: Position
    event_id: str
    #: True when the event is on a new branch (this try or an earlier try created it).
    branched: bool
    #: True when this exact batch (same ``event_id``, same content) had already been committed.
    replayed: bool = False


def check_ledger_id(ledger_id: object, name: str = "ledger_id") -> str:
    """Return ``ledger_id`` if it can name a ledger (a non-empty str of at most 200 characters).

    Raises:
        InvalidInputError: it cannot; the message names it ``name`` (an argument or an option).
    """
    if type(ledger_id) is not str or not 0 < len(ledger_id) <= 200:
        raise InvalidInputError(f"{name} must be a non-empty str of at most 200 characters")
    return ledger_id


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
        consistency: ``"majority"`` (default): writes wait for a journaled majority and
            the reads that resolve cursors go to the primary with majority read concern.
            ``"client"``: use the client's or URI's settings (explicitly weaker).
        signing_keys: Keys (newest first) to sign every cursor handed out with; cursors
            without a valid MAC are then refused. ``None``: cursors are not signed.
        sealer: Seal every message's content under its data subject's key
            (:class:`~chatledger.sealing.Sealer`); ``None`` (default): stored in clear.
            Reads open sealed events only with a sealer.
        ledger_id: What makes this ledger's data keys its own in a key store that
            other ledgers share (key ids and erasure marks derive from it). By default
            ``"<database>/<threads collection>/<events collection>"``: give one when
            ledgers on different clusters use the same database and collection names
            and share a key store, and give the admin tools the same
            (``Ledger(db, ledger_id=...)``).

    Raises:
        InvalidInputError: an option or the database handle is not usable.
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
        consistency: Consistency = "majority",
        signing_keys: Sequence[str | bytes] | None = None,
        sealer: Sealer | None = None,
        ledger_id: str | None = None,
    ) -> None:
        if type(write_attempts) is not int or not 1 <= write_attempts <= 20:
            raise InvalidInputError("write_attempts must be an int from 1 to 20")
        if ledger_id is not None:
            check_ledger_id(ledger_id)
        self._storage = Storage(
            database,
            threads_collection=threads_collection,
            events_collection=events_collection,
            audit_collection=audit_collection,
            operation_timeout=operation_timeout,
            consistency=consistency,
        )
        self.write_attempts = write_attempts
        self.signer = CursorSigner(signing_keys) if signing_keys is not None else None
        self.sealer = sealer
        #: Whose data keys this ledger's are (see the ``ledger_id`` argument).
        self.ledger_id: str = (
            ledger_id
            if ledger_id is not None
            else f"{self._storage.database.name}/{threads_collection}/{events_collection}"
        )
        self._thread_cache: OrderedDict[str, ThreadRecord] = OrderedDict()
        # (thread_id, seq) -> (messages visible after that event, its hash)
        self._head_cache: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()
        self._marker_key: bytes | None = None

    @classmethod
    def of(cls, database: Any, **options: Any) -> Ledger:
        """Return ``database`` if it is a ledger (then no options may be given), else a new ledger on it.

        Raises:
            InvalidInputError: options were passed beside an existing ledger (they would be ignored).
        """
        if isinstance(database, Ledger):
            if options:
                raise InvalidInputError(
                    f"options {sorted(options)} cannot be applied to an existing Ledger; "
                    "pass them to Ledger(...) instead"
                )
            return database
        return cls(database, **options)

    @property
    def database(self) -> Any:
        """The database handle the ledger was opened on."""
        return self._storage.database

    def bind(
        self,
        scope: Scope | None = None,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        source_id: str = DEFAULT_SOURCE_ID,
    ) -> Binding:
        """Return a view of the ledger that sees only the threads of one scope.

        Raises:
            InvalidInputError: a scope field is not a usable name.
        """
        if scope is None:
            scope = Scope(tenant_id=tenant_id, user_id=user_id, source_id=source_id)
        return Binding(self, scope)

    async def ensure_indexes(self) -> None:
        """Create the ledger's indexes if they are missing (idempotent, once per ledger)."""
        await self._storage.ensure_indexes()

    # ------------------------------------------------------------------ caches

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

    async def thread(self, thread_id: str, scope: Scope | None) -> ThreadRecord | None:
        """Return a thread record (cached: the part the ledger uses never changes), or ``None``.

        Args:
            thread_id: The thread.
            scope: Only a thread of this scope is returned; ``None`` (admin) for any.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
            IntegrityError: the stored document is malformed.
        """
        validate_thread_id(thread_id)
        record = self._thread_cache.get(thread_id)
        if record is None:
            record = await self._storage.threads.get(thread_id, scope=None)
            if record is None:
                return None
            why = record_problem(record)
            if why is not None:
                # Reads and appends follow the lineage it describes: never one that contradicts itself.
                raise IntegrityError(f"thread document {thread_id!r} contradicts itself: {why}")
            self._remember(self._thread_cache, thread_id, record)
        if scope is not None and not scope.admits(record):
            return None
        return record

    async def _marker_secret(self) -> bytes:
        if self.signer is not None:
            return self.signer.current
        if self._marker_key is None:
            self._marker_key = await self._storage.receipts.marker_secret()
        return self._marker_key

    async def lineage(self, thread_id: str) -> list[ThreadRecord]:
        """Return the thread records from the root down to ``thread_id`` (admin: any scope).

        Raises:
            UnknownThreadError: the thread (or one of its ancestors) does not exist.
        """
        record = await self.thread(thread_id, None)
        if record is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        out = [record]
        current = record
        while current.lineage:
            ancestors: list[ThreadRecord] = []
            for fork in current.lineage:
                ancestor = await self.thread(fork.thread_id, None)
                if ancestor is None:
                    raise UnknownThreadError(
                        f"thread {thread_id!r} descends from missing thread {fork.thread_id!r}"
                    )
                ancestors.append(ancestor)
            out[:0] = ancestors
            if not current.windowed:
                break
            # A windowed lineage starts below the root: the first ancestor's own lineage goes on.
            if ancestors[0].depth >= current.depth:
                raise IntegrityError(f"the lineage of thread {thread_id!r} loops back on itself")
            current = ancestors[0]
        return out


def storage_of(ledger: Ledger) -> Storage:
    """Return the storage ports of ``ledger``, for the floors above it (admin, sealing, adapters).

    The ledger's storage is private: this is the one door to it, so every use is
    greppable and the architecture test can keep the CLI (and anything else that
    should go through an admin function) away from it.
    """
    return ledger._storage


def _no_thread(thread_id: str) -> UnknownThreadError:
    # One message for "does not exist" and "exists in another scope": no existence oracle.
    return UnknownThreadError(f"no thread {thread_id!r}")


_set_attribute = object.__setattr__
#: A validated cursor: where a trusted cursor takes its defaults (``v``, ``mac``) and fields set.
_TEMPLATE: Final = Cursor(thread_id="t", offset=0)


def _built(thread_id: str, seq: int) -> Cursor:
    """A cursor assembled as pydantic's ``model_construct`` assembles one, for valid values only."""
    cursor = Cursor.__new__(Cursor)
    _set_attribute(cursor, "__dict__", {**_TEMPLATE.__dict__, "thread_id": thread_id, "offset": seq})
    _set_attribute(cursor, "__pydantic_fields_set__", set(_TEMPLATE.__pydantic_fields_set__))
    _set_attribute(cursor, "__pydantic_extra__", None)
    _set_attribute(cursor, "__pydantic_private__", None)
    return cursor


def _assembles_exactly() -> bool:
    """Whether :func:`_built` gives what validation gives, on this pydantic (else it is not used)."""
    try:
        sample = Cursor(thread_id="a#b", offset=7)
        return (
            Cursor.__pydantic_post_init__ is None and _built("a#b", 7).__getstate__() == sample.__getstate__()
        )
    except Exception:
        return False


_ASSEMBLE: Final = _assembles_exactly()


def _cursor(thread_id: Any, seq: Any) -> Cursor:
    """Return ``Cursor(thread_id=str(thread_id), offset=int(seq))``.

    Validating the cursor after every append cost a third of the append's own work
    (pydantic's validator is cold by the time the insert's reply comes back). Values
    that validation would accept unchanged (an exact ``str`` that is a usable thread id,
    an exact non-negative ``int``) are assembled directly; anything else is validated.
    """
    if _ASSEMBLE and type(thread_id) is str and type(seq) is int and seq >= 0:
        try:
            validate_thread_id(thread_id)  # the very check validation runs
        except InvalidThreadIdError:
            pass
        else:
            return _built(thread_id, seq)
    return Cursor(thread_id=str(thread_id), offset=int(seq))


class Binding:
    """The ledger as one scope (tenant, user, source id) sees it.

    Every position it resolves lies inside its scope; a thread of any other scope is,
    to it, a thread that does not exist. With signing keys, every cursor it hands out
    (:meth:`state`) is signed for its scope and every cursor it accepts must be.
    """

    def __init__(self, ledger: Ledger, scope: Scope) -> None:
        self.ledger = ledger
        self.scope = scope
        self._storage = ledger._storage

    # ------------------------------------------------------------------ positions

    def thread_id_for(self, name: str) -> str:
        """Return the id of the thread a session id or store thread name names in this scope."""
        return self.scope.thread_id_for(name)

    def empty(self, thread_id: str) -> Position:
        """Return the empty start of a thread that has not been written yet."""
        return Position(
            Cursor(thread_id=validate_thread_id(thread_id), offset=0), None, 0, GENESIS_HASH, self.scope
        )

    def state(self, position: Position) -> dict[str, Any]:
        """Return the cursor of ``position`` as session state (signed when the ledger signs)."""
        cursor = position.cursor.unsigned()
        if self.ledger.signer is not None:
            cursor = self.ledger.signer.sign(self.scope, cursor)
        return cursor.to_state()

    async def open(self, name: str) -> Position:
        """Return the position at the head of the thread ``name`` names in this scope (empty if new)."""
        return await self.head(self.thread_id_for(name))

    async def head(self, thread_id: str) -> Position:
        """Return the position at the head of a thread of this scope (empty if it has not been written)."""
        return (await self.head_event(thread_id, full=False))[0]

    async def head_event(
        self, thread_id: str, *, full: bool = True
    ) -> tuple[Position, dict[str, Any] | None]:
        """Return the head position of a thread of this scope and its newest own event, in one read.

        The event is whole (messages as stored) unless ``full`` is false; ``None`` when
        the thread has no own event.
        """
        record = await self.ledger.thread(thread_id, self.scope)
        if record is None:
            # Checked first: a primary-key read, where the head query may be a scan on
            # some engines; a brand-new session's thread never needs it.
            return self.empty(thread_id), None
        head = await self._storage.events.head(thread_id, full=full)
        if head is None:
            return await self._resolve(Cursor(thread_id=thread_id, offset=record.base_offset)), None
        # The head query already returned what resolving needs: no second read by key.
        summary = (head["first_message"] + head["count"], head["hash"])
        self.ledger._remember(self.ledger._head_cache, (thread_id, head["seq"]), summary)
        return await self._resolve(Cursor(thread_id=thread_id, offset=head["seq"])), head

    async def resolve(self, state: Cursor | Mapping[str, Any]) -> Position:
        """Return the validated position of a cursor handed to this binding.

        A cursor on a branch that points before the branch's fork point is moved to the
        ancestor thread that holds that event, so appending there branches correctly.

        Raises:
            InvalidCursorError: the cursor is malformed, unsigned or wrongly signed (on a
                signing ledger), or points past its thread's head.
            UnknownThreadError: the cursor names no thread of this scope.
        """
        cursor = Cursor.from_state(state)
        if self.ledger.signer is not None:
            cursor = self.ledger.signer.check(self.scope, cursor)
        return await self._resolve(cursor.unsigned())

    async def at(self, thread_id: str, offset: int) -> Position:
        """Return the position at ``offset`` of a thread of this scope, for trusted callers.

        Unlike :meth:`resolve`, no MAC is required: use it for positions the caller
        chose itself (an operator's ``show --at``), never for cursors it was handed.
        """
        return await self._resolve(Cursor(thread_id=thread_id, offset=offset))

    async def _resolve(self, cursor: Cursor) -> Position:
        record = await self.ledger.thread(cursor.thread_id, self.scope)
        if record is None:
            if cursor.offset == 0:
                # A thread never written to is still a valid, empty place.
                return self.empty(cursor.thread_id)
            raise _no_thread(cursor.thread_id)
        if cursor.offset < record.base_offset:
            # Before the fork point (offset 0 included): the cursor is really on the
            # ancestor holding that event, and appending there must branch from it.
            owner = await self._owner(record, cursor.offset)
            cursor = Cursor(thread_id=owner, offset=cursor.offset)
            owner_record = await self.ledger.thread(owner, self.scope)
            if owner_record is None:
                raise IntegrityError(f"thread {record.id!r} descends from missing thread {owner!r}")
            record = owner_record
        if cursor.offset == 0:
            return Position(cursor, record, 0, GENESIS_HASH, self.scope)
        messages, head_hash = await self._event_summary(record, cursor.offset)
        return Position(cursor, record, messages, head_hash, self.scope)

    async def _owner(self, record: ThreadRecord, seq: int) -> str:
        """Return the id of the thread along ``record``'s line whose own events include ``seq``.

        Within the lineage window no thread is read; further up, one (cached) thread
        read per :data:`~chatledger.models.LINEAGE_WINDOW` levels crossed.

        Raises:
            IntegrityError: an ancestor above the window is missing (or outside this scope).
        """

        async def fetch(thread_id: str) -> ThreadRecord | None:
            return await self.ledger.thread(thread_id, self.scope)

        owner = await record.holder_along(seq, fetch)
        if owner is None:
            raise IntegrityError(f"thread {record.id!r} descends from a missing thread above its lineage")
        return owner

    async def _event_summary(self, record: ThreadRecord, seq: int) -> tuple[int, str]:
        """Return (messages visible after event ``seq``, its hash) along ``record``'s lineage."""
        owner = await self._owner(record, seq)
        cached = self.ledger._head_cache.get((owner, seq))
        if cached is not None:
            return cached
        doc = await self._storage.events.at(owner, seq)
        if doc is None:
            raise InvalidCursorError(f"offset {seq} is past the head of thread {record.id!r}")
        summary = (doc["first_message"] + doc["count"], doc["hash"])
        self.ledger._remember(self.ledger._head_cache, (owner, seq), summary)
        return summary

    def _check(self, at: Position) -> Position:
        # Identity first: a position this binding made carries its very scope object.
        if type(at) is Position and at.scope is self.scope:
            return at
        if not isinstance(at, Position) or at.scope != self.scope:
            raise InvalidCursorError(
                "the position was not resolved by this binding; resolve its cursor first"
            )
        return at

    # ------------------------------------------------------------------ append

    def _new_root(self, thread_id: str, metadata: Mapping[str, Any] | None) -> ThreadRecord:
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
                **self.scope.fields(),
                "metadata": dict(metadata) if metadata else None,
            }
        )

    def _new_branch(self, at: Position) -> ThreadRecord:
        parent = at.thread
        assert parent is not None  # only positions on written threads can be behind a head
        fork = ForkPoint(thread_id=at.thread_id, offset=at.offset, messages=at.messages)
        return ThreadRecord.model_validate(
            {
                "_id": new_thread_id(),
                "parent": {"thread_id": at.thread_id, "offset": at.offset},
                "root_id": parent.root_id,
                "depth": parent.depth + 1,
                "lineage": parent.branch_lineage(fork),
                "base_offset": at.offset,
                "base_messages": at.messages,
                "created_at": utc_now_ms(),
                **self.scope.fields(),
                "metadata": parent.metadata,
            }
        )

    def _event_document(
        self,
        at: Position,
        thread: ThreadRecord,
        stored: list[dict[str, Any]],
        event_id: str,
        seal_key: DataKey | None = None,
    ) -> dict[str, Any]:
        key = event_key(thread.id, at.offset + 1)
        if seal_key is not None:
            # Sealed here, per document: a retry on a branch is another event id, and the
            # ciphertext is bound to the event it lies in. The hash covers the ciphertext.
            stored = seal_key.seal(stored, key)
        doc: dict[str, Any] = {
            "_id": key,
            "v": EVENT_SCHEMA_VERSION,
            "thread_id": thread.id,
            "seq": at.offset + 1,
            "first_message": at.messages,
            "count": len(stored),
            "messages": stored,
            "event_id": event_id,
            "created_at": utc_now_ms(),
            "root_id": thread.root_id,
            **self.scope.fields(),
            "prev_hash": at.head_hash,
        }
        if at.offset == thread.base_offset:
            # The thread's first event vouches for its thread document (see ThreadRecord.digest).
            doc["thread_digest"] = thread.digest()
        doc["hash"] = event_hash(at.head_hash, doc)
        # Encoding the document just to measure it costs as much as hashing it; a bound
        # on its size (BSON adds a few bytes per field) settles almost every batch.
        # (Every stored value is a str, or the bytes of a sealed event's ciphertext.)
        bound = 4096 + sum(4 * len(v) + 64 for m in doc["messages"] for v in m.values())
        if bound >= MAX_EVENT_BYTES and encoded_size(doc) > MAX_EVENT_BYTES:
            raise BatchTooLargeError(
                f"a batch of {len(stored)} messages does not fit in one {MAX_EVENT_BYTES} byte document; "
                "split it into several add_messages calls"
            )
        return doc

    async def _insert(self, doc: dict[str, Any]) -> None:
        """Insert an event, retrying lost connections with the same event id.

        Raises:
            PositionTakenError: the position is taken (by this event on an earlier try, or another).
            StorageUnavailableError: the database stayed unreachable.
        """
        for attempt in range(1, self.ledger.write_attempts + 1):
            try:
                await self._storage.events.insert(doc)
                return
            except StorageUnavailableError:
                if attempt == self.ledger.write_attempts:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    def _after(self, doc: Mapping[str, Any], thread: ThreadRecord) -> Position:
        cursor = _cursor(doc["thread_id"], doc["seq"])
        messages = int(doc["first_message"]) + int(doc["count"])
        self.ledger._remember(
            self.ledger._head_cache, (cursor.thread_id, cursor.offset), (messages, str(doc["hash"]))
        )
        return Position(cursor, thread, messages, str(doc["hash"]), self.scope)

    async def _committed(self, at: Position, event_id: str, digest: str) -> tuple[Position, bool] | None:
        """Return (position after it, on a branch?) if this batch was already committed right after ``at``.

        Only two places count, both in this lineage: the next position of ``at``'s thread,
        and the first position of a branch forked exactly at ``at`` (where an earlier
        try that clashed wrote it). An event there with this id but another batch means
        the id was reused: that is an error, never a silent success.

        Raises:
            EventIdReusedError: the event id names a different batch there.
        """
        seq = at.offset + 1
        if at.thread is not None:
            taken = await self._storage.events.at(at.thread_id, seq, full=True)
            if taken is not None and taken.get("event_id") == event_id:
                return self._verdict(await self._opened(taken), at.thread, digest), False
        for candidate in await self._storage.events.with_event_id(event_id, seq):
            branch = await self.ledger.thread(candidate["thread_id"], self.scope)
            if branch is not None and branch.parent == {"thread_id": at.thread_id, "offset": at.offset}:
                return self._verdict(await self._opened(candidate), branch, digest), True
        return None

    async def _opened(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Return ``doc`` with its sealed messages opened: digests compare the clear batch."""
        sealer = self.ledger.sealer
        if sealer is None:
            return doc
        return {**doc, "messages": await sealer.open_messages(doc)}

    def _verdict(self, doc: Mapping[str, Any], thread: ThreadRecord, digest: str) -> Position:
        try:
            same = stored_digest(doc["messages"]) == digest
        except (KeyError, TypeError) as e:
            raise IntegrityError(f"event {doc.get('_id')!r} holds malformed messages") from e
        if not same:
            raise EventIdReusedError(
                f"event id {doc.get('event_id')!r} was already used for a different batch at seq "
                f"{doc.get('seq')} of thread {thread.id!r}; nothing was written (use a new event id)"
            )
        return self._after(doc, thread)

    async def append(
        self,
        at: Position,
        messages: Sequence[Message] | None = None,
        *,
        stored: list[dict[str, Any]] | None = None,
        event_id: str | None = None,
        strict: bool = False,
        metadata: Mapping[str, Any] | None = None,
        digest: str | None = None,
    ) -> AppendResult:
        """Append one event holding a batch after the position ``at``.

        On the happy path this is one insert (two for a brand-new thread). If ``at`` is
        behind its thread's head, the event goes to a new branch forked there, unless
        ``strict`` is set. Retrying with the same ``event_id`` and the same batch after
        an error is always safe: an event that was already committed is recognised.

        Args:
            at: A position this binding resolved.
            messages: The batch, as Agent Framework messages.
            stored: The batch already encoded by :func:`chatledger.codec.encode_messages`
                (instead of ``messages``).
            event_id: Idempotency key; a fresh one is generated when omitted.
            strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching.
            metadata: Stored on the thread if this append creates it.
            digest: ``stored_digest(stored)``, when the caller has already computed it.

        Returns:
            The new position, the event id, whether the event is on a new branch, and
            whether it had already been committed.

        Raises:
            InvalidMessageError: a message cannot be stored (nothing is written).
            BatchTooLargeError: the batch does not fit in one document (nothing is written).
            EventIdReusedError: ``event_id`` already names a different batch here.
            ConcurrencyError: ``strict`` and another writer appended at this cursor first.
            UnknownThreadError: the thread exists, but in another scope.
            StorageUnavailableError: the database could not be reached.
        """
        at = self._check(at)
        if (messages is None) == (stored is None):
            raise InvalidInputError("pass either messages or stored, not both")
        if stored is None:
            stored = encode_messages(messages or ())
        if event_id is None:
            event_id = new_event_id()
        elif type(event_id) is not str or not event_id or len(event_id) > 64:
            raise InvalidInputError("event_id must be a non-empty str of at most 64 characters")
        metadata = validate_metadata(metadata)
        if at.thread is not None and at.offset < at.thread.base_offset:
            raise InvalidCursorError(
                f"cursor {at.cursor.to_state()} lies before its thread's fork point; resolve it first"
            )
        if not stored:
            return AppendResult(at, event_id, branched=False)
        if digest is None:
            digest = stored_digest(stored)
        thread = at.thread if at.thread is not None else self._new_root(at.thread_id, metadata)
        sealer = self.ledger.sealer
        # Every event of a tree shares its root id, so one key serves this append and any
        # retry on a branch; a cached key costs no round trip, an erased subject fails here.
        seal_key = None
        if sealer is not None:
            # A cached key costs no call into the key store; a new conversation re-checks
            # it there (key_for), so an erased subject starts none.
            if at.thread is not None:
                seal_key = sealer.cached_key(self.scope, thread.root_id, self.ledger.ledger_id)
            if seal_key is None:
                seal_key = await sealer.key_for(
                    self.scope, thread.root_id, fresh=at.thread is None, ledger_id=self.ledger.ledger_id
                )
        doc = self._event_document(at, thread, stored, event_id, seal_key)  # validates size before any write
        await self.ledger.ensure_indexes()
        if at.thread is None:
            ours = thread
            thread = await self._storage.threads.insert_once(thread)
            if not self.scope.admits(thread):
                raise _no_thread(at.thread_id)
            self.ledger._remember(self.ledger._thread_cache, thread.id, thread)
            if thread.base_offset or thread.parent is not None:
                raise _no_thread(at.thread_id)  # a branch's id is not a place to start a new line
            if thread is not ours:
                # Another writer created it first: ours was not stored, theirs is vouched for.
                doc = self._event_document(at, thread, stored, event_id, seal_key)
            at = replace(at, thread=thread)
        try:
            await self._insert(doc)
        except PositionTakenError:
            pass
        else:
            if sealer is not None and seal_key is not None:
                sealer.keep_sealed(doc, stored, seal_key)  # read back here, it decrypts nothing
            return AppendResult(self._after(doc, thread), event_id, branched=False)
        # The position is taken. Either an earlier try of this very append committed
        # (its reply was lost), or another writer got there first.
        done = await self._committed(at, event_id, digest)
        if done is not None:
            return AppendResult(done[0], event_id, branched=done[1], replayed=True)
        if strict:
            raise ConcurrencyError(
                f"thread {at.thread_id!r} already has an event at seq {at.offset + 1}; "
                "re-read the head and retry, or append without strict to branch"
            )
        if at.offset == 0 and at.messages == 0:
            # Created concurrently by another writer: resolve again for its record.
            at = await self._resolve(at.cursor)
        await self._refuse_if_removing(at.thread_id)
        branch = await self._storage.threads.insert_once(self._new_branch(at))
        self.ledger._remember(self.ledger._thread_cache, branch.id, branch)
        branch_doc = self._event_document(at, branch, stored, event_id, seal_key)
        await self._insert(branch_doc)
        try:
            # Checked again after writing: a removal that claimed the parent meanwhile
            # might not have seen this branch, so the branch removes itself.
            await self._refuse_if_removing(at.thread_id)
        except ThreadRemovedError:
            await self._storage.events.hollow_event(branch.id, branch_doc["seq"])
            await self._storage.threads.tombstone(branch.id, branch.root_id, "writer", utc_now_ms())
            self.ledger.forget([branch.id])
            raise
        if sealer is not None and seal_key is not None:
            sealer.keep_sealed(branch_doc, stored, seal_key)
        return AppendResult(self._after(branch_doc, branch), event_id, branched=True)

    async def _refuse_if_removing(self, thread_id: str) -> None:
        """Raise if a removal has claimed (or finished) the thread a branch would fork from."""
        raw = await self._storage.threads.get_raw(thread_id)
        if raw is None or "removed" in raw or raw.get("removing"):
            self.ledger.forget([thread_id])
            raise ThreadRemovedError(
                f"thread {thread_id!r} was removed (retention or erasure): nothing can be added to it"
            )

    async def save(
        self,
        at: Position,
        stored: list[dict[str, Any]],
        *,
        previous: PendingAppend | None,
        remember: Callable[[PendingAppend | None], None],
        strict: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append an encoded batch the way both adapters do: idempotent across calls, settled first.

        ``previous`` is the caller's unconfirmed append, if any. The same batch again
        reuses its event id (a retry); a different batch first settles it, so a batch
        that did commit although its reply was lost stays on the caller's line.
        ``remember`` is called with the pending entry before the write and with ``None``
        once it is confirmed; the caller keeps it (in memory or in the session state).
        """
        pending = PendingAppend.for_batch(stored_digest(stored), previous)
        if previous is not None and pending is not previous:
            at = await self.settle(at, previous)
        remember(pending)
        result = await self.append(
            at,
            stored=stored,
            event_id=pending.event_id,
            strict=strict,
            metadata=metadata,
            digest=pending.digest,
        )
        remember(None)
        return result

    async def settle(self, at: Position, pending: PendingAppend) -> Position:
        """Return where the conversation stands once an append of unknown outcome is settled.

        If the pending batch was committed right after ``at`` (on its thread, or on the
        branch an earlier try created), the position after it; otherwise ``at`` itself:
        it was not committed, and the caller was told so by the error it got then.
        """
        at = self._check(at)
        try:
            done = await self._committed(at, pending.event_id, pending.digest)
        except EventIdReusedError:
            return at  # the id is someone else's: our batch is not there
        return done[0] if done is not None else at

    # ------------------------------------------------------------------ read

    async def read(self, at: Position, *, offset: int = 0, limit: int | None = None) -> list[Message]:
        """Return the messages visible at ``at``, sliced like ``all_messages[offset:][:limit]``.

        The cost is proportional to the page plus the lineage depth: at most two
        index range queries per segment, whatever the batch sizes.

        Raises:
            InvalidInputError: ``offset`` or ``limit`` is not an int, or ``limit`` < 0.
            IntegrityError: a stored event is missing or malformed (it is named).
        """
        at = self._check(at)
        if type(offset) is not int:
            raise InvalidInputError("offset must be an int")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError("limit must be a non-negative int or None")
        start, stop, _ = slice(offset, None).indices(at.messages)
        if limit is not None:
            stop = min(stop, start + limit)
        if start >= stop:
            return []
        out: list[Message] = []
        sealer = self.ledger.sealer
        segments = await self._segments_from(at, start)
        for seg in segments:
            lo, hi = max(start, seg.lo_message), min(stop, seg.hi_message)
            if lo >= hi:
                continue
            docs = await self._storage.events.page(seg.thread_id, lo, hi)
            # Sealed events are opened in one run, before any is decoded: the cipher's
            # code stays hot from one event to the next.
            opened = (
                [doc["messages"] for doc in docs]
                if sealer is None
                else [await sealer.open_messages(doc) for doc in docs]
            )
            for doc, messages in zip(docs, opened, strict=True):
                first = doc["first_message"]
                for index, item in enumerate(messages):
                    if lo <= first + index < hi:
                        out.append(_decode(doc, index, item))
        if len(out) != stop - start:
            for seg in segments:
                # Hollowed events hold no message index: a removed thread reads as short.
                await self._refuse_if_removing(seg.thread_id)
            raise IntegrityError(
                f"thread {at.thread_id!r} is missing events: expected {stop - start} messages "
                f"in [{start}, {stop}), found {len(out)}"
            )
        return out

    async def _segments_from(self, at: Position, start: int) -> list[Segment]:
        """Return the segments of ``at``'s line that hold messages from ``start`` on, root first.

        A page within the lineage window reads no thread document; one that starts
        further back reads one (cached) per window crossed, only as far as it needs.

        Raises:
            ThreadRemovedError: an ancestor the page needs was removed.
            IntegrityError: an ancestor the page needs is missing or contradicts its branch.
        """
        segments, earlier, depth = at.segments(), at.earlier, at.thread.depth if at.thread else 0
        while earlier is not None and earlier.messages > start:
            ancestor = await self.ledger.thread(earlier.thread_id, self.scope)
            if ancestor is None:
                if await self._storage.threads.get_raw(earlier.thread_id) is not None:
                    # Its tombstone (or a removal's mark) is there: removed, not damaged.
                    await self._refuse_if_removing(earlier.thread_id)
                raise IntegrityError(
                    f"thread {at.thread_id!r} descends from missing thread {earlier.thread_id!r}"
                )
            if ancestor.depth >= depth:
                raise IntegrityError(f"the lineage of thread {at.thread_id!r} loops back on itself")
            segments = _segments(ancestor, ancestor.id, earlier.offset, earlier.messages) + segments
            earlier, depth = _earlier(ancestor), ancestor.depth
        return segments

    # ------------------------------------------------------------------ old-protocol marker

    async def marker(self, position: Position) -> dict[str, Any]:
        """Return the authenticated cursor carried by the old framework's serialized thread."""
        position = self._check(position)
        key = await self.ledger._marker_secret()
        state = self.state(position)
        state["marker"] = mac(key, "marker", self.scope, position.thread_id, position.offset)
        return state

    async def from_marker(self, value: object) -> Position | None:
        """Return the position a marker names, or ``None`` if ``value`` is not an authentic marker.

        A message whose properties merely look like a marker (anybody can set them) is
        not one: the marker's MAC is keyed by the ledger's signing key or by a secret
        stored in the database, which message content cannot know.
        """
        if not isinstance(value, Mapping):
            return None
        tag = value.get("marker")
        if type(tag) is not str:
            return None
        try:
            cursor = Cursor.from_state({k: v for k, v in value.items() if k != "marker"})
        except ChatLedgerError:
            return None
        key = await self.ledger._marker_secret()
        if not hmac.compare_digest(mac(key, "marker", self.scope, cursor.thread_id, cursor.offset), tag):
            return None
        return await self.resolve(cursor)


def _decode(doc: Mapping[str, Any], index: int, item: Mapping[str, Any]) -> Message:
    if "sealed" in item:
        # A sealed message decodes to its placeholder text: never hand that out as content.
        raise KeyUnavailableError(
            f"event {doc.get('_id')!r}: message {index} is sealed, and this ledger has no sealer "
            "configured to open it (Ledger(..., sealer=...))"
        )
    try:
        return decode_message(item)
    except ChatLedgerError:
        raise
    except _DECODE_ERRORS as e:
        raise IntegrityError(
            f"event {doc.get('_id')!r}: message {index} cannot be decoded ({type(e).__name__}: {e})"
        ) from e
