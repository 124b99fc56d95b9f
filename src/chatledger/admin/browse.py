"""Reading any thread as an operator: the transcript at a cursor, whatever the thread's scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatledger._maf import Message
from chatledger.admin.catalog import as_ledger
from chatledger.errors import UnknownThreadError
from chatledger.models import Cursor, Scope, ThreadRecord

__all__ = ["Transcript", "get_thread", "read_transcript"]


@dataclass(frozen=True, slots=True)
class Transcript:
    """The messages visible at a cursor of one thread."""

    thread: ThreadRecord
    cursor: Cursor
    messages: list[Message]


async def get_thread(target: Any, thread_id: str) -> ThreadRecord | None:
    """Return a thread record of any scope, or ``None``.

    Raises:
        InvalidThreadIdError: ``thread_id`` is malformed.
        IntegrityError: the stored document is malformed.
    """
    return await as_ledger(target).thread(thread_id, None)


async def read_transcript(
    target: Any, thread_id: str, *, at: int | None = None, offset: int = 0, limit: int | None = None
) -> Transcript:
    """Return the messages of a thread at offset ``at`` (its head by default), of any scope.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The thread.
        at: The event offset to read at; ``None`` for the head.
        offset: Index of the first message to return (negative counts from the end).
        limit: Most messages to return.

    Raises:
        UnknownThreadError: there is no such thread.
        InvalidCursorError: ``at`` is past the thread's head.
        IntegrityError: a stored event is missing or malformed (it is named).
    """
    ledger = as_ledger(target)
    record = await ledger.thread(thread_id, None)
    if record is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    # The operator reads the thread through a binding of the thread's own scope.
    binding = ledger.bind(Scope.of(record))
    position = await binding.head(thread_id) if at is None else await binding.at(thread_id, at)
    messages = await binding.read(position, offset=offset, limit=limit)
    return Transcript(record, position.cursor, messages)
