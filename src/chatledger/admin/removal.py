"""Removing whole lineages, safely while applications keep writing, without transactions.

Retention and erasure only decide *what* to remove (a list of :class:`Removal`); this
module does the removing, the same way for both. Nothing here needs a transaction: every
step is a single-document compare-and-set or an idempotent bulk update, and the unique
``(thread_id, seq)`` index does the rest.

1. **Claim** every thread of the lineage (``removing: <receipt id>``), a compare-and-set
   on the holds revision the plan saw. It fails if a hold was set or changed since the
   plan, or another run claimed the thread: the lineage is skipped, and exactly one run
   removes it. Once claimed, no hold can be set on the thread, and no writer can branch
   from it (the ledger checks before and after creating a branch).
2. Write the ``removal`` receipt (ids and planned heads: never content).
3. **Close** each thread with a closing mark at the position after its newest event (an
   append racing the mark lands first and the mark goes after it), and claim any branch
   created in the window: it goes with its parent.
4. **Hollow** every event in place: content, hashes and scope are stripped, the position
   stays, so a process holding any old cursor hits the unique index and gets
   :class:`~chatledger.errors.ThreadRemovedError`, never an acknowledgement.
5. **Tombstone** each thread document: only ``_id``, ``root_id`` and the receipt id stay,
   so the id can never be re-created and no stale writer can chain onto its hashes.
6. Write the ``removal.completed`` receipt with the final heads removed (an append that
   was acknowledged during the removal is accounted for here).

A crash anywhere leaves claims or a receipt without completion; the next applied run
(:func:`resume_pending`) re-plans against the current state (branches made meanwhile
included) and finishes it.

A run takes its lineages a short batch at a time, each step for the whole batch before
the next (:func:`_remove_batch`): every lineage still goes through the steps in order,
and the trees of a batch are read together rather than once per lineage.

The stores a removal works on are handed to it (:class:`RemovalPorts`): the entry points
(:func:`execute`, :func:`resume_pending`) are the only code here that opens a ledger's storage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

from chatledger.admin.catalog import Family, Forest, ThreadActivity, ThreadFilter, activity, family_chunks
from chatledger.admin.receipts import COMPLETED, REMOVAL, Receipts
from chatledger.errors import LegalHoldError
from chatledger.ledger import Ledger, storage_of
from chatledger.models import utc_now_ms
from chatledger.storage.documents import holds_of
from chatledger.storage.keys import KeyStore
from chatledger.storage.removals import LastPosition, RemovalMarks
from chatledger.storage.threads import ThreadStore

_T = TypeVar("_T")

__all__ = [
    "INTERRUPTED",
    "KEPT",
    "Removal",
    "RemovalPorts",
    "RemovalReport",
    "Skipped",
    "execute",
    "key_store_of",
    "lineage_removal",
    "plan_tree",
    "resume_pending",
    "select_lineages",
    "trees_to_plan",
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
    #: The holds revision of each thread when planned (claiming fails if it changed).
    holds_revs: tuple[int, ...] = ()

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


def key_store_of(ledger: Ledger, key_store: KeyStore | None) -> KeyStore | None:
    """Return the key store a removal's key step uses: ``key_store``, else the ledger's sealer's (or none)."""
    if key_store is None and ledger.sealer is not None:
        return ledger.sealer.key_store
    return key_store


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
        holds_revs=tuple(holds_of(forest.docs.get(t, {})).rev for t in ids),
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
    #: Receipt ids of the ``removal.kept`` receipts written for skipped lineages (applied runs).
    kept: list[str] = field(default_factory=list)
    #: Receipt ids of removals this run started and left half-done (it was interrupted).
    interrupted: list[str] = field(default_factory=list)
    #: An erasure's subject in words: every tenant of a user, or one (``None``: retention).
    covers: str | None = None
    #: Lineages left alone because a thread of them is damaged (a malformed stored
    #: event: its head cannot be read, so it cannot be judged or recorded); a problem.
    damaged: list[Skipped] = field(default_factory=list)

    @property
    def threads(self) -> int:
        """Threads planned for removal."""
        return sum(len(r.thread_ids) for r in self.planned)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form."""
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            **({"covers": self.covers} if self.covers is not None else {}),
            "threads": self.threads,
            "events": sum(r.events for r in self.planned),
            "messages": sum(r.messages for r in self.planned),
            "planned": [r.to_dict() for r in self.planned],
            "removed_receipts": self.removed,
            "skipped": [{"thread_id": s.thread_id, "reason": s.reason} for s in self.skipped],
            "resumed_receipts": self.resumed,
            "kept_receipts": self.kept,
            "interrupted_receipts": self.interrupted,
            "problems": [{"thread_id": s.thread_id, "reason": s.reason} for s in self.damaged],
        }


def set_aside_damaged(
    report: RemovalReport, forest: Forest, due: set[str], activity: Mapping[str, ThreadActivity]
) -> set[str]:
    """Return ``due`` without the threads whose lineage holds a damaged thread, reported in ``report``.

    A damaged thread (its newest event malformed) cannot be judged nor recorded in a
    receipt, so its lineage stays, named in the report's problems; every other due
    lineage (a branch of it included, if the branch is sound) goes on.
    """
    damaged = {tid: a.damaged for tid, a in activity.items() if a.damaged is not None}
    if not damaged:
        return due
    kept = set()
    looped = forest.looped()
    for tid in sorted(due):
        # A loop of parent links has no descendants to walk: select_lineages reports it.
        bad = None if tid in looped else next((d for d in forest.descendants(tid) if d in damaged), None)
        if bad is None:
            kept.add(tid)
        elif bad == tid:
            report.damaged.append(Skipped(tid, f"damaged: {damaged[bad]}"))
        else:
            report.damaged.append(Skipped(tid, f"its branch {bad!r} is damaged: {damaged[bad]}"))
    return kept


def select_lineages(
    report: RemovalReport, forest: Forest, due: set[str], removal_of: Callable[[str], Removal]
) -> None:
    """Add to ``report`` the topmost lineages among ``due`` threads, or why each is skipped.

    A due thread whose parent is due and removable goes with the parent's lineage. A
    parent blocked by a hold elsewhere in its lineage does not block a due branch
    that no hold protects. ``removal_of`` builds the removal of a planned lineage (only
    those are built: building one per due thread costs a deep chain its size squared).
    """
    blocked: set[str] = set()
    looped = forest.looped()
    for tid in sorted(due, key=lambda t: (forest.docs[t].get("depth") or 0, t)):
        if tid in looped:
            # No thread of a loop is the top of its lineage: skipping silently would report
            # success having removed nothing. Say so instead (exit 1).
            blocked.add(tid)
            report.skipped.append(
                Skipped(tid, "its parent links loop back on themselves (tampering: run chatledger verify)")
            )
            continue
        parent = (forest.docs[tid].get("parent") or {}).get("thread_id")
        holder = forest.hold_blocks(tid)
        if parent in due and parent not in blocked:
            continue
        if holder is None:
            report.planned.append(removal_of(tid))
            continue
        blocked.add(tid)
        if parent not in blocked:
            report.skipped.append(Skipped(tid, f"legal hold on thread {holder!r}"))


def plan_tree(
    report: RemovalReport, forest: Forest, due: set[str], activity: dict[str, ThreadActivity]
) -> None:
    """Add to ``report`` the lineages to remove among one tree's ``due`` threads.

    Lineages holding a damaged thread are set aside first (:func:`set_aside_damaged`),
    then the topmost removable lineages are planned (:func:`select_lineages`).
    """
    due = set_aside_damaged(report, forest, due, activity)
    select_lineages(report, forest, due, partial(lineage_removal, forest, activity))


async def trees_to_plan(
    ledger: Ledger, thread_filter: ThreadFilter | None
) -> AsyncGenerator[tuple[list[Family], dict[str, ThreadActivity]], None]:
    """Yield the filter's conversation trees, whole, a chunk at a time, with every thread's activity.

    What a plan needs and no more (the thread documents without their metadata); memory
    is bounded by a chunk, whatever the number of threads.
    """
    async for chunk in family_chunks(ledger, thread_filter, whole=True, view="plan"):
        merged = Forest()
        for family in chunk:
            merged.docs.update(family.forest.docs)
        yield chunk, await activity(ledger, merged)


#: Why a thread was not claimed: it is a tombstone (or gone) already.
_GONE = "already removed"

#: How long a removal may run before another run treats it as interrupted and finishes it.
RESUME_AFTER = timedelta(minutes=5)
#: Receipt of a lineage an applied run left alone, and why (a legal hold, another run).
KEPT = "removal.kept"
#: Receipt a run writes when it is stopped (Ctrl-C) part-way through a removal: it gives
#: up its ownership at once, so the next run finishes the removal without waiting
#: :data:`RESUME_AFTER` for a removal that might still be live.
INTERRUPTED = "removal.interrupted"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RemovalPorts:
    """What a removal works on: the threads, the removal marks, the audit trail, the ledger's cache."""

    threads: ThreadStore
    marks: RemovalMarks
    receipts: Receipts
    #: Drops removed threads from the ledger's cache (:meth:`Ledger.forget`).
    forget: Callable[[list[str]], None]

    @classmethod
    def of(cls, ledger: Ledger) -> RemovalPorts:
        """Return the ports of ``ledger`` (the entry points' one door to its storage)."""
        storage = storage_of(ledger)
        return cls(storage.threads, storage.removals, Receipts(storage.receipts), ledger.forget)


#: At most this many events of a thread are hollowed one ``_id`` update each (see
#: ``_Run.hollow``); a longer thread is hollowed by one update of the whole thread.
KEYED_HOLLOW_MAX: Final = 32


async def _to_the_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to its end even when the caller is cancelled meanwhile, then pass the cancel on.

    The cancelled caller then knows exactly what ``work`` did (and can undo it), which it
    would not if the cancel cut ``work`` off between a write and the note that it was made.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        if not task.cancelled():
            # Retrieved, not raised: a write that failed after the Ctrl-C does not take the
            # cancel's place; the caller gives up, reading from the database what exists.
            task.exception()
        raise


#: At most this many lineages are removed side by side (see :func:`_remove_batch`).
BATCH_MAX: Final = 64
#: A run's first batch: one lineage, until the server's speed is known.
BATCH_FIRST: Final = 1
#: How long a batch of lineages aims to take: far below :data:`RESUME_AFTER`, so no other
#: run ever takes a lineage waiting in a live batch for an interrupted removal.
BATCH_SECONDS: Final = 20.0


def _work(removal: Removal) -> int:
    """What removing a lineage costs, roughly: a few writes per thread and one per event."""
    return 8 * len(removal.thread_ids) + removal.events


def _batches(planned: list[Removal]) -> Generator[list[Removal], float, None]:
    """Yield the planned lineages a batch at a time; each ``send`` says how long the last one took.

    The first batch is :data:`BATCH_FIRST` lineages; each next one holds the work the
    server did in :data:`BATCH_SECONDS` at the last batch's pace (:func:`_work`), at most
    twice the last batch's, at least one lineage and at most :data:`BATCH_MAX`.
    """
    start, size = 0, BATCH_FIRST
    budget: float | None = None
    while start < len(planned):
        end, work = start, 0
        while end < len(planned) and end - start < BATCH_MAX:
            work += _work(planned[end])
            if end > start and (end - start >= size if budget is None else work > budget):
                break
            end += 1
        batch = planned[start:end]
        seconds = yield batch
        start = end
        done = sum(_work(r) for r in batch)
        pace = done / seconds if seconds > 0 else float("inf")
        budget = min(2 * done, pace * BATCH_SECONDS)


class _Run:
    """One removal (one receipt id) carried out step by step; every step can be repeated."""

    def __init__(
        self, ports: RemovalPorts, receipt_id: str, planned: tuple[ThreadActivity, ...] = ()
    ) -> None:
        self.ports = ports
        self.receipt_id = receipt_id
        self.threads = ports.threads
        self.marks = ports.marks
        #: Claimed thread id -> its root id, in claim order (parents before branches).
        self.claimed: dict[str, str] = {}
        self.heads: dict[str, dict[str, Any]] = {}
        #: Each planned thread's events as the plan read them (a resumed run has none):
        #: where its newest position was, so this run reads the rest by key.
        self.planned = {a.thread_id: a for a in planned if a.damaged is None}
        #: Thread id -> (fork point, position of its closing mark), once closed by this run.
        self.closed: dict[str, tuple[int, int]] = {}
        #: Threads this run marked ``removing`` itself (a resumed run marks its claims again).
        self.marked: set[str] = set()
        #: How the lineage ended: ``None`` while in progress, ``""`` removed (or aborted by a
        #: hold, as its completion receipt says), else why it was left alone.
        self.why: str | None = None

    async def claim(self, removal: Removal) -> str | None:
        """Claim every planned thread; on failure release them and return why."""
        revs = removal.holds_revs or (0,) * len(removal.thread_ids)
        for tid, rev in zip(removal.thread_ids, revs, strict=True):
            why = await self._claim(tid, rev)
            if why == _GONE and tid != removal.thread_id:
                # A branch already gone: its writer removed it on seeing the parent
                # claimed (Ledger's check after branching). Nothing of it is left to
                # remove, and nothing protects it: the lineage goes on without it.
                await self._drop(tid)
                continue
            if why is not None:
                await self.release()
                return why
        return None

    async def _claim(self, thread_id: str, holds_rev: int) -> str | None:
        """Claim one thread; return why not (the claim may still be held: see :meth:`release`)."""
        live = await self.threads.live(thread_id)
        if live is None:
            return _GONE
        # Ctrl-C while the claim is on the wire must not leave a claim this run does not
        # know it holds (the write lands anyway; a give-up would then not release it, and
        # the next run would take it for a live removal): the claim runs to its end first.
        why = await _to_the_end(self._take(thread_id, live.root_id))
        if why is not None:
            return why
        # Read the holds again AFTER claiming: a hold writer reads the claim after
        # writing, so of two racing operators at least one sees the other, and backs off.
        live = await self.threads.live(thread_id)
        if live is None:
            return _GONE
        if live.holds.rev != holds_rev or live.holds.held:
            return f"the legal holds of thread {thread_id!r} changed since the plan was made (a hold was set)"
        return None

    async def _take(self, thread_id: str, root: str) -> str | None:
        """Take the claim on one thread and mark it; remember it as claimed, or return why not."""
        if not await self.marks.claim(thread_id, self.receipt_id, root):
            if await self.marks.claim_of(thread_id) == self.receipt_id:
                self.claimed[thread_id] = root  # ours already (a resumed run)
                return None
            return "being removed by another run"
        self.claimed[thread_id] = root
        await self.threads.mark_removing(thread_id, self.receipt_id)
        self.marked.add(thread_id)
        return None

    async def _drop(self, thread_id: str) -> None:
        """Let go of one thread (its claim, if taken): it needs no removal."""
        if self.claimed.pop(thread_id, None) is not None:
            await self.threads.unmark_removing(thread_id, self.receipt_id)
            await self.marks.release_claim(thread_id, self.receipt_id)

    async def release(self) -> None:
        """Let go of every thread claimed so far."""
        for tid in self.claimed:
            await self.threads.unmark_removing(tid, self.receipt_id)
            await self.marks.release_claim(tid, self.receipt_id)
        self.claimed.clear()

    async def adopt(self, family: Forest | None = None) -> str | None:
        """Claim live branches of claimed threads (made in the window); return why not, if a hold blocks.

        Args:
            family: The claimed trees' thread documents, read after every claim and mark
                of this run (a batch reads its lineages' trees in one pass: see
                :func:`_remove_batch`); ``None``: read here. After claiming a branch, the
                trees are read again (a branch of that branch may have been made before
                its mark).
        """
        while True:
            if family is None:
                family = await _family(self.threads, [self])
            # Descent from the parent links of the whole family (a deep branch's stored
            # lineage lists only its nearest ancestors), in one pass over the children.
            below: set[str] = set()
            stack = list(self.claimed)
            while stack:
                for child in family.children.get(stack.pop(), ()):
                    if child not in below:
                        below.add(child)
                        stack.append(child)
            new = [family.docs[tid] for tid in below if tid not in self.claimed]
            family = None
            if not new:
                return None
            for doc in sorted(new, key=lambda d: (d.get("depth") or 0, str(d["_id"]))):
                tid = str(doc["_id"])
                holds = holds_of(doc)
                if holds.held:
                    return f"legal hold on branch {tid!r}, made during the removal"
                why = await self._claim(tid, holds.rev)
                if why == _GONE:
                    # Its writer saw the parent claimed and removed the branch itself (a
                    # race the ledger resolves that way): not a reason to keep the lineage.
                    await self._drop(tid)
                    continue
                if why is not None:
                    return f"branch {tid!r}, made during the removal: {why}"

    async def close(self, thread_id: str) -> None:
        """Put a closing mark after a claimed thread's newest event; remember the final head removed."""
        if thread_id in self.closed:
            return  # closed by this run already: nothing can be appended after the mark
        while True:
            record = await self.threads.get(thread_id, scope=None)
            base = record.base_offset if record is not None else 0
            last = await self._last(thread_id, base)
            if last is not None and last.closed:
                if last.seq is not None:
                    self.closed[thread_id] = (base, last.seq)
                break
            seq = last.seq + 1 if last is not None and last.seq is not None else base + 1
            if last is not None and not last.removed:
                self.heads[thread_id] = {"thread_id": thread_id, "head_seq": last.seq, "head_hash": last.hash}
            if await self.marks.close(thread_id, seq, self.claimed[thread_id]):
                self.closed[thread_id] = (base, seq)
                break

    async def _last(self, thread_id: str, base: int) -> LastPosition | None:
        """Return a thread's newest position: by key after the plan's head, or by the exact query."""
        planned = self.planned.get(thread_id)
        if planned is None:
            return await self.marks.last(thread_id)  # a resumed run or a late branch: no plan
        if not planned.events:
            return await self.marks.last_after(thread_id, base, None)
        known = LastPosition(planned.head_seq, planned.head_hash, removed=False, closed=False)
        return await self.marks.last_after(thread_id, planned.head_seq, known)

    async def hollow(self, thread_id: str) -> int:
        """Hollow a closed thread's events; return how many.

        By key when the plan saw the thread's events as the unbroken run after its fork
        point (so every live event lies between the fork point and the closing mark) and
        the keyed update hollowed exactly the events the plan and the appends since make;
        otherwise (and on any difference) every live event of the thread, as before. Only
        up to :data:`KEYED_HOLLOW_MAX` events go by key: each is a round trip, where the
        thread-wide update is one (an index range on a server with indexes; a scan of the
        collection on FerretDB v1, which is what the keyed path spares short threads).
        """
        planned, closed = self.planned.get(thread_id), self.closed.get(thread_id)
        if planned is not None and closed is not None:
            base, mark = closed
            newest = planned.head_seq if planned.events else base
            expected = planned.events + (mark - 1 - newest)
            if mark - 1 - base == expected and expected <= KEYED_HOLLOW_MAX:
                hollowed = await self.marks.hollow_positions(thread_id, base + 1, mark - 1)
                if hollowed == expected:
                    return hollowed
                return hollowed + await self.marks.hollow_thread(thread_id)
        return await self.marks.hollow_thread(thread_id)

    async def close_claimed(self) -> None:
        """Mark (a resumed run's claims) and close every claimed thread; repeating it does nothing."""
        for tid in list(self.claimed):
            if tid not in self.marked:
                await self.threads.mark_removing(tid, self.receipt_id)  # again: a resumed run
                self.marked.add(tid)
            await self.close(tid)

    async def finish(self, family: Forest | None = None) -> tuple[int, int]:
        """Close, adopt late branches, hollow and tombstone; return (threads, events) removed.

        Args:
            family: The claimed trees, read after :meth:`close_claimed` (``None``: read here).
        """
        await self.close_claimed()
        why = await self.adopt(family)  # branches that passed the ledger's check just before the claim
        if why is not None:
            raise LegalHoldError(why)
        for tid in list(self.claimed):
            await self.close(tid)
        events = threads = 0
        for tid in list(self.claimed):
            events += await self.hollow(tid)
        for tid in reversed(list(self.claimed)):
            threads += await self.threads.tombstone(tid, self.claimed[tid], self.receipt_id, utc_now_ms())
        self.ports.forget(list(self.claimed))
        return threads, events


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
    ports = RemovalPorts.of(ledger)
    await _resume(ports, by=by, dry_run=report.dry_run, report=report)
    if report.dry_run:
        return report
    gone: set[str] = set()
    batches = _batches(list(report.planned))
    batch = next(batches, None)
    while batch is not None:
        runs = [_Run(ports, uuid.uuid4().hex, removal.heads) for removal in batch]
        began = time.monotonic()
        try:
            await _remove_batch(runs, batch, report, by=by, reason=reason, scope=scope, on_removal=on_removal)
        except asyncio.CancelledError:
            # Every lineage of the batch not handled yet: claimed, recorded or half-removed.
            await _give_up([run for run in runs if run.why is None], report, by)
            raise
        for removal, run in zip(batch, runs, strict=True):
            if run.why == _GONE:
                # Removed meanwhile: by an interrupted removal this run just finished
                # (resume_pending, above), or by another run. Gone is what was asked.
                gone.add(removal.thread_id)
            elif run.why:
                report.skipped.append(Skipped(removal.thread_id, run.why))
        try:
            batch = batches.send(time.monotonic() - began)
        except StopIteration:
            batch = None
    skipped = {s.thread_id for s in report.skipped} | gone
    report.planned = [r for r in report.planned if r.thread_id not in skipped]
    for kept in report.skipped:
        # Every applied run leaves a complete record: what it kept, and why, too.
        receipt = await ports.receipts.record(
            KEPT,
            by,
            action=report.action,
            reason=reason,
            scope=scope,
            thread_id=kept.thread_id,
            why=kept.reason,
        )
        report.kept.append(str(receipt["_id"]))
    return report


async def _give_up(runs: list[_Run], report: RemovalReport, by: str) -> None:
    """Leave interrupted removals so that the next run finishes them at once.

    Claims without a receipt are released (nothing was removed yet). A removal whose
    receipt is written is marked interrupted (``removal.interrupted``): this process no
    longer owns it, so the next run need not wait :data:`RESUME_AFTER` to finish it.
    """
    if not runs:
        return
    receipts = runs[0].ports.receipts
    # The kinds of each removal's own receipt and of those that refer to it, in one read.
    kinds: dict[str, set[str]] = {run.receipt_id: set() for run in runs}
    for receipt in await receipts.for_ids(list(kinds)):
        for key in {receipt.get("_id"), receipt.get("receipt_id")}:
            if isinstance(key, str) and key in kinds:
                kinds[key].add(str(receipt.get("kind")))
    for run in runs:
        found = kinds[run.receipt_id]
        if COMPLETED in found:
            report.removed.append(run.receipt_id)  # done; a left claim is released by the next run
        elif found:
            await receipts.record(INTERRUPTED, by, receipt_id=run.receipt_id)
            report.interrupted.append(run.receipt_id)
        else:
            await run.release()


async def _family(threads: ThreadStore, runs: list[_Run]) -> Forest:
    """Return the thread documents of every tree the runs claimed threads of (one pass for them all)."""
    family = Forest()
    roots = sorted({root for run in runs for root in run.claimed.values()})
    if roots:
        for doc in await threads.family(roots):
            family.add(doc)
    return family


async def _remove_batch(
    runs: list[_Run],
    batch: list[Removal],
    report: RemovalReport,
    *,
    by: str,
    reason: str,
    scope: dict[str, Any],
    on_removal: Callable[[Removal], None] | None,
) -> None:
    """Claim and remove planned lineages side by side; set each run's ``why`` (``""``: removed).

    Every lineage goes through the protocol's steps in their order (claim, adopt, receipt,
    close, adopt again, hollow, tombstone, completion), so what a crash or a Ctrl-C
    between any two writes leaves of a lineage is what it left before. Only the steps
    are taken a batch at a time: the trees of the batch are read once after all its
    claims (instead of once per lineage: a read by ``root_id``, which a server without
    indexes, FerretDB v1, answers by scanning the threads), and once more after all its
    closing marks. Each read comes after the marks of every run it serves, which is all
    :meth:`_Run.adopt` needs. A batch is kept short in time (:func:`_next_batch`).
    """
    pending: list[_Run] = []
    for run, removal in zip(runs, batch, strict=True):
        why = await run.claim(removal)
        if why is not None:
            run.why = why
        else:
            pending.append(run)
    family = await _family(runs[0].threads, pending)
    for run in list(pending):
        why = await run.adopt(family)
        if why is not None:
            await run.release()
            run.why = why
            pending.remove(run)
    for run, removal in zip(runs, batch, strict=True):
        if run in pending:
            # Written to the end even on Ctrl-C, so the give-up knows whether it exists.
            await _to_the_end(
                run.ports.receipts.record(
                    REMOVAL,
                    by,
                    _id=run.receipt_id,
                    action=report.action,
                    reason=reason,
                    scope=scope,
                    thread_id=removal.thread_id,
                    thread_ids=list(run.claimed),
                    heads=[h.receipt_entry() for h in removal.heads],
                    counts={
                        "threads": len(removal.thread_ids),
                        "events": removal.events,
                        "messages": removal.messages,
                    },
                )
            )
    for run in pending:
        await run.close_claimed()
    family = await _family(runs[0].threads, pending)
    for run, removal in zip(runs, batch, strict=True):
        if run in pending:
            await _complete(run, by, family=family)
            report.removed.append(run.receipt_id)
            run.why = ""
        if on_removal is not None:
            on_removal(removal)


async def _complete(run: _Run, by: str, *, family: Forest | None = None, **extra: Any) -> None:
    receipts = run.ports.receipts
    try:
        threads, events = await run.finish(family)
    except LegalHoldError as e:
        # A hold on a branch made during the removal wins: nothing more is removed, and
        # the receipt says so. Closed threads stay closed (no writes) until removed.
        await run.release()
        await receipts.record(COMPLETED, by, receipt_id=run.receipt_id, aborted=str(e), **extra)
        return
    await receipts.record(
        COMPLETED,
        by,
        receipt_id=run.receipt_id,
        thread_ids=list(run.claimed),
        heads=list(run.heads.values()),
        deleted={"threads": threads, "events": events},
        **extra,
    )
    for tid in run.claimed:
        await run.marks.release_claim(tid, run.receipt_id)


async def resume_pending(ledger: Ledger, *, by: str, dry_run: bool = False) -> list[str]:
    """Finish removals that were interrupted (a receipt without completion, or claims without a receipt).

    The removal is re-planned against the current state: branches made since it was
    interrupted go with their parent. Returns the receipt ids finished (or, dry, to finish).
    """
    return await _resume(RemovalPorts.of(ledger), by=by, dry_run=dry_run)


async def _resume(
    ports: RemovalPorts, *, by: str, dry_run: bool, report: RemovalReport | None = None
) -> list[str]:
    # ``report`` is filled as the run goes (its ``resumed``, and ``interrupted`` for the one a
    # Ctrl-C stops half-way), so an interrupted run still says what it finished.
    # A removal younger than RESUME_AFTER may still be running in another process: it is
    # left to that run (taking it over would race it). Older ones were interrupted.
    cutoff = datetime.now(UTC) - RESUME_AFTER
    # ... unless the run that owned it said it stopped (an interrupt it survived).
    given_up = {str(r) for r in await ports.receipts.referred_ids(INTERRUPTED)}
    started = {str(r["_id"]): r for r in await ports.receipts.pending_removals()}
    claims = await ports.marks.claims()
    finished: list[str] = report.resumed if report is not None else []
    for receipt_id in sorted(set(started) | set(claims)):
        receipt = started.get(receipt_id)
        mine = claims.get(receipt_id, [])
        if receipt is None and await ports.receipts.completed(receipt_id):
            if not dry_run:  # finished, but interrupted before its claims were released
                for tid, _, _ in mine:
                    await ports.marks.release_claim(tid, receipt_id)
            continue
        when = (
            receipt.get("at") if receipt is not None else min((at for _, _, at in mine if at), default=None)
        )
        if isinstance(when, datetime) and _aware(when) > cutoff and receipt_id not in given_up:
            continue
        if dry_run:
            finished.append(receipt_id)
            continue
        run = _Run(ports, receipt_id)
        for tid, root, _ in mine:
            run.claimed[tid] = root
        try:
            if receipt is None:
                # Claimed, then interrupted before the receipt was written: write it now
                # (to the end even on Ctrl-C, so the give-up below refers to a receipt).
                await _to_the_end(
                    ports.receipts.record(
                        REMOVAL, by, _id=receipt_id, action="resumed", thread_ids=list(run.claimed)
                    )
                )
            await _complete(run, by, resumed=True)
        except asyncio.CancelledError:
            # Ctrl-C while finishing it: say this run stopped, or the next would take the
            # receipt just written for a live removal and wait RESUME_AFTER to finish it.
            if receipt_id not in given_up and not await ports.receipts.completed(receipt_id):
                await ports.receipts.record(INTERRUPTED, by, receipt_id=receipt_id)
            if report is not None:
                report.interrupted.append(receipt_id)
            raise
        finished.append(receipt_id)
    return finished
