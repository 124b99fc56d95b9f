"""The removal protocol's marks in the ``events`` collection: claims, closing marks, hollowed events.

A removal (docs/decisions/0004-removal-protocol.md) never needs a transaction: each of
its marks is a document at a position of the thread that the unique ``(thread_id, seq)``
index makes atomic on every engine.

- A **claim** sits at position -1 of a thread: the removal's lock.
- A **closing mark** sits at the position after the thread's newest event, so no writer
  can ever append there. It is stored with ``sealed: true``, the field's name since 0.1,
  which documents already written carry; it has nothing to do with the encryption
  ("sealing", :mod:`chatledger.sealing`), and the stored name stays.
- A **hollowed** event keeps only its position and lineage.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from chatledger.storage.driver import cursor_list
from chatledger.storage.events import BATCH_SIZE, HOLLOW_DROP, SEQ_INDEX, EventStore, event_key

__all__ = ["CLOSED_FIELD", "LastPosition", "RemovalMarks"]


#: The stored field of a closing mark (named before "sealed" came to mean encryption; kept
#: because stored documents carry it).
CLOSED_FIELD: Final = "sealed"


@dataclass(frozen=True, slots=True)
class LastPosition:
    """The newest position of a thread as stored, removed or not (what a removal closes after)."""

    #: Its ``seq`` (``None``: malformed, not an int).
    seq: int | None
    hash: Any
    #: The event was hollowed (or is a mark).
    removed: bool
    #: It is a closing mark: the thread is closed.
    closed: bool


#: What a removal reads of a position.
_POSITION: Final[dict[str, int]] = {"thread_id": 1, "seq": 1, "hash": 1, "removed": 1, CLOSED_FIELD: 1}


def _position(doc: dict[str, Any]) -> LastPosition:
    seq = doc.get("seq")
    return LastPosition(
        seq if type(seq) is int else None,
        doc.get("hash"),
        bool(doc.get("removed")),
        bool(doc.get(CLOSED_FIELD)),
    )


class RemovalMarks:
    """The removal protocol's operations on the events collection (sharing the events store's gate)."""

    def __init__(self, events: EventStore) -> None:
        self.events = events
        self.gate = events.gate
        self.collection = events.collection

    async def last(self, thread_id: str) -> LastPosition | None:
        """Return the newest position of a thread as stored, removed or not, or ``None`` if it has none."""

        def query() -> Awaitable[list[dict[str, Any]]]:
            return cursor_list(
                self.collection.find(
                    {"thread_id": thread_id, "seq": {"$gt": 0}},
                    _POSITION,
                )
                .sort("seq", DESCENDING)
                .hint(SEQ_INDEX)
                .limit(1)
            )

        docs = await self.events.hinted("read head", SEQ_INDEX, query)
        return _position(docs[0]) if docs else None

    async def last_after(self, thread_id: str, seq: int, known: LastPosition | None) -> LastPosition | None:
        """Return the newest position of a thread known to end at ``seq`` when last read, by key.

        ``known`` is the position at ``seq`` (``None``: the thread had no events, ``seq`` is
        its fork point). Only the positions after ``seq`` are read, one exact ``_id``
        lookup each, up to the first free one: writers only ever append at the position
        after the newest, so nothing lies past it unless a document was planted there, and
        a stored document that does not match its key sends this to :meth:`last`, which
        never guesses. (A server that scans for anything but an exact ``_id``, FerretDB
        v1, reads one document here instead of the whole collection; ``$in`` is a scan there.)
        """
        last = known
        while True:
            seq += 1
            doc = await self.gate.call(
                "read head", self.collection.find_one({"_id": event_key(thread_id, seq)}, _POSITION)
            )
            if doc is None:
                return last
            if doc.get("thread_id") != thread_id or doc.get("seq") != seq:
                return await self.last(thread_id)
            last = _position(doc)
            if last.closed:
                return last  # nothing can be appended after a closing mark

    async def claim(self, thread_id: str, receipt_id: str, root_id: str) -> bool:
        """Claim a thread for one removal; return ``False`` if another removal holds it.

        The claim is a document at position -1 of the thread: the unique
        ``(thread_id, seq)`` index makes taking it atomic on every engine, which a
        conditional update is not (FerretDB applies those as a read, then a write).
        """
        doc = {
            "_id": f"{thread_id}#claim",
            "thread_id": thread_id,
            "seq": -1,
            "root_id": root_id,
            "removed": True,
            "claim": receipt_id,
            "claimed_at": datetime.now(UTC),
        }
        try:
            await self.gate.call("claim thread for removal", self.collection.insert_one(doc))
        except DuplicateKeyError:
            return False
        return True

    async def claim_of(self, thread_id: str) -> str | None:
        """Return the receipt id of the removal that claims a thread, or ``None``."""
        doc = await self.gate.call("read claim", self.collection.find_one({"_id": f"{thread_id}#claim"}))
        claim = doc.get("claim") if doc is not None else None
        return claim if isinstance(claim, str) else None

    async def release_claim(self, thread_id: str, receipt_id: str) -> None:
        """Give up a removal's claim on a thread (only if the claim is that removal's).

        Two exact ``_id`` operations: read the claim, delete it only if it carries
        ``receipt_id``. A delete conditioned on ``claim`` is a scan of the whole events
        collection on FerretDB v1 (it serves a delete from its index only for a filter
        that is exactly ``{_id: x}``), once per thread removed.

        Why the owner check stays safe split in two: a claim document is only ever
        inserted (:meth:`claim`) and deleted (here), never changed in place, and only
        code acting for its receipt deletes it. So the document this reads with our
        receipt id is still ours when the delete lands, unless another actor for the
        *same* receipt released it in between and a different removal claimed the
        thread in that gap. The protocol has one actor per receipt at a time (another
        run takes a removal over only after :data:`~chatledger.admin.removal.RESUME_AFTER`
        or its owner's ``removal.interrupted``), except after the ``removal.completed``
        receipt, when a resuming run may release the same claims: by then every thread
        of the receipt is a tombstone, and a removal that claims a tombstone reads the
        thread again after claiming, finds it gone and lets go, so losing that claim
        early loses nothing. (On FerretDB the conditional delete was no more atomic than
        this: it applies a filter beside ``_id`` as a read, then a delete by ``_id``.)
        """
        key = f"{thread_id}#claim"
        doc = await self.gate.call("read claim", self.collection.find_one({"_id": key}, {"claim": 1}))
        if doc is None or doc.get("claim") != receipt_id:
            return  # released already, or another removal's: never ours to delete
        await self.gate.call("release claim", self.collection.delete_one({"_id": key}))

    async def claims(self) -> dict[str, list[tuple[str, str, datetime | None]]]:
        """Return every removal's claims: ``{receipt_id: [(thread_id, root_id, claimed_at)]}``."""
        out: dict[str, list[tuple[str, str, datetime | None]]] = {}
        cursor = self.collection.find({"seq": -1, "claim": {"$exists": True}}).batch_size(BATCH_SIZE)
        async with self.gate.translated("read claims"):
            async for doc in cursor:
                at = doc.get("claimed_at")
                when = (at if at.tzinfo else at.replace(tzinfo=UTC)) if isinstance(at, datetime) else None
                entry = (str(doc.get("thread_id")), str(doc.get("root_id")), when)
                out.setdefault(str(doc.get("claim")), []).append(entry)
        return out

    async def close(self, thread_id: str, seq: int, root_id: str) -> bool:
        """Put a closing mark at position ``seq`` of a removed thread so no writer can ever append there.

        Returns:
            ``False`` when the position is taken (an append landed first: close after it).
        """
        doc = {
            "_id": event_key(thread_id, seq),
            "thread_id": thread_id,
            "seq": seq,
            "root_id": root_id,
            "removed": True,
            CLOSED_FIELD: True,
        }
        try:
            await self.gate.call("close thread", self.collection.insert_one(doc))
        except DuplicateKeyError:
            return False
        return True

    async def hollow_thread(self, thread_id: str) -> int:
        """Strip every live event of a thread down to its position; return how many were hollowed.

        The positions stay occupied, so a process holding an old cursor can never append
        into a removed thread again (the unique ``(thread_id, seq)`` index refuses it).
        """
        result = await self.gate.call(
            "remove events",
            self.collection.update_many(
                {"thread_id": thread_id, "removed": {"$exists": False}},
                {"$set": {"removed": True}, "$unset": dict.fromkeys(HOLLOW_DROP, "")},
            ),
        )
        return int(result.modified_count)

    async def hollow_positions(self, thread_id: str, first: int, last: int) -> int:
        """Hollow the live events of a thread at positions ``first`` to ``last``, by key; return how many.

        What :meth:`hollow_thread` does, one exact ``_id`` update per position: the caller
        compares the count with the events it knows of and falls back to
        :meth:`hollow_thread` on any difference (an event stored off its key).
        """

        async def hollow(seq: int) -> int:
            result = await self.gate.call(
                "remove events",
                self.collection.update_one(
                    {"_id": event_key(thread_id, seq), "thread_id": thread_id, "removed": {"$exists": False}},
                    {"$set": {"removed": True}, "$unset": dict.fromkeys(HOLLOW_DROP, "")},
                ),
            )
            return int(result.modified_count)

        # One at a time: a server that writes under one lock (FerretDB's SQLite) is slower
        # with several in flight.
        hollowed = 0
        for seq in range(first, last + 1):
            hollowed += await hollow(seq)
        return hollowed
