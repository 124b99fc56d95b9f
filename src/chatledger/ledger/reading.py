"""Reading: a page of the messages visible at a position, segment by segment along its lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from chatledger._maf import Message
from chatledger.codec import decode_message
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError, KeyUnavailableError
from chatledger.ledger.lineage import Segment, earlier_fork, line_segments
from chatledger.ledger.positions import Position
from chatledger.ledger.resolving import Resolving

__all__ = ["Reading"]

#: Errors a malformed stored message can raise while decoding (JSON, pydantic, shape).
_DECODE_ERRORS: Final = (ValueError, TypeError, KeyError, AttributeError, IndexError)


class Reading(Resolving):
    """Reads pages of the conversation visible at a position of one scope."""

    async def read(self, at: Position, *, offset: int = 0, limit: int | None = None) -> list[Message]:
        """Return the messages visible at ``at``, sliced like ``all_messages[offset:][:limit]``.

        The cost is proportional to the page plus the lineage depth: at most two
        index range queries per segment, whatever the batch sizes.

        Raises:
            InvalidInputError: ``offset`` or ``limit`` is not an int, or ``limit`` < 0.
            IntegrityError: a stored event is missing or malformed (it is named).
        """
        at = self._check(at)
        if type(offset) is not int:
            raise InvalidInputError("offset must be an int")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError("limit must be a non-negative int or None")
        start, stop, _ = slice(offset, None).indices(at.messages)
        if limit is not None:
            stop = min(stop, start + limit)
        if start >= stop:
            return []
        out: list[Message] = []
        segments = await self._segments_from(at, start)
        for seg in segments:
            lo, hi = max(start, seg.lo_message), min(stop, seg.hi_message)
            if lo < hi:
                out += await self._page(seg.thread_id, lo, hi)
        if len(out) != stop - start:
            for seg in segments:
                # Hollowed events hold no message index: a removed thread reads as short.
                await self._refuse_if_removing(seg.thread_id)
            raise IntegrityError(
                f"thread {at.thread_id!r} is missing events: expected {stop - start} messages "
                f"in [{start}, {stop}), found {len(out)}"
            )
        return out

    async def _page(self, thread_id: str, lo: int, hi: int) -> list[Message]:
        """Return the messages ``lo`` to ``hi`` (exclusive) of ``thread_id``'s own events, decoded."""
        sealer = self.ledger.sealer
        docs = await self._storage.events.page(thread_id, lo, hi)
        # Sealed events are opened in one run, before any is decoded: the cipher's
        # code stays hot from one event to the next.
        opened = (
            [doc["messages"] for doc in docs]
            if sealer is None
            else [await sealer.open_messages(doc) for doc in docs]
        )
        out: list[Message] = []
        for doc, messages in zip(docs, opened, strict=True):
            first = doc["first_message"]
            # Only the indexes inside [lo, hi): the first event may start before the page,
            # the last run past it; the others are not looked at.
            for index in range(max(lo - first, 0), min(hi - first, len(messages))):
                out.append(_decode(doc, index, messages[index]))
        return out

    async def _segments_from(self, at: Position, start: int) -> list[Segment]:
        """Return the segments of ``at``'s line that hold messages from ``start`` on, root first.

        A page within the lineage window reads no thread document; one that starts
        further back reads one (cached) per window crossed, only as far as it needs.

        Raises:
            ThreadRemovedError: an ancestor the page needs was removed.
            IntegrityError: an ancestor the page needs is missing or contradicts its branch.
        """
        segments, earlier, depth = at.segments(), at.earlier, at.thread.depth if at.thread else 0
        while earlier is not None and earlier.messages > start:
            ancestor = await self.ledger.thread(earlier.thread_id, self.scope)
            if ancestor is None:
                if await self._storage.threads.get_raw(earlier.thread_id) is not None:
                    # Its tombstone (or a removal's mark) is there: removed, not damaged.
                    await self._refuse_if_removing(earlier.thread_id)
                raise IntegrityError(
                    f"thread {at.thread_id!r} descends from missing thread {earlier.thread_id!r}"
                )
            if ancestor.depth >= depth:
                raise IntegrityError(f"the lineage of thread {at.thread_id!r} loops back on itself")
            segments = line_segments(ancestor, ancestor.id, earlier.offset, earlier.messages) + segments
            earlier, depth = earlier_fork(ancestor), ancestor.depth
        return segments


def _decode(doc: Mapping[str, Any], index: int, item: Mapping[str, Any]) -> Message:
    if "sealed" in item:
        # A sealed message decodes to its placeholder text: never hand that out as content.
        raise KeyUnavailableError(
            f"event {doc.get('_id')!r}: message {index} is sealed, and this ledger has no sealer "
            "configured to open it (Ledger(..., sealer=...))"
        )
    try:
        return decode_message(item)
    except ChatLedgerError:
        raise
    except _DECODE_ERRORS as e:
        raise IntegrityError(
            f"event {doc.get('_id')!r}: message {index} cannot be decoded ({type(e).__name__}: {e})"
        ) from e
