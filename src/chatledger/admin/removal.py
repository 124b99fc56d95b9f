"""Removing whole lineages, resumably, with a receipt before and after.

Retention and erasure only decide *what* to remove (a list of :class:`Removal`);
this module does the removing, the same way for both:

1. re-read the lineage and refuse it if a hold appeared or a branch was added since
   the plan was made;
2. write a ``removal`` receipt (thread ids, head hashes, counts: never content);
3. delete, deepest branch first, each thread's events and then its document;
4. write a ``removal.completed`` receipt.

A crash between 2 and 4 leaves a receipt without completion; the next applied run
(:func:`resume_pending`) finishes it first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatledger.admin.catalog import Forest, ThreadActivity, ThreadFilter, load_forest
from chatledger.admin.receipts import COMPLETED, REMOVAL, pending_removals, record
from chatledger.ledger import Ledger

__all__ = [
    "Removal",
    "RemovalReport",
    "Skipped",
    "execute",
    "lineage_removal",
    "resume_pending",
    "select_lineages",
]


@dataclass(frozen=True, slots=True)
class Removal:
    """One lineage to remove: a thread and every branch that depends on it."""

    #: The top thread of the lineage.
    thread_id: str
    #: The thread and its descendants, parents first.
    thread_ids: tuple[str, ...]
    heads: tuple[ThreadActivity, ...]
    last_activity: datetime | None
    tenant_id: str | None = None
    user_id: str | None = None

    @property
    def events(self) -> int:
        """Events stored in the removed threads themselves (ancestors' are kept)."""
        return sum(h.events for h in self.heads)

    @property
    def messages(self) -> int:
        """Messages stored in the removed threads themselves."""
        return sum(h.messages for h in self.heads)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form."""
        return {
            "thread_id": self.thread_id,
            "thread_ids": list(self.thread_ids),
            "events": self.events,
            "messages": self.messages,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "last_activity": self.last_activity.isoformat() if self.last_activity else None,
        }


def lineage_removal(forest: Forest, activity: dict[str, ThreadActivity], thread_id: str) -> Removal:
    """Return the removal of ``thread_id`` with every branch that depends on it."""
    ids = tuple(forest.descendants(thread_id))
    heads = tuple(activity[t] for t in ids if t in activity)
    dates = [h.last_activity for h in heads if h.last_activity is not None]
    doc = forest.docs[thread_id]
    return Removal(
        thread_id,
        ids,
        heads,
        max(dates) if dates else None,
        tenant_id=doc.get("tenant_id"),
        user_id=doc.get("user_id"),
    )


@dataclass(frozen=True, slots=True)
class Skipped:
    """A lineage that was due for removal but was left alone, and why."""

    thread_id: str
    reason: str


@dataclass(slots=True)
class RemovalReport:
    """What a retention or erasure run planned, removed, skipped and resumed."""

    action: str
    dry_run: bool
    planned: list[Removal] = field(default_factory=list)
    #: Receipt ids of the removals done by this run.
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: Receipt ids of interrupted removals this run finished (or, dry, would finish).
    resumed: list[str] = field(default_factory=list)

    @property
    def threads(self) -> int:
        """Threads planned for removal."""
        return sum(len(r.thread_ids) for r in self.planned)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form."""
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "threads": self.threads,
            "events": sum(r.events for r in self.planned),
            "messages": sum(r.messages for r in self.planned),
            "planned": [r.to_dict() for r in self.planned],
            "removed_receipts": self.removed,
            "skipped": [{"thread_id": s.thread_id, "reason": s.reason} for s in self.skipped],
            "resumed_receipts": self.resumed,
        }


def select_lineages(
    report: RemovalReport, forest: Forest, due: set[str], lineages: Mapping[str, Removal]
) -> None:
    """Add to ``report`` the topmost lineages among ``due`` threads, or why each is skipped.

    A due thread whose parent is due and removable goes with the parent's lineage. A
    parent blocked by a hold elsewhere in its lineage does not block a due branch
    that no hold protects.
    """
    blocked: set[str] = set()
    for tid in sorted(due, key=lambda t: (forest.docs[t].get("depth") or 0, t)):
        parent = (forest.docs[tid].get("parent") or {}).get("thread_id")
        holder = forest.hold_blocks(tid)
        if parent in due and parent not in blocked:
            continue
        if holder is None:
            report.planned.append(lineages[tid])
            continue
        blocked.add(tid)
        if parent not in blocked:
            report.skipped.append(Skipped(tid, f"legal hold on thread {holder!r}"))


async def _purge(ledger: Ledger, thread_ids: Sequence[str]) -> tuple[int, int]:
    """Delete threads deepest first, events before documents; return (threads, events) deleted."""
    threads = events = 0
    for tid in reversed(thread_ids):
        events += await ledger.storage.events.delete_thread(tid)
        threads += await ledger.storage.threads.delete(tid)
        # An append racing the removal could have landed after the first sweep.
        events += await ledger.storage.events.delete_thread(tid)
    ledger.forget(thread_ids)
    return threads, events


async def _blocked(ledger: Ledger, removal: Removal) -> str | None:
    """Return why a planned removal must not go ahead now, or ``None``."""
    record = await ledger.storage.threads.get(removal.thread_id, scope=None)
    if record is None:
        return "already gone"
    forest: Forest = await load_forest(ledger, ThreadFilter(root_id=record.root_id), with_family=False)
    holder = forest.hold_blocks(removal.thread_id)
    if holder is not None:
        return f"legal hold on thread {holder!r}"
    if tuple(forest.descendants(removal.thread_id)) != removal.thread_ids:
        return "the lineage changed since it was planned (a new branch); run again"
    return None


async def execute(
    ledger: Ledger,
    report: RemovalReport,
    *,
    by: str,
    reason: str,
    scope: dict[str, Any],
    on_removal: Callable[[Removal], None] | None = None,
) -> RemovalReport:
    """Carry out ``report.planned`` unless ``report.dry_run``; return the report, completed.

    Interrupted removals from earlier runs are finished first.

    Args:
        ledger: Where to remove.
        report: The plan, from retention or erasure.
        by: Who acts (recorded in the receipts).
        reason: Why (recorded in the receipts).
        scope: The policy or filter that selected the threads (recorded in the receipts).
        on_removal: Called after each planned removal is handled (progress reporting).
    """
    report.resumed = await resume_pending(ledger, by=by, dry_run=report.dry_run)
    if report.dry_run:
        return report
    for removal in report.planned:
        why = await _blocked(ledger, removal)
        if why is not None:
            report.skipped.append(Skipped(removal.thread_id, why))
        else:
            receipt = await record(
                ledger,
                REMOVAL,
                by,
                action=report.action,
                reason=reason,
                scope=scope,
                thread_id=removal.thread_id,
                thread_ids=list(removal.thread_ids),
                heads=[h.receipt_entry() for h in removal.heads],
                counts={
                    "threads": len(removal.thread_ids),
                    "events": removal.events,
                    "messages": removal.messages,
                },
            )
            threads, events = await _purge(ledger, removal.thread_ids)
            await record(
                ledger,
                COMPLETED,
                by,
                receipt_id=receipt["_id"],
                deleted={"threads": threads, "events": events},
            )
            report.removed.append(str(receipt["_id"]))
        if on_removal is not None:
            on_removal(removal)
    report.planned = [r for r in report.planned if r.thread_id not in {s.thread_id for s in report.skipped}]
    return report


async def resume_pending(ledger: Ledger, *, by: str, dry_run: bool = False) -> list[str]:
    """Finish removals whose receipt has no completion; return their receipt ids.

    A removal that was started is finished even if a hold was set meanwhile: part of
    the lineage is already gone, and the receipt already says it was removed.
    """
    finished: list[str] = []
    for receipt in await pending_removals(ledger):
        if not dry_run:
            threads, events = await _purge(ledger, [str(t) for t in receipt.get("thread_ids") or ()])
            await record(
                ledger,
                COMPLETED,
                by,
                receipt_id=receipt["_id"],
                resumed=True,
                deleted={"threads": threads, "events": events},
            )
        finished.append(str(receipt["_id"]))
    return finished
