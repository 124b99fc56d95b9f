"""Pydantic models of what ChatLedger stores and hands out: cursors, threads, events."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from chatledger.errors import InvalidCursorError, InvalidThreadIdError

__all__ = [
    "CURSOR_VERSION",
    "EVENT_SCHEMA_VERSION",
    "MAX_THREAD_ID_LENGTH",
    "Cursor",
    "EventRecord",
    "ForkPoint",
    "StoredMessage",
    "ThreadId",
    "ThreadRecord",
    "utc_now_ms",
    "validate_thread_id",
]

#: Version tag written into every serialized cursor.
CURSOR_VERSION = 1
#: Version tag written into every event document (``v``).
EVENT_SCHEMA_VERSION = 1
#: Longest accepted thread id; long enough for any UUID/ULID/composite key scheme.
MAX_THREAD_ID_LENGTH = 200


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
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidThreadIdError("thread id must not contain control characters")
    return value


ThreadId = Annotated[str, AfterValidator(validate_thread_id)]


def utc_now_ms() -> datetime:
    """Return the current UTC time truncated to milliseconds, the precision BSON keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


class Cursor(BaseModel):
    """A position in a conversation: a thread and the ``seq`` of the last visible event.

    Its serialized form (:meth:`to_state`) is what sessions carry; its size does not
    depend on how long the conversation is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    thread_id: ThreadId
    offset: int = Field(ge=0)
    v: Literal[1] = 1

    def to_state(self) -> dict[str, Any]:
        """Return the JSON-safe dict form: ``{"thread_id", "offset", "v"}``."""
        return {"thread_id": self.thread_id, "offset": self.offset, "v": self.v}

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
    metadata: dict[str, Any] | None = None
    legal_hold: dict[str, Any] | None = None

    def holder(self, seq: int) -> str:
        """Return the id of the thread, along this line, whose own events include ``seq``.

        Events up to ``base_offset`` live in the ancestors; ``seq`` 0 (the empty start of
        the line) belongs to the root.
        """
        if seq > self.base_offset or not self.lineage:
            return self.id
        owner, base = self.lineage[0].thread_id, 0
        for fork in self.lineage:
            if base < seq:
                owner = fork.thread_id
            base = fork.offset
        return owner

    def to_document(self) -> dict[str, Any]:
        """Return the document stored for this thread."""
        doc = self.model_dump(by_alias=True, exclude_none=True)
        doc["parent"] = self.parent
        return doc


class StoredMessage(BaseModel):
    """One message as stored inside an event (see :mod:`chatledger.codec`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    text: str
    payload: str
    author_name: str | None = None
    message_id: str | None = None


class EventRecord(BaseModel):
    """A document of the ``events`` collection: one append, immutable once written."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    thread_id: str
    seq: int = Field(ge=1)
    first_message: int = Field(ge=0)
    count: int = Field(ge=1)
    messages: tuple[StoredMessage, ...]
    event_id: str
    created_at: datetime
    prev_hash: str
    hash: str
    v: int = EVENT_SCHEMA_VERSION

    @property
    def end_message(self) -> int:
        """Index (along the lineage) just past this event's last message."""
        return self.first_message + self.count
