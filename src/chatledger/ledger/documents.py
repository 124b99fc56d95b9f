"""The documents an append writes: a new root or branch thread, and a hash-chained event.

Pure functions of a position and a batch: nothing here reads or writes the database.
Every ``created_at`` the ledger stamps comes from this module's clock (``utc_now_ms``, re-exported
here so that a test can set it in one place).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from chatledger.errors import BatchTooLargeError
from chatledger.hashing import event_hash
from chatledger.models import (
    COMPACTION_SCHEMA_VERSION,
    EVENT_SCHEMA_VERSION,
    ForkPoint,
    Scope,
    ThreadRecord,
    utc_now_ms,
)
from chatledger.storage import event_key
from chatledger.storage.encoding import encoded_size

if TYPE_CHECKING:
    from chatledger.ledger.positions import Position
    from chatledger.sealing import DataKey

__all__ = [
    "MAX_EVENT_BYTES",
    "chained_event",
    "event_document",
    "new_branch",
    "new_root",
    "new_thread_id",
    "summary_event",
    "summary_place",
    "utc_now_ms",
]

#: MongoDB's document size limit. We check it ourselves so every engine (mongomock and
#: FerretDB included) refuses an oversized batch the same way, before anything is written.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


def new_thread_id() -> str:
    """Return a fresh, random thread id."""
    return uuid.uuid4().hex


def new_root(scope: Scope, thread_id: str, metadata: Mapping[str, Any] | None) -> ThreadRecord:
    """Return the thread document that starts a new conversation ``thread_id`` in ``scope``."""
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
            **scope.fields(),
            "metadata": dict(metadata) if metadata else None,
        }
    )


def new_branch(scope: Scope, at: Position) -> ThreadRecord:
    """Return the thread document of a new branch forked at ``at`` (a position on a written thread)."""
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
            **scope.fields(),
            "metadata": parent.metadata,
        }
    )


def chained_event(
    at: Position,
    thread: ThreadRecord,
    scope: Scope,
    messages: list[dict[str, Any]],
    event_id: str,
    *,
    version: int = EVENT_SCHEMA_VERSION,
    compaction: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the event that follows ``at`` on ``thread``, chained to ``at``'s hash.

    ``compaction`` (with ``version`` 3) makes it a compaction summary; its field order
    is part of what is stored, so it is fixed here for both kinds.
    """
    doc: dict[str, Any] = {
        "_id": event_key(thread.id, at.offset + 1),
        "v": version,
        "thread_id": thread.id,
        "seq": at.offset + 1,
        "first_message": at.messages,
        "count": len(messages),
        "messages": messages,
        "event_id": event_id,
        "created_at": utc_now_ms(),
        "root_id": thread.root_id,
        **scope.fields(),
    }
    if compaction is not None:
        doc["compaction"] = compaction
    doc["prev_hash"] = at.head_hash
    if at.offset == thread.base_offset:
        # The thread's first event vouches for its thread document (see ThreadRecord.digest).
        doc["thread_digest"] = thread.digest()
    doc["hash"] = event_hash(at.head_hash, doc)
    return doc


def event_document(
    at: Position,
    thread: ThreadRecord,
    scope: Scope,
    stored: list[dict[str, Any]],
    event_id: str,
    seal_key: DataKey | None = None,
) -> dict[str, Any]:
    """Return the event an append of ``stored`` after ``at`` inserts (sealed under ``seal_key``).

    Raises:
        BatchTooLargeError: it would not fit in one MongoDB document.
    """
    stored = _sealed(stored, event_key(thread.id, at.offset + 1), seal_key)
    doc = chained_event(at, thread, scope, stored, event_id)
    _check_size(doc, stored, "split it into several add_messages calls")
    return doc


def summary_place(key: str) -> str:
    """Return what a compaction summary's sealed messages are bound to: its event's ``_id`` and ``/summary``.

    Not the bare ``_id``: a summary's ciphertext then never opens as the transcript
    messages of its own event (or of any event, whose ``_id`` ends in a digit).
    """
    return f"{key}/summary"


def summary_event(
    at: Position,
    thread: ThreadRecord,
    scope: Scope,
    body: Mapping[str, Any],
    summary: list[dict[str, Any]],
    event_id: str,
    seal_key: DataKey | None = None,
) -> dict[str, Any]:
    """Return the compaction event that follows ``at``: ``body`` plus ``summary`` (sealed under ``seal_key``).

    The summary messages are sealed as an append's batch is (one ciphertext, the same
    form and key), bound to :func:`summary_place`; the range, its hashes, ``previous``
    and the strategy stay in clear, so ``verify`` checks them without a key.

    Raises:
        BatchTooLargeError: it would not fit in one MongoDB document.
    """
    summary = _sealed(summary, summary_place(event_key(thread.id, at.offset + 1)), seal_key)
    doc = chained_event(
        at,
        thread,
        scope,
        [],
        event_id,
        version=COMPACTION_SCHEMA_VERSION,
        compaction={**body, "messages": summary},
    )
    _check_size(doc, summary, "make the summary shorter")
    return doc


def _sealed(stored: list[dict[str, Any]], place: str, seal_key: DataKey | None) -> list[dict[str, Any]]:
    """Return ``stored`` sealed under ``seal_key`` for ``place`` (as is without a key)."""
    if seal_key is None:
        return stored
    # Sealed here, per document: a retry on a branch is another event id, and the
    # ciphertext is bound to the event it lies in. The hash covers the ciphertext.
    return seal_key.seal(stored, place)


def _check_size(doc: dict[str, Any], stored: list[dict[str, Any]], advice: str) -> None:
    """Refuse an event document larger than MongoDB stores (``stored``: the messages it holds)."""
    # Encoding the document just to measure it costs as much as hashing it; a bound
    # on its size (BSON adds a few bytes per field) settles almost every batch.
    # (Every stored value is a str, or the bytes of a sealed event's ciphertext.)
    bound = 4096 + sum(4 * len(v) + 64 for m in stored for v in m.values())
    if bound >= MAX_EVENT_BYTES and encoded_size(doc) > MAX_EVENT_BYTES:
        raise BatchTooLargeError(
            f"a batch of {len(stored)} messages does not fit in one {MAX_EVENT_BYTES} byte document; {advice}"
        )
