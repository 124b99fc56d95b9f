"""A withdrawn checkpoint: the mark on its record, its receipt, and every way the two can part.

``MongoCheckpointStorage.delete`` marks the record (``withdrawn``, naming the receipt),
then writes the ``checkpoint.deleted`` receipt. A load reads only the record, so the
mark is what hides it; withdrawals recorded before records were marked are read from
their receipts, once per storage.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_framework import WorkflowCheckpoint, WorkflowCheckpointException
from pymongo import monitoring

from chatledger import EventIdReusedError, MongoCheckpointStorage, StorageUnavailableError
from chatledger.admin import export_jsonl, import_jsonl, run_erasure, verify
from chatledger.admin.records import withdrawn_checkpoints
from chatledger.storage.receipts import ReceiptStore
from tests.conftest import Backend
from tests.helpers import Listener, monitored

WF = "withdrawn-workflow"


def _cp(previous: str | None = None) -> WorkflowCheckpoint:
    return WorkflowCheckpoint(workflow_name=WF, graph_signature_hash="h", previous_checkpoint_id=previous)


async def _run(storage: MongoCheckpointStorage, length: int = 3) -> list[str]:
    ids: list[str] = []
    for _ in range(length):
        ids.append(await storage.save(_cp(ids[-1] if ids else None)))
    return ids


async def _record(database: Any, checkpoint_id: str) -> dict[str, Any]:
    doc = await database["events"].find_one({"event_id": checkpoint_id})
    assert doc is not None
    return dict(doc)


async def _gone(storage: MongoCheckpointStorage, checkpoint_id: str) -> bool:
    with pytest.raises(WorkflowCheckpointException):
        await storage.load(checkpoint_id)
    return checkpoint_id not in await storage.list_checkpoint_ids(workflow_name=WF)


async def test_delete_marks_the_record_with_its_receipt_and_leaves_the_chain_intact(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second, third = await _run(storage)
    before = await _record(database, second)
    assert await storage.delete(second) is True
    after = await _record(database, second)
    receipt = await database["audit"].find_one({"kind": "checkpoint.deleted"})
    assert after["withdrawn"] == receipt["_id"]
    assert {k: v for k, v in after.items() if k != "withdrawn"} == before
    assert (await verify(database)).ok
    assert await _gone(storage, second)
    assert await storage.list_checkpoint_ids(workflow_name=WF) == [first, third]
    # A second delete keeps the first withdrawal's mark.
    assert await storage.delete(second) is False
    assert (await _record(database, second))["withdrawn"] == receipt["_id"]


async def test_saving_a_deleted_checkpoint_again_is_refused_not_reported_saved(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    checkpoint = _cp()
    await storage.save(checkpoint)
    await storage.delete(checkpoint.checkpoint_id)
    for saver in (storage, MongoCheckpointStorage(database=database, user_id="alice")):
        with pytest.raises(EventIdReusedError, match="was deleted"):
            await saver.save(checkpoint)
    assert await database["events"].count_documents({}) == 1


async def test_a_receipt_without_its_mark_is_completed_by_deleting_again(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second, third = await _run(storage)
    assert await storage.delete(second) is True
    # What the code before the mark (never released) left, or a database writer who took
    # the mark off: the receipt alone. The operators' view lists the withdrawal, verify
    # names the record that loads again; deleting again marks it.
    await database["events"].update_one({"event_id": second}, {"$unset": {"withdrawn": ""}})
    record = await _record(database, second)
    withdrawn = await withdrawn_checkpoints(database, record["thread_id"], record["seq"])
    assert len(withdrawn) == 1
    report = await verify(database)
    assert [(p.seq, p.event_id) for p in report.problems] == [(record["seq"], second)]
    assert "carries no withdrawal mark" in report.problems[0].reason
    fresh = MongoCheckpointStorage(database=database, user_id="alice")
    assert await fresh.delete(second) is False
    assert "withdrawn" in await _record(database, second)
    assert (await verify(database)).ok
    assert await _gone(fresh, second)
    assert await fresh.list_checkpoint_ids(workflow_name=WF) == [first, third]


async def test_a_delete_killed_between_its_writes_hides_the_checkpoint_and_a_rerun_records_it(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    real_insert = ReceiptStore.insert

    async def dying(self: ReceiptStore, doc: Any) -> None:
        raise StorageUnavailableError("the server went away")

    monkeypatch.setattr(ReceiptStore, "insert", dying)
    with pytest.raises(StorageUnavailableError):
        await storage.delete(second)
    monkeypatch.setattr(ReceiptStore, "insert", real_insert)
    assert await database["audit"].count_documents({"kind": "checkpoint.deleted"}) == 0
    # Hidden already, from this storage and any other; the operators' view agrees.
    assert await _gone(storage, second)
    assert await _gone(MongoCheckpointStorage(database=database, user_id="alice"), second)
    record = await _record(database, second)
    withdrawn = await withdrawn_checkpoints(database, record["thread_id"], record["seq"])
    assert [w.receipt_id for w in withdrawn.values()] == [record["withdrawn"]]
    # Running it again writes the receipt the mark names, once.
    assert await storage.delete(second) is True
    assert await storage.delete(second) is False
    receipt = await database["audit"].find_one({"kind": "checkpoint.deleted"})
    assert receipt["_id"] == record["withdrawn"]
    assert await storage.load(first) is not None


async def test_two_processes_deleting_at_once_report_one_deletion(database: Any) -> None:
    writer = MongoCheckpointStorage(database=database, user_id="alice")
    ids = await _run(writer, 4)
    a, b = (MongoCheckpointStorage(database=database, user_id="alice") for _ in range(2))
    for checkpoint_id in ids:
        results = await asyncio.gather(a.delete(checkpoint_id), b.delete(checkpoint_id))
        assert sorted(results) == [False, True]
    assert await database["audit"].count_documents({"kind": "checkpoint.deleted"}) == 4
    assert await writer.list_checkpoints(workflow_name=WF) == []


async def test_a_forged_mark_of_any_shape_hides_the_record_without_crashing(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    await database["events"].update_one({"event_id": second}, {"$set": {"withdrawn": {"x": [1]}}})
    assert await _gone(storage, second)
    assert await storage.list_checkpoint_ids(workflow_name=WF) == [first]
    record = await _record(database, second)
    withdrawn = await withdrawn_checkpoints(database, record["thread_id"], record["seq"])
    assert [w.receipt_id for w in withdrawn.values()] == [str({"x": [1]})]
    report = await verify(database)
    assert ["not a receipt id" in p.reason for p in report.problems] == [True]


async def test_erasure_leaves_no_mark_and_export_import_keeps_the_withdrawal(
    database: Any, tmp_path: Path
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second, third = await _run(storage)
    await storage.delete(second)
    # Exported without the audit trail (the default): the mark travels with the record.
    path = tmp_path / "ledger.jsonl"
    with path.open("w") as out:
        await export_jsonl(database, out)
    copy = database.client[f"t_{uuid.uuid4().hex[:16]}"]
    try:
        await import_jsonl(copy, path)
        restored = MongoCheckpointStorage(database=copy, user_id="alice")
        assert (await verify(copy)).ok
        assert await restored.list_checkpoint_ids(workflow_name=WF) == [first, third]
        assert await _gone(restored, second)
    finally:
        await database.client.drop_database(copy.name)
    await run_erasure(database, user_id="alice", apply=True)
    assert await database["events"].count_documents({"withdrawn": {"$exists": True}}) == 0
    assert (await verify(database)).ok


class _Commands(Listener):
    """Names the commands sent, collection by collection."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, event.command.get(event.command_name)))


async def test_a_load_reads_one_document_and_a_listing_no_receipt(real_backend: Backend) -> None:
    listener = _Commands()
    async with monitored(real_backend, listener) as database:
        storage = MongoCheckpointStorage(database=database)
        ids = await _run(storage, 3)
        await storage.delete(ids[1])
        listener.sent.clear()
        assert (await storage.load(ids[2])).checkpoint_id == ids[2]
        assert listener.sent == [("find", "events")]
        listener.sent.clear()
        with pytest.raises(WorkflowCheckpointException):
            await storage.load(ids[1])
        assert listener.sent == [("find", "events")]
        listener.sent.clear()
        assert await storage.list_checkpoint_ids(workflow_name=WF) == [ids[0], ids[2]]
        assert ("find", "audit") not in listener.sent
