"""The framework stores' records as an operator sees them: what kind a thread is, what it holds.

``MongoSessionStore`` and ``MongoCheckpointStorage`` keep their records as ledger
threads. Their marks, defined here once (the stores import them):

- a **session** thread holds one snapshot per event: one message of role
  :data:`SESSION_ROLE` whose text is ``AgentSession.to_dict()`` as JSON; the thread's
  ``metadata.session_id`` is the session id (history providers record one too, so the
  role decides);
- a **workflow run** holds one checkpoint record per event (role
  :data:`CHECKPOINT_ROLE`, the framework's encoding of the checkpoint as JSON, or for a
  large one ``{"chunked": {...}}`` after its chunks of role :data:`CHUNK_ROLE`); the
  thread's ``metadata.workflow_name`` names the workflow, and branches inherit it.

Everything else is a **conversation**. Pickled values inside a checkpoint are never
unpickled here: an operator's view shows the checkpoint's plain fields and sizes.

A checkpoint withdrawn with ``MongoCheckpointStorage.delete`` keeps its record in the
chain; its receipt (kind :data:`CHECKPOINT_DELETED`, naming the record's thread, seq
and hash) and the mark on its record (``withdrawn``, naming the receipt) are what
:func:`withdrawn_checkpoints` finds along a run's line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from chatledger.admin.catalog import ThreadSummary, as_ledger
from chatledger.admin.receipts import CHECKPOINT_DELETED
from chatledger.admin.verify import is_tombstone
from chatledger.errors import IntegrityError, InvalidInputError, UnknownThreadError
from chatledger.ledger import storage_of
from chatledger.ledger.lineage import ancestry
from chatledger.models import validate_thread_id
from chatledger.storage.events import WITHDRAWN

__all__ = [
    "CHECKPOINT_DELETED",
    "CHECKPOINT_ROLE",
    "CHUNK_ROLE",
    "CONVERSATION",
    "KINDS",
    "SESSION",
    "SESSION_KEY",
    "SESSION_ROLE",
    "WORKFLOW_KEY",
    "WORKFLOW_RUN",
    "CheckpointView",
    "SessionVersion",
    "Withdrawal",
    "checkpoints_of",
    "chunked_record",
    "kind_of",
    "kinds_of",
    "missing_thread",
    "sessions_of",
    "thread_kind",
    "with_kinds",
    "withdrawn_checkpoints",
]

#: The role of the one message each session snapshot event holds.
SESSION_ROLE: Final = "chatledger.session"
#: The role of the one message a checkpoint record holds.
CHECKPOINT_ROLE: Final = "chatledger.checkpoint"
#: The role of a chunk of a large checkpoint.
CHUNK_ROLE: Final = "chatledger.checkpoint-chunk"
#: Thread metadata naming a session store's session.
SESSION_KEY: Final = "session_id"
#: Thread metadata naming a workflow run's workflow.
WORKFLOW_KEY: Final = "workflow_name"

#: The kinds of thread, as ``chatledger threads`` shows them.
CONVERSATION: Final = "conversation"
SESSION: Final = "session"
WORKFLOW_RUN: Final = "workflow_run"
KINDS: Final = (CONVERSATION, SESSION, WORKFLOW_RUN)

#: Threads whose first event is read at once while classifying.
_IN_FLIGHT: Final = 16
#: Listed threads classified together.
_PAGE: Final = 64


def chunked_record(record: str, where: str) -> dict[str, Any] | None:
    """Return what a chunked checkpoint record says of its chunks (``None``: it holds the checkpoint).

    Args:
        record: The record's text.
        where: What names the record in an error (e.g. ``"event 't:3'"``).

    Raises:
        IntegrityError: the record starts as a chunked one but names its chunks wrongly.
    """
    if not record.startswith('{"chunked":'):
        return None
    try:
        chunked = json.loads(record)["chunked"]
        count, digest = chunked["chunks"], chunked["sha256"]
        if type(count) is not int or count < 1 or type(digest) is not str:
            raise TypeError("wrong types")
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{where} names its chunks wrongly: {e}") from e
    return dict(chunked)


def _candidate(doc: Mapping[str, Any]) -> str | None:
    """Return the kind a thread document's metadata claims (the first event's role confirms it)."""
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    if isinstance(metadata.get(WORKFLOW_KEY), str):
        return WORKFLOW_RUN
    if isinstance(metadata.get(SESSION_KEY), str):
        return SESSION
    return None


async def _first_roles(target: Any, thread_id: str) -> set[str]:
    return await storage_of(as_ledger(target)).tallies.first_roles(thread_id)


def _confirmed(claim: str | None, roles: set[str]) -> str:
    if claim == WORKFLOW_RUN and roles and roles <= {CHECKPOINT_ROLE, CHUNK_ROLE}:
        return WORKFLOW_RUN
    if claim == SESSION and roles == {SESSION_ROLE}:
        return SESSION
    return CONVERSATION


async def kinds_of(target: Any, docs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Return each thread's kind (:data:`KINDS`), by thread id.

    A thread is a session or a workflow run when its metadata says so and its own first
    event holds that store's records; only such threads cost a read (of the roles of one
    event), a few at a time.
    """
    out = {str(doc["_id"]): CONVERSATION for doc in docs}
    claims = [(str(doc["_id"]), claim) for doc in docs if (claim := _candidate(doc)) is not None]
    for start in range(0, len(claims), _IN_FLIGHT):
        batch = claims[start : start + _IN_FLIGHT]
        found = await asyncio.gather(*(_first_roles(target, tid) for tid, _ in batch))
        for (tid, claim), roles in zip(batch, found, strict=True):
            out[tid] = _confirmed(claim, roles)
    return out


async def kind_of(target: Any, doc: Mapping[str, Any]) -> str:
    """Return one thread's kind (see :func:`kinds_of`)."""
    return (await kinds_of(target, [doc]))[str(doc["_id"])]


async def with_kinds(
    target: Any,
    summaries: AsyncGenerator[ThreadSummary, None],
    *,
    kind: str | None = None,
    limit: int | None = None,
) -> AsyncIterator[tuple[ThreadSummary, str]]:
    """Yield each listed thread with its kind, only those of ``kind`` when given, at most ``limit``.

    Threads are classified a page at a time (see :func:`kinds_of`), in the order listed.

    Raises:
        InvalidInputError: ``kind`` is not one of :data:`KINDS`, or ``limit`` not a positive int.
    """
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInputError(f"limit must be a positive int or None, not {limit!r}")
    left = limit
    exhausted = False
    async with aclosing(summaries):
        while not exhausted and left != 0:
            page: list[ThreadSummary] = []
            while len(page) < _PAGE:
                try:
                    page.append(await anext(summaries))
                except StopAsyncIteration:
                    exhausted = True
                    break
            kinds = await kinds_of(target, [summary.doc for summary in page])
            for summary in page:
                if kind is None or kinds[summary.thread_id] == kind:
                    yield summary, kinds[summary.thread_id]
                    left = None if left is None else left - 1
                    if left == 0:
                        break


async def thread_kind(target: Any, thread_id: str) -> str:
    """Return the kind of the live thread ``thread_id``.

    Raises:
        InvalidThreadIdError: ``thread_id`` is malformed.
        UnknownThreadError: the thread was removed, or never was.
    """
    validate_thread_id(thread_id)
    doc = await storage_of(as_ledger(target)).threads.get_raw(thread_id)
    if doc is None or is_tombstone(doc):
        raise await missing_thread(target, thread_id)
    return await kind_of(target, doc)


async def missing_thread(target: Any, thread_id: str) -> UnknownThreadError:
    """Return the error for a thread that is not live: removed (a tombstone) or never there."""
    gone = await storage_of(as_ledger(target)).threads.get_raw(thread_id)
    if gone is not None and is_tombstone(gone):
        return UnknownThreadError(f"thread {thread_id!r} was removed")
    return UnknownThreadError(f"no thread {thread_id!r}")


@dataclass(frozen=True, slots=True)
class SessionVersion:
    """One stored version of a session: its number, size and snapshot (``None``: sealed, unopened)."""

    version: int
    size: int
    snapshot: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """Return the version as a JSON-ready dict."""
        return {"version": self.version, "size": self.size, "snapshot": self.snapshot}


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """The receipt that withdrew a checkpoint (``MongoCheckpointStorage.delete``)."""

    receipt_id: str
    #: When it was withdrawn (``None``: the receipt holds no date).
    at: datetime | None
    #: Who withdrew it (the storage's ``deleted_by``).
    by: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the withdrawal as a JSON-ready dict (``at`` stays a datetime)."""
        return {"receipt_id": self.receipt_id, "at": self.at, "by": self.by}


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """One checkpoint of a run, as an operator lists it (its plain fields; ``None``: sealed, unopened)."""

    checkpoint_id: str | None
    previous_checkpoint_id: str | None
    workflow_name: str | None
    timestamp: str | None
    #: Characters of the checkpoint's encoding (ASCII: its bytes), chunks included.
    size: int
    chunks: int
    #: Its withdrawal, if it was withdrawn (it is then never loaded or listed by the storage).
    withdrawn: Withdrawal | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the checkpoint as a JSON-ready dict."""
        return {
            "checkpoint_id": self.checkpoint_id,
            "previous_checkpoint_id": self.previous_checkpoint_id,
            "workflow_name": self.workflow_name,
            "timestamp": self.timestamp,
            "size": self.size,
            "chunks": self.chunks,
            "withdrawn": self.withdrawn is not None,
            "withdrawal": None if self.withdrawn is None else self.withdrawn.to_dict(),
        }


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise IntegrityError(f"{where} holds malformed JSON: {e}") from e
    if not isinstance(value, dict):
        raise IntegrityError(f"{where} holds {type(value).__name__}, not a JSON object")
    return value


def sessions_of(texts: Sequence[tuple[str, bool]]) -> list[SessionVersion]:
    """Return the versions of a session from its messages' texts, oldest first.

    Args:
        texts: ``(text, readable)`` of each message of the thread in order (one per
            version); an unreadable one (a sealed placeholder) has no snapshot.

    Raises:
        IntegrityError: a readable snapshot is not a JSON object.
    """
    return [
        SessionVersion(n, len(text), _json_object(text, f"version {n}") if readable else None)
        for n, (text, readable) in enumerate(texts, start=1)
    ]


def checkpoints_of(
    messages: Sequence[tuple[str, str, bool]], withdrawn: Mapping[int, Withdrawal] | None = None
) -> list[CheckpointView]:
    """Return the checkpoints of a run from its messages, in stored order.

    Args:
        messages: ``(role, text, readable)`` of each message along the run's line
            (chunks come right before the record that commits them).
        withdrawn: Withdrawals by the index in ``messages`` of the record they withdrew
            (:func:`withdrawn_checkpoints`); those checkpoints are marked.

    Raises:
        IntegrityError: a readable record is malformed, or names chunks that are not there.
    """
    out: list[CheckpointView] = []
    chunks: list[str] = []
    unreadable_chunks = False
    for index, (role, text, readable) in enumerate(messages):
        if role == CHUNK_ROLE:
            chunks.append(text)
            unreadable_chunks = unreadable_chunks or not readable
            continue
        if role != CHECKPOINT_ROLE:
            continue
        where = f"message {index}"
        gone = (withdrawn or {}).get(index)
        if not readable:
            out.append(CheckpointView(None, None, None, None, 0, 0, gone))
        else:
            chunked = chunked_record(text, where)
            payload, count = text, 0
            if chunked is not None:
                count = int(chunked["chunks"])
                if len(chunks) < count:
                    raise IntegrityError(f"{where} names {count} chunks; {len(chunks)} precede it")
                payload = "".join(chunks[-count:])
            if unreadable_chunks and chunked is not None:
                out.append(
                    CheckpointView(None, None, None, None, int(chunked.get("chars") or 0), count, gone)
                )
            else:
                fields = _json_object(payload, where)
                out.append(
                    CheckpointView(
                        checkpoint_id=_text(fields.get("checkpoint_id")),
                        previous_checkpoint_id=_text(fields.get("previous_checkpoint_id")),
                        workflow_name=_text(fields.get("workflow_name")),
                        timestamp=_text(fields.get("timestamp")),
                        size=len(payload),
                        chunks=count,
                        withdrawn=gone,
                    )
                )
        chunks, unreadable_chunks = [], False
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def withdrawn_checkpoints(target: Any, thread_id: str, offset: int) -> dict[int, Withdrawal]:
    """Return the checkpoints withdrawn along a run's line up to ``offset`` of ``thread_id``.

    Keyed by the index, along the line, of the message holding the withdrawn record (as
    :func:`checkpoints_of` counts them when handed the line's messages from the first).
    A receipt counts only when the record it names by thread, seq and hash is there on
    the line: one indexed read of the line's receipts, one ``_id`` read of their records.
    A record marked withdrawn counts too, receipt or not (a delete interrupted before it
    wrote the receipt has hidden the checkpoint from the storage already): one read of
    the line's marked records.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The run's thread (any scope).
        offset: The event offset read at (the cursor's).

    Raises:
        UnknownThreadError: the thread or one of its ancestors does not exist.
    """
    ledger = as_ledger(target)
    storage = storage_of(ledger)
    # Each thread of the line holds its own events (base_offset, where the line leaves it].
    segments: dict[str, tuple[int, int]] = {}
    top = offset
    for record in reversed(await ancestry(ledger, thread_id)):
        segments[record.id] = (record.base_offset, top)
        top = record.base_offset
    named: dict[tuple[str, int], dict[str, Any]] = {}
    async for receipt in storage.receipts.about(list(segments), [CHECKPOINT_DELETED]):
        tid, seq = receipt.get("thread_id"), receipt.get("seq")
        if type(tid) is str and type(seq) is int and tid in segments:
            lo, hi = segments[tid]
            if lo < seq <= hi:
                named.setdefault((tid, seq), receipt)
    found = await storage.events.positions(list(named))
    out: dict[int, Withdrawal] = {}
    for key, receipt in named.items():
        doc = found.get(key)
        first = None if doc is None else doc.get("first_message")
        # A record no longer there (hollowed by a removal) or another one than the receipt names.
        if (
            doc is None
            or doc.get("removed")
            or doc.get("hash") != receipt.get("hash")
            or type(first) is not int
        ):
            continue
        at = receipt.get("at")
        by = receipt.get("by")
        out[first] = Withdrawal(
            str(receipt.get("_id")), at if isinstance(at, datetime) else None, by if type(by) is str else None
        )
    async for doc in storage.events.withdrawn_in(list(segments)):
        tid, seq, first = doc.get("thread_id"), doc.get("seq"), doc.get("first_message")
        if type(tid) is not str or type(seq) is not int or type(first) is not int or tid not in segments:
            continue
        lo, hi = segments[tid]
        if lo < seq <= hi and first not in out:
            out[first] = Withdrawal(str(doc.get(WITHDRAWN)), None, None)
    return out
