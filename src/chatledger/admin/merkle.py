"""The operator's side of the Merkle log: sequencing, signed checkpoints, and proofs.

One RFC 6962 log per tenant (log id ``tenant:<T>``) and one for events without a tenant
(``default``). The log order is the order in which the sequencer appended the leaves,
recorded forever in the ``log_entries`` collection under ``(log, index)``: each run
reads the scope's live events in ``_id`` order in batches, keeps those without a leaf,
and appends them sorted by ``(thread_id, seq)``. Appends never wait for it: an event is
covered by the first checkpoint after the sequencer saw it.

Branch events are events like any other (a branch's own events get their own leaves;
the events it shares with its parent are the parent's leaves). A removed event keeps
its leaf: the leaf holds the event's hash and message digests, so its inclusion still
proves, without its content. Schema-1 events carry no tenant and go to the default log.

The default log also takes the audit receipts as leaves, so that a receipt proves on
its own (:func:`prove_receipt`) and an edited or deleted receipt is caught by the next
run. Each event a run sequences must follow its predecessor (in the batch, in the log
or still stored): an event deleted before it was sequenced, with a later one of its
thread surviving, is caught; a full run also finds sequenced events deleted since. A
tail or a whole thread deleted before any run saw it leaves nothing to compare with.

Resumable: a killed run leaves leaves without their tree nodes; the next run rebuilds
the nodes from the last recorded head (idempotent writes). Two sequencers racing
cannot corrupt the log: an index or an event is taken once (unique indexes), and the
loser reads what the winner wrote and carries on after it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from chatledger import proofs
from chatledger.admin.catalog import as_ledger, validate_name
from chatledger.admin.receipts import HOLD_RELEASED, HOLD_SET
from chatledger.codec import canonical_json_bytes
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError
from chatledger.hashing import _digested, epoch_ms, event_hash
from chatledger.ledger import storage_of
from chatledger.models import validate_thread_id
from chatledger.storage.documents import check_event, holds_of
from chatledger.storage.events import event_key
from chatledger.storage.merkle import MerkleStore, Node

__all__ = [
    "DEFAULT_LOOKBACK",
    "DEFAULT_SEQUENCE_BATCH",
    "HOLD_SETTLE_SECONDS",
    "CheckpointResult",
    "SequenceReport",
    "audit_findings",
    "checkpoint",
    "count_log_events",
    "default_origin",
    "log_id",
    "prove_consistency",
    "prove_event",
    "prove_receipt",
    "receipt_digest",
    "sequence",
]

#: Events read, checked and appended per batch: memory stays bounded whatever the backlog.
DEFAULT_SEQUENCE_BATCH: Final = 1000
#: How late a writer may commit an event after stamping it (its append's duration plus
#: its clock's lag behind the sequencer's) and still be sequenced by a routine run.
DEFAULT_LOOKBACK: Final = timedelta(minutes=10)


def log_id(tenant: str | None) -> str:
    """Return the id of a tenant's log (``None``: the default scope's log)."""
    return "default" if tenant is None else f"tenant:{validate_name('tenant', tenant)}"


def default_origin(database: str, tenant: str | None) -> str:
    """Return the origin a log's checkpoints carry unless one is chosen: ``chatledger/<db>[/tenant/<T>]``."""
    base = f"chatledger/{quote(database, safe='')}"
    return base if tenant is None else f"{base}/tenant/{quote(tenant, safe='')}"


def _pieces(lo: int, hi: int) -> list[Node]:
    """The complete subtrees, largest first, that make up leaves ``[lo, hi)`` (``lo`` aligned)."""
    out: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo % (1 << level):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees, largest first (RFC 9162's right-leaning shape)."""
    if not hashes:
        return proofs.EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = proofs.node_hash(h, root)
    return root


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The ranges whose MTH make up PATH(m, D[lo:hi]) (RFC 9162 §2.1.3.1)."""
    if hi - lo <= 1:
        return []
    k = lo + _split(hi - lo)
    if m < k:
        return [*_inclusion_ranges(m, lo, k), (k, hi)]
    return [*_inclusion_ranges(m, k, hi), (lo, k)]


def _consistency_ranges(m: int, lo: int, hi: int, complete: bool) -> list[tuple[int, int]]:
    """The ranges whose MTH make up SUBPROOF(m, D[lo:hi], complete) (RFC 9162 §2.1.4.1)."""
    if m == hi:
        return [] if complete else [(lo, hi)]
    k = lo + _split(hi - lo)
    if m <= k:
        return [*_consistency_ranges(m, lo, k, complete), (k, hi)]
    return [*_consistency_ranges(m, k, hi, False), (lo, k)]


async def _range_hashes(store: MerkleStore, log: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTH of each range, from the stored subtrees: O(log² n) nodes, read in two queries."""
    pieces = {r: _pieces(*r) for r in ranges}
    found = await store.hashes(log, [p for ps in pieces.values() for p in ps])
    return [_fold([found[p] for p in pieces[r]]) for r in ranges]


class _Frontier:
    """The log's right edge: the hashes of the complete subtrees of ``[0, size)``, largest first."""

    def __init__(self, store: MerkleStore, log: str) -> None:
        self.store = store
        self.log = log
        self.size = 0
        self.stack: list[tuple[int, int, bytes]] = []  # (level, index, hash)

    @classmethod
    async def load(cls, store: MerkleStore, log: str) -> _Frontier:
        """Return the frontier at the last recorded head, caught up with every leaf stored since."""
        frontier = cls(store, log)
        head = await store.latest(log)
        if head is not None:
            size = int(head["size"])
            pieces = _pieces(0, size)
            found = await store.hashes(log, pieces)
            frontier.stack = [(level, i, found[(level, i)]) for level, i in pieces]
            frontier.size = size
            if frontier.root() != bytes.fromhex(str(head["hash"])):
                raise IntegrityError(
                    f"log {log!r}: the stored tree no longer gives its recorded root at size {size}"
                )
        await frontier.catch_up()
        return frontier

    def root(self) -> bytes:
        return _fold([h for _, _, h in self.stack])

    def _push(self, index: int, leaf: bytes, nodes: list[tuple[Node, bytes]]) -> None:
        self.stack.append((0, index, leaf))
        while len(self.stack) >= 2 and self.stack[-1][0] == self.stack[-2][0]:
            level, _, right = self.stack.pop()
            _, left_index, left = self.stack.pop()
            node, merged = (level + 1, left_index // 2), proofs.node_hash(left, right)
            self.stack.append((*node, merged))
            nodes.append((node, merged))
        self.size = index + 1

    async def catch_up(self) -> None:
        """Take in leaves stored after ``size`` (a killed run's, a racer's), writing their nodes."""
        nodes: list[tuple[Node, bytes]] = []
        async for index, leaf in self.store.leaves(self.log, self.size):
            if index != self.size:
                raise IntegrityError(f"log {self.log!r} has no leaf {self.size} but has leaf {index}")
            self._push(index, leaf, nodes)
            if len(nodes) >= DEFAULT_SEQUENCE_BATCH:
                await self.store.put_nodes(self.log, nodes)
                nodes = []
        await self.store.put_nodes(self.log, nodes)

    async def append(self, leaves: list[dict[str, Any]]) -> int:
        """Append leaves after the right edge; return how many this run added (a racer may add others)."""
        added = 0
        while leaves:
            taken = await self.store.append(self.log, self.size, leaves)
            nodes: list[tuple[Node, bytes]] = []
            for leaf in leaves[:taken]:
                self._push(self.size, bytes.fromhex(leaf["hash"]), nodes)
            await self.store.put_nodes(self.log, nodes)
            added += taken
            leaves = leaves[taken:]
            if leaves:  # another sequencer got there first: follow it, drop what it sequenced
                await self.catch_up()
                done = await self.store.sequenced(self.log, [leaf["event"] for leaf in leaves])
                leaves = [leaf for leaf in leaves if leaf["event"] not in done]
        return added


@dataclass(frozen=True, slots=True)
class SequenceReport:
    """What a sequencing run did."""

    log: str
    size_before: int
    size: int
    added: int
    #: Root hash of the tree of ``size`` leaves, hex.
    root: str

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (every field, in order)."""
        return asdict(self)


def _leaf_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The log entry for one stored event, after checking the event against its own hash."""
    event = check_event(doc)
    key = str(event.get("_id"))
    prev = event.get("prev_hash")
    if type(prev) is not str or event_hash(prev, event) != event["hash"]:
        raise IntegrityError(
            f"event {key!r} does not match its own hash: it was altered after it was written "
            "(run 'chatledger verify'); nothing from its batch was sequenced"
        )
    created = event.get("created_at")
    if not isinstance(created, datetime):
        raise IntegrityError(f"event {key!r} has no creation time")
    tenant = event.get("tenant_id")
    data = proofs.leaf_data(
        tenant=tenant if type(tenant) is str else None,
        thread=event["thread_id"],
        seq=event["seq"],
        event_hash=event["hash"],
        prev_hash=prev,
        created_at=epoch_ms(created),
        message_digests=[proofs.message_digest(_canonical_message(m)) for m in event["messages"]],
    )
    return {
        "event": key,
        "thread_id": event["thread_id"],
        "seq": event["seq"],
        # Not hashed: lets the next run find this run's recent leaves by time.
        "created_at": created,
        "hash": proofs.leaf_hash(data).hex(),
        "data": data.decode("ascii"),
    }


def _canonical_message(message: Mapping[str, Any]) -> bytes:
    """A stored message's canonical bytes as its leaf digests them (a ciphertext by its digest)."""
    return canonical_json_bytes(_digested(message))


def _leaf_field(data: str | bytes, name: str, kind: type, what: str) -> Any:
    """One field of a leaf's text as the log stores it; text the sequencer never wrote is a damaged log."""
    try:
        fields = json.loads(data)
    except ValueError:
        fields = None
    value = fields.get(name) if type(fields) is dict else None
    if type(value) is not kind:
        raise IntegrityError(f"{what}: its leaf in the log is malformed (the log was altered)")
    return value


def _store(target: Any) -> MerkleStore:
    return MerkleStore.of(storage_of(as_ledger(target)))


async def _window(store: MerkleStore, log: str, lookback: timedelta) -> datetime | None:
    """The creation time from which a run must read events, or ``None``: a full sweep is due.

    The latest head's watermark is the start of the run that wrote it; every event
    committed before then is in the log. An event committed later but stamped earlier
    (a slow writer, a skewed clock) still has a creation time after ``watermark -
    lookback`` as long as its writer was less than ``lookback`` late.
    """
    head = await store.latest(log)
    mark = head.get("watermark") if head is not None else None
    if not isinstance(mark, datetime):
        return None  # a new log, or one sequenced before watermarks: read every event once
    return (mark if mark.tzinfo is not None else mark.replace(tzinfo=UTC)) - lookback


async def count_log_events(
    target: Any, *, tenant: str | None = None, full: bool = False, lookback: timedelta | None = None
) -> int:
    """Return how many events :func:`sequence` will look at, with the same arguments (a progress total)."""
    log = log_id(tenant)
    store = _store(target)
    await store.ensure_indexes()  # the reads below name their indexes
    since = None if full else await _window(store, log, _lookback(lookback))
    return await (store.count_events(tenant) if since is None else store.count_since(tenant, since))


def _lookback(value: timedelta | None) -> timedelta:
    if value is None:
        return DEFAULT_LOOKBACK
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidInputError("lookback must be a non-negative timedelta")
    return value


async def sequence(
    target: Any,
    *,
    tenant: str | None = None,
    batch: int = DEFAULT_SEQUENCE_BATCH,
    on_progress: Callable[[int], object] | None = None,
    full: bool = False,
    lookback: timedelta | None = None,
) -> SequenceReport:
    """Append every live event of a scope that has no leaf yet to the scope's log.

    Safe to run on a schedule, to kill and re-run, and to run twice at once. A run reads
    only the events created since the previous completed run started, less ``lookback``
    (its cost follows the backlog, not the log); the first run of a log, and a ``full``
    one, read every event of the scope once.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        tenant: The tenant whose log to extend; ``None``: the default scope's.
        batch: Events per batch (memory is bounded by it).
        on_progress: Called with the number of events looked at after each batch.
        full: Read every event of the scope, not only the recent ones: for an event whose
            writer was later than ``lookback`` (its append took that long, or its clock
            was that far behind).
        lookback: How late a writer may be (default :data:`DEFAULT_LOOKBACK`): an event
            stamped this long before the previous run started is still looked for.

    Raises:
        IntegrityError: an event does not match its own hash, or the log was altered.
        InvalidInputError: a bad tenant, batch size or lookback.
    """
    if type(batch) is not int or not 1 <= batch <= 10_000:
        raise InvalidInputError("batch must be an int from 1 to 10000")
    log = log_id(tenant)
    window = _lookback(lookback)
    store = _store(target)
    # Taken before anything is read: every event committed before this instant is read below.
    started = datetime.now(UTC)
    await store.ensure_indexes()
    since = None if full else await _window(store, log, window)
    frontier = await _Frontier.load(store, log)
    before, added = frontier.size, 0
    # More leaves than the frontier knows is a racing sequencer; fewer, a deletion.
    if (held := await store.count_leaves(log)) < frontier.size:
        raise IntegrityError(
            f"log {log!r} has {held} leaves but its tree has {frontier.size}: leaves were deleted; "
            "nothing was sequenced"
        )
    if tenant is None:
        # Checked first: a log whose records were altered is not extended (or checkpointed).
        await _refuse_altered_records(store)
    if since is None:
        # A full run reads the whole scope anyway: it also checks that no sequenced event was deleted.
        await _refuse_deleted_events(store, log, frontier.size, batch)
        added = await _sweep(store, frontier, tenant, batch, on_progress)
    else:
        done = await store.sequenced_since(log, since)
        async for docs in store.events_since(tenant, since, batch):
            pending = [d for d in docs if str(d.get("_id")) not in done]
            leaves = [_leaf_of(d) for d in pending]
            await _refuse_gaps(store, log, pending)
            added += await frontier.append(_log_order(leaves))
            if on_progress is not None:
                on_progress(len(docs))
    if tenant is None:
        added += await _append_receipts(store, frontier)
    root = frontier.root()
    await store.put_head(log, frontier.size, root, watermark=started)
    return SequenceReport(log=log, size_before=before, size=frontier.size, added=added, root=root.hex())


# --------------------------------------------------------------------------- events that vanished
#
# Events are never deleted by ChatLedger (a removal hollows them in place, keeping their
# positions), so an event that is gone was deleted behind its back. Two cases are seen:
# an event that vanished before it was sequenced while a later event of its thread
# survived (every run checks each event it sequences against its predecessor), and a
# sequenced event deleted since (a full run pages through the log's event leaves). A
# thread's tail, or a whole thread, deleted before any run saw it leaves no trace in the
# database: only a copy kept outside it (a heads file, the application's own records)
# shows it.


async def _refuse_gaps(store: MerkleStore, log: str, docs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse events whose predecessor in their thread vanished before it was sequenced, or differs.

    A predecessor is accepted when it is in this batch, in the log, or still in the events
    collection (live, or hollowed by a removal), and, where its hash is known, when the
    event's ``prev_hash`` is that hash. A thread's first event (it carries the thread's
    digest, or starts its thread or branch) has none.
    """
    batch = {str(d.get("_id")): d for d in docs}
    wanted: dict[str, Mapping[str, Any]] = {}  # predecessor key -> the event after it
    links: list[tuple[Mapping[str, Any], str, str]] = []  # (event, predecessor key, its hash)
    for doc in docs:
        seq = doc.get("seq")
        if "thread_digest" in doc or type(seq) is not int or seq <= 1:
            continue
        key = event_key(str(doc.get("thread_id")), seq - 1)
        if key in batch:
            links.append((doc, key, str(batch[key].get("hash"))))
        else:
            wanted[key] = doc
    logged = await store.leaf_data(log, list(wanted))
    links += [
        (wanted[key], key, _leaf_field(data, "hash", str, f"event {key!r}")) for key, data in logged.items()
    ]
    rest = [key for key in wanted if key not in logged]
    stored = {str(d.get("_id")): d for d in await store.events_by_key(rest)}
    links += [(wanted[k], k, str(stored[k]["hash"])) for k in rest if k in stored and "hash" in stored[k]]
    missing = [key for key in rest if key not in stored]
    if missing and HOLD_SETTLE_SECONDS > 0:
        # An import inserts each batch unordered: a predecessor may land a moment later.
        await asyncio.sleep(HOLD_SETTLE_SECONDS)
        back = await store.existing_events(missing)
        missing = [key for key in missing if key not in back]
    bases = await store.base_offsets(sorted({str(wanted[k].get("thread_id")) for k in missing}))
    found = [
        f"event {k!r} vanished before it was sequenced (event {str(wanted[k].get('_id'))!r} follows it)"
        for k in missing
        if bases.get(str(wanted[k].get("thread_id"))) != wanted[k]["seq"] - 1  # a branch's first own event
    ]
    found += [
        f"event {str(doc.get('_id'))!r} does not follow event {key!r}: its prev_hash is not that event's hash"
        for doc, key, prev in links
        if doc.get("prev_hash") != prev
    ]
    _refuse(found, "the events no longer form unbroken chains (run 'chatledger verify')")


async def _refuse_deleted_events(store: MerkleStore, log: str, size: int, batch: int) -> None:
    """Refuse to extend a log some of whose sequenced events were deleted from the events collection."""
    found: list[str] = []
    start = 0
    while start < size:
        page = [(i, key) for i, key in await store.event_leaves(log, start, batch) if i < size]
        if not page:
            break
        start = page[-1][0] + 1
        present = await store.existing_events([key for _, key in page])
        found += [
            f"event {key!r} (leaf {i}) was deleted after it was sequenced"
            for i, key in page
            if key not in present
        ]
    _refuse(found, "the events collection no longer holds what the log recorded")


def _refuse(found: Sequence[str], what: str) -> None:
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise IntegrityError(f"{what}: {'; '.join(found[:3])}{more}; nothing was sequenced")


# --------------------------------------------------------------------------- receipts and holds
#
# Receipts (removals, their completion, legal holds set and released) are admin records
# of the whole deployment: the default log takes them as leaves of their own kind, after
# the events of the same run. A receipt leaf commits to the receipt's digest, so the
# audit collection can no longer change unseen: before it appends anything, a run of
# the default log checks every logged receipt against the audit collection, and the
# legal holds on thread documents against the holds the receipts set and released.

_RECEIPT: Final = "receipt:"
#: How long a run waits before it re-reads a legal hold that disagrees with the receipts:
#: a hold change writes the thread document first and its receipt a moment later.
HOLD_SETTLE_SECONDS: Final = 1.0


def _plain(value: Any) -> Any:
    """A stored receipt as JSON values: times as epoch milliseconds (the precision BSON keeps)."""
    if isinstance(value, datetime):
        return {"$date": epoch_ms(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    return str(value)


def receipt_digest(receipt: Mapping[str, Any]) -> str:
    """Return the hex SHA-256 of a receipt's canonical JSON, as its leaf records it."""
    return hashlib.sha256(_receipt_text(receipt)).hexdigest()


def _receipt_text(receipt: Mapping[str, Any]) -> bytes:
    """A stored receipt's canonical JSON, as a receipt proof shows it and its digest hashes it."""
    return canonical_json_bytes(_plain(receipt))


def _receipt_leaf(receipt: Mapping[str, Any]) -> dict[str, Any]:
    rid, digest = str(receipt.get("_id")), receipt_digest(receipt)
    at = receipt.get("at")
    data = proofs.receipt_leaf_data(
        receipt_id=rid,
        kind=str(receipt.get("kind")),
        at=epoch_ms(at) if isinstance(at, datetime) else None,
        digest=digest,
    )
    return {
        "event": _RECEIPT + rid,
        "kind": "receipt",
        "receipt_digest": digest,
        "hash": proofs.leaf_hash(data).hex(),
        "data": data.decode("ascii"),
    }


def _receipt_order(receipt: Mapping[str, Any]) -> tuple[int, str]:
    """Oldest first (by time, then id: receipts of one millisecond have no known order)."""
    at = receipt.get("at")
    return (epoch_ms(at) if isinstance(at, datetime) else 0, str(receipt.get("_id")))


def _expected_holds(
    receipts: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]]]:
    """Replay the hold receipts: ``{thread_id: {case: reason}}`` of the holds they leave in place.

    Also returns the ``(thread_id, case)`` whose last receipts share one millisecond and
    disagree (a set and a release): their order is unknown, so either state is accepted.
    """
    last: dict[tuple[str, str], tuple[int, set[str | None]]] = {}
    for r in sorted((r for r in receipts if r.get("kind") in (HOLD_SET, HOLD_RELEASED)), key=_receipt_order):
        key, at = (str(r.get("thread_id")), str(r.get("case"))), _receipt_order(r)[0]
        state = str(r.get("reason")) if r.get("kind") == HOLD_SET else None
        previous = last.get(key)
        last[key] = (
            (at, previous[1] | {state}) if previous is not None and previous[0] == at else (at, {state})
        )
    held: dict[str, dict[str, str]] = {}
    unsure: set[tuple[str, str]] = set()
    for (thread, case), (_, states) in last.items():
        if len(states) > 1:
            unsure.add((thread, case))
        for state in states:
            if state is not None:
                held.setdefault(thread, {})[case] = state
    return held, unsure


def _actual_holds(threads: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The holds the thread documents carry (a ChatLedger 0.1 single hold predates receipts: left out)."""
    out: dict[str, dict[str, str]] = {}
    for doc in threads:
        cases = {str(h.get("case")): str(h.get("reason")) for h in holds_of(doc).cases}
        if cases:
            out[str(doc.get("_id"))] = cases
    return out


async def _hold_findings(store: MerkleStore) -> list[str]:
    receipts = await store.receipts()
    expected, unsure = _expected_holds(receipts)
    actual = _actual_holds(await store.held_threads())
    found = []
    for thread in sorted(set(expected) | set(actual)):
        want, have = expected.get(thread, {}), actual.get(thread, {})
        for case in sorted(set(want) | set(have)):
            if (thread, case) in unsure and (case not in have or have[case] == want.get(case)):
                continue
            if case not in want:
                found.append(f"thread {thread!r} is held for case {case!r} without a receipt")
            elif case not in have:
                found.append(
                    f"thread {thread!r}: the receipts hold it for case {case!r}, its document does not"
                )
            elif want[case] != have[case]:
                found.append(f"thread {thread!r}: the hold for case {case!r} was edited after its receipt")
    return found


async def audit_findings(target: Any, *, settle: float | None = None) -> list[str]:
    """Return how the audit collection and the legal holds differ from what the default log recorded.

    Empty when every logged receipt is still in the audit collection unchanged, and the
    holds on thread documents are exactly those the receipts set and did not release.
    :func:`sequence` runs it on the default log and refuses to extend a log whose
    records were altered.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        settle: Seconds to wait before re-reading a hold that disagrees with the
            receipts (a hold change in flight writes its receipt just after); default
            :data:`HOLD_SETTLE_SECONDS`.
    """
    return await _audit_findings(_store(target), settle)


async def _audit_findings(store: MerkleStore, settle: float | None) -> list[str]:
    stored = {str(r.get("_id")): r for r in await store.receipts()}
    found = []
    for leaf in await store.receipt_leaves(log_id(None)):
        rid = str(leaf.get("event"))[len(_RECEIPT) :]
        receipt = stored.get(rid)
        if receipt is None:
            found.append(f"receipt {rid!r} (leaf {leaf.get('index')}) was deleted from the audit collection")
        elif receipt_digest(receipt) != leaf.get("receipt_digest"):
            found.append(f"receipt {rid!r} (leaf {leaf.get('index')}) was altered after it was logged")
    holds = await _hold_findings(store)
    pause = HOLD_SETTLE_SECONDS if settle is None else settle
    if holds and pause > 0:
        await asyncio.sleep(pause)
        holds = [f for f in await _hold_findings(store) if f in holds]
    return found + holds


async def _refuse_altered_records(store: MerkleStore) -> None:
    _refuse(await _audit_findings(store, None), "the audit trail no longer matches the log")


async def _append_receipts(store: MerkleStore, frontier: _Frontier) -> int:
    """Append the receipts not yet in the default log, oldest first."""
    logged = {str(leaf.get("event")) for leaf in await store.receipt_leaves(frontier.log)}
    receipts = await store.receipts()
    pending = [r for r in receipts if _RECEIPT + str(r.get("_id")) not in logged]
    return await frontier.append([_receipt_leaf(r) for r in sorted(pending, key=_receipt_order)])


def _log_order(leaves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Within one batch, leaves go in ``(thread_id, seq)`` order: reproducible, thread by thread."""
    return sorted(leaves, key=lambda leaf: (leaf["thread_id"], leaf["seq"]))


async def _sweep(
    store: MerkleStore,
    frontier: _Frontier,
    tenant: str | None,
    batch: int,
    on_progress: Callable[[int], object] | None,
) -> int:
    """Read every live event key of the scope once, sequencing those without a leaf."""
    added, after = 0, None
    while keys := await store.event_keys(tenant, after, batch):
        after = keys[-1]
        done = await store.sequenced(frontier.log, keys)
        pending = [k for k in keys if k not in done]
        if pending:
            docs = [d for d in await store.events_by_key(pending) if not d.get("removed")]
            leaves = [_leaf_of(d) for d in docs]
            await _refuse_gaps(store, frontier.log, docs)
            added += await frontier.append(_log_order(leaves))
        if on_progress is not None:
            on_progress(len(keys))
    return added


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """A sequencing run and the checkpoint signed for the tree it reached."""

    report: SequenceReport
    origin: str
    note: str


async def checkpoint(
    target: Any,
    signing_key: bytes,
    *,
    tenant: str | None = None,
    origin: str | None = None,
    batch: int = DEFAULT_SEQUENCE_BATCH,
    on_progress: Callable[[int], object] | None = None,
    full: bool = False,
) -> CheckpointResult:
    """Sequence what is pending, then sign and store a C2SP checkpoint of the log.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        signing_key: An Ed25519 private key, unencrypted PEM.
        tenant: The tenant whose log to checkpoint; ``None``: the default scope's.
        origin: The log's name in the checkpoint (default: :func:`default_origin`).
        batch: Events per sequencing batch.
        on_progress: As for :func:`sequence`.
        full: As for :func:`sequence`.

    Raises:
        InvalidInputError: the key or origin is not usable (nothing is written).
        IntegrityError: as for :func:`sequence`.
    """
    ledger = as_ledger(target)
    try:
        key = proofs.load_private_key(signing_key)
        name = proofs.valid_origin(
            origin if origin is not None else default_origin(ledger.database.name, tenant)
        )
    except proofs.ProofError as e:
        raise InvalidInputError(str(e)) from e
    report = await sequence(ledger, tenant=tenant, batch=batch, on_progress=on_progress, full=full)
    note = proofs.sign_checkpoint(name, report.size, bytes.fromhex(report.root), key)
    await _store(ledger).put_head(report.log, report.size, bytes.fromhex(report.root), note=note)
    return CheckpointResult(report=report, origin=name, note=note)


def _claimed(note: str | None, what: str) -> proofs.Checkpoint:
    if note is None:
        raise InvalidInputError(f"{what}: no checkpoint")
    try:
        return proofs.unverified_checkpoint(note)
    except proofs.ProofError as e:
        raise InvalidInputError(f"{what}: {e}") from e


async def _stored_root(store: MerkleStore, log: str, claimed: proofs.Checkpoint, what: str) -> None:
    """Refuse to prove against a checkpoint this log's stored tree does not reproduce."""
    if claimed.size > await store.size(log):
        raise InvalidInputError(f"{what} has {claimed.size} leaves; log {log!r} has fewer (another log's?)")
    root = (await _range_hashes(store, log, [(0, claimed.size)]))[0] if claimed.size else proofs.EMPTY_ROOT
    if root != claimed.root:
        if (origin := await _signed_as(store, log)) not in (None, claimed.origin):
            # Nothing says this log was altered: the operator gave another log's checkpoint.
            raise InvalidInputError(
                f"{what} is of log {claimed.origin!r}, but log {log!r} signs as {origin!r}: give this "
                "log's checkpoint (or --tenant for the other log)"
            )
        raise IntegrityError(
            f"log {log!r} no longer gives the root of {what} at size {claimed.size}: the log or the "
            "checkpoint was altered (or it is another log's)"
        )


async def _signed_as(store: MerkleStore, log: str) -> str | None:
    """The origin of the log's latest stored checkpoint (``None``: none, or unreadable)."""
    latest = await store.latest(log, "checkpoint")
    try:
        return None if latest is None else proofs.unverified_checkpoint(str(latest["note"])).origin
    except proofs.ProofError:
        return None


async def _checkpoint_note(store: MerkleStore, log: str, note: str | None) -> str:
    if note is not None:
        return note
    latest = await store.latest(log, "checkpoint")
    if latest is None:
        raise InvalidInputError(f"log {log!r} has no checkpoint yet: run 'chatledger checkpoint' first")
    return str(latest["note"])


async def prove_event(
    target: Any,
    thread_id: str,
    seq: int,
    *,
    tenant: str | None = None,
    message: int | None = None,
    checkpoint_note: str | None = None,
) -> dict[str, Any]:
    """Return an inclusion proof (the ``chatledger prove`` JSON) for one event or one of its messages.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The event's thread.
        seq: The event's position in it.
        tenant: The tenant whose log holds it (``None``: the default log).
        message: Prove only this message (its index within the event, from 0); the others
            are represented by their digests in the leaf. ``None``: every message.
        checkpoint_note: The checkpoint to prove against (its text); ``None``: the latest
            stored one.

    Raises:
        InvalidInputError: the event is not covered by the checkpoint, or bad arguments.
        IntegrityError: the log or the event no longer matches what was sequenced.
    """
    validate_thread_id(thread_id)
    if type(seq) is not int or seq < 1:
        raise InvalidInputError("seq must be a positive int")
    if message is not None and (type(message) is not int or message < 0):
        raise InvalidInputError("message must be a non-negative int")
    key = event_key(thread_id, seq)
    store = _store(target)
    log = log_id(tenant)
    note = await _checkpoint_note(store, log, checkpoint_note)
    proof, data = await _inclusion(
        store, log, key, f"event {key!r}", note, "or it belongs to another tenant's log (--tenant)"
    )
    digests: list[str] = _leaf_field(data, "messages", list, f"event {key!r}")
    shown = await _shown_messages(store, key, digests, message)
    out = {**proof, "messages": shown}
    if not shown and tenant is None:
        # Removed: the removal receipt is a leaf of the same (default) log, proven beside it.
        removal = await _removal_proof(store, thread_id, note, claimed_size=int(proof["tree_size"]))
        if removal is not None:
            out["removal"] = removal
    return out


async def _removal_proof(
    store: MerkleStore, thread_id: str, note: str, claimed_size: int
) -> dict[str, Any] | None:
    """The proof of the receipt that removed a thread, if the checkpoint covers it (``None`` if not)."""
    receipt_id = await store.removal_receipt_id(thread_id)
    if receipt_id is None:
        return None  # deleted, not removed: no receipt to show
    leaf = await store.leaf(log_id(None), event=_RECEIPT + receipt_id)
    if leaf is None or int(leaf["index"]) >= claimed_size:
        return None  # removed after this checkpoint (or not yet logged): a newer one shows it
    proof = await _receipt_proof(store, receipt_id, note)
    return {k: proof[k] for k in ("leaf_index", "leaf", "path", "receipt")}


async def _inclusion(
    store: MerkleStore, log: str, entry: str, what: str, checkpoint_note: str, elsewhere: str
) -> tuple[dict[str, Any], bytes]:
    """The fields an inclusion proof of one log entry shares (all but what it shows), and its leaf."""
    claimed = _claimed(checkpoint_note, "the checkpoint")
    leaf = await store.leaf(log, event=entry)
    if leaf is None:
        raise InvalidInputError(
            f"{what} is not in log {log!r}: not sequenced yet (the next 'chatledger checkpoint' "
            f"covers it), {elsewhere}"
        )
    index = int(leaf["index"])
    if index >= claimed.size:
        raise InvalidInputError(
            f"{what} is leaf {index}, after the checkpoint's {claimed.size} leaves: "
            "prove against a newer checkpoint"
        )
    await _stored_root(store, log, claimed, "the checkpoint")
    data = str(leaf["data"]).encode("utf-8")
    if proofs.leaf_hash(data).hex() != leaf.get("hash"):
        raise IntegrityError(f"log entry {index} of {log!r} does not match its hash")
    path = await _range_hashes(store, log, _inclusion_ranges(index, 0, claimed.size))
    proof = {
        "chatledger_proof": proofs.PROOF_FORMAT,
        "type": "inclusion",
        "origin": claimed.origin,
        "tree_size": claimed.size,
        "leaf_index": index,
        "leaf": data.decode("utf-8"),
        "path": [_b64(h) for h in path],
    }
    return proof, data


async def prove_receipt(
    target: Any, receipt_id: str, *, checkpoint_note: str | None = None
) -> dict[str, Any]:
    """Return an inclusion proof (the ``chatledger prove --receipt`` JSON) for one audit receipt.

    Receipts (removals, their completion, legal holds set and released) are leaves of
    the default log; the proof shows the receipt whole, as canonical JSON whose SHA-256
    is the digest its leaf commits to (times as ``{"$date": <ms since epoch>}``).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        receipt_id: The receipt's ``_id`` (as removal reports show it, and a removed thread's tombstone).
        checkpoint_note: The checkpoint to prove against (its text); ``None``: the latest
            stored one of the default log.

    Raises:
        InvalidInputError: the receipt is not covered by the checkpoint, or a bad id.
        IntegrityError: the receipt was deleted or altered after it was logged, or the log
            no longer matches the checkpoint.
    """
    if type(receipt_id) is not str or not receipt_id or len(receipt_id) > 256:
        raise InvalidInputError("a receipt id is a non-empty string")
    store = _store(target)
    return await _receipt_proof(
        store, receipt_id, await _checkpoint_note(store, log_id(None), checkpoint_note)
    )


async def _receipt_proof(store: MerkleStore, receipt_id: str, note: str) -> dict[str, Any]:
    what = f"receipt {receipt_id!r}"
    proof, data = await _inclusion(
        store, log_id(None), _RECEIPT + receipt_id, what, note, "or there is no such receipt"
    )
    receipt = await store.receipt(receipt_id)
    if receipt is None:
        raise IntegrityError(f"{what} was deleted from the audit collection after it was logged")
    text = _receipt_text(receipt)
    if hashlib.sha256(text).hexdigest() != _leaf_field(data, "digest", str, what):
        raise IntegrityError(f"{what} was altered after it was logged")
    return {**proof, "receipt": text.decode("utf-8")}


async def _shown_messages(
    store: MerkleStore, key: str, digests: list[str], message: int | None
) -> list[dict[str, Any]]:
    """The messages a proof shows, each checked against its digest in the leaf."""
    if message is not None and message >= len(digests):
        raise InvalidInputError(f"event {key!r} has {len(digests)} messages; there is no message {message}")
    docs = await store.events_by_key([key])
    if not docs or docs[0].get("removed"):
        if message is not None:
            raise InvalidInputError(
                f"event {key!r} was removed: its content is gone, only its leaf (digests) can be proven"
            )
        return []  # removed: the leaf still proves the event's place, hash and digests
    stored = docs[0].get("messages")
    if not isinstance(stored, list) or len(stored) != len(digests):
        raise IntegrityError(f"event {key!r} no longer has the messages it was sequenced with")
    out = []
    for i in range(len(digests)) if message is None else [message]:
        try:
            canonical = _canonical_message(stored[i])
        except (ChatLedgerError, TypeError, ValueError, AttributeError) as e:
            raise IntegrityError(f"event {key!r}: message {i} is malformed") from e
        if proofs.message_digest(canonical) != digests[i]:
            raise IntegrityError(f"event {key!r}: message {i} was altered after it was sequenced")
        out.append({"index": i, "canonical": canonical.decode("utf-8")})
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def prove_consistency(
    target: Any, old_note: str, new_note: str, *, tenant: str | None = None
) -> dict[str, Any]:
    """Return a consistency proof (the ``chatledger prove --from --to`` JSON) between two checkpoints.

    Raises:
        InvalidInputError: the checkpoints are malformed, of two logs, or in the wrong order.
        IntegrityError: the stored log no longer reproduces one of them.
    """
    old = _claimed(old_note, "the old checkpoint")
    new = _claimed(new_note, "the new checkpoint")
    if old.origin != new.origin:
        raise InvalidInputError(f"the checkpoints are of two logs ({old.origin!r}, {new.origin!r})")
    if old.size > new.size:
        raise InvalidInputError(
            f"--from has {old.size} leaves, --to {new.size}: give the older checkpoint first"
        )
    log = log_id(tenant)
    store = _store(target)
    await _stored_root(store, log, old, "the old checkpoint")
    await _stored_root(store, log, new, "the new checkpoint")
    ranges = _consistency_ranges(old.size, 0, new.size, True) if 0 < old.size < new.size else []
    path = await _range_hashes(store, log, ranges)
    return {
        "chatledger_proof": proofs.PROOF_FORMAT,
        "type": "consistency",
        "origin": new.origin,
        "old_size": old.size,
        "new_size": new.size,
        "path": [_b64(h) for h in path],
    }
