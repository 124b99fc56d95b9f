"""Checks that stored documents have the shape the rest of ChatLedger relies on.

A document is read from a database that other people's tools can write to. Whatever
it holds, reading it yields either a document of the expected shape or an
:class:`~chatledger.errors.IntegrityError` naming it: never a ``KeyError``,
``ValueError`` or pydantic error from deep inside a caller.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from chatledger import models
from chatledger.errors import IntegrityError
from chatledger.hashing import HASHED_FIELDS_BY_VERSION
from chatledger.models import ThreadRecord

__all__ = [
    "HOLD_FIELDS",
    "KNOWN_VERSIONS",
    "LEGACY_HOLD",
    "Holds",
    "LiveThread",
    "check_event",
    "check_thread",
    "holds_of",
    "live_thread",
    "record_problem",
]

#: Event schema versions this release reads (see docs/schema-versions.md).
KNOWN_VERSIONS = frozenset(HASHED_FIELDS_BY_VERSION)

#: Fields every event read needs, with their types. ``bool`` is excluded below: it is an int in Python.
_EVENT_INTS = ("seq", "first_message", "count")
_EVENT_STRS = ("thread_id", "hash")


def _name(doc: Mapping[str, Any]) -> str:
    return repr(doc.get("_id", "<no _id>"))


def check_event(doc: Mapping[str, Any], *, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Return ``doc`` if the fields a read uses have the right types.

    Args:
        doc: An event document as stored.
        fields: The fields the caller projected (``None``: all of them must be present).

    Raises:
        IntegrityError: a field is missing or has the wrong type.
    """
    for name in _EVENT_INTS:
        if fields is not None and name not in fields:
            continue
        value = doc.get(name)
        if type(value) is not int or value < 0:
            raise IntegrityError(f"event {_name(doc)} is malformed: {name} is {value!r}, not a count")
    for name in _EVENT_STRS:
        if fields is not None and name not in fields:
            continue
        if type(doc.get(name)) is not str:
            raise IntegrityError(f"event {_name(doc)} is malformed: {name} is {doc.get(name)!r}")
    if (fields is None or "v" in fields) and doc.get("v") not in KNOWN_VERSIONS:
        raise IntegrityError(
            f"event {_name(doc)} has schema version {doc.get('v')!r}, which this release cannot read "
            "(upgrade ChatLedger, see docs/schema-versions.md)"
        )
    if fields is None or "messages" in fields:
        messages = doc.get("messages")
        # ``type(m) is dict`` first: what the driver decodes, without an ABC check per message.
        if not isinstance(messages, list) or not all(
            type(m) is dict or isinstance(m, Mapping) for m in messages
        ):
            raise IntegrityError(f"event {_name(doc)} is malformed: messages is not a list of documents")
        if (fields is None or "count" in fields) and len(messages) != doc["count"]:
            raise IntegrityError(
                f"event {_name(doc)} is malformed: count {doc['count']} but {len(messages)} messages"
            )
    return dict(doc)


#: The single hold of a ChatLedger 0.1 thread document (before holds had cases). Only this
#: package knows the spelling: readers above get :class:`Holds`, where it is ``legacy``.
LEGACY_HOLD: Final = "legal_hold"
#: Fields of a thread document that hold its legal holds (and their revision).
HOLD_FIELDS: Final = (LEGACY_HOLD, "legal_holds", "holds_rev")


@dataclass(frozen=True, slots=True)
class Holds:
    """A thread document's legal holds, normalised: one per case, plus a 0.1 single hold."""

    #: The holds, one per case, as stored (each a ``{"case", "reason", "set_at", "set_by"}`` document).
    cases: tuple[dict[str, Any], ...] = ()
    #: Whether the document carries a ChatLedger 0.1 single hold (no case; it blocks removals too).
    legacy: bool = False
    #: The compare-and-set revision of the holds (0 before any change).
    rev: int = 0
    #: Whether any hold protects the thread (0.1 counted any true value as a hold, and a
    #: ``legal_holds`` list of something other than documents is still one: tampering or an old tool).
    held: bool = False
    #: Whether the document carries a 0.1 single hold of any form (it has no case: ``"-"``).
    legacy_marked: bool = False
    #: The 0.1 single hold's own document (its reason, time and setter), when it is one.
    legacy_hold: dict[str, Any] | None = None

    def case_names(self) -> list[str]:
        """Return the cases holding the thread (``"-"`` for a 0.1 single hold, which has none)."""
        names = [str(h.get("case")) for h in self.cases]
        return names or (["-"] if self.legacy_marked else [])

    def listed(self) -> list[dict[str, Any]]:
        """Return every hold document: one per case, then a 0.1 single hold with ``case`` ``None``.

        A hold that protects the thread but holds no document (a 0.1 hold of another true
        value, a ``legal_holds`` list of something else) is listed too, ``case`` ``None`` and
        nothing else known: an operator told a thread is held must find it.
        """
        rows = [dict(h) for h in self.cases]
        if self.legacy_hold is not None:
            rows.append({**self.legacy_hold, "case": None})
        elif self.legacy_marked or (self.held and not rows):
            rows.append({"case": None, "reason": None, "set_at": None, "set_by": None})
        return rows


def holds_of(doc: Mapping[str, Any]) -> Holds:
    """Return the legal holds a stored thread document carries, whatever release wrote them."""
    listed = doc.get("legal_holds")
    legacy = doc.get(LEGACY_HOLD)
    rev = doc.get("holds_rev")
    return Holds(
        cases=tuple(dict(h) for h in (listed if isinstance(listed, list) else ()) if isinstance(h, Mapping)),
        legacy=isinstance(legacy, Mapping),
        rev=rev if type(rev) is int else 0,
        held=bool(listed) or bool(legacy),
        legacy_marked=bool(legacy),
        legacy_hold=dict(legacy) if isinstance(legacy, Mapping) else None,
    )


def held_filter() -> dict[str, Any]:
    """Return the filter of thread documents that carry a legal hold of any release's spelling."""
    # Both branches, because FerretDB v1 and MongoDB alike must see a 0.1 single hold.
    return {"$or": [{"legal_holds": {"$exists": True, "$ne": []}}, {LEGACY_HOLD: {"$exists": True}}]}


@dataclass(frozen=True, slots=True)
class LiveThread:
    """What legal holds and removals judge of a live thread document: its root and its holds."""

    root_id: str
    holds: Holds


def live_thread(doc: Mapping[str, Any] | None) -> LiveThread | None:
    """Return the root and holds of a live thread document (``None``: no document, or a tombstone)."""
    if doc is None or "removed" in doc:
        return None
    return LiveThread(str(doc.get("root_id")), holds_of(doc))


def check_thread(doc: Mapping[str, Any]) -> ThreadRecord:
    """Return the thread record stored in ``doc``.

    Raises:
        IntegrityError: the document is not a valid thread record.
    """
    try:
        return ThreadRecord.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"thread document {_name(doc)} is malformed: {where}: {first['msg']}") from e


def record_problem(record: ThreadRecord) -> str | None:
    """Return why a thread record contradicts itself (parent, lineage, depth, base), or ``None``."""
    lineage = record.lineage
    if record.parent is None:
        if (
            lineage
            or record.depth
            or record.base_offset
            or record.base_messages
            or record.root_id != record.id
        ):
            return "root thread has a lineage, depth, base or root_id of a branch"
        return None
    last = lineage[-1] if lineage else None
    if last is None or record.parent != {"thread_id": last.thread_id, "offset": last.offset}:
        return f"parent {record.parent!r} is not the last entry of the lineage"
    # The whole line (documents written before the window) or exactly the nearest window.
    if record.depth != len(lineage) and not (record.windowed and len(lineage) == models.LINEAGE_WINDOW):
        return (
            f"depth {record.depth} but the lineage has {len(lineage)} ancestors (neither all of them "
            f"nor the nearest {models.LINEAGE_WINDOW})"
        )
    if not record.windowed and record.root_id != lineage[0].thread_id:
        return f"root_id {record.root_id!r} is not the first ancestor {lineage[0].thread_id!r}"
    if (record.base_offset, record.base_messages) != (last.offset, last.messages):
        return "base_offset/base_messages differ from the fork point in the lineage"
    if any(f.thread_id == record.id for f in lineage):
        return "the thread is its own ancestor"
    if any(a.offset > b.offset for a, b in itertools.pairwise(lineage)):
        return "fork offsets along the lineage go backwards"
    return None
