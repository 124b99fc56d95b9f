"""What is stored: thread documents, the trees they form, and each thread's activity.

Every admin operation starts here. Thread documents are read raw (never through the
ledger's cache) because admin code must see holds and tampering as they are now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chatledger.hashing import GENESIS_HASH
from chatledger.ledger import Ledger
from chatledger.models import validate_name as _validate_name
from chatledger.models import validate_thread_id

__all__ = [
    "Forest",
    "ThreadActivity",
    "ThreadFilter",
    "activity",
    "as_ledger",
    "aware",
    "iter_events",
    "load_forest",
    "validate_name",
]

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


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Which threads an admin command acts on; all fields ``None`` means every thread."""

    thread_id: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    root_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("thread_id", "root_id"):
            value = getattr(self, name)
            if value is not None:
                validate_thread_id(value)
        if self.tenant_id is not None:
            validate_name("tenant id", self.tenant_id)
        if self.user_id is not None:
            validate_name("user id", self.user_id)

    def query(self) -> dict[str, Any]:
        """Return the ``threads`` query selecting the matching thread documents."""
        query: dict[str, Any] = {}
        if self.thread_id is not None:
            query["_id"] = self.thread_id
        if self.tenant_id is not None:
            query["tenant_id"] = self.tenant_id
        if self.user_id is not None:
            query["user_id"] = self.user_id
        if self.root_id is not None:
            query["root_id"] = self.root_id
        return query

    def describe(self) -> dict[str, str]:
        """Return the non-empty fields, for receipts and reports."""
        return {
            k: v
            for k, v in (
                ("thread_id", self.thread_id),
                ("tenant_id", self.tenant_id),
                ("user_id", self.user_id),
                ("root_id", self.root_id),
            )
            if v is not None
        }


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

    def receipt_entry(self) -> dict[str, Any]:
        """Return what a removal receipt records about this thread (never content)."""
        return {
            "thread_id": self.thread_id,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "events": self.events,
            "messages": self.messages,
        }


@dataclass(slots=True)
class Forest:
    """Thread documents by id, with the parent → children relation between them."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    def add(self, doc: Mapping[str, Any]) -> None:
        """Add one raw thread document."""
        tid = str(doc["_id"])
        self.docs[tid] = dict(doc)
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
        """Return the ids in the thread's lineage, root first (not the thread itself)."""
        doc = self.docs.get(thread_id, {})
        return [str(f["thread_id"]) for f in doc.get("lineage") or () if isinstance(f, Mapping)]

    def held(self, thread_id: str) -> bool:
        """Return whether the thread document carries a legal hold (any case, or a 0.1 single hold)."""
        doc = self.docs.get(thread_id, {})
        return bool(doc.get("legal_holds")) or bool(doc.get("legal_hold"))

    def hold_blocks(self, thread_id: str) -> str | None:
        """Return the id of a held thread that protects ``thread_id``'s lineage, or ``None``.

        A hold protects the held thread, every branch of it, and (because a kept
        branch needs them to replay) every ancestor: so removing ``thread_id`` together
        with its descendants is blocked by a hold on any of them or on any ancestor.
        """
        for tid in (*self.ancestors(thread_id), *self.descendants(thread_id)):
            if self.held(tid):
                return tid
        return None

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
    query = (thread_filter or ThreadFilter()).query()
    forest = Forest()
    roots = set()
    async for doc in ledger.storage.threads.select(query):
        forest.add(doc)
        roots.add(doc.get("root_id"))
    if with_family and query:
        for doc in await ledger.storage.threads.family([r for r in roots if isinstance(r, str)]):
            if str(doc["_id"]) not in forest.docs:
                forest.add(doc)
    return forest


async def activity(
    ledger: Ledger, forest: Forest, thread_ids: Iterable[str] | None = None
) -> dict[str, ThreadActivity]:
    """Return the activity of each thread (all of the forest's threads when ``thread_ids`` is ``None``).

    Counts come from one ``$group`` per chunk of threads; the newest event of each
    thread is one indexed query on ``(thread_id, seq)``.

    Raises:
        IntegrityError: a thread's newest event is malformed.
    """
    ids = sorted(forest.docs if thread_ids is None else thread_ids)
    out = {
        tid: ThreadActivity(tid, last_activity=aware(forest.docs.get(tid, {}).get("created_at")))
        for tid in ids
    }
    for tid, (events, messages) in (await ledger.storage.events.counts(ids)).items():
        if tid in out:
            out[tid].events, out[tid].messages = events, messages
    for tid, summary in out.items():
        if summary.events == 0:
            continue
        head = await ledger.storage.events.head(tid)
        if head is not None:
            summary.head_seq, summary.head_hash = head["seq"], head["hash"]
            summary.last_activity = aware(head.get("created_at")) or summary.last_activity
    return out


async def iter_events(
    ledger: Ledger, thread_id: str, projection: Mapping[str, Any] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield a thread's own events in ``seq`` order, streamed in bounded batches, as stored."""
    async for doc in ledger.storage.events.stream(thread_id, projection=projection):
        yield doc
