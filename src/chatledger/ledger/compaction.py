"""Compaction with provenance: a summary is an event that commits to the range it replaces.

Nothing is overwritten. A compaction appends one hash-chained event (schema version 3)
at the head of the thread. It holds no transcript message (``count`` 0) and carries a
hashed ``compaction`` field::

    {"first_seq": 1, "first_hash": ..., "last_seq": L, "last_hash": ...,
     "through_message": M, "previous": P, "strategy": "...", "messages": [summary...]}

The range is always a prefix of the line (seq 1 through ``L``): the compacted view is
the summary followed by the messages from index ``M`` on, so reading it costs one
indexed query for the newest summary plus a page of what follows it, whatever the
length of the history. ``previous`` is the seq of the summary this one supersedes (0 if
none), so two processes that compact the same thread at once cannot both succeed.

On a sealing ledger ``messages`` is sealed as an append's batch is (the thread's key,
one ciphertext, bound to :func:`~chatledger.ledger.documents.summary_place`); the rest
of the field stays in clear, so ``verify`` checks the range without a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from chatledger._maf import Message
from chatledger.codec import decode_message, encode_messages
from chatledger.errors import ConcurrencyError, IntegrityError, InvalidInputError, KeyUnavailableError
from chatledger.ledger.binding import Binding
from chatledger.ledger.core import storage_of
from chatledger.ledger.documents import summary_event, summary_place
from chatledger.ledger.pending import new_event_id
from chatledger.ledger.positions import Position
from chatledger.models import COMPACTION_SCHEMA_VERSION, ThreadRecord
from chatledger.storage import PositionTakenError

if TYPE_CHECKING:
    from chatledger.sealing import Sealer
    from chatledger.sealing.sealer import Reader

__all__ = ["Compaction", "compact", "compacted_view", "event_at", "newest_compaction"]

_HASH: Final = re.compile(r"[0-9a-f]{64}")
_MAX_STRATEGY: Final = 200


@dataclass(frozen=True, slots=True)
class Compaction:
    """A stored compaction summary and the range of original events it replaces."""

    #: Where the summary event lies.
    thread_id: str
    seq: int
    #: The replaced range: events ``first_seq`` through ``last_seq`` of the line.
    first_seq: int
    first_hash: str
    last_seq: int
    last_hash: str
    #: Index of the first message after the range (the compacted view continues there).
    through_message: int
    #: Seq of the summary this one supersedes (0: none).
    previous: int
    strategy: str
    summary: list[Message]


async def _of(doc: Mapping[str, Any], sealer: Sealer | None, reader: Reader | None = None) -> Compaction:
    body = doc.get("compaction")
    if doc.get("v") != COMPACTION_SCHEMA_VERSION:
        # Only version 3 hashes the field: on any other event it is an unvouched claim.
        raise IntegrityError(
            f"event {doc.get('_id')!r} carries a compaction its schema version does not hash"
        )
    # Opened outside the try below: the sealer's own errors (erased, no key, tampered) stand.
    messages = await _opened(doc, body.get("messages") if isinstance(body, Mapping) else None, sealer, reader)
    try:
        assert isinstance(body, Mapping)
        out = Compaction(
            thread_id=str(doc["thread_id"]),
            seq=int(doc["seq"]),
            first_seq=int(body["first_seq"]),
            first_hash=str(body["first_hash"]),
            last_seq=int(body["last_seq"]),
            last_hash=str(body["last_hash"]),
            through_message=int(body["through_message"]),
            previous=int(body["previous"]),
            strategy=str(body["strategy"]),
            summary=[decode_message(m) for m in messages],
        )
    except (AssertionError, KeyError, TypeError, ValueError) as e:
        raise IntegrityError(f"event {doc.get('_id')!r} holds a malformed compaction ({e})") from e
    return out


async def _opened(
    doc: Mapping[str, Any], messages: Any, sealer: Sealer | None, reader: Reader | None = None
) -> Any:
    """Return a summary's stored messages opened by ``sealer`` (as stored if none is sealed).

    A summary is sealed as an event's batch is, bound to its own place
    (:func:`~chatledger.ledger.documents.summary_place`), so the sealer opens it as such.

    Raises:
        ContentErasedError: the summary's key was destroyed by erasure.
        KeyUnavailableError: it is sealed and there is no sealer, or no usable key.
        IntegrityError: its sealed form is malformed, altered or moved.
    """
    if type(messages) is not list:
        return messages  # _of reports the malformed compaction
    if sealer is not None:
        # Numbered from 0 (first_message): the summary leads the compacted view.
        place = {"_id": summary_place(str(doc.get("_id"))), "first_message": 0, "messages": messages}
        return await sealer.open_messages(place, reader)
    if any(isinstance(m, Mapping) and "sealed" in m for m in messages):
        # A sealed message decodes to its placeholder text: never hand that out as a summary.
        raise KeyUnavailableError(
            f"event {doc.get('_id')!r}: its compaction summary is sealed, and this ledger has no "
            "sealer configured to open it (Ledger(..., sealer=...))"
        )
    return messages


async def newest_compaction(binding: Binding, at: Position) -> Compaction | None:
    """Return the newest compaction summary visible at ``at`` (``None`` if there is none).

    One indexed query over the line's lineage window, whatever its depth. Only when the
    window holds no summary and the line reaches further up (deeper than
    :data:`~chatledger.models.LINEAGE_WINDOW` levels) is the rest of the line asked too:
    one thread read per window crossed, then one more query.

    Raises:
        ContentErasedError: the summary is sealed under a destroyed key.
        KeyUnavailableError: it is sealed and the ledger has no sealer, or no usable key.
        IntegrityError: it is malformed, or its sealed content was altered or moved.
    """
    at = binding._check(at)
    events = storage_of(binding.ledger).events
    window = at.segments()
    doc = await events.newest_compaction([(s.thread_id, s.lo_seq, s.hi_seq) for s in window])
    if doc is None and at.earlier is not None:
        # Any summary in the window is newer than one further up, so the rest of the line
        # is read only when the window has none (a deep line compacted far up, or never).
        line = await binding._segments_from(at, 0)
        further = line[: len(line) - len(window)]
        doc = await events.newest_compaction([(s.thread_id, s.lo_seq, s.hi_seq) for s in further])
    if doc is None:
        return None
    sealer = binding.ledger.sealer
    # The summary is content of this scope's tree: sealed under another subject's key, it
    # was moved here (as a transcript event would be: Reading refuses those alike).
    root = at.thread.root_id if at.thread else at.thread_id
    reader = None if sealer is None else sealer.reader(binding.scope, root, binding.ledger.ledger_id)
    return await _of(doc, sealer, reader)


async def compacted_view(binding: Binding, at: Position) -> list[Message]:
    """Return the compacted view at ``at``: the newest summary, then the messages after its range.

    Without a compaction this is the full transcript. The cost is the view's size (plus
    one indexed query), not the history's. A sealed summary is opened like the messages.
    """
    newest = await newest_compaction(binding, at)
    if newest is None:
        return await binding.read(at)
    return [*newest.summary, *await binding.read(at, offset=newest.through_message)]


async def event_at(binding: Binding, at: Position, seq: int) -> dict[str, Any]:
    """Return the whole event at ``seq`` of ``at``'s line (an ancestor's, before a fork point).

    Raises:
        IntegrityError: the line has no event there.
    """
    at = binding._check(at)
    if at.thread is None or not 1 <= seq <= at.offset:
        raise InvalidInputError(f"seq {seq} is outside the line (1..{at.offset})")
    owner = await binding._owner(at.thread, seq)
    doc = await storage_of(binding.ledger).events.at(owner, seq, full=True)
    if doc is None:
        raise IntegrityError(f"thread {at.thread_id!r} is missing its event at seq {seq}")
    return doc


def _check_hash(name: str, value: object) -> str:
    if type(value) is not str or not _HASH.fullmatch(value):
        raise InvalidInputError(f"{name} must be an event hash (64 lowercase hex digits), not {value!r}")
    return value


async def compact(
    binding: Binding,
    at: Position,
    *,
    first_seq: int,
    first_hash: str,
    last_seq: int,
    last_hash: str,
    summary: Sequence[Message],
    strategy: str,
) -> Position:
    """Append a summary event that replaces events ``first_seq..last_seq`` in the compacted view.

    Args:
        binding: The scope the thread belongs to.
        at: The head of the thread, as this binding resolved it.
        first_seq: Must be 1: a compaction replaces a prefix of the visible history.
        first_hash: The hash of the event at ``first_seq``, as the caller read it.
        last_seq: The last event replaced; past the previous summary's range.
        last_hash: The hash of the event at ``last_seq``, as the caller read it.
        summary: The messages that stand for the range (may be empty: a plain drop).
        strategy: The name of the strategy that produced the summary.

    Returns:
        The position after the summary event.

    Raises:
        InvalidInputError: the range is not a prefix of this line's visible history, a
            hash does not match the event at that position of this line, or the
            arguments are malformed. Nothing is written.
        ConcurrencyError: ``at`` is not the head any more (another process appended or
            compacted): re-read and re-plan.
        ContentErasedError: the ledger seals messages and the subject was erased (its
            previous summary cannot be opened, or no key is made for it again).
    """
    at = binding._check(at)
    _check_request(first_seq, first_hash, last_seq, last_hash, summary, strategy)
    thread = _check_range(binding, at, first_seq, last_seq)
    stored_summary = encode_messages(summary)
    previous = await _superseded(binding, at, last_seq)
    await _original_event(binding, at, first_seq, first_hash)
    last = await _original_event(binding, at, last_seq, last_hash)
    body = {
        "first_seq": first_seq,
        "first_hash": first_hash,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "through_message": int(last["first_message"]) + int(last["count"]),
        "previous": previous.seq if previous is not None else 0,
        "strategy": strategy,
    }
    # On a sealing ledger the summary is sealed under the key the thread's appends use
    # (the same lookup: an erased subject gets SubjectErasedError, nothing written).
    seal_key = None if binding.ledger.sealer is None else await binding._seal_key(at, thread)
    doc = summary_event(at, thread, binding.scope, body, stored_summary, new_event_id(), seal_key)
    await binding.ledger.ensure_indexes()
    try:
        await binding._insert(doc)
    except PositionTakenError as e:
        raise ConcurrencyError(
            f"thread {at.thread_id!r} moved on past seq {at.offset} while compacting "
            "(another process appended or compacted): re-read the head and plan again"
        ) from e
    if seal_key is not None and stored_summary:
        # Read back by this process (the next turn's view), it decrypts nothing.
        sealed = {"_id": summary_place(doc["_id"]), "messages": doc["compaction"]["messages"]}
        binding._keep_sealed(sealed, stored_summary, seal_key)
    return binding._after(doc, thread)


def _check_request(
    first_seq: object,
    first_hash: object,
    last_seq: object,
    last_hash: object,
    summary: object,
    strategy: object,
) -> None:
    """Refuse arguments of the wrong shape (before anything is read)."""
    if type(first_seq) is not int or type(last_seq) is not int:
        raise InvalidInputError("first_seq and last_seq must be ints")
    _check_hash("first_hash", first_hash)
    _check_hash("last_hash", last_hash)
    if type(strategy) is not str or not strategy or len(strategy) > _MAX_STRATEGY:
        raise InvalidInputError(f"strategy must be a non-empty str of at most {_MAX_STRATEGY} characters")
    if isinstance(summary, (str, bytes)) or not isinstance(summary, Sequence):
        raise InvalidInputError("summary must be a sequence of messages")


def _check_range(binding: Binding, at: Position, first_seq: int, last_seq: int) -> ThreadRecord:
    """Return ``at``'s thread if ``first_seq..last_seq`` is a prefix of its line this ledger may compact."""
    if at.thread is None or at.offset == 0:
        raise InvalidInputError(f"thread {at.thread_id!r} has no events to compact")
    if first_seq != 1:
        raise InvalidInputError(
            "a compaction replaces a prefix of the visible history: "
            f"its range starts at seq 1, not {first_seq}"
        )
    if not first_seq <= last_seq <= at.offset:
        raise InvalidInputError(f"last_seq {last_seq} is outside the line (1..{at.offset})")
    return at.thread


async def _superseded(binding: Binding, at: Position, last_seq: int) -> Compaction | None:
    """Return the newest compaction at ``at`` (the one this supersedes) if the range reaches past it."""
    previous = await newest_compaction(binding, at)
    if previous is not None and last_seq <= previous.last_seq:
        raise InvalidInputError(
            f"the range must reach past the previous compaction (seq {previous.seq} replaced "
            f"through seq {previous.last_seq}), not end at seq {last_seq}"
        )
    return previous


async def _original_event(binding: Binding, at: Position, seq: int, claimed: str) -> dict[str, Any]:
    """Return the event at ``seq`` of ``at``'s line if it is an original event with hash ``claimed``."""
    doc = await event_at(binding, at, seq)
    if "compaction" in doc:
        raise InvalidInputError(f"seq {seq} is a compaction summary, not an original event")
    if doc["hash"] != claimed:
        # Another thread's hash, or a plan made on a line that has changed since.
        raise InvalidInputError(
            f"the event at seq {seq} of thread {at.thread_id!r} has hash {doc['hash'][:12]}…, "
            f"not {claimed[:12]}…: the range does not belong to this line; nothing was written"
        )
    return doc
