"""Recompute hash chains and check thread structure; name the first thing that does not match.

What is checked, per thread:

- the thread document: a root has no parent, lineage, depth or base; a branch's
  ``parent`` is the last lineage entry, ``depth`` is the lineage's length, ``root_id``
  its first entry, ``base_offset``/``base_messages`` its fork point, and every ancestor
  exists with the lineage prefix it claims;
- the fork: the parent line's event at ``base_offset`` exists and ends at
  ``base_messages`` (so truncating a thread under a branch is caught);
- the thread's own events, streamed in ``seq`` order: ``seq`` contiguous from
  ``base_offset + 1``, ``first_message`` continuing the previous event, ``count`` equal
  to the batch size, ``prev_hash`` equal to the previous hash (the fork event's, or
  the genesis hash), and ``hash`` recomputed from the stored event.

An unkeyed hash chain cannot see a removed tail that nothing references, a deleted
whole thread, or a rewrite whose author recomputed every hash. :func:`head_anchors`
exports head hashes; passing them back as ``anchors`` closes those gaps for
everything that existed when they were taken (see ``docs/admin.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from chatledger.admin.catalog import Forest, ThreadFilter, activity, as_ledger, iter_events, load_forest
from chatledger.admin.receipts import pending_removals, removed_heads
from chatledger.errors import IntegrityError, InvalidInputError, UnknownThreadError
from chatledger.hashing import GENESIS_HASH, HASHED_FIELDS_BY_VERSION, event_hash
from chatledger.ledger import Ledger
from chatledger.models import ThreadRecord

__all__ = ["Anchor", "Problem", "VerifyReport", "head_anchors", "verify"]


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing that does not match in one thread."""

    thread_id: str
    reason: str
    #: ``seq`` of the offending event, when the problem is an event.
    seq: int | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Anchor:
    """A thread's head as it was when recorded elsewhere: later, it must still be there."""

    thread_id: str
    head_seq: int
    head_hash: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Anchor:
        """Return the anchor in a JSON object ``{"thread_id", "head_seq", "head_hash"}``.

        Raises:
            InvalidInputError: ``data`` is not such an object.
        """
        try:
            anchor = cls(str(data["thread_id"]), int(data["head_seq"]), str(data["head_hash"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"not a head anchor: {data!r}") from e
        return anchor


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify` checked and what failed."""

    threads: int = 0
    events: int = 0
    anchors: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form of the report."""
        return {
            "ok": self.ok,
            "threads": self.threads,
            "events": self.events,
            "anchors": self.anchors,
            "problems": [asdict(p) for p in self.problems],
        }


def _lineage_owner(lineage: Iterable[Mapping[str, Any]], seq: int) -> str | None:
    """Return the id of the ancestor whose own events hold ``seq`` along ``lineage``."""
    lo = 0
    for fork in lineage:
        if lo < seq <= int(fork["offset"]):
            return str(fork["thread_id"])
        lo = int(fork["offset"])
    return None


class _Verifier:
    def __init__(self, ledger: Ledger, forest: Forest) -> None:
        self.ledger = ledger
        self.forest = forest
        self.report = VerifyReport()

    async def _thread_doc(self, thread_id: str) -> dict[str, Any] | None:
        doc = self.forest.docs.get(thread_id)
        if doc is None:
            found = await self.ledger.storage.threads.get_raw(thread_id)
            if found is not None:
                self.forest.add(found)
                doc = self.forest.docs[thread_id]
        return doc

    async def structure(self, doc: dict[str, Any]) -> str | None:
        """Return why a thread document is inconsistent, or ``None``."""
        try:
            record = ThreadRecord.model_validate(doc)
        except ValidationError as e:
            return f"thread document is malformed: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}"
        lineage = [f.model_dump() for f in record.lineage]
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
        if last is None or record.parent != {"thread_id": last["thread_id"], "offset": last["offset"]}:
            return f"parent {record.parent!r} is not the last entry of the lineage"
        if record.depth != len(lineage):
            return f"depth {record.depth} but the lineage has {len(lineage)} ancestors"
        if record.root_id != lineage[0]["thread_id"]:
            return f"root_id {record.root_id!r} is not the first ancestor {lineage[0]['thread_id']!r}"
        if (record.base_offset, record.base_messages) != (last["offset"], last["messages"]):
            return "base_offset/base_messages differ from the fork point in the lineage"
        if record.id in {f["thread_id"] for f in lineage}:
            return "the thread is its own ancestor"
        if any(a["offset"] > b["offset"] for a, b in itertools.pairwise(lineage)):
            return "fork offsets along the lineage go backwards"
        for index, fork in enumerate(lineage):
            ancestor = await self._thread_doc(fork["thread_id"])
            if ancestor is None:
                return f"ancestor thread {fork['thread_id']!r} is missing"
            if list(ancestor.get("lineage") or []) != lineage[:index]:
                return f"lineage disagrees with ancestor {fork['thread_id']!r}'s own lineage"
        return None

    async def fork_hash(self, doc: dict[str, Any]) -> tuple[str | None, str]:
        """Return (why the fork point is broken or ``None``, the hash the thread chains to)."""
        base = int(doc.get("base_offset") or 0)
        if base == 0:
            return None, GENESIS_HASH
        owner = _lineage_owner(doc.get("lineage") or (), base)
        if owner is None:
            return f"no ancestor in the lineage holds the fork point seq {base}", GENESIS_HASH
        try:
            parent = await self.ledger.storage.events.at(owner, base)
        except IntegrityError as e:
            return f"the fork event is malformed: {e}", GENESIS_HASH
        if parent is None:
            return (
                f"the event at seq {base} of thread {owner!r}, where this branch forked, is missing "
                "(the parent was truncated or the event deleted)"
            ), GENESIS_HASH
        if int(parent["first_message"]) + int(parent["count"]) != int(doc.get("base_messages") or 0):
            return (
                f"the fork event at seq {base} of thread {owner!r} ends at message "
                f"{int(parent['first_message']) + int(parent['count'])}, the branch expects "
                f"{doc.get('base_messages')}"
            ), GENESIS_HASH
        return None, str(parent["hash"])

    async def events(self, doc: dict[str, Any], prev: str) -> Problem | None:
        """Walk a thread's own events; return the first that does not match."""
        tid = str(doc["_id"])
        seq = int(doc.get("base_offset") or 0) + 1
        message = int(doc.get("base_messages") or 0)
        async for event in iter_events(self.ledger, tid):
            self.report.events += 1
            try:
                why = _event_problem(event, seq, message, prev)
                if why is not None:
                    return Problem(
                        tid,
                        why,
                        seq=_int_or_none(event.get("seq")),
                        event_id=_str_or_none(event.get("event_id")),
                    )
                seq, message, prev = seq + 1, message + int(event["count"]), str(event["hash"])
            except (KeyError, TypeError, ValueError) as e:
                return Problem(tid, f"malformed event: {e!r}", seq=_int_or_none(event.get("seq")))
        return None

    async def thread(self, doc: dict[str, Any]) -> None:
        tid = str(doc["_id"])
        self.report.threads += 1
        why = await self.structure(doc)
        if why is None:
            why, prev = await self.fork_hash(doc)
        if why is not None:
            self.report.problems.append(Problem(tid, why))
            return
        problem = await self.events(doc, prev)
        if problem is not None:
            self.report.problems.append(problem)

    async def orphans(self, thread_ids: Iterable[str] | None) -> None:
        """Report events whose thread document is gone (all threads when ``thread_ids`` is ``None``)."""
        match: dict[str, Any] = {} if thread_ids is None else {"thread_id": {"$in": list(thread_ids)}}
        for tid, events in (await self.ledger.storage.events.thread_ids(match)).items():
            if tid not in self.forest.docs and await self._thread_doc(tid) is None:
                self.report.problems.append(
                    Problem(tid, f"{events} events have no thread document (it was deleted)")
                )

    async def anchors(self, anchors: Iterable[Anchor]) -> None:
        removed: dict[str, list[tuple[int, str]]] | None = None
        for anchor in anchors:
            self.report.anchors += 1
            doc = await self._thread_doc(anchor.thread_id)
            if doc is None:
                if removed is None:
                    removed = await removed_heads(self.ledger)
                heads = removed.get(anchor.thread_id, [])
                if not any(seq >= anchor.head_seq for seq, _ in heads):
                    self.report.problems.append(
                        Problem(
                            anchor.thread_id,
                            "anchored thread is gone and no completed removal receipt covers it",
                            seq=anchor.head_seq,
                        )
                    )
                continue
            try:
                event = await self.ledger.storage.events.at(anchor.thread_id, anchor.head_seq)
            except IntegrityError:
                event = None
            if event is None or event.get("hash") != anchor.head_hash:
                what = "is missing (the thread was truncated)" if event is None else "has a different hash"
                self.report.problems.append(
                    Problem(
                        anchor.thread_id,
                        f"anchored head at seq {anchor.head_seq} {what}",
                        seq=anchor.head_seq,
                    )
                )


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def _str_or_none(value: Any) -> str | None:
    return value if type(value) is str else None


def _event_problem(event: Mapping[str, Any], seq: int, message: int, prev: str) -> str | None:
    """Return why one event breaks the chain at the expected position, or ``None``."""
    found = event["seq"]
    if found != seq:
        if type(found) is int and found > seq:
            return f"event(s) missing: expected seq {seq}, next stored event is seq {found}"
        return f"unexpected event at seq {found!r} where seq {seq} was expected (forged or duplicated)"
    if event.get("v") not in HASHED_FIELDS_BY_VERSION:
        return f"unknown schema version {event.get('v')!r}"
    if event["prev_hash"] != prev:
        return (
            "prev_hash does not match the hash of the event before it (events inserted, removed or reordered)"
        )
    if event_hash(str(event["prev_hash"]), event) != event["hash"]:
        return "stored event does not match its hash (its content or fields were changed)"
    if event["count"] != len(event["messages"]):
        return f"count {event['count']} but {len(event['messages'])} messages"
    if event["first_message"] != message:
        return f"first_message {event['first_message']} but the previous event ended at {message}"
    return None


async def verify(
    target: Any,
    *,
    thread_id: str | None = None,
    tenant_id: str | None = None,
    anchors: Iterable[Anchor] = (),
    on_thread: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Return the result of checking the hash chains and structure of one thread, a tenant, or all.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: Check only this thread (and its fork point in its ancestors).
        tenant_id: Check only this tenant's threads.
        anchors: Head hashes recorded earlier (:func:`head_anchors`); each must still
            be present, or covered by a completed removal receipt.
        on_thread: Called after each thread is checked (progress reporting).

    Returns:
        The report: counts, and the first problem of each failing thread.

    Raises:
        InvalidInputError: both ``thread_id`` and ``tenant_id`` were given, or one is malformed.
        UnknownThreadError: ``thread_id`` names neither a thread nor any events.
    """
    if thread_id is not None and tenant_id is not None:
        raise InvalidInputError("verify one thread or one tenant, not both")
    ledger = as_ledger(target)
    scope = ThreadFilter(thread_id=thread_id, tenant_id=tenant_id)
    forest = await load_forest(ledger, scope, with_family=False)
    verifier = _Verifier(ledger, forest)
    for tid in sorted(forest.docs):
        await verifier.thread(forest.docs[tid])
        if on_thread is not None:
            on_thread(tid)
    if tenant_id is None:
        # A thread document deleted under its events is invisible from the threads side.
        await verifier.orphans([thread_id] if thread_id is not None else None)
    for receipt in await pending_removals(ledger):
        ids = [str(t) for t in receipt.get("thread_ids") or ()]
        if (thread_id is None and tenant_id is None) or any(t in forest.docs for t in ids):
            verifier.report.problems.append(
                Problem(
                    ids[0] if ids else "?",
                    f"removal {receipt['_id']} ({receipt.get('action')}, by {receipt.get('by')}) "
                    "was interrupted; "
                    "apply retention or erase again to finish it",
                )
            )
    if thread_id is not None and not verifier.report.threads and not verifier.report.problems:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    await verifier.anchors(anchors)
    return verifier.report


async def head_anchors(target: Any, thread_filter: ThreadFilter | None = None) -> list[Anchor]:
    """Return the current head of every matching thread, to be stored outside the database.

    Kept somewhere an insider with write access to MongoDB cannot reach (a ticket, a
    WORM bucket, a signed e-mail), these let :func:`verify` detect later truncation,
    rewrites and unrecorded deletions.
    """
    ledger = as_ledger(target)
    forest = await load_forest(ledger, thread_filter, with_family=False)
    summaries = await activity(ledger, forest)
    return [Anchor(s.thread_id, s.head_seq, s.head_hash) for s in summaries.values() if s.head_seq > 0]
