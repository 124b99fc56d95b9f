"""Resolving: cursors into positions of one scope, and positions back into (signed) cursors.

The part of a :class:`~chatledger.ledger.Binding` every other part builds on: a
position this binding resolves lies inside its scope, and a cursor from outside is
accepted only with a valid signature when the ledger signs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatledger.errors import IntegrityError, InvalidCursorError, ThreadRemovedError, UnknownThreadError
from chatledger.hashing import GENESIS_HASH
from chatledger.ledger.positions import Position, trusted_cursor
from chatledger.models import Cursor, Scope, ThreadRecord, validate_thread_id

if TYPE_CHECKING:
    from chatledger.ledger.core import Ledger

__all__ = ["Resolving", "no_thread"]


def no_thread(thread_id: str) -> UnknownThreadError:
    """Return the error for a thread this scope cannot see.

    One message for "does not exist" and "exists in another scope": no existence oracle.
    """
    return UnknownThreadError(f"no thread {thread_id!r}")


class Resolving:
    """Positions of one scope: resolving cursors, checking positions, handing cursors out."""

    def __init__(self, ledger: Ledger, scope: Scope) -> None:
        self.ledger = ledger
        self.scope = scope
        self._storage = ledger._storage

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
            raise no_thread(cursor.thread_id)
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

    def _after(self, doc: Mapping[str, Any], thread: ThreadRecord) -> Position:
        """Return the position right after the stored event ``doc`` of ``thread`` (and remember its head)."""
        cursor = trusted_cursor(doc["thread_id"], doc["seq"])
        messages = int(doc["first_message"]) + int(doc["count"])
        self.ledger._remember(
            self.ledger._head_cache, (cursor.thread_id, cursor.offset), (messages, str(doc["hash"]))
        )
        return Position(cursor, thread, messages, str(doc["hash"]), self.scope)

    def _check(self, at: Position) -> Position:
        # Identity first: a position this binding made carries its very scope object.
        if type(at) is Position and at.scope is self.scope:
            return at
        if not isinstance(at, Position) or at.scope != self.scope:
            raise InvalidCursorError(
                "the position was not resolved by this binding; resolve its cursor first"
            )
        return at

    async def _refuse_if_removing(self, thread_id: str) -> None:
        """Raise if a removal has claimed (or finished) the thread a branch would fork from."""
        raw = await self._storage.threads.get_raw(thread_id)
        if raw is None or "removed" in raw or raw.get("removing"):
            self.ledger.forget([thread_id])
            raise ThreadRemovedError(
                f"thread {thread_id!r} was removed (retention or erasure): nothing can be added to it"
            )
