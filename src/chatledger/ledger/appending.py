"""Appending: one event per batch after a position; a taken position is a retry or a branch.

Concurrency control is nothing but the unique index on ``(thread_id, seq)``: an append
inserts the event at ``cursor.offset + 1``; if another event already holds that
position, the append either was already committed (same ``event_id`` and the same
batch, in this lineage: a retry, see :mod:`~chatledger.ledger.verdicts`) or the thread
moved on, and the event is written to a new branch forked at the cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chatledger._maf import Message
from chatledger.codec import check_stored, encode_messages, stored_digest
from chatledger.errors import (
    ConcurrencyError,
    InvalidCursorError,
    InvalidInputError,
    StorageUnavailableError,
    ThreadRemovedError,
)
from chatledger.ledger import documents
from chatledger.ledger.documents import event_document, new_branch, new_root
from chatledger.ledger.pending import PendingAppend, new_event_id
from chatledger.ledger.positions import AppendResult, Position
from chatledger.ledger.resolving import no_thread
from chatledger.ledger.verdicts import Verdicts
from chatledger.models import ThreadRecord
from chatledger.storage import PositionTakenError
from chatledger.storage.metadata import validate_metadata

if TYPE_CHECKING:
    from chatledger.sealing import DataKey

__all__ = ["Appending"]


def _batch(messages: Sequence[Message] | None, stored: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Return the encoded batch, from exactly one of ``messages`` and ``stored``."""
    if (messages is None) == (stored is None):
        raise InvalidInputError("pass either messages or stored, not both")
    return encode_messages(messages or ()) if stored is None else check_stored(stored)


def _event_id(event_id: str | None) -> str:
    """Return ``event_id`` if it is a usable idempotency key, or a fresh one if it is ``None``."""
    if event_id is None:
        return new_event_id()
    if type(event_id) is not str or not event_id or len(event_id) > 64:
        raise InvalidInputError("event_id must be a non-empty str of at most 64 characters")
    return event_id


class Appending(Verdicts):
    """Appends batches after positions of one scope: insert, or recognise a retry, or branch."""

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
        stored, event_id = _batch(messages, stored), _event_id(event_id)
        metadata = validate_metadata(metadata)
        if at.thread is not None and at.offset < at.thread.base_offset:
            raise InvalidCursorError(
                f"cursor {at.cursor.to_state()} lies before its thread's fork point; resolve it first"
            )
        if not stored:
            return AppendResult(at, event_id, branched=False)
        if digest is None:
            digest = stored_digest(stored)
        thread = at.thread if at.thread is not None else new_root(self.scope, at.thread_id, metadata)
        seal_key = None if self.ledger.sealer is None else await self._seal_key(at, thread)
        # Built (and its size checked) before anything is written.
        doc = event_document(at, thread, self.scope, stored, event_id, seal_key)
        await self.ledger.ensure_indexes()
        if at.thread is None:
            started = await self._start_thread(at.thread_id, thread)
            if started is not thread:
                # Another writer created it first: ours was not stored, theirs is vouched for.
                thread, doc = started, event_document(at, started, self.scope, stored, event_id, seal_key)
            at = replace(at, thread=thread)
        try:
            await self._insert(doc)
        except PositionTakenError:
            pass
        else:
            if seal_key is not None:
                self._keep_sealed(doc, stored, seal_key)  # read back here, it decrypts nothing
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
        return await self._branch(at, stored, event_id, seal_key)

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

    async def _seal_key(self, at: Position, thread: ThreadRecord) -> DataKey:
        """Return the data key this append seals under (the ledger has a sealer).

        Every event of a tree shares its root id, so one key serves this append and any
        retry on a branch. A cached key costs no call into the key store; a new
        conversation re-checks it there (``key_for``), so an erased subject starts none.
        """
        sealer, ledger_id = self.ledger.sealer, self.ledger.ledger_id
        assert sealer is not None
        key = sealer.cached_key(self.scope, thread.root_id, ledger_id) if at.thread is not None else None
        if key is None:
            fresh = at.thread is None
            key = await sealer.key_for(self.scope, thread.root_id, fresh=fresh, ledger_id=ledger_id)
        return key

    def _keep_sealed(self, doc: dict[str, Any], stored: list[dict[str, Any]], seal_key: DataKey) -> None:
        if self.ledger.sealer is not None:
            self.ledger.sealer.keep_sealed(doc, stored, seal_key)

    async def _start_thread(self, thread_id: str, ours: ThreadRecord) -> ThreadRecord:
        """Store the new root ``ours`` unless the thread exists; return the stored one.

        Raises:
            UnknownThreadError: the thread exists in another scope, or is a branch (a
                branch's id is not a place to start a new line).
        """
        thread = await self._storage.threads.insert_once(ours)
        if not self.scope.admits(thread):
            raise no_thread(thread_id)
        self.ledger._remember(self.ledger._thread_cache, thread.id, thread)
        if thread.base_offset or thread.parent is not None:
            raise no_thread(thread_id)
        return thread

    async def _branch(
        self, at: Position, stored: list[dict[str, Any]], event_id: str, seal_key: DataKey | None
    ) -> AppendResult:
        """Write the batch as the first event of a new branch forked at ``at``."""
        if at.offset == 0 and at.messages == 0:
            # Created concurrently by another writer: resolve again for its record.
            at = await self._resolve(at.cursor)
        await self._refuse_if_removing(at.thread_id)
        branch = await self._storage.threads.insert_once(new_branch(self.scope, at))
        self.ledger._remember(self.ledger._thread_cache, branch.id, branch)
        doc = event_document(at, branch, self.scope, stored, event_id, seal_key)
        await self._insert(doc)
        await self._withdraw_if_removing(at.thread_id, branch, doc["seq"])
        if seal_key is not None:
            self._keep_sealed(doc, stored, seal_key)
        return AppendResult(self._after(doc, branch), event_id, branched=True)

    async def _withdraw_if_removing(self, parent_id: str, branch: ThreadRecord, seq: int) -> None:
        """Remove the new ``branch`` again if a removal claimed its parent meanwhile, and raise.

        Checked again after writing: a removal that claimed the parent meanwhile might
        not have seen this branch, so the branch removes itself.
        """
        try:
            await self._refuse_if_removing(parent_id)
        except ThreadRemovedError:
            await self._storage.events.hollow_event(branch.id, seq)
            # Through the module: the ledger's one clock is documents.utc_now_ms (tests set it there).
            await self._storage.threads.tombstone(branch.id, branch.root_id, "writer", documents.utc_now_ms())
            self.ledger.forget([branch.id])
            raise

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
