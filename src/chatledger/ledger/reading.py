"""Reading: a page of the messages visible at a position, segment by segment along its lineage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from chatledger._maf import Message
from chatledger.codec import decode_message
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError, KeyUnavailableError
from chatledger.hashing import BINARY_FIELD
from chatledger.ledger.lineage import Segment, earlier_fork, line_segments
from chatledger.ledger.positions import Position
from chatledger.ledger.resolving import Resolving

if TYPE_CHECKING:
    from chatledger.sealing.sealer import Reader

__all__ = ["STREAM_BATCH_BYTES", "STREAM_BATCH_MESSAGES", "Reading", "check_batch"]

#: Errors a malformed stored message can raise while decoding (JSON, pydantic, shape).
_DECODE_ERRORS: Final = (ValueError, TypeError, KeyError, AttributeError, IndexError)

#: A streamed replay's default batch: about this many bytes of stored messages...
STREAM_BATCH_BYTES: Final = 4 * 1024 * 1024
#: ...and at most this many messages (a decoded message weighs far more than its stored
#: bytes when it is short, so a byte budget alone would let a batch of tiny messages grow).
STREAM_BATCH_MESSAGES: Final = 1_000


def check_batch(batch_bytes: object, batch_messages: object) -> tuple[int, int]:
    """Return a streamed replay's batch bounds, checked.

    Raises:
        InvalidInputError: either bound is not a positive int.
    """
    for name, value in (("batch_bytes", batch_bytes), ("batch_messages", batch_messages)):
        if type(value) is not int or value < 1:
            raise InvalidInputError(f"{name} must be a positive int")
    return batch_bytes, batch_messages  # type: ignore[return-value]


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
        return await self._range(at, start, stop)

    def pages(
        self,
        at: Position,
        *,
        offset: int = 0,
        batch_bytes: int = STREAM_BATCH_BYTES,
        batch_messages: int = STREAM_BATCH_MESSAGES,
    ) -> AsyncIterator[list[Message]]:
        """Return an iterator over the messages visible at ``at``, from ``offset`` on, page by page.

        The pages, joined, are ``read(at, offset=offset)``: the same messages in the same
        order, along the same lineage. Each page is one :meth:`read` of the next messages,
        so memory is bounded by the page, not by the thread: about ``batch_bytes`` of
        stored messages (the first page holds one message; later pages are sized from the
        bytes per message read so far) and at most ``batch_messages`` messages. An event
        is read whole, so a page never costs less than the events it touches.

        No server cursor stays open between pages: a slow consumer loses nothing, and a
        stream cut short (a failure, a cancelled task) resumes with ``offset`` set to the
        number of messages already handled.

        Args:
            at: The position to replay (the messages up to it; later appends are not seen).
            offset: Index of the first message; negative counts from the end.
            batch_bytes: About how many bytes of stored messages a page holds.
            batch_messages: The most messages a page holds.

        Raises:
            InvalidInputError: ``offset`` is not an int, or a batch bound is not a positive int
                (raised here, before iterating).
            IntegrityError: a stored event is missing or malformed (raised by the page
                that needs it).
        """
        at = self._check(at)
        if type(offset) is not int:
            raise InvalidInputError("offset must be an int")
        budget, most = check_batch(batch_bytes, batch_messages)
        start, stop, _ = slice(offset, None).indices(at.messages)
        return self._pages(at, start, stop, budget, most)

    async def _pages(
        self, at: Position, start: int, stop: int, budget: int, most: int
    ) -> AsyncIterator[list[Message]]:
        window, seen_bytes, seen_messages = 1, 0, 0
        while start < stop:
            end = min(stop, start + window)
            sizes: list[int] = []
            page = await self._range(at, start, end, sizes)
            seen_bytes, seen_messages = seen_bytes + sum(sizes), seen_messages + len(page)
            start = end
            yield page
            del page  # not held while the next page is read
            window = max(1, min(most, budget * seen_messages // max(1, seen_bytes)))

    async def _range(
        self, at: Position, start: int, stop: int, sizes: list[int] | None = None
    ) -> list[Message]:
        """Return the messages ``start`` to ``stop`` (exclusive) visible at ``at``; ``0 <= start < stop``.

        With ``sizes``, the stored bytes of the messages read are appended to it.
        """
        out: list[Message] = []
        segments = await self._segments_from(at, start)
        sealer = self.ledger.sealer
        # Whose content this scope may open: every segment shares the tree's root (and key).
        reader = (
            None
            if sealer is None
            else sealer.reader(
                self.scope, at.thread.root_id if at.thread else at.thread_id, self.ledger.ledger_id
            )
        )
        for seg in segments:
            lo, hi = max(start, seg.lo_message), min(stop, seg.hi_message)
            if lo < hi:
                out += await self._page(seg.thread_id, lo, hi, sizes, reader)
        if len(out) != stop - start:
            for seg in segments:
                # Hollowed events hold no message index: a removed thread reads as short.
                await self._refuse_if_removing(seg.thread_id)
            raise IntegrityError(
                f"thread {at.thread_id!r} is missing events: expected {stop - start} messages "
                f"in [{start}, {stop}), found {len(out)}"
            )
        return out

    async def _page(
        self,
        thread_id: str,
        lo: int,
        hi: int,
        sizes: list[int] | None = None,
        reader: Reader | None = None,
    ) -> list[Message]:
        """Return the messages ``lo`` to ``hi`` (exclusive) of ``thread_id``'s own events, decoded.

        With ``sizes``, the stored bytes of those messages are appended to it; ``reader``:
        whose content sealed events must be (:meth:`Sealer.reader`).
        """
        sealer = self.ledger.sealer
        docs = await self._storage.events.page(thread_id, lo, hi)
        if sizes is not None:
            sizes.append(sum(_stored_bytes(doc, lo, hi) for doc in docs))
        # Sealed events are opened in one run, before any is decoded: the cipher's
        # code stays hot from one event to the next.
        opened = (
            [doc["messages"] for doc in docs]
            if sealer is None
            else [await sealer.open_messages(doc, reader) for doc in docs]
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


def _stored_bytes(doc: Mapping[str, Any], lo: int, hi: int) -> int:
    """Return about how many bytes an event's messages ``lo`` to ``hi`` take stored."""
    # Every stored value is a str, or the bytes of a sealed message's ciphertext: their
    # lengths are the document's bulk, measured without encoding it again. Only the
    # messages in the range count: a long event a page cuts must not shrink the next page.
    messages, first = doc.get("messages"), doc.get("first_message")
    if type(messages) is not list or type(first) is not int:
        return 0
    head = max(0, lo - first)
    read = messages[head : max(0, hi - first)]
    size = sum(
        len(v) for m in read if isinstance(m, Mapping) for v in m.values() if isinstance(v, (str, bytes))
    )
    # A sealed event's one ciphertext (in its first message) holds all its messages: each
    # message read counts its share, or the page that starts the event counts it whole and
    # every page after it shrinks to one message (re-reading the event each time).
    blob = messages[0].get(BINARY_FIELD) if messages and isinstance(messages[0], Mapping) else None
    if type(blob) is bytes and read:
        size += len(blob) * len(read) // len(messages) - (len(blob) if head == 0 else 0)
    return size


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
