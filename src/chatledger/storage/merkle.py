"""The Merkle log's collections: leaves (``log_entries``) and tree nodes and heads (``log_tree``).

One log per tenant (and one for the default scope), named by its log id. A leaf is
``{_id: "<log>#<index>", log, index, event, leaf, data}``; the unique ``(log, index)``
index is the log's concurrency control (two sequencers can never both take an index),
and the unique ``(log, event)`` index keeps an event from entering a log twice.
``log_tree`` holds the hashes of complete subtrees (``"<log>#n<level>.<i>"``, level ≥ 1),
so a proof reads O(log n) documents, and the tree heads a sequencer reached
(``"<log>#h<size>"``) with the checkpoints signed for them. Hashes are stored as hex.
Nothing here is ever updated in place: every write is an insert.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chatledger.errors import IntegrityError
from chatledger.storage import DEFAULT_EVENTS_COLLECTION, Storage
from chatledger.storage.driver import cursor_list
from chatledger.storage.events import BATCH_SIZE, EventStore
from chatledger.storage.gate import Gate
from chatledger.storage.log_sources import EVENTS_BY_TIME, LogSources
from chatledger.storage.receipts import ReceiptStore
from chatledger.storage.threads import ThreadStore

__all__ = [
    "DEFAULT_LOG_ENTRIES_COLLECTION",
    "DEFAULT_LOG_TREE_COLLECTION",
    "MerkleStore",
    "Node",
    "log_collections",
]

DEFAULT_LOG_ENTRIES_COLLECTION: Final = "log_entries"
DEFAULT_LOG_TREE_COLLECTION: Final = "log_tree"


def log_collections(events_collection: str) -> tuple[str, str]:
    """Return the names of the log collections (entries, tree) of a ledger's events collection.

    The default events collection keeps ``log_entries``/``log_tree``; another one (two
    ledgers in one database) gets its own pair, prefixed by its name.
    """
    if events_collection == DEFAULT_EVENTS_COLLECTION:
        return DEFAULT_LOG_ENTRIES_COLLECTION, DEFAULT_LOG_TREE_COLLECTION
    return (
        f"{events_collection}_{DEFAULT_LOG_ENTRIES_COLLECTION}",
        f"{events_collection}_{DEFAULT_LOG_TREE_COLLECTION}",
    )


_INDEX: Final = "log_index_unique"
_EVENT: Final = "log_event_unique"
_HEADS: Final = "log_kind_size"
_LEAF_TIME: Final = "log_created_at"
#: Receipt leaves carry ``kind: "receipt"`` (event leaves no kind): every run of the
#: default log reads them, through this index rather than the whole log.
_LEAF_KIND: Final = "log_kind"

#: A complete subtree: (level, index at that level); it covers leaves [i·2^level, (i+1)·2^level).
Node = tuple[int, int]


def _hash(doc: Mapping[str, Any] | None, what: str) -> bytes:
    value = doc.get("hash") if doc is not None else None
    try:
        raw = bytes.fromhex(value) if type(value) is str else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise IntegrityError(f"{what} is missing or malformed in the log")
    return raw


class MerkleStore(LogSources):
    """Named operations on the log collections (with the ledger reads of :class:`LogSources`)."""

    def __init__(
        self,
        gate: Gate,
        events: EventStore,
        receipts: ReceiptStore,
        threads: ThreadStore,
        *,
        entries_collection: str = DEFAULT_LOG_ENTRIES_COLLECTION,
        tree_collection: str = DEFAULT_LOG_TREE_COLLECTION,
    ) -> None:
        super().__init__(gate, events, receipts, threads)
        self.entries = gate.collection(entries_collection)
        self.tree = gate.collection(tree_collection)

    @classmethod
    def of(cls, storage: Storage) -> MerkleStore:
        """Return the log store of a ledger's storage (its log collections follow its events collection)."""
        # Two ledgers in one database (other events collections) keep two sets of logs.
        entries, tree = log_collections(str(storage.events.collection.name))
        return cls(
            storage.gate,
            storage.events,
            storage.receipts,
            storage.threads,
            entries_collection=entries,
            tree_collection=tree,
        )

    async def ensure_indexes(self) -> None:
        """Create the log's indexes (idempotent; one per command, as FerretDB needs)."""
        for collection, name, keys, unique in (
            (self.entries, _INDEX, [("log", ASCENDING), ("index", ASCENDING)], True),
            (self.entries, _EVENT, [("log", ASCENDING), ("event", ASCENDING)], True),
            (self.tree, _HEADS, [("log", ASCENDING), ("kind", ASCENDING), ("size", ASCENDING)], False),
            (self.entries, _LEAF_TIME, [("log", ASCENDING), ("created_at", ASCENDING)], False),
            (self.entries, _LEAF_KIND, [("log", ASCENDING), ("kind", ASCENDING)], False),
            (
                self.events.collection,
                EVENTS_BY_TIME,
                [("tenant_id", ASCENDING), ("created_at", ASCENDING)],
                False,
            ),
        ):
            await self.gate.create_index("create index", collection, keys, name=name, unique=unique)

    # ------------------------------------------------------------------ leaves

    async def size(self, log: str) -> int:
        """Return how many leaves the log holds (its highest index plus one)."""
        cursor = self.entries.find({"log": log}, {"index": 1}).sort("index", DESCENDING).hint(_INDEX).limit(1)
        docs = await self.gate.call("read log size", cursor_list(cursor))
        if not docs:
            return 0
        index = docs[0].get("index")
        if type(index) is not int or index < 0:
            raise IntegrityError(f"log entry {docs[0].get('_id')!r} has a malformed index")
        return index + 1

    async def count_leaves(self, log: str) -> int:
        """Return how many leaf documents the log holds (its size, unless some were deleted)."""
        return int(await self.gate.call("count log entries", self.entries.count_documents({"log": log})))

    async def leaves(self, log: str, start: int) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(index, leaf hash)`` from ``start`` on, in index order, in bounded batches."""
        cursor = (
            self.entries.find({"log": log, "index": {"$gte": start}}, {"index": 1, "hash": 1})
            .sort("index", ASCENDING)
            .hint(_INDEX)
            .batch_size(BATCH_SIZE * 4)
        )
        async with self.gate.translated("read log entries"):
            async for doc in cursor:
                index = doc.get("index")
                if type(index) is not int:
                    raise IntegrityError(f"log entry {doc.get('_id')!r} has a malformed index")
                yield index, _hash(doc, f"leaf {index} of log {log!r}")

    async def sequenced(self, log: str, event_keys: Sequence[str]) -> set[str]:
        """Return which of these events already have a leaf in the log."""
        if not event_keys:
            return set()
        cursor = self.entries.find({"log": log, "event": {"$in": list(event_keys)}}, {"event": 1}).hint(
            _EVENT
        )
        docs = await self.gate.call("read log entries", cursor_list(cursor))
        return {str(d.get("event")) for d in docs}

    async def leaf_data(self, log: str, event_keys: Sequence[str]) -> dict[str, str]:
        """Return the leaf text (``data``) of those of these events that have a leaf in the log."""
        if not event_keys:
            return {}
        query = {"log": log, "event": {"$in": list(event_keys)}}
        cursor = self.entries.find(query, {"event": 1, "data": 1}).hint(_EVENT)
        docs = await self.gate.call("read log entries", cursor_list(cursor))
        return {str(d.get("event")): str(d.get("data")) for d in docs}

    async def event_leaves(self, log: str, start: int, limit: int) -> list[tuple[int, str]]:
        """Return up to ``limit`` ``(index, event key)`` of the log's event leaves from ``start`` on.

        A range on the ``(log, index)`` index: a caller pages through the log in bounded batches.
        """
        query = {"log": log, "index": {"$gte": start}, "kind": {"$ne": "receipt"}}
        cursor = self.entries.find(query, {"index": 1, "event": 1}).sort("index", ASCENDING).hint(_INDEX)
        docs = await self.gate.call("read log entries", cursor_list(cursor.limit(limit).batch_size(limit)))
        out = []
        for doc in docs:
            index = doc.get("index")
            if type(index) is not int:
                raise IntegrityError(f"log entry {doc.get('_id')!r} has a malformed index")
            out.append((index, str(doc.get("event"))))
        return out

    async def append(self, log: str, start: int, leaves: Sequence[Mapping[str, Any]]) -> int:
        """Insert leaves at ``start, start + 1, …`` in order; return how many went in before a clash.

        A clash (another sequencer took an index, or sequenced one of these events first)
        stops the batch there: the caller reads what the other wrote and carries on.
        """
        docs = [
            {**dict(leaf), "_id": f"{log}#{start + i}", "log": log, "index": start + i}
            for i, leaf in enumerate(leaves)
        ]
        if not docs:
            return 0

        async def insert() -> int:
            try:
                await self.entries.insert_many(docs, ordered=True)
            except BulkWriteError as e:
                errors = e.details.get("writeErrors", [])
                if any(err.get("code") != 11000 for err in errors):
                    raise IntegrityError(f"append log entries: {errors[:1]}") from e
                return int(e.details.get("nInserted", 0))
            return len(docs)

        return await self.gate.call("append log entries", insert())

    async def leaf(
        self, log: str, *, event: str | None = None, index: int | None = None
    ) -> dict[str, Any] | None:
        """Return the leaf document of an event, or at an index."""
        # One document by a unique key either way: ``_id``, or the ``(log, event)`` index.
        query: dict[str, Any] = (
            {"_id": f"{log}#{index}"} if index is not None else {"log": log, "event": event}
        )
        doc = await self.gate.call("read log entry", self.entries.find_one(query))
        if doc is None:
            return None
        if doc.get("log") != log or type(doc.get("index")) is not int or type(doc.get("data")) is not str:
            raise IntegrityError(f"log entry {doc.get('_id')!r} is malformed")
        return dict(doc)

    # ------------------------------------------------------------------ tree nodes

    async def put_nodes(self, log: str, nodes: Sequence[tuple[Node, bytes]]) -> None:
        """Store complete-subtree hashes (level ≥ 1); ones already stored (a re-run, a racer) are kept."""
        docs = [
            {"_id": f"{log}#n{level}.{i}", "log": log, "kind": "node", "hash": h.hex()}
            for (level, i), h in nodes
            if level > 0
        ]
        if not docs:
            return

        async def insert() -> None:
            try:
                await self.tree.insert_many(docs, ordered=False)
            except BulkWriteError as e:
                # Nodes are a pure function of the leaves: a duplicate holds the same hash.
                if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                    raise IntegrityError(f"store log nodes: {e.details.get('writeErrors', [])[:1]}") from e

        await self.gate.call("store log nodes", insert())

    async def hashes(self, log: str, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """Return the hashes of these complete subtrees (leaves are level 0), in two queries.

        Raises:
            IntegrityError: one is missing (the log was damaged, or never finished).
        """
        wanted = sorted(set(nodes))
        leaf_ids = [f"{log}#{i}" for level, i in wanted if level == 0]
        node_ids = [f"{log}#n{level}.{i}" for level, i in wanted if level > 0]
        found: dict[str, Any] = {}
        for collection, ids in ((self.entries, leaf_ids), (self.tree, node_ids)):
            if ids:
                cursor = collection.find({"_id": {"$in": ids}}, {"hash": 1})
                for doc in await self.gate.call("read log nodes", cursor_list(cursor)):
                    found[str(doc.get("_id"))] = doc
        out: dict[Node, bytes] = {}
        for level, i in wanted:
            key = f"{log}#{i}" if level == 0 else f"{log}#n{level}.{i}"
            out[(level, i)] = _hash(found.get(key), f"subtree {level}.{i} of log {log!r}")
        return out

    # ------------------------------------------------------------------ heads and checkpoints

    async def put_head(
        self,
        log: str,
        size: int,
        root: bytes,
        *,
        note: str | None = None,
        watermark: datetime | None = None,
    ) -> None:
        """Record a tree head the sequencer reached (all its nodes are stored), or a checkpoint of it.

        A checkpoint is stored beside its head (``note`` given); writing the same head
        twice keeps the first (they hold the same root, or the log is damaged). A head
        written by a completed sequencing run carries its ``watermark``: the time the run
        started, before which every committed event of the scope is in the log.
        """
        kind, key = ("checkpoint", f"{log}#c{size}") if note is not None else ("head", f"{log}#h{size}")
        doc: dict[str, Any] = {"_id": key, "log": log, "kind": kind, "size": size, "hash": root.hex()}
        if note is not None:
            doc["note"] = note
        if watermark is not None:
            doc["watermark"] = watermark
        try:
            await self.gate.call("store tree head", self.tree.insert_one(doc))
        except DuplicateKeyError:
            existing = await self.gate.call("read tree head", self.tree.find_one({"_id": key}))
            if existing is None or _hash(existing, f"tree head {size} of log {log!r}") != root:
                raise IntegrityError(
                    f"log {log!r} already has a different root at size {size}: the log was altered"
                ) from None

    async def latest(self, log: str, kind: str = "head") -> dict[str, Any] | None:
        """Return the latest stored head (``"head"``) or checkpoint (``"checkpoint"``) of a log."""
        cursor = self.tree.find({"log": log, "kind": kind}).sort("size", DESCENDING).hint(_HEADS).limit(1)
        docs = await self.gate.call("read tree head", cursor_list(cursor))
        if not docs:
            return None
        doc = docs[0]
        if type(doc.get("size")) is not int or (kind == "checkpoint" and type(doc.get("note")) is not str):
            raise IntegrityError(f"tree head {doc.get('_id')!r} is malformed")
        _hash(doc, f"tree head {doc.get('_id')!r}")
        return dict(doc)

    # ------------------------------------------------------------------ the log's own reads

    async def sequenced_since(self, log: str, since: datetime) -> set[str]:
        """Return the events in the log created at or after ``since`` (leaves that record their time)."""
        cursor = self.entries.find({"log": log, "created_at": {"$gte": since}}, {"event": 1}).hint(_LEAF_TIME)
        async with self.gate.translated("read log entries"):
            return {str(doc.get("event")) async for doc in cursor.batch_size(BATCH_SIZE * 4)}

    async def receipt_leaves(self, log: str) -> list[dict[str, Any]]:
        """Return the log's receipt leaves (``event`` is ``receipt:<id>``), with their stored digests."""
        cursor = self.entries.find(
            {"log": log, "kind": "receipt"}, {"event": 1, "receipt_digest": 1, "index": 1}
        )
        return await self.gate.call("read log entries", cursor_list(cursor.batch_size(BATCH_SIZE * 4)))
