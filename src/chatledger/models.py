"""Pydantic models of what ChatLedger stores and hands out: cursors, threads, events."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from chatledger.errors import InvalidCursorError, InvalidInputError, InvalidThreadIdError
from chatledger.hashing import epoch_ms

__all__ = [
    "COMPACTION_SCHEMA_VERSION",
    "CURSOR_VERSION",
    "DEFAULT_SOURCE_ID",
    "EVENT_SCHEMA_VERSION",
    "LINEAGE_WINDOW",
    "MAX_THREAD_ID_LENGTH",
    "Cursor",
    "ForkPoint",
    "Scope",
    "ThreadId",
    "ThreadRecord",
    "utc_now_ms",
    "validate_name",
    "validate_thread_id",
]

#: Version tag written into every serialized cursor.
CURSOR_VERSION = 1
#: Version tag written into every new event document (``v``). It is inside the hash:
#: an event keeps the version it was written with forever (see ``chatledger.hashing``).
EVENT_SCHEMA_VERSION = 2
#: The schema version of a compaction summary event (version 2 plus a hashed ``compaction``).
COMPACTION_SCHEMA_VERSION = 3
#: The source id of a binding that names none: the default of both adapters, and what a
#: thread written before source ids existed (schema 1, no ``source_id`` field) belongs to.
DEFAULT_SOURCE_ID = "chatledger"
#: Longest accepted thread id; long enough for any UUID/ULID/composite key scheme.
MAX_THREAD_ID_LENGTH = 200
#: How many of its nearest ancestors a branch's thread document lists (``lineage``). A
#: deeper line is followed through the first listed ancestor's own document, so thread
#: documents stay bounded and verify/import cost grows with the number of threads, not
#: with depth squared. Documents written before the window (their whole lineage, root
#: first) stay valid: both forms are accepted (:meth:`ThreadRecord.continues`).
LINEAGE_WINDOW = 32


#: Unicode categories Cc (control characters) and Cs (lone surrogates), as one regular
#: expression: a per-character category lookup cost more than the rest of an append's checks.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_thread_id(value: object) -> str:
    """Return ``value`` if it is a usable thread id.

    A thread id must be a plain ``str`` (never a dict such as ``{"$ne": None}``, which
    would widen a query to other threads), non-empty, at most 200 characters, with no
    control characters.

    Raises:
        InvalidThreadIdError: ``value`` is not a usable thread id.
    """
    if type(value) is not str:
        raise InvalidThreadIdError(f"thread id must be a str, got {type(value).__name__}")
    if not value or len(value) > MAX_THREAD_ID_LENGTH:
        raise InvalidThreadIdError(f"thread id must be 1..{MAX_THREAD_ID_LENGTH} characters long")
    if _UNSAFE.search(value):
        raise InvalidThreadIdError("thread id must not contain control characters or lone surrogates")
    return value


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable tenant, user or source id.

    The same rule everywhere (ledger, adapters, admin): a plain non-empty ``str`` of at
    most 200 characters, without control characters or lone surrogates, so that what an
    application can write an operator can also select and erase.

    Raises:
        InvalidInputError: ``value`` is not such a string.
    """
    if type(value) is not str or not value or len(value) > MAX_THREAD_ID_LENGTH:
        raise InvalidInputError(
            f"{kind} must be a non-empty str of at most {MAX_THREAD_ID_LENGTH} characters"
        )
    if _UNSAFE.search(value):
        raise InvalidInputError(f"{kind} must not contain control characters or lone surrogates")
    return value


ThreadId = Annotated[str, AfterValidator(validate_thread_id)]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now_ms() -> datetime:
    """Return the current UTC time truncated to milliseconds, the precision BSON keeps."""
    # The epoch plus the system clock's whole milliseconds: what ``datetime.now(UTC)``
    # truncated to milliseconds is, built in one addition (``now`` with a time zone, then
    # ``replace``, cost three objects and two method lookups on every append).
    return _EPOCH + timedelta(0, 0, 0, time.time_ns() // 1_000_000)


class Cursor(BaseModel):
    """A position in a conversation: a thread and the ``seq`` of the last visible event.

    Its serialized form (:meth:`to_state`) is what sessions carry; its size does not
    depend on how long the conversation is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    thread_id: ThreadId
    offset: int = Field(ge=0)
    v: Literal[1] = 1
    #: Signature over the binding's scope, the thread and the offset (signed ledgers only).
    mac: str | None = Field(default=None, max_length=64)

    def to_state(self) -> dict[str, Any]:
        """Return the JSON-safe dict form: ``{"thread_id", "offset", "v"}`` (plus ``"mac"`` when signed)."""
        state: dict[str, Any] = {"thread_id": self.thread_id, "offset": self.offset, "v": self.v}
        if self.mac is not None:
            state["mac"] = self.mac
        return state

    def unsigned(self) -> Cursor:
        """Return the same position without its signature."""
        return self if self.mac is None else Cursor(thread_id=self.thread_id, offset=self.offset)

    @classmethod
    def from_state(cls, state: object) -> Cursor:
        """Return the cursor serialized in ``state``.

        Raises:
            InvalidThreadIdError: the thread id is not a plain bounded string.
            InvalidCursorError: ``state`` is not a cursor.
        """
        if isinstance(state, Cursor):
            return state
        if not isinstance(state, dict):
            raise InvalidCursorError(f"a cursor must be a dict, got {type(state).__name__}")
        thread_id: object = state.get("thread_id")  # pyright: ignore[reportUnknownMemberType]
        if "thread_id" in state:
            validate_thread_id(thread_id)
        try:
            return cls.model_validate(state)
        except ValidationError as e:
            raise InvalidCursorError(f"malformed cursor {state!r}: {e.errors()[0]['msg']}") from e


class ForkPoint(BaseModel):
    """Where a line of conversation continues in a child thread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thread_id: str
    offset: int = Field(ge=0)
    #: Number of messages visible at ``offset`` (so paging never walks the parent).
    messages: int = Field(ge=0)


class ThreadRecord(BaseModel):
    """A document of the ``threads`` collection, written once when the thread is created."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    parent: dict[str, Any] | None = None
    root_id: str
    depth: int = 0
    #: Ancestors from the root to the parent, each with the point where the line forked.
    lineage: tuple[ForkPoint, ...] = ()
    base_offset: int = 0
    base_messages: int = 0
    created_at: datetime
    tenant_id: str | None = None
    user_id: str | None = None
    #: The source id of the binding that created the thread (absent: the default source).
    source_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def windowed(self) -> bool:
        """Whether ``lineage`` lists only the nearest ancestors (the root is further up)."""
        return len(self.lineage) < self.depth

    def branch_lineage(self, fork: ForkPoint) -> tuple[ForkPoint, ...]:
        """Return the lineage of a branch forked from this thread at ``fork``: its nearest ancestors."""
        return (*self.lineage, fork)[-LINEAGE_WINDOW:]

    def continues(self, parent: ThreadRecord) -> str | None:
        """Return why this branch's document does not continue its parent's, or ``None``.

        A branch continues its parent when it is one level deeper, shares its root and
        lists the parent's lineage plus the fork point: all of it (as documents written
        before :data:`LINEAGE_WINDOW` existed do) or its last :data:`LINEAGE_WINDOW`
        entries. The fork point is taken from ``base_offset``/``base_messages``.
        """
        if self.depth != parent.depth + 1:
            return f"depth {self.depth} does not follow its parent {parent.id!r}'s depth {parent.depth}"
        if self.root_id != parent.root_id:
            return f"root_id {self.root_id!r} differs from its parent {parent.id!r}'s {parent.root_id!r}"
        fork = ForkPoint(thread_id=parent.id, offset=self.base_offset, messages=self.base_messages)
        expected = (*parent.lineage, fork)
        if self.lineage != expected and self.lineage != expected[-LINEAGE_WINDOW:]:
            return f"lineage disagrees with ancestor {parent.id!r}'s own lineage"
        return None

    def holder(self, seq: int) -> str:
        """Return the id of the thread, along the stored lineage, whose own events include ``seq``.

        Events up to ``base_offset`` live in the ancestors; ``seq`` 0 (the empty start of
        the line) belongs to the root. On a :attr:`windowed` lineage the answer is exact
        only when it is not ``lineage[0]``: that ancestor's own fork point is not listed
        here, so the event may lie further up (:meth:`holder_along` follows it).
        """
        if seq > self.base_offset or not self.lineage:
            return self.id
        owner, base = self.lineage[0].thread_id, 0
        for fork in self.lineage:
            if base < seq:
                owner = fork.thread_id
            base = fork.offset
        return owner

    async def holder_along(
        self, seq: int, fetch: Callable[[str], Awaitable[ThreadRecord | None]]
    ) -> str | None:
        """Return the id of the thread, along the whole line, whose own events include ``seq``.

        Like :meth:`holder`, but past the window: when the answer is the window's first
        ancestor, its own document (``fetch``) says whether the event lies further up.
        That costs one ``fetch`` per :data:`LINEAGE_WINDOW` levels crossed, none when the
        lineage is complete or the event lies within the window.

        Args:
            seq: The position along the line.
            fetch: Returns an ancestor's record, or ``None`` if it cannot be had.

        Returns:
            The holder's id, or ``None`` when an ancestor is missing or the documents
            contradict each other (an ancestor not shallower than its descendant).
        """
        record = self
        while True:
            owner = record.holder(seq)
            if owner == record.id or not record.windowed or owner != record.lineage[0].thread_id:
                return owner
            ancestor = await fetch(owner)
            if ancestor is None or ancestor.depth >= record.depth:
                return None
            record = ancestor

    def digest(self) -> str:
        """Return a digest of everything immutable about the thread (holds aside).

        The first event of each thread carries it inside its hash (schema 2), so a
        changed scope, lineage, fork point or metadata on the thread document is
        tampering that ``verify`` reports.
        """
        body = {
            "_id": self.id,
            "parent": self.parent,
            "root_id": self.root_id,
            "depth": self.depth,
            "lineage": [f.model_dump() for f in self.lineage],
            "base_offset": self.base_offset,
            "base_messages": self.base_messages,
            "created_at": epoch_ms(self.created_at),
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "source_id": self.source_id,
            "metadata": self.metadata,
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_document(self) -> dict[str, Any]:
        """Return the document stored for this thread."""
        doc = self.model_dump(by_alias=True, exclude_none=True)
        doc["parent"] = self.parent
        return doc


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose threads a binding may see: a tenant (optional), a user (optional) and a source id.

    Scope is part of a thread's identity. A binding opens, reads, appends to and branches
    from only threads created under exactly its scope; any other thread is, to it,
    indistinguishable from one that does not exist. ``user_id`` is enforced like
    ``tenant_id``: a binding for user ``u`` sees only threads written for ``u``, and a
    binding without a user sees only threads written without one.

    Raises:
        InvalidInputError: a field is not a usable name.
    """

    tenant_id: str | None = None
    user_id: str | None = None
    source_id: str = DEFAULT_SOURCE_ID

    def __post_init__(self) -> None:
        if self.tenant_id is not None:
            validate_name("tenant_id", self.tenant_id)
        if self.user_id is not None:
            validate_name("user_id", self.user_id)
        validate_name("source_id", self.source_id)

    @classmethod
    def of(cls, record: ThreadRecord) -> Scope:
        """Return the scope a thread was created in (an operator reads it through this scope)."""
        return cls(
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            source_id=record.source_id or DEFAULT_SOURCE_ID,
        )

    @property
    def is_default(self) -> bool:
        """Whether this is the unscoped default (no tenant, no user, the default source)."""
        return self.tenant_id is None and self.user_id is None and self.source_id == DEFAULT_SOURCE_ID

    def admits(self, record: ThreadRecord) -> bool:
        """Return whether a thread belongs to this scope."""
        return (
            record.tenant_id == self.tenant_id
            and record.user_id == self.user_id
            and (record.source_id or DEFAULT_SOURCE_ID) == self.source_id
        )

    def thread_id_for(self, name: str) -> str:
        """Return the id of the thread a session id (or store thread name) names in this scope.

        In the default scope the name is the thread id, as it always was. In any other
        scope it is a digest of the scope and the name, so two tenants, users or source
        ids that use the same session id get two separate threads, and no name chosen in
        one scope can reach a thread of another.

        Raises:
            InvalidThreadIdError: ``name`` is not a plain bounded string.
        """
        validate_thread_id(name)
        if self.is_default:
            return name
        key = json.dumps([self.tenant_id, self.user_id, self.source_id, name], ensure_ascii=False)
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]

    def fields(self) -> dict[str, str]:
        """Return the scope fields stored on threads and events (absent ones omitted)."""
        out = {"source_id": self.source_id}
        if self.tenant_id is not None:
            out["tenant_id"] = self.tenant_id
        if self.user_id is not None:
            out["user_id"] = self.user_id
        return out
