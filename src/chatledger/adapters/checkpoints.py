"""``MongoCheckpointStorage``: the framework's workflow ``CheckpointStorage`` as ledger threads.

Layout: a checkpoint is one immutable ledger event (``event_id`` = the checkpoint id,
one message of role ``"chatledger.checkpoint"`` holding the framework's own encoding
of the checkpoint as JSON). A checkpoint without a stored predecessor starts a *run*:
a root thread whose ``metadata.workflow_name`` names the workflow. A checkpoint whose
``previous_checkpoint_id`` is stored is appended right after it (after its chunks, for
a large one): on the same thread when the predecessor is that thread's newest
checkpoint, otherwise on a new branch forked there (a run resumed from an older
checkpoint). Every record is hash-chained
to its predecessor, so ``verify`` proves a run's history, and branches share it.

A checkpoint whose encoding exceeds :data:`CHUNK_CHARS` is stored in chunks first: events
of its run, right after its predecessor (event ids :data:`CHUNK_ID_PREFIX` + digest +
index), then committed by its record right after them, which names their number and
their SHA-256. Until the record is written nothing refers to the chunks (listings skip
chunk events), so a checkpoint is never half-visible, and a retried save finds the
chunks already written. Being events of the run's lineage, chunks are kept, held,
verified, exported and removed exactly as long as the record that needs them.

``delete`` withdraws a checkpoint: its record is marked withdrawn (the ``withdrawn``
field, outside the hash, naming the receipt), then an audit receipt
(``checkpoint.deleted``) is written, and the checkpoint is never loaded or listed again,
while its record stays in the chain (the chain of the checkpoints after it must still
verify). The mark comes first, so a delete killed half-way already hides the checkpoint
and a re-run writes the receipt; the mark lets a load see the withdrawal in the one
document it reads. Its content is removed with its run by
retention or erasure, through the removal protocol.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Unpack

from agent_framework import WorkflowCheckpoint, WorkflowCheckpointException

from chatledger.adapters.checkpoint_records import (
    CHECKPOINT_ROLE,
    CHUNK_CHARS,
    CHUNK_ID_PREFIX,
    WORKFLOW_KEY,
    CheckpointRecords,
    sha256,
)
from chatledger.adapters.connection import check_source_id
from chatledger.adapters.sources import LedgerOwner, StoreOptions
from chatledger.admin.records import CHECKPOINT_DELETED
from chatledger.errors import (
    ConcurrencyError,
    EventIdReusedError,
    InvalidInputError,
    ThreadRemovedError,
)
from chatledger.ledger import Position, storage_of
from chatledger.storage.events import WITHDRAWN
from chatledger.storage.framework import (
    events_of_threads,
    metadata_values,
    scoped_event,
    scoped_events,
    threads_with_metadata,
)

__all__ = ["CHECKPOINT_ROLE", "CHUNK_CHARS", "CHUNK_ID_PREFIX", "DELETED", "MongoCheckpointStorage"]

#: Receipt kind of a withdrawn checkpoint (defined once, where the operators' tools read it).
DELETED: Final = CHECKPOINT_DELETED
#: Longest checkpoint id accepted (it is the record's ``event_id``).
MAX_CHECKPOINT_ID_LENGTH: Final = 64
#: Records decoded at a time while listing (each may reassemble up to many MiB of chunks).
_PAGE_RECORDS: Final = 8
#: Record locations a storage remembers (a few MB at most).
_LOCATED_KEPT: Final = 10_000


def _usable_id(checkpoint_id: object) -> bool:
    """Return whether ``checkpoint_id`` can name a checkpoint stored here."""
    return (
        type(checkpoint_id) is str
        and 0 < len(checkpoint_id) <= MAX_CHECKPOINT_ID_LENGTH
        and not checkpoint_id.startswith(CHUNK_ID_PREFIX)
    )


def _check_id(checkpoint_id: object) -> str:
    if not _usable_id(checkpoint_id):
        raise InvalidInputError(
            f"checkpoint_id must be a non-empty str of at most {MAX_CHECKPOINT_ID_LENGTH} characters, "
            f"not starting with {CHUNK_ID_PREFIX!r}, got {checkpoint_id!r}"
        )
    return str(checkpoint_id)


def _check_workflow(workflow_name: object) -> str:
    if type(workflow_name) is not str or not workflow_name or len(workflow_name) > 200:
        raise InvalidInputError(
            f"workflow_name must be a non-empty str of at most 200 characters, got {workflow_name!r}"
        )
    return workflow_name


def _timestamp(checkpoint: WorkflowCheckpoint) -> datetime:
    try:
        moment = datetime.fromisoformat(checkpoint.timestamp)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def select_latest(checkpoints: list[WorkflowCheckpoint]) -> WorkflowCheckpoint:
    """Return the latest checkpoint by the framework's rule (``InMemoryCheckpointStorage.get_latest``).

    The newest timestamp wins; among checkpoints sharing it, one another of them names
    as its predecessor is superseded; then the greatest checkpoint id.
    """
    newest = max(_timestamp(cp) for cp in checkpoints)
    candidates = [cp for cp in checkpoints if _timestamp(cp) == newest]
    superseded = {cp.previous_checkpoint_id for cp in candidates}
    leaves = [cp for cp in candidates if cp.checkpoint_id not in superseded]
    return max(leaves or candidates, key=lambda cp: cp.checkpoint_id)


class MongoCheckpointStorage(LedgerOwner):
    """Keeps Agent Framework workflow checkpoints in MongoDB as immutable, hash-chained records.

    It implements the framework's ``CheckpointStorage`` protocol with the in-memory and
    file storages' behaviour (``load`` of an unknown id raises
    ``WorkflowCheckpointException``, ``delete`` returns whether it deleted, listings
    hold copies), and adds what an audit log needs: checkpoints are never changed
    (saving an id again with other content is refused), a run resumed from an older
    checkpoint branches instead of forgetting the newer ones, checkpoints over the
    16 MiB document limit are stored in chunks, and everything is scoped, sealed when
    the ledger seals, verified, exported, held and erased like any thread.

    Args:
        source_id: Part of the scope of the storage's threads.
        allowed_checkpoint_types: Types beyond the framework's safe set that loading may
            restore (``"module:qualname"``), as for ``FileCheckpointStorage``. Types
            registered with ``agent_framework.register_checkpoint_type`` must be listed
            here too (that registry is private to the framework).
        deleted_by: Who deletes, as recorded in ``checkpoint.deleted`` receipts.
        **options: Where the database is, the scope (``tenant_id``, ``user_id``) and the
            ledger's options: the keywords of :class:`MongoHistoryProvider`, documented
            there (``sealer=`` seals the payloads).

    Raises:
        InvalidInputError: an ``options`` error, as :class:`MongoHistoryProvider` raises it, or
            ``allowed_checkpoint_types`` not a list of strings.
    """

    DEFAULT_SOURCE_ID: ClassVar[str] = "workflow_checkpoints"

    def __init__(
        self,
        source_id: str = DEFAULT_SOURCE_ID,
        *,
        allowed_checkpoint_types: list[str] | None = None,
        deleted_by: str = "application",
        **options: Unpack[StoreOptions],
    ) -> None:
        self.source_id = check_source_id(source_id)
        if allowed_checkpoint_types is not None and not all(type(t) is str for t in allowed_checkpoint_types):
            raise InvalidInputError("allowed_checkpoint_types must be a list of 'module:qualname' strings")
        self._open(options)
        self._records = CheckpointRecords(
            self.ledger, self.binding, frozenset(allowed_checkpoint_types or ())
        )
        self.deleted_by = deleted_by
        # checkpoint id -> (thread, seq) of its record, for the ids this storage saved,
        # listed or loaded: a record never moves, so a later load reads it by primary key
        # (the event_id query is a scan on some engines).
        self._located: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def _locate(self, doc: Mapping[str, Any]) -> None:
        self._located[str(doc["event_id"])] = (str(doc["thread_id"]), int(doc["seq"]))
        self._located.move_to_end(str(doc["event_id"]))
        while len(self._located) > _LOCATED_KEPT:
            self._located.popitem(last=False)

    async def _record(self, checkpoint_id: str) -> dict[str, Any] | None:
        """Return the live record of ``checkpoint_id`` in this storage's scope, or ``None``."""
        where = self._located.get(checkpoint_id)
        if where is not None:
            try:
                doc = await storage_of(self.ledger).events.at(*where, full=True)
            except ThreadRemovedError:
                doc = None
            if doc is not None and doc.get("event_id") == checkpoint_id:
                return doc
            del self._located[checkpoint_id]
        doc = await scoped_event(storage_of(self.ledger), checkpoint_id, self.binding.scope)
        if doc is not None:
            self._locate(doc)
        return doc

    # ------------------------------------------------------------------ writing

    async def _parent(self, checkpoint: WorkflowCheckpoint, doc: Mapping[str, Any] | None) -> Position | None:
        """Return the position right after the checkpoint's predecessor (its stored record ``doc``)."""
        if doc is None:
            return None  # not stored here (deleted runs, another storage): this starts a run
        record = await self.ledger.thread(doc["thread_id"], self.binding.scope)
        if record is None or (record.metadata or {}).get(WORKFLOW_KEY) != checkpoint.workflow_name:
            return None
        return await self.binding.at(doc["thread_id"], doc["seq"])

    async def save(self, checkpoint: WorkflowCheckpoint) -> str:
        """Store the checkpoint as an immutable record after its predecessor; return its id.

        Saving the same checkpoint again is a no-op; saving its id with other content is refused.

        Raises:
            WorkflowCheckpointException: the checkpoint cannot be encoded, or would not
                load under this storage's allowed types.
            InvalidInputError: the checkpoint id or workflow name is not usable.
            EventIdReusedError: a different checkpoint is already stored under this id, or
                the checkpoint stored under it was deleted.
        """
        if not isinstance(checkpoint, WorkflowCheckpoint):
            raise InvalidInputError(f"expected a WorkflowCheckpoint, got {type(checkpoint).__name__}")
        checkpoint_id = _check_id(checkpoint.checkpoint_id)
        workflow_name = _check_workflow(checkpoint.workflow_name)
        text = self._records.encode(checkpoint)
        # The checkpoint itself (a retried save) and its predecessor: one query for both.
        previous = checkpoint.previous_checkpoint_id
        wanted = [checkpoint_id]
        if isinstance(previous, str) and _usable_id(previous) and previous != checkpoint_id:
            wanted.append(previous)
        found = await scoped_events(storage_of(self.ledger), wanted, self.binding.scope)
        existing = found.get(checkpoint_id)
        if existing is not None:
            if self._withdrawn(existing):
                # Returning its id would report a save that no load can see.
                raise EventIdReusedError(
                    f"checkpoint {checkpoint_id!r} was deleted, and a deleted checkpoint's id is not used "
                    "again (save the state under a new checkpoint id)"
                )
            if await self._records.digest_of(existing) == sha256(text):
                return checkpoint_id
            raise EventIdReusedError(
                f"checkpoint {checkpoint_id!r} is already stored with other content; checkpoints are "
                "immutable (save the new state under a new checkpoint id)"
            )
        at = await self._parent(checkpoint, found.get(wanted[-1]) if len(wanted) > 1 else None)
        if at is None:
            at = self.binding.empty(self.binding.thread_id_for(json.dumps(["run", checkpoint_id])))
        at = await self._records.write(at, checkpoint_id, text, workflow_name)
        self._locate({"event_id": checkpoint_id, "thread_id": at.thread_id, "seq": at.offset})
        return checkpoint_id

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _withdrawn(doc: Mapping[str, Any]) -> bool:
        """Return whether the record ``doc`` was withdrawn (``delete`` marks it before its receipt)."""
        return WITHDRAWN in doc

    def _receipt_id(self, checkpoint_id: str, record: Mapping[str, Any]) -> str:
        # Named after the record, not the checkpoint id alone: once retention has removed a
        # withdrawn checkpoint's run, the id may be saved again, and deleting that record
        # is a deletion of its own (the first receipt stays, naming the record it withdrew).
        return "checkpoint-deleted:" + self.binding.scope.thread_id_for(
            json.dumps(["deleted", checkpoint_id, record["thread_id"], record["seq"]])
        )

    async def load(self, checkpoint_id: str) -> WorkflowCheckpoint:
        """Return the checkpoint stored under ``checkpoint_id`` (a fresh copy).

        Raises:
            WorkflowCheckpointException: no checkpoint with this id is stored (or it was
                deleted), or it cannot be decoded under the allowed types.
            IntegrityError: the stored record or its chunks are malformed.
        """
        if not _usable_id(checkpoint_id):
            raise WorkflowCheckpointException(f"No checkpoint found with ID {checkpoint_id}")
        doc = await self._record(checkpoint_id)
        if doc is None or self._withdrawn(doc):
            raise WorkflowCheckpointException(f"No checkpoint found with ID {checkpoint_id}")
        return self._records.decode(await self._records.payload(doc), f"checkpoint {checkpoint_id!r}")

    async def iter_checkpoints(self, *, workflow_name: str) -> AsyncIterator[WorkflowCheckpoint]:
        """Yield the workflow's checkpoints, run by run and in save order within a thread, a few at a time.

        Memory is bounded by a page of records (and one checkpoint's chunks), however many are stored.
        """
        workflow_name = _check_workflow(workflow_name)
        threads = await threads_with_metadata(
            storage_of(self.ledger), self.binding.scope, WORKFLOW_KEY, workflow_name
        )
        page: list[dict[str, Any]] = []
        async for doc in events_of_threads(storage_of(self.ledger), threads, skip_prefix=CHUNK_ID_PREFIX):
            page.append(doc)
            if len(page) >= _PAGE_RECORDS:
                for checkpoint in await self._page(page):
                    yield checkpoint
                page = []
        for checkpoint in await self._page(page):
            yield checkpoint

    async def _page(self, docs: list[dict[str, Any]]) -> list[WorkflowCheckpoint]:
        out: list[WorkflowCheckpoint] = []
        for doc in docs:
            self._locate(doc)
            if not self._withdrawn(doc):
                out.append(self._records.decode(await self._records.payload(doc), f"event {doc['_id']!r}"))
        return out

    async def list_checkpoints(self, *, workflow_name: str) -> list[WorkflowCheckpoint]:
        """Return every checkpoint of the workflow, oldest first (by timestamp, then save order)."""
        found = [cp async for cp in self.iter_checkpoints(workflow_name=workflow_name)]
        return sorted(found, key=_timestamp)

    async def list_checkpoint_ids(self, *, workflow_name: str) -> list[str]:
        """Return the ids of the workflow's checkpoints, in :meth:`list_checkpoints` order."""
        return [cp.checkpoint_id for cp in await self.list_checkpoints(workflow_name=workflow_name)]

    async def get_latest(self, *, workflow_name: str) -> WorkflowCheckpoint | None:
        """Return the workflow's latest checkpoint (the framework's rule), or ``None`` if it has none."""
        found = await self.list_checkpoints(workflow_name=workflow_name)
        return select_latest(found) if found else None

    async def list_workflows(self) -> list[str]:
        """Return the names of the workflows with stored checkpoints in this storage's scope, sorted."""
        return sorted(await metadata_values(storage_of(self.ledger), self.binding.scope, WORKFLOW_KEY))

    # ------------------------------------------------------------------ deleting

    async def delete(self, checkpoint_id: str) -> bool:
        """Withdraw a checkpoint; return ``False`` if none with this id is stored (or it was deleted already).

        The record is marked withdrawn and a ``checkpoint.deleted`` receipt is written;
        the checkpoint is never loaded or listed again. Its record stays in the hash chain
        (later checkpoints chain through it) until retention or erasure removes its run.
        A delete interrupted between the two writes has withdrawn the checkpoint already;
        running it again writes the receipt and returns ``True``.
        """
        if not _usable_id(checkpoint_id):
            return False
        doc = await self._record(checkpoint_id)
        if doc is None:
            return False
        receipt_id = self._receipt_id(checkpoint_id, doc)
        if WITHDRAWN not in doc:
            # First the mark, which every load sees, by the key the record is stored under
            # (what a load finds, the mark must reach). A concurrent delete may have marked
            # it meanwhile: the receipt insert below decides which of the two reports it.
            await storage_of(self.ledger).events.mark_withdrawn(str(doc["_id"]), str(doc["hash"]), receipt_id)
        from chatledger.admin.receipts import record  # admin sits beside the adapters

        try:
            await record(
                self.ledger,
                DELETED,
                self.deleted_by,
                _id=receipt_id,
                checkpoint_id=checkpoint_id,
                thread_id=doc["thread_id"],
                seq=doc["seq"],
                hash=doc["hash"],
                **self.binding.scope.fields(),
            )
        except ConcurrencyError:
            return False  # its receipt exists: deleted before
        return True
