"""Positions: a validated cursor inside one scope, and what an append returns.

Also the cursor an append hands out, assembled without pydantic's validator when the
values are ones validation would accept unchanged (the append path's hottest step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from chatledger.errors import InvalidThreadIdError
from chatledger.ledger.lineage import Segment, earlier_fork, line_segments
from chatledger.models import Cursor, ForkPoint, Scope, ThreadRecord, validate_thread_id

__all__ = ["AppendResult", "Position", "trusted_cursor"]


@dataclass(frozen=True, slots=True)
class Position:
    """A validated cursor inside one scope, with what appending and paging at it need."""

    cursor: Cursor
    #: The thread the cursor names; ``None`` while a new thread has no event yet.
    thread: ThreadRecord | None
    #: Number of messages visible at the cursor.
    messages: int
    #: ``hash`` of the event at the cursor (the genesis hash at offset 0).
    head_hash: str
    #: The scope the position was resolved in.
    scope: Scope = field(default_factory=Scope)

    @property
    def thread_id(self) -> str:
        """The id of the thread the cursor names."""
        return self.cursor.thread_id

    @property
    def offset(self) -> int:
        """The ``seq`` of the last event visible at the cursor."""
        return self.cursor.offset

    def segments(self) -> list[Segment]:
        """Return the line as non-empty segments, root first, ending at this cursor.

        They reach as far back as the thread document's lineage: on a windowed lineage
        (deeper than :data:`~chatledger.models.LINEAGE_WINDOW`) the line before
        :attr:`earlier` is not among them (:meth:`Binding.read` follows it on demand).
        """
        return line_segments(self.thread, self.thread_id, self.offset, self.messages)

    @property
    def earlier(self) -> ForkPoint | None:
        """Where the part of the line that :meth:`segments` does not cover ends, or ``None``.

        That is the first ancestor the windowed lineage lists, at the offset where the
        line left it; its own thread document describes the line above it.
        """
        return earlier_fork(self.thread)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: where the conversation now stands, and whether it branched."""

    position: Position
    event_id: str
    #: True when the event is on a new branch (this try or an earlier try created it).
    branched: bool
    #: True when this exact batch (same ``event_id``, same content) had already been committed.
    replayed: bool = False


_set_attribute = object.__setattr__
#: A validated cursor: where a trusted cursor takes its defaults (``v``, ``mac``) and fields set.
_TEMPLATE: Final = Cursor(thread_id="t", offset=0)


def _built(thread_id: str, seq: int) -> Cursor:
    """A cursor assembled as pydantic's ``model_construct`` assembles one, for valid values only."""
    cursor = Cursor.__new__(Cursor)
    _set_attribute(cursor, "__dict__", {**_TEMPLATE.__dict__, "thread_id": thread_id, "offset": seq})
    _set_attribute(cursor, "__pydantic_fields_set__", set(_TEMPLATE.__pydantic_fields_set__))
    _set_attribute(cursor, "__pydantic_extra__", None)
    _set_attribute(cursor, "__pydantic_private__", None)
    return cursor


def _assembles_exactly() -> bool:
    """Whether :func:`_built` gives what validation gives, on this pydantic (else it is not used)."""
    try:
        sample = Cursor(thread_id="a#b", offset=7)
        return (
            Cursor.__pydantic_post_init__ is None and _built("a#b", 7).__getstate__() == sample.__getstate__()
        )
    except Exception:
        return False


_ASSEMBLE: Final = _assembles_exactly()


def trusted_cursor(thread_id: Any, seq: Any) -> Cursor:
    """Return ``Cursor(thread_id=str(thread_id), offset=int(seq))``.

    Validating the cursor after every append cost a third of the append's own work
    (pydantic's validator is cold by the time the insert's reply comes back). Values
    that validation would accept unchanged (an exact ``str`` that is a usable thread id,
    an exact non-negative ``int``) are assembled directly; anything else is validated.
    """
    if _ASSEMBLE and type(thread_id) is str and type(seq) is int and seq >= 0:
        try:
            validate_thread_id(thread_id)  # the very check validation runs
        except InvalidThreadIdError:
            pass
        else:
            return _built(thread_id, seq)
    return Cursor(thread_id=str(thread_id), offset=int(seq))
