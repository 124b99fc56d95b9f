"""What a history provider remembers of the lines it read: tails for de-duplication, newest summaries.

A position names an immutable line (its events and thread documents never change), so
nothing remembered by position ever goes stale; both maps are bounded, as one provider
serves many sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, TypeVar

from agent_framework import Message

from chatledger.adapters.dedup import message_fingerprint, stored_tail_length, unseen
from chatledger.ledger import Binding, Position
from chatledger.ledger.compaction import Compaction, newest_compaction

__all__ = ["LineCache"]

#: Fingerprints kept per position read (a save de-duplicates against at most its batch size).
_TAIL_KEPT: Final = 256
#: Positions remembered; a provider serves many sessions.
_POSITIONS_KEPT: Final = 1024

_V = TypeVar("_V")


def _put(memory: OrderedDict[tuple[str, int], _V], position: Position, value: _V) -> None:
    key = (position.thread_id, position.offset)
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > _POSITIONS_KEPT:
        memory.popitem(last=False)


class LineCache:
    """Fingerprints of the newest messages read, and the newest summary, by position."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        # A run loads the history and then saves at that same position, so de-duplicating
        # the save needs no second read.
        self._tails: OrderedDict[tuple[str, int], list[str]] = OrderedDict()
        # The provider's own appends carry the summary forward, so a turn costs no extra
        # query for it.
        self._compactions: OrderedDict[tuple[str, int], Compaction | None] = OrderedDict()

    def remember_tail(self, position: Position, newest: Sequence[Message]) -> None:
        """Keep the fingerprints of the newest messages read at ``position`` (bounded)."""
        _put(self._tails, position, [message_fingerprint(m) for m in newest[-_TAIL_KEPT:]])

    async def newest_compaction(self, position: Position) -> Compaction | None:
        """The newest summary visible at ``position``: remembered, else one indexed query."""
        key = (position.thread_id, position.offset)
        if key in self._compactions:
            self._compactions.move_to_end(key)
            return self._compactions[key]
        found = await newest_compaction(self.binding, position)
        if found is None or not found.summary or self.binding.ledger.sealer is None:
            _put(self._compactions, position, found)
        # A sealing ledger's summary is opened again on every read (one indexed query; the
        # sealer's kept events spare the decryption): kept here, its text would outlive its
        # key's erasure by more than the sealer's cache_ttl.
        return found

    def carry_compaction(self, before: Position, after: Position) -> None:
        """Remember for ``after`` the summary known at ``before``, if ``after`` is one batch later.

        The event went right after ``before`` (on its thread, or on a branch forked there),
        and it is a batch of messages, not a summary: the same newest summary.
        """
        key = (before.thread_id, before.offset)
        if key in self._compactions and after.offset == before.offset + 1:
            _put(self._compactions, after, self._compactions[key])

    async def unseen(self, position: Position, messages: Sequence[Message]) -> list[Message]:
        """Return the messages of a batch not stored at ``position``, reading only the tail needed."""
        need = stored_tail_length(position.messages, len(messages))
        cached = self._tails.get((position.thread_id, position.offset))
        if need and cached is not None and len(cached) >= need:
            tail = cached[len(cached) - need :]
        else:
            read = await self.binding.read(position, offset=-need) if need else []
            tail = [message_fingerprint(m) for m in read]
        return unseen(messages, tail, stored_count=position.messages)
