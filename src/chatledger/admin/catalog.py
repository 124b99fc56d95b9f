"""What is stored: thread documents, the trees they form, and each thread's activity.

Every admin operation starts here. Thread documents are read raw (never through the
ledger's cache) because admin code must see holds and tampering as they are now. Which
threads is a :class:`ThreadFilter` (typed values); storage/ turns it into queries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from chatledger.admin._checks import require_callback, require_datetime, require_instance
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.hashing import GENESIS_HASH
from chatledger.ledger import Ledger, storage_of
from chatledger.models import validate_name as _validate_name
from chatledger.storage import Storage
from chatledger.storage.documents import holds_of
from chatledger.storage.filters import ThreadFilter, ThreadView
from chatledger.storage.threads import ThreadStore

__all__ = [
    "CHUNK_THREADS",
    "Family",
    "Forest",
    "ThreadActivity",
    "ThreadFilter",
    "ThreadSummary",
    "activity",
    "as_ledger",
    "aware",
    "count_threads",
    "family_chunks",
    "hold_cases",
    "iter_events",
    "list_threads",
    "load_forest",
    "validate_name",
]

#: Threads judged together: one ``$group`` counts their events, and no more than this
#: many thread documents (plus one tree that straddles the boundary) are held at once.
CHUNK_THREADS: Final = 500
#: Head queries in flight at once (each is one indexed query; overlapping them hides latency).
_HEADS_IN_FLIGHT: Final = 16
#: What a removal receipt records about a thread (never content).
_RECEIPT_FIELDS: Final = ("thread_id", "head_seq", "head_hash", "events", "messages")


def as_ledger(target: Any) -> Ledger:
    """Return ``target`` if it is a :class:`Ledger`, else a ledger on the database handle ``target``."""
    return Ledger.of(target)


def aware(value: Any) -> datetime | None:
    """Return a stored date as an aware UTC datetime (clients opened without ``tz_aware`` read naive UTC)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable tenant or user id (the same rule the ledger applies).

    Raises:
        InvalidInputError: ``value`` is not a plain non-empty string, so it could widen a query.
    """
    return _validate_name(kind, value)


@dataclass(slots=True)
class ThreadActivity:
    """A thread's own events, summarised: how many, and the newest one."""

    thread_id: str
    events: int = 0
    messages: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    #: ``created_at`` of the newest own event, or of the thread document if it has none.
    last_activity: datetime | None = None
    #: Why the thread's head could not be read (a malformed stored event), or ``None``.
    #: Such a thread has no head here: admin tools report it and go on with the others.
    damaged: str | None = None

    def receipt_entry(self) -> dict[str, Any]:
        """Return what a removal receipt records about this thread (never content)."""
        return {name: getattr(self, name) for name in _RECEIPT_FIELDS}


def hold_cases(doc: Mapping[str, Any]) -> list[str]:
    """Return the cases holding a thread document (``"-"`` for a ChatLedger 0.1 hold, which has none)."""
    return holds_of(doc).case_names()


@dataclass(slots=True)
class Forest:
    """Thread documents by id, with the parent → children relation between them."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    _blockers: dict[str, str | None] | None = field(default=None, repr=False)

    def add(self, doc: Mapping[str, Any]) -> None:
        """Add one raw thread document."""
        tid = str(doc["_id"])
        self.docs[tid] = dict(doc)
        self._blockers = None
        parent = doc.get("parent")
        if isinstance(parent, Mapping) and isinstance(parent.get("thread_id"), str):
            self.children.setdefault(str(parent["thread_id"]), []).append(tid)

    def descendants(self, thread_id: str) -> list[str]:
        """Return ``thread_id`` and every thread branched (transitively) from it, parents first."""
        out = [thread_id]
        index = 0
        while index < len(out):
            out.extend(sorted(self.children.get(out[index], ())))
            index += 1
        return out

    def ancestors(self, thread_id: str) -> list[str]:
        """Return the ids of the thread's ancestors in this forest, root first (not the thread itself).

        They follow the ``parent`` links, not the stored ``lineage``: a deep branch's
        lineage lists only its nearest ancestors, and admin code holds whole trees anyway.
        The walk stops at an ancestor the forest does not hold.
        """
        out: list[str] = []
        seen = {thread_id}
        parent = self.docs.get(thread_id, {}).get("parent")
        while isinstance(parent, Mapping) and isinstance(parent.get("thread_id"), str):
            tid = str(parent["thread_id"])
            if tid in seen or tid not in self.docs:
                break  # a loop (tampering; verify reports it) or the edge of the forest
            seen.add(tid)
            out.append(tid)
            parent = self.docs[tid].get("parent")
        out.reverse()
        return out

    def held(self, thread_id: str) -> bool:
        """Return whether the thread document carries a legal hold (any case, or a 0.1 single hold)."""
        return holds_of(self.docs.get(thread_id, {})).held

    def hold_blocks(self, thread_id: str) -> str | None:
        """Return the id of a held thread that protects ``thread_id``'s lineage, or ``None``.

        A hold protects the held thread, every branch of it, and (because a kept
        branch needs them to replay) every ancestor: so removing ``thread_id`` together
        with its descendants is blocked by a hold on any of them or on any ancestor.
        Answered from :meth:`blockers`, computed once per forest.
        """
        return self.blockers().get(thread_id)

    def blockers(self) -> dict[str, str | None]:
        """Return, for every thread, the held thread that blocks removing it (see :meth:`hold_blocks`).

        Two passes over the forest (holds above, top down; holds below, bottom up), so
        judging every thread of a deep chain costs its size, not its size squared.
        """
        if self._blockers is None:
            order = self._top_down()
            above: dict[str, str | None] = {}
            for tid in order:
                parent = self.parent_of(tid)
                inherited = above.get(parent) if parent is not None else None
                above[tid] = inherited or (tid if self.held(tid) else None)
            below: dict[str, str | None] = {}
            for tid in reversed(order):
                below[tid] = tid if self.held(tid) else None
                for child in sorted(self.children.get(tid, ())):
                    if below[tid] is None and below.get(child) is not None:
                        below[tid] = below[child]
            blockers: dict[str, str | None] = {}
            for tid in order:
                parent = self.parent_of(tid)
                blockers[tid] = (above[parent] if parent is not None else None) or below[tid]
            self._blockers = blockers
        return self._blockers

    def newest(self, last_activity: Mapping[str, datetime | None]) -> dict[str, datetime | None]:
        """Return, for every thread, the newest ``last_activity`` of it and all its branches.

        One bottom-up pass (a per-thread walk of descendants costs a deep chain its size squared).
        """
        out: dict[str, datetime | None] = {}
        for tid in reversed(self._top_down()):
            dates = [
                d for d in (last_activity.get(tid), *(out.get(c) for c in self.children.get(tid, ()))) if d
            ]
            out[tid] = max(dates) if dates else None
        return out

    def parent_of(self, thread_id: str) -> str | None:
        """Return the id of the thread's parent if this forest holds it, else ``None``."""
        parent = self.docs.get(thread_id, {}).get("parent")
        if isinstance(parent, Mapping) and isinstance(parent.get("thread_id"), str):
            tid = str(parent["thread_id"])
            return tid if tid in self.docs else None
        return None

    def looped(self) -> set[str]:
        """Return the threads whose parent links never reach a root: a loop, or below one.

        Only tampering makes such links (verify reports them). Nothing about these
        threads can be judged (which is the top of their lineage? what does a hold
        protect?), so removals leave them alone and say so.
        """
        return set(self.docs).difference(self._reached())

    def _reached(self) -> list[str]:
        """Return every thread reached from a root, each after its parent."""
        return [tid for root in self.roots() for tid in self.descendants(root)]

    def _top_down(self) -> list[str]:
        """Return every thread, each after its parent (threads caught in a parent loop last)."""
        order = self._reached()
        # A loop of parent links (tampering; verify reports it) has no root: keep its
        # threads, in id order, so every thread still gets an answer (removals skip them:
        # see looped()).
        return order + sorted(set(self.docs).difference(order))

    def roots(self) -> list[str]:
        """Return the ids of threads whose parent is not in this forest, sorted."""
        return sorted(
            t
            for t, d in self.docs.items()
            if not d.get("parent") or str(d["parent"].get("thread_id")) not in self.docs
        )


async def load_forest(
    ledger: Ledger, thread_filter: ThreadFilter | None = None, *, with_family: bool = True
) -> Forest:
    """Return the threads matching ``thread_filter``.

    Args:
        ledger: The ledger whose collections are read.
        thread_filter: Which threads; ``None`` for all.
        with_family: Also load every thread of the matching threads' trees (same
            ``root_id``), so lineages and holds can be judged whole.
    """
    threads = storage_of(ledger).threads
    forest = Forest()
    roots = set()
    async for doc in threads.matching(thread_filter):
        forest.add(doc)
        roots.add(doc.get("root_id"))
    if with_family and thread_filter is not None and not thread_filter.everything:
        for doc in await threads.family([r for r in roots if isinstance(r, str)]):
            if str(doc["_id"]) not in forest.docs:
                forest.add(doc)
    return forest


async def activity(
    ledger: Ledger, forest: Forest, thread_ids: Iterable[str] | None = None
) -> dict[str, ThreadActivity]:
    """Return the activity of each thread (all of the forest's threads when ``thread_ids`` is ``None``).

    Counts come from one ``$group`` per chunk of threads. The newest event of a thread
    whose events run contiguously from its fork point is read by key, one query per
    chunk of threads; any other thread's is one indexed query on ``(thread_id, seq)``.

    A thread whose newest event is malformed (a tampered ``seq`` or ``count``) gets
    :attr:`ThreadActivity.damaged` instead of a head: one damaged thread never stops
    the others' activity from being read (``verify`` names the event).
    """
    storage = storage_of(ledger)
    ids = sorted(forest.docs if thread_ids is None else thread_ids)
    out = {
        tid: ThreadActivity(tid, last_activity=aware(forest.docs.get(tid, {}).get("created_at")))
        for tid in ids
    }
    for tid, (events, messages) in (await storage.tallies.counts(ids)).items():
        if tid in out:
            out[tid].events, out[tid].messages = events, messages
    with_events = [summary for summary in out.values() if summary.events]
    # A thread whose events are exactly the run base+1..base+n (count and seq total
    # agree) has its head at base+n: fetched by key, many threads per query. Any other
    # thread (a gap, a forged seq, no thread document) gets the exact per-thread query.
    totals = await storage.tallies.seq_totals([s.thread_id for s in with_events])
    expected: dict[str, int] = {}
    for summary in with_events:
        base = forest.docs.get(summary.thread_id, {}).get("base_offset", 0)
        n = summary.events
        if type(base) is int and base >= 0 and totals.get(summary.thread_id) == n * base + n * (n + 1) // 2:
            expected[summary.thread_id] = base + n
    try:
        keyed = await storage.tallies.heads_at(expected)
    except IntegrityError:
        keyed = {}  # one malformed head spoils the batch: each thread is read alone below
    rest = [s for s in with_events if s.thread_id not in keyed]
    for start in range(0, len(rest), _HEADS_IN_FLIGHT):
        batch = rest[start : start + _HEADS_IN_FLIGHT]
        found = await asyncio.gather(*(_head_or_damage(storage, s) for s in batch))
        keyed.update({s.thread_id: h for s, h in zip(batch, found, strict=True) if h is not None})
    for summary in with_events:
        head = keyed.get(summary.thread_id)
        if head is not None:
            summary.head_seq, summary.head_hash = head["seq"], head["hash"]
            summary.last_activity = aware(head.get("created_at")) or summary.last_activity
    return out


async def _head_or_damage(storage: Storage, summary: ThreadActivity) -> dict[str, Any] | None:
    """Return a thread's newest event, or ``None`` with the damage recorded on ``summary``."""
    try:
        return await storage.events.head(summary.thread_id)
    except IntegrityError as e:
        summary.damaged = f"{e} (run chatledger verify)"
        return None


async def iter_events(ledger: Ledger, thread_id: str) -> AsyncIterator[dict[str, Any]]:
    """Yield a thread's own events in ``seq`` order, streamed in bounded batches, as stored."""
    async for doc in storage_of(ledger).events.stream(thread_id):
        yield doc


# --------------------------------------------------------------------------- at scale


@dataclass(slots=True)
class Family:
    """One conversation tree (threads sharing a ``root_id``) and which of its threads a filter matched."""

    root_id: str | None
    forest: Forest
    #: The threads the filter selected, parents first (``depth``, then id).
    matching: list[str]


def _tree_order(doc: Mapping[str, Any]) -> tuple[int, str]:
    depth = doc.get("depth")
    return (depth if type(depth) is int else 0, str(doc["_id"]))


def _family(root_id: str | None, docs: Iterable[Mapping[str, Any]], matching: Iterable[str]) -> Family:
    forest = Forest()
    for doc in sorted(docs, key=_tree_order):
        forest.add(doc)
    wanted = set(matching)
    return Family(root_id, forest, [t for t in forest.docs if t in wanted])


async def _whole(threads: ThreadStore, groups: list[list[dict[str, Any]]]) -> list[Family]:
    """Return the groups as whole trees: every thread sharing their roots, matching or not."""
    roots = [g[0].get("root_id") for g in groups]
    by_root: dict[Any, list[dict[str, Any]]] = {}
    for doc in await threads.family([r for r in roots if isinstance(r, str)]):
        by_root.setdefault(doc.get("root_id"), []).append(doc)
    out: list[Family] = []
    for root, group in zip(roots, groups, strict=True):
        matched = [str(d["_id"]) for d in group]
        docs = {str(d["_id"]): d for d in by_root.get(root, ())}
        for doc in group:  # a thread whose root_id is not a string is still judged
            docs.setdefault(str(doc["_id"]), doc)
        out.append(_family(root if isinstance(root, str) else None, docs.values(), matched))
    return out


async def family_chunks(
    ledger: Ledger,
    thread_filter: ThreadFilter | None = None,
    *,
    whole: bool = False,
    limit: int | None = None,
    view: ThreadView = "all",
    created_before: datetime | None = None,
    chunk: int | None = None,
) -> AsyncGenerator[list[Family], None]:
    """Yield the matching threads tree by tree, in chunks of about ``chunk`` threads.

    One query streams the matching thread documents sorted on ``root_id`` (so a tree's
    threads arrive together); only the current chunk is held in memory. Trees come in
    ``root_id`` order, threads within a tree parents first.

    Args:
        ledger: The ledger whose collections are read.
        thread_filter: Which threads; ``None`` for all.
        whole: Also read the threads of each tree that the filter does not match (one
            query per chunk), so lineages and holds are judged on whole trees.
        limit: Read at most this many matching threads (pushed into the query). The
            last tree read is then completed with one more query, so it is whole.
        view: Which fields of the thread documents to read
            (:data:`~chatledger.storage.filters.THREAD_VIEWS`).
        created_before: Only threads created before this time.
        chunk: How many threads to gather before yielding (:data:`CHUNK_THREADS` by default).
    """
    fields: ThreadView = view
    selective = (thread_filter is not None and not thread_filter.everything) or created_before is not None
    whole = whole and selective  # without a filter every tree is read whole anyway
    chunk = chunk or CHUNK_THREADS
    threads = storage_of(ledger).threads
    groups: list[list[dict[str, Any]]] = []
    held = read = 0
    current: list[dict[str, Any]] = []

    async def flush() -> list[Family]:
        nonlocal groups, held
        out = (
            await _whole(threads, groups)
            if whole
            else [_family(g[0].get("root_id"), g, [str(d["_id"]) for d in g]) for g in groups]
        )
        groups, held = [], 0
        return out

    matching = threads.matching(
        thread_filter, view=fields, created_before=created_before, limit=limit, by_root=True
    )
    async with aclosing(matching) as docs:
        async for doc in docs:
            read += 1
            if current and doc.get("root_id") != current[0].get("root_id"):
                groups.append(current)
                held += len(current)
                current = []
                if held >= chunk:
                    yield await flush()
            current.append(doc)
    if current and limit is not None and read >= limit and not whole:
        # The limit may have cut the last tree: read the rest of it (and only that).
        rest = threads.rest_of_tree(
            thread_filter,
            current[0].get("root_id"),
            [d["_id"] for d in current],
            view=fields,
            created_before=created_before,
        )
        current.extend([d async for d in rest])
    if current:
        groups.append(current)
    if groups:
        yield await flush()


async def count_threads(target: Any, thread_filter: ThreadFilter | None = None) -> int:
    """Return how many threads match ``thread_filter`` (one ``count`` command; a progress total)."""
    require_instance(thread_filter, ThreadFilter, "thread_filter")
    return await storage_of(as_ledger(target)).threads.count_matching(thread_filter)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """One thread as an operator lists it: its document and its activity."""

    #: The raw thread document.
    doc: Mapping[str, Any]
    activity: ThreadActivity
    #: The held thread whose legal hold protects this one from removal: the thread itself,
    #: an ancestor, or a branch (a hold protects its whole lineage); ``None``: none does.
    #: Judged on the thread's tree as read (see ``list_threads(whole=...)``).
    held_by: str | None = None

    @property
    def thread_id(self) -> str:
        """The thread's id."""
        return self.activity.thread_id

    @property
    def held(self) -> bool:
        """Whether the thread carries a legal hold."""
        return holds_of(self.doc).held

    @property
    def cases(self) -> list[str]:
        """The cases holding the thread (``"-"`` for a ChatLedger 0.1 hold, which has no case)."""
        return hold_cases(self.doc)


async def list_threads(
    target: Any,
    thread_filter: ThreadFilter | None = None,
    *,
    older_than: timedelta | None = None,
    newer_than: timedelta | None = None,
    limit: int | None = None,
    now: datetime | None = None,
    on_thread: Callable[[str], None] | None = None,
    whole: bool = False,
) -> AsyncGenerator[ThreadSummary, None]:
    """Yield the matching threads with their activity, tree by tree, streamed.

    Threads come grouped by conversation (``root_id`` order), parents before branches.
    Memory stays bounded whatever the number of threads: documents are read in chunks
    and each chunk's activity is read before the next chunk. Without an age filter
    ``limit`` is pushed into the query, so ``limit=8`` reads 8 thread documents (plus
    the rest of the last conversation, if the limit cut it) and the activity of 8.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_filter: Which threads; ``None`` for all.
        older_than: Only threads idle for longer than this.
        newer_than: Only threads active within this.
        limit: Yield at most this many threads.
        now: The reference time for ages (tests pin it); the current time by default.
        on_thread: Called with each thread id examined (progress reporting).
        whole: With a filter, also read the threads of each tree that it does not
            match (one query per chunk), so :attr:`ThreadSummary.held_by` sees a hold
            on any thread of the tree. Without a filter trees are read whole anyway.

    Raises:
        InvalidInputError: an argument is not of its type (an age not a positive
            ``timedelta``, ``limit`` not a positive int), before anything is read.
    """
    require_instance(thread_filter, ThreadFilter, "thread_filter")
    for name, age in (("older_than", older_than), ("newer_than", newer_than)):
        if age is not None and (not isinstance(age, timedelta) or age <= timedelta(0)):
            raise InvalidInputError(f"{name} must be a positive timedelta or None, not {age!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInputError(f"limit must be a positive int or None, not {limit!r}")
    require_datetime(now, "now")
    require_callback(on_thread, "on_thread")
    ledger = as_ledger(target)
    now = now or datetime.now(UTC)
    # Activity is never older than the thread itself: a thread created within the age
    # cannot have been idle for longer, so the server can skip it.
    created_before = now - older_than if older_than is not None else None
    aged = older_than is not None or newer_than is not None
    remaining = limit
    chunks = family_chunks(
        ledger, thread_filter, whole=whole, limit=None if aged else limit, created_before=created_before
    )
    async with aclosing(chunks):
        async for chunk in chunks:
            ordered = [(family, tid) for family in chunk for tid in family.matching]
            if remaining is not None and not aged:
                ordered = ordered[:remaining]  # only the threads of the page need activity
            docs = Forest()
            for family, tid in ordered:
                docs.docs[tid] = family.forest.docs[tid]
            acts = await activity(ledger, docs, [tid for _, tid in ordered])
            for family, tid in ordered:
                if on_thread is not None:
                    on_thread(tid)
                act = acts[tid]
                age = now - act.last_activity if act.last_activity is not None else timedelta(0)
                too_new = older_than is not None and age <= older_than
                if too_new or (newer_than is not None and age > newer_than):
                    continue
                yield ThreadSummary(family.forest.docs[tid], act, family.forest.hold_blocks(tid))
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
