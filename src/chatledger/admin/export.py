"""Export and import conversations as JSON Lines, exactly as stored (hashes included).

The file is a header line, then each thread document followed by its own events in
``seq`` order (parents before branches), then an end line with the counts, so a
truncated file is recognised. Values use MongoDB Extended JSON (relaxed), which keeps
dates to the millisecond and ids as they were: an imported thread verifies.

Import is all or nothing in effect. The whole file is checked before the first write,
with the same rules :func:`~chatledger.admin.verify.verify` applies to stored data
(ids, chains, seq continuity, counts, scope fields, thread digests, decodable
messages) plus MongoDB's 16 MiB document limit; if the database then refuses a write
part-way (a clash, a lost connection), every document this import inserted is deleted
again before the error is raised.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from chatledger.admin._checks import require_callback
from chatledger.admin.catalog import (
    Forest,
    ThreadFilter,
    as_ledger,
    count_threads,
    family_chunks,
)
from chatledger.admin.receipts import COMPLETED, HOLD_SET, REMOVAL, operator_identity, record
from chatledger.admin.records import CHECKPOINT_DELETED
from chatledger.admin.verify import chain_problem, is_tombstone, shape_problem, withdrawal_mark_problem
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError
from chatledger.hashing import GENESIS_HASH
from chatledger.ledger import MAX_EVENT_BYTES, Ledger, storage_of
from chatledger.models import DEFAULT_SOURCE_ID, ThreadRecord, utc_now_ms, validate_name, validate_thread_id
from chatledger.storage import Storage
from chatledger.storage.documents import HOLD_FIELDS, holds_of, record_problem
from chatledger.storage.encoding import dump_extended_json, load_extended_json, storable_size
from chatledger.storage.events import WITHDRAWN, event_key
from chatledger.storage.filters import ThreadView
from chatledger.storage.keys import KeyStore
from chatledger.storage.keys import is_tombstone as is_key_tombstone
from chatledger.storage.spool import EventSpool

__all__ = ["FORMAT", "IMPORT_FORCED", "ExportSummary", "ImportSummary", "export_jsonl", "import_jsonl"]

#: ``format`` of the header line.
FORMAT: Final = "chatledger-export"
_VERSION: Final = 1
#: Events inserted per ``insert_many``.
_BATCH: Final = 500
#: Kind of the receipt a forced import (of threads a removal receipt names) leaves.
IMPORT_FORCED: Final = "import.forced"
#: The start of every event line :func:`export_jsonl` writes: the first pass skips these unparsed.
_EVENT_PREFIX: Final = '{"type": "event"'


@dataclass(slots=True)
class ExportSummary:
    """What an export wrote."""

    threads: int = 0
    events: int = 0
    #: Audit receipts written (``audit=True``).
    receipts: int = 0
    #: Key tombstones written (``audit=True``): destroyed keys and erased subjects' marks.
    key_tombstones: int = 0


@dataclass(slots=True)
class ImportSummary:
    """What an import wrote, and what was already there (an import can be re-run)."""

    threads: int = 0
    events: int = 0
    threads_present: int = 0
    events_present: int = 0
    thread_ids: list[str] = field(default_factory=list)
    #: Legal holds the imported threads carried (each left a ``hold.set`` receipt).
    holds: int = 0
    #: Threads imported although a removal receipt names them (``force=True``).
    forced: list[str] = field(default_factory=list)
    #: Audit receipts restored (and already present) from an export made with ``audit=True``.
    receipts: int = 0
    receipts_present: int = 0
    #: Key tombstones restored (and already present).
    key_tombstones: int = 0
    key_tombstones_present: int = 0


def _line(kind: str, **fields: Any) -> str:
    return dump_extended_json({"type": kind, **fields}) + "\n"


def _selection(forest: Forest, thread_filter: ThreadFilter) -> list[str]:
    """Return the threads to export: the matches, their ancestors, and a single thread's branches."""
    wanted = {
        t for t, d in forest.docs.items() if all(d.get(k) == v for k, v in _fields(thread_filter).items())
    }
    if thread_filter.thread_id is not None and thread_filter.thread_id in forest.docs:
        wanted.update(forest.descendants(thread_filter.thread_id))
    # Each thread's ancestors, walked up only until one already wanted (whose own
    # ancestors are then wanted too): every thread is visited once, whatever the depth.
    for tid in list(wanted):
        parent = forest.parent_of(tid)
        while parent is not None and parent not in wanted:
            wanted.add(parent)
            parent = forest.parent_of(parent)
    return sorted(wanted, key=lambda t: (forest.docs[t].get("depth") or 0, t))


def _fields(thread_filter: ThreadFilter) -> dict[str, str]:
    out = thread_filter.describe()
    if "thread_id" in out:
        out["_id"] = out.pop("thread_id")
    return out


async def export_jsonl(
    target: Any,
    out: IO[str],
    thread_filter: ThreadFilter | None = None,
    *,
    on_thread: Callable[[str], None] | None = None,
    chunk: int | None = None,
    audit: bool = False,
    keys_collection: str | None = "keys",
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ExportSummary:
    """Write the matching threads, with the ancestors they need, to ``out`` as JSON Lines.

    A single thread (``thread_id``) is exported with its ancestors and all its branches.
    With ``audit``, every audit receipt and every key tombstone follow the threads, so a
    restore into a new cluster keeps the audit trail and "removed stays removed" (an
    import refuses threads that restored removal receipts name; a restored tombstone
    keeps an erased subject's key from ever being created again). Key material is never
    exported: only tombstones, which hold none.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        out: A text stream.
        thread_filter: Which threads; ``None`` for all.
        on_thread: Called after each thread is written (progress reporting).
        chunk: How many thread documents to hold at once (whole conversations, about
            :data:`~chatledger.admin.catalog.CHUNK_THREADS` by default). Threads are
            written conversation by conversation, parents before branches, so memory
            stays bounded; a filtered export (other than one thread) reads the matching
            thread documents twice, first lightly to announce the count in the header.
        audit: Also write the audit receipts and the key tombstones.
        keys_collection: The key store's collection in the ledger's database (tombstones
            come from there); ``None``: no key tombstones.
        on_progress: Called while a whole-database export reads the events with
            ``(events read, estimated total)``.

    A whole-database export reads every event in one pass ordered on ``(thread_id, seq)``
    into a local temporary file, then writes the trees from it (see
    :mod:`chatledger.storage.spool`): its cost grows with the events, not threads x events,
    on any server. A filtered export reads its threads' events one query per thread.
    """
    require_callback(on_progress, "on_progress")
    ledger = as_ledger(target)
    thread_filter = thread_filter or ThreadFilter()
    summary = ExportSummary()
    first: list[tuple[Forest, list[str]]] | None = None
    if thread_filter.thread_id is not None:
        # One thread: its tree (ancestors and branches) is one chunk, read once.
        first = [s async for s in _selections(ledger, thread_filter, chunk)]
        total = sum(len(selected) for _, selected in first)
    elif not thread_filter.describe():
        total = await count_threads(ledger)  # every live thread is selected
    else:
        # Matches plus the ancestors they need: counted on a first, light pass.
        total = 0
        light = _selections(ledger, thread_filter, chunk, view="selection")
        async for _, selected in light:
            total += len(selected)
    out.write(
        _line(
            "header",
            format=FORMAT,
            version=_VERSION,
            exported_at=utc_now_ms(),
            scope=thread_filter.describe(),
            threads=total,
        )
    )
    storage = storage_of(ledger)
    # A whole-database export reads every event in one ordered pass (see
    # chatledger.storage.spool); a filtered one reads its threads' events thread by thread.
    spool = None if thread_filter.describe() else await storage.tallies.spool(on_progress)
    try:
        trees = _selections(ledger, thread_filter, chunk) if first is None else _listed(first)
        await _write_threads(storage, spool, trees, out, summary, on_thread)
    finally:
        if spool is not None:
            spool.close()
    if audit:
        await _write_audit(storage, out, summary, keys_collection)
    out.write(
        _line("end", threads=summary.threads, events=summary.events)
        if not audit
        else _line(
            "end",
            threads=summary.threads,
            events=summary.events,
            receipts=summary.receipts,
            key_tombstones=summary.key_tombstones,
        )
    )
    return summary


async def _write_threads(
    storage: Storage,
    spool: EventSpool | None,
    trees: AsyncGenerator[tuple[Forest, list[str]], None],
    out: IO[str],
    summary: ExportSummary,
    on_thread: Callable[[str], None] | None,
) -> None:
    """Write each selected thread document followed by its own events, tree by tree, parents first."""
    async with aclosing(trees):
        async for forest, selected in trees:
            for tid in selected:
                out.write(_line("thread", doc=forest.docs[tid]))
                summary.threads += 1
                if spool is not None:
                    for event in spool.events(tid):
                        out.write(_line("event", doc=event))
                        summary.events += 1
                else:
                    async for event in storage.events.stream(tid):
                        out.write(_line("event", doc=event))
                        summary.events += 1
                if on_thread is not None:
                    on_thread(tid)


async def _write_audit(storage: Storage, out: IO[str], summary: ExportSummary, keys: str | None) -> None:
    """Write every receipt, then every key tombstone (never a live key: those hold key material)."""
    async for receipt in storage.receipts.every():
        out.write(_line("receipt", doc=receipt))
        summary.receipts += 1
    if keys is None:
        return
    async for doc in KeyStore(storage.database, collection=keys).tombstones():
        out.write(_line("key_tombstone", doc=doc))
        summary.key_tombstones += 1


async def _selections(
    ledger: Ledger,
    thread_filter: ThreadFilter,
    chunk: int | None,
    *,
    view: ThreadView = "all",
) -> AsyncGenerator[tuple[Forest, list[str]], None]:
    """Yield each conversation tree with the threads of it to export, parents first, a chunk at a time."""
    chunks = family_chunks(ledger, thread_filter, whole=True, view=view, chunk=chunk)
    async with aclosing(chunks):
        async for families in chunks:
            for family in families:
                selected = _selection(family.forest, thread_filter)
                if selected:
                    yield family.forest, selected


async def _listed(items: list[tuple[Forest, list[str]]]) -> AsyncGenerator[tuple[Forest, list[str]], None]:
    for item in items:
        yield item


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)`` for every record of the file."""
    for number, text in _lines(path):
        yield number, _parse(path, number, text)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, text in enumerate(lines, 1):
                if text.strip():
                    yield number, text
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read {str(path)!r}: {e}") from e


def _parse(path: Path, number: int, text: str) -> dict[str, Any]:
    try:
        item = load_extended_json(text)
    except ValueError as e:
        raise InvalidInputError(f"{path}:{number}: not valid (Extended) JSON: {e}") from e
    if not isinstance(item, dict) or "type" not in item:
        raise InvalidInputError(f"{path}:{number}: not an export record")
    return item


def _size_problem(doc: Mapping[str, Any]) -> str | None:
    """Return why a document cannot be stored in MongoDB (16 MiB, or not encodable), or ``None``."""
    size, why = storable_size(doc)
    if size is None:
        return why
    if size > MAX_EVENT_BYTES:
        return f"is {size} bytes, over MongoDB's {MAX_EVENT_BYTES} byte document limit"
    return None


def _thread_problem(doc: Mapping[str, Any]) -> tuple[ThreadRecord | None, str | None]:
    """Return the record of a thread line, or why it cannot be imported."""
    if "removed" in doc:
        return None, "is the tombstone of a removed thread"
    try:
        validate_thread_id(doc.get("_id"))
        record = ThreadRecord.model_validate(doc)
        for name in ("tenant_id", "user_id", "source_id"):
            value = getattr(record, name)
            if value is not None:
                validate_name(name, value)
    except ValueError as e:  # InvalidInputError and pydantic's ValidationError both are
        return None, f"malformed: {e}"
    why = record_problem(record) or _size_problem(doc)
    return (record, None) if why is None else (None, why)


@dataclass(slots=True)
class _Plan:
    """What a checked file holds, and what the database must have for its branches."""

    threads: dict[str, ThreadRecord] = field(default_factory=dict)
    docs: list[dict[str, Any]] = field(default_factory=list)
    #: ``(owner thread, seq)`` of every fork point -> (hash, messages at its end), once known.
    forks: dict[tuple[str, int], tuple[str, int] | None] = field(default_factory=dict)
    #: Each branch's fork point: the ``(owner thread, seq)`` key of ``forks``.
    fork_of: dict[str, tuple[str, int]] = field(default_factory=dict)


async def _check_threads(storage: Storage, path: Path) -> _Plan:
    """First pass: every thread line, and the ancestors and fork points of branches.

    Branches must follow their parent, in the file or already in the database (then
    identical lineage, live, with the fork event present).
    """
    plan = _Plan()
    stored: dict[str, ThreadRecord | None] = {}

    async def ancestor(thread_id: str) -> ThreadRecord | None:
        # A windowed lineage's fork owner may lie above it: in the file, or in the database.
        if thread_id in plan.threads:
            return plan.threads[thread_id]
        if thread_id not in stored:
            raw = await storage.threads.get_raw(thread_id)
            stored[thread_id] = None if raw is None or "removed" in raw else _thread_problem(raw)[0]
        return stored[thread_id]

    for number, text in _lines(path):
        if text.startswith(_EVENT_PREFIX):
            continue  # the second pass reads events
        item = _parse(path, number, text)
        doc = item.get("doc")
        if item["type"] != "thread" or not isinstance(doc, dict):
            continue  # the second pass judges the file's layout
        where = f"{path}:{number}: thread {doc.get('_id')!r}"
        record, why = _thread_problem(doc)
        if record is None:
            raise InvalidInputError(f"{where} {why}")
        if record.id in plan.threads:
            raise InvalidInputError(f"{where} appears twice")
        if record.lineage:
            parent_id = record.lineage[-1].thread_id
            parent = plan.threads.get(parent_id) or await _stored_parent(storage, parent_id, where)
            why = record.continues(parent)
            if why is not None:
                raise InvalidInputError(f"{where}: it does not continue its parent {parent_id!r}: {why}")
            owner = await record.holder_along(record.base_offset, ancestor)
            if owner is None:
                raise InvalidInputError(f"{where}: an ancestor above its parent {parent_id!r} is missing")
            plan.fork_of[record.id] = owner, record.base_offset
            plan.forks[owner, record.base_offset] = None
        plan.threads[record.id] = record
        plan.docs.append(doc)
    # Fork points in threads that are not in the file are read from the database now.
    for owner, seq in [k for k in plan.forks if k[0] not in plan.threads]:
        try:
            event = await storage.events.at(owner, seq)
        except ChatLedgerError as e:
            raise InvalidInputError(
                f"{path}: the fork event at seq {seq} of {owner!r} cannot be read: {e}"
            ) from e
        if event is None:
            raise InvalidInputError(f"{path}: a branch forks at seq {seq} of {owner!r}, which does not exist")
        plan.forks[owner, seq] = event["hash"], event["first_message"] + event["count"]
    return plan


async def _stored_parent(storage: Storage, parent_id: str, where: str) -> ThreadRecord:
    raw = await storage.threads.get_raw(parent_id)
    if raw is None or "removed" in raw:
        state = "missing" if raw is None else "removed"
        raise InvalidInputError(
            f"{where}: its parent {parent_id!r} is {state} (in the file and the database)"
        )
    record, why = _thread_problem(raw)
    if record is None:
        raise InvalidInputError(f"{where}: its parent {parent_id!r} in the database {why}")
    return record


def _scope_problem(event: Mapping[str, Any], record: ThreadRecord) -> str | None:
    """Return why an event's scope fields disagree with its thread (any schema), or ``None``."""
    expected = {"root_id": record.root_id, "tenant_id": record.tenant_id, "user_id": record.user_id}
    for name, value in expected.items():
        if name in event and event[name] != value:
            return f"its {name} {event[name]!r} differs from the thread's {value!r}"
    if "source_id" in event and (event["source_id"] or DEFAULT_SOURCE_ID) != (
        record.source_id or DEFAULT_SOURCE_ID
    ):
        return f"its source_id {event['source_id']!r} differs from the thread's {record.source_id!r}"
    return None


def _check_file(path: Path, plan: _Plan) -> None:
    """Second pass: the file's layout and every event, as verify would judge it once stored.

    Raises:
        InvalidInputError: the file is not a complete, intact export.
    """
    threads = events = 0
    audit = dict.fromkeys(_AUDIT_KINDS, 0)
    current: ThreadRecord | None = None
    seq, message, prev = 0, 0, GENESIS_HASH
    header = end = False
    for number, item in _records(path):
        kind, doc = item["type"], item.get("doc")
        where = f"{path}:{number}"
        if not header:
            if kind != "header" or item.get("format") != FORMAT or item.get("version") != _VERSION:
                raise InvalidInputError(f"{where}: not a {FORMAT} v{_VERSION} file")
            header = True
        elif end:
            raise InvalidInputError(f"{where}: data after the end line")
        elif kind == "thread" and isinstance(doc, dict):
            current = plan.threads[str(doc["_id"])]
            threads += 1
            seq, message, prev = current.base_offset + 1, current.base_messages, GENESIS_HASH
            if current.base_offset:
                owner, _ = plan.fork_of[current.id]
                fork = plan.forks[owner, current.base_offset]
                if fork is None:
                    raise InvalidInputError(
                        f"{where}: thread {current.id!r} forks at seq {current.base_offset} of "
                        f"{owner!r}, which the file does not hold"
                    )
                prev, end_message = fork
                if end_message != current.base_messages:
                    raise InvalidInputError(
                        f"{where}: thread {current.id!r} expects {current.base_messages} messages at its "
                        f"fork point, the fork event ends at {end_message}"
                    )
        elif kind == "event" and isinstance(doc, dict):
            if current is None or doc.get("thread_id") != current.id:
                raise InvalidInputError(
                    f"{where}: event of thread {doc.get('thread_id')!r} outside its thread"
                )
            why = (
                ("is a hollowed event of a removed thread" if "removed" in doc else None)
                or shape_problem(doc, current.id)
                or chain_problem(doc, seq, message, prev, current)
                or _scope_problem(doc, current)
                or withdrawal_mark_problem(doc)
                or _size_problem(doc)
            )
            if why is not None:
                raise InvalidInputError(f"{where}: event {doc.get('_id')!r}: {why}")
            if (current.id, seq) in plan.forks:
                plan.forks[current.id, seq] = doc["hash"], doc["first_message"] + doc["count"]
            seq, message, prev = seq + 1, message + doc["count"], doc["hash"]
            events += 1
        elif kind in _AUDIT_KINDS and isinstance(doc, dict):
            why = _audit_problem(kind, doc)
            if why is not None:
                raise InvalidInputError(f"{where}: {kind} {doc.get('_id')!r} {why}")
            audit[kind] += 1
            current = None  # no event may follow: receipts and tombstones come after the threads
        elif kind == "end":
            counts = (item.get("threads"), item.get("events"))
            if counts != (threads, events) or any(
                item.get(_AUDIT_KINDS[k], 0) != n for k, n in audit.items()
            ):
                raise InvalidInputError(f"{where}: end line counts do not match the file")
            end = True
        else:
            raise InvalidInputError(f"{where}: unexpected {kind!r} record")
    if not end:
        raise InvalidInputError(f"{path}: no end line: the export is incomplete")


#: The records an export made with ``audit=True`` adds after the threads -> their end-line count.
_AUDIT_KINDS: Final = {"receipt": "receipts", "key_tombstone": "key_tombstones"}


def _audit_problem(kind: str, doc: Mapping[str, Any]) -> str | None:
    """Return why a receipt or key tombstone line cannot be restored, or ``None``."""
    if type(doc.get("_id")) is not str or not doc["_id"]:
        return "has no string id"
    if kind == "receipt" and type(doc.get("kind")) is not str:
        return "has no kind"
    if kind == "key_tombstone" and (not is_key_tombstone(doc) or "wrapped" in doc):
        return "is not a key tombstone (a live key is never imported)"
    return _size_problem(doc)


async def _restore_audit(
    storage: Storage, kind: str, doc: dict[str, Any], summary: ImportSummary, keys: str | None
) -> None:
    """Insert one receipt or key tombstone unless the very same one is there (a re-run)."""
    if kind == "key_tombstone" and keys is None:
        return
    if kind == "receipt":
        stored = await storage.receipts.insert_once(doc)
    else:
        store = KeyStore(storage.database, collection=str(keys))
        stored = await store.get(str(doc["_id"]))
        if stored is None:
            await store.insert_once(doc)  # a racing writer's key wins; it is checked on the next run
    if stored is not None:
        same = _same(stored, doc)
        if kind == "key_tombstone" and is_key_tombstone(stored):
            same = True  # destroyed either way: the key can never come back
        if not same:
            raise IntegrityError(
                f"a different {kind.replace('_', ' ')} {doc['_id']!r} already exists; it was kept"
            )
        if kind == "receipt":
            summary.receipts_present += 1
        else:
            summary.key_tombstones_present += 1
        return
    if kind == "receipt":
        summary.receipts += 1
    else:
        summary.key_tombstones += 1


def _same(a: Mapping[str, Any], b: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    def norm(doc: Mapping[str, Any]) -> str:
        kept = {k: v for k, v in doc.items() if k not in ignore and v is not None}
        return dump_extended_json(kept, sort_keys=True)

    return norm(a) == norm(b)


async def _removed_ids(storage: Storage, thread_ids: list[str]) -> dict[str, list[str]]:
    """Return ``{thread_id: [removal receipt ids]}`` for the threads a removal receipt names."""
    completed = await storage.receipts.referred_ids(COMPLETED)
    out: dict[str, list[str]] = {}
    wanted = set(thread_ids)
    async for receipt in storage.receipts.about(thread_ids, [REMOVAL]):
        named = receipt.get("thread_ids")
        rid = receipt.get("_id")
        state = "completed" if isinstance(rid, str) and rid in completed else "interrupted"
        for tid in named if isinstance(named, list) else ():
            if tid in wanted:
                out.setdefault(str(tid), []).append(f"{receipt.get('_id')} ({state})")
    return out


async def _preflight(storage: Storage, plan: _Plan, *, force: bool) -> dict[str, list[str]]:
    """Refuse what the database says must not come back; return the forced threads' receipts."""
    removed = await _removed_ids(storage, list(plan.threads))
    if removed and not force:
        named = ", ".join(f"{t!r} by {', '.join(r)}" for t, r in sorted(removed.items())[:5])
        raise InvalidInputError(
            f"{len(removed)} threads of the file were removed (retention or erasure): {named}; "
            "importing them would bring erased data back. Nothing was imported; force the import "
            "(import_jsonl(..., force=True) or `chatledger import --force`) only if restoring them is lawful"
        )
    for doc in plan.docs:
        existing = await storage.threads.get_raw(str(doc["_id"]))
        if existing is not None and is_tombstone(existing):
            raise InvalidInputError(
                f"thread {doc['_id']!r} was removed and its tombstone keeps the id: a removed thread "
                "cannot be imported again, even with force; nothing was imported"
            )
        if existing is not None and not _same(existing, doc, ignore=HOLD_FIELDS):
            raise IntegrityError(f"a different thread {doc['_id']!r} already exists; nothing was imported")
    return removed


class _Writer:
    """Inserts the checked file, remembering every document it wrote so it can take them back."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.summary = ImportSummary()
        self.event_ids: list[str] = []
        self.thread_ids: list[str] = []
        #: Roots of the trees this import wrote threads into (to find others' branches on undo).
        self.roots: set[str] = set()
        #: Withdrawal marks (thread, seq, hash, receipt id) of records the database held already.
        self.marks: list[tuple[str, int, str, str]] = []

    async def events(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        clashed = await self.storage.events.insert_many(docs)
        skip = set(clashed)
        self.event_ids.extend(str(d["_id"]) for i, d in enumerate(docs) if i not in skip)
        self.summary.events += len(docs) - len(clashed)
        # Some events were there already (a re-run): each must be the very same event.
        for index in clashed:
            doc = docs[index]
            found = await self.storage.events.at(str(doc["thread_id"]), int(doc["seq"]))
            if found is None or found.get("hash") != doc["hash"]:
                raise IntegrityError(
                    f"thread {doc['thread_id']!r} already holds a different event at seq {doc['seq']}"
                )
            if WITHDRAWN in doc:
                self.marks.append(
                    (str(doc["thread_id"]), int(doc["seq"]), str(doc["hash"]), str(doc[WITHDRAWN]))
                )
        self.summary.events_present += len(clashed)

    async def thread(self, doc: dict[str, Any]) -> bool:
        """Insert a thread document; return whether this import wrote it."""
        tid = str(doc["_id"])
        self.summary.thread_ids.append(tid)
        if await self.storage.threads.insert_raw(doc):
            self.thread_ids.append(tid)
            self.roots.add(str(doc.get("root_id", tid)))
            self.summary.threads += 1
            return True
        existing = await self.storage.threads.get_raw(tid)
        if existing is None or not _same(existing, doc, ignore=HOLD_FIELDS):
            raise IntegrityError(f"a different thread {tid!r} already exists")
        self.summary.threads_present += 1
        return False

    async def undo(self) -> dict[str, int]:
        """Delete every document this import inserted (thread documents first: no half thread is visible).

        Returns:
            ``{thread_id: events}`` of what another process wrote onto the threads this
            import had created, in the moment before they were taken back: events
            appended to them, and branches made from them. They are kept (they are
            someone's acknowledged writes): verify reports them (orphan events, a
            missing ancestor) until a re-run of the import restores what they stand on.
        """
        ours = set(self.summary.thread_ids)
        # Read before deleting: a branch names its tree's root, which is about to go.
        branches = [
            str(d["_id"])
            for d in await self.storage.threads.family(sorted(self.roots))
            if d["_id"] not in ours
        ]
        for tid in self.thread_ids:
            await self.storage.threads.delete(tid)
        await self.storage.tallies.delete_ids(self.event_ids)
        left = await self.storage.tallies.counts([*self.thread_ids, *branches])
        return {tid: n for tid, (n, _) in left.items() if n} | {
            tid: left.get(tid, (0, 0))[0] for tid in branches
        }


async def import_jsonl(
    target: Any,
    path: str | Path,
    *,
    force: bool = False,
    by: str | None = None,
    on_thread: Callable[[str], None] | None = None,
    keys_collection: str | None = "keys",
) -> ImportSummary:
    """Restore an export file exactly; re-importing the same file changes nothing.

    The whole file is checked before the first write (format, completeness, ids, every
    chain from its fork point, seq continuity, counts, scope fields, thread digests,
    messages that decode, 16 MiB). A thread already present must be identical except
    for its legal holds, which an import never changes. If the database stops the import
    part-way, every document it inserted is deleted again before the error is raised.
    Holds carried by newly imported threads each leave a ``hold.set`` receipt
    (``imported: True``).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        path: The JSON Lines file written by :func:`export_jsonl`.
        force: Import threads that a removal receipt names (they were erased or expired
            here); an ``import.forced`` receipt records it before the first write.
        by: Who imports, for receipts (default ``user@host``).
        on_thread: Called after each thread is restored (progress reporting).
        keys_collection: Where an export's key tombstones go (the key store's collection in
            the ledger's database); ``None``: they are not restored.

    Audit receipts and key tombstones in the file (an export made with ``audit=True``) are
    restored after the threads, each unless the very same one is there already. Before them,
    the workflow checkpoints the file withdraws (a record's mark, a ``checkpoint.deleted``
    receipt) are marked withdrawn, on records the database held already too.

    Raises:
        InvalidInputError: the file is not a complete, intact export, names threads that
            were removed (without ``force``), or a removed thread's tombstone holds an id.
        IntegrityError: the database holds a different thread or event under the same key.
        StorageError: the database failed; what this import wrote was removed.
    """
    ledger = as_ledger(target)
    path = Path(path)
    if type(force) is not bool:
        raise InvalidInputError(f"force must be True or False, got {force!r}")
    storage = storage_of(ledger)
    plan = await _check_threads(storage, path)
    _check_file(path, plan)
    forced = await _preflight(storage, plan, force=force)
    who = by or operator_identity()
    await ledger.ensure_indexes()
    if forced:
        # Recorded before the first write, so even a crashed forced import is on record.
        await record(
            ledger,
            IMPORT_FORCED,
            who,
            thread_ids=sorted(forced),
            removals=sorted({r for ids in forced.values() for r in ids}),
            file=str(path),
        )
    writer = _Writer(storage)
    new_holds: list[tuple[str, dict[str, Any]]] = []
    audit: list[tuple[str, dict[str, Any]]] = []
    try:
        batch: list[dict[str, Any]] = []
        pending: dict[str, Any] | None = None
        # Each thread's events go in before its document: a crash leaves events without a
        # document, which verify reports, never a thread silently missing its tail.
        for _, item in _records(path):
            if item["type"] == "event":
                batch.append(item["doc"])
                if len(batch) >= _BATCH:
                    await writer.events(batch)
                    batch = []
                continue
            await writer.events(batch)
            batch = []
            if item["type"] in _AUDIT_KINDS:
                audit.append((item["type"], item["doc"]))
                continue
            if pending is not None:
                if await writer.thread(pending):
                    new_holds.extend((str(pending["_id"]), h) for h in holds_of(pending).listed())
                if on_thread is not None:
                    on_thread(str(pending["_id"]))
            pending = item["doc"] if item["type"] == "thread" else None
    except BaseException as e:
        # Cancellation included: whatever stopped us, take back what we wrote. (The
        # original error is re-raised; a failure to undo is chained to it.)
        others = await writer.undo()
        if others and isinstance(e, Exception):
            raise IntegrityError(
                f"{e}; what this import wrote was taken back, but another process wrote "
                f"{sum(others.values())} events onto or under imported threads {sorted(others)!r} "
                "meanwhile: they were kept, and verify reports them until the import is re-run"
            ) from e
        raise
    ledger.forget(writer.summary.thread_ids)
    for tid, hold in new_holds:
        await record(
            ledger,
            HOLD_SET,
            who,
            thread_id=tid,
            case=hold.get("case"),
            reason=hold.get("reason"),
            imported=True,
            file=str(path),
        )
    # A checkpoint load sees a withdrawal only as the mark on its record: marked before
    # the receipts are restored (as a delete marks before its receipt), also where the
    # record was here already, or the file's receipt sits beside an unmarked record (an
    # export that read the record before a delete marked it, the receipt after).
    # Only records of the file's own threads: a receipt naming another thread's record
    # (another scope's) is restored as the audit record it is, and withdraws nothing the
    # file does not carry (verify names such a record, its checkpoint still loading).
    for kind, doc in audit:
        if kind == "receipt" and doc.get("kind") == CHECKPOINT_DELETED:
            named = doc.get("thread_id"), doc.get("seq"), doc.get("hash")
            if (
                type(named[0]) is str
                and named[0] in plan.threads
                and type(named[1]) is int
                and type(named[2]) is str
            ):
                writer.marks.append((named[0], named[1], named[2], str(doc["_id"])))
    for thread, seq, event_hash, mark in writer.marks:
        await storage.events.mark_withdrawn(event_key(thread, seq), event_hash, mark)
    # After the threads (whose import undoes itself on failure): receipts and tombstones
    # are append-only records, each written once; a re-run skips those already there.
    for kind, doc in audit:
        await _restore_audit(storage, kind, doc, writer.summary, keys_collection)
    writer.summary.holds = len(new_holds)
    writer.summary.forced = sorted(forced)
    return writer.summary
