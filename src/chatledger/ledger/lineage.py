"""Lineage: the line of conversation a thread continues, as segments of the threads along it.

A branch's thread document lists the fork points above it (within
:data:`~chatledger.models.LINEAGE_WINDOW` levels; a deeper lineage is *windowed* and its
first ancestor's own document goes on). The functions here turn that list into the
segments a read pages through, and walk a windowed lineage up to its root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatledger.errors import IntegrityError, UnknownThreadError
from chatledger.models import ForkPoint, ThreadRecord

if TYPE_CHECKING:
    from chatledger.ledger.core import Ledger

__all__ = ["Segment", "ancestry", "earlier_fork", "line_segments"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One thread's share of a line of conversation: events ``(lo_seq, hi_seq]``."""

    thread_id: str
    lo_seq: int
    hi_seq: int
    lo_message: int
    hi_message: int


def earlier_fork(record: ThreadRecord | None) -> ForkPoint | None:
    """Return where the part of the line above ``record``'s window ends, or ``None`` if it has none."""
    return record.lineage[0] if record is not None and record.windowed else None


def line_segments(record: ThreadRecord | None, thread_id: str, offset: int, messages: int) -> list[Segment]:
    """Return the non-empty segments of the line up to ``offset`` of ``thread_id``, as ``record`` lists it."""
    lineage = record.lineage if record is not None else ()
    out: list[Segment] = []
    lo_seq = lo_msg = 0
    if lineage and record is not None and record.windowed:
        # The window's first ancestor begins at a fork point only its own document holds.
        lo_seq, lo_msg = lineage[0].offset, lineage[0].messages
        lineage = lineage[1:]
    for fork in lineage:
        out.append(Segment(fork.thread_id, lo_seq, fork.offset, lo_msg, fork.messages))
        lo_seq, lo_msg = fork.offset, fork.messages
    out.append(Segment(thread_id, lo_seq, offset, lo_msg, messages))
    return [s for s in out if s.hi_seq > s.lo_seq]


async def ancestry(ledger: Ledger, thread_id: str) -> list[ThreadRecord]:
    """Return the thread records from the root down to ``thread_id`` (admin: any scope).

    Raises:
        UnknownThreadError: the thread (or one of its ancestors) does not exist.
        IntegrityError: the lineage loops back on itself.
    """
    record = await ledger.thread(thread_id, None)
    if record is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    out = [record]
    current = record
    while current.lineage:
        ancestors: list[ThreadRecord] = []
        for fork in current.lineage:
            ancestor = await ledger.thread(fork.thread_id, None)
            if ancestor is None:
                raise UnknownThreadError(
                    f"thread {thread_id!r} descends from missing thread {fork.thread_id!r}"
                )
            ancestors.append(ancestor)
        out[:0] = ancestors
        if not current.windowed:
            break
        # A windowed lineage starts below the root: the first ancestor's own lineage goes on.
        if ancestors[0].depth >= current.depth:
            raise IntegrityError(f"the lineage of thread {thread_id!r} loops back on itself")
        current = ancestors[0]
    return out
