"""Verdicts: was this batch already committed right after a position, or is its event id reused?

An append whose reply was lost may have committed: a retry with the same event id must
find it (a replay, not a duplicate), and the same id on a different batch must be
refused (never a silent success). Both places an earlier try can have written lie in
the caller's own lineage; nothing else counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatledger.codec import stored_digest
from chatledger.errors import EventIdReusedError, IntegrityError
from chatledger.ledger.pending import PendingAppend
from chatledger.ledger.positions import Position
from chatledger.ledger.resolving import Resolving
from chatledger.models import ThreadRecord

__all__ = ["Verdicts"]


class Verdicts(Resolving):
    """Recognises a batch already committed after a position (the idempotency of appends)."""

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
                return self._verdict(await self._opened(taken, at.thread), at.thread, digest), False
        for candidate in await self._storage.events.with_event_id(event_id, seq):
            branch = await self.ledger.thread(candidate["thread_id"], self.scope)
            if branch is not None and branch.parent == {"thread_id": at.thread_id, "offset": at.offset}:
                return self._verdict(await self._opened(candidate, branch), branch, digest), True
        return None

    async def _opened(self, doc: dict[str, Any], thread: ThreadRecord) -> dict[str, Any]:
        """Return ``doc`` with its sealed messages opened: digests compare the clear batch.

        Only under a key of this scope's own data subject, as a read opens it: the
        comparison must not tell a caller anything of content moved here from another scope.
        """
        sealer = self.ledger.sealer
        if sealer is None:
            return doc
        reader = sealer.reader(self.scope, thread.root_id, self.ledger.ledger_id)
        return {**doc, "messages": await sealer.open_messages(doc, reader)}

    def _verdict(self, doc: Mapping[str, Any], thread: ThreadRecord, digest: str) -> Position:
        """Return the position after ``doc`` if it holds the batch with ``digest``.

        Raises:
            EventIdReusedError: it holds another batch under the same event id.
            IntegrityError: its messages are malformed.
        """
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
