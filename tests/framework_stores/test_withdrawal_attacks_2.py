"""Second round of attacks on a checkpoint's withdrawal: verify's rule, import's marking, delete.

An import file is checked before its first write and changes only what it carries: a
receipt in it that names a record of another thread (another scope's, by thread, seq
and hash) must not withdraw that checkpoint. A record's mark in a file is judged as
verify judges it once stored. Verify reads the deletion receipts once, before the
events (a delete running meanwhile is no problem): one forged receipt must not hide a
real one's finding, the receipt is named, a wrong mark is named briefly, a real mark
copied onto another record is found. A checkpoint saved again after its withdrawn run
was removed is deleted with a receipt of its own. One that held: receipts of any shape
leave verify standing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_framework import WorkflowCheckpoint

from chatledger import MongoCheckpointStorage
from chatledger.admin import export_jsonl, import_jsonl, run_erasure, verify
from chatledger.admin.catalog import ThreadFilter
from chatledger.errors import InvalidInputError
from chatledger.storage.receipts import ReceiptStore
from chatledger.storage.tallies import EventTallies
from tests.framework_stores.test_checkpoint_withdrawal import WF, _gone, _record, _run


async def _export(database: Any, path: Path, **filters: str) -> Path:
    with path.open("w") as out:
        await export_jsonl(database, out, ThreadFilter(**filters) if filters else None, audit=True)
    return path


def _edit(path: Path, change: Any) -> list[dict[str, Any]]:
    """Rewrite the file's records through ``change(items)`` (which may add or alter lines)."""
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items = change(items)
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return items


async def test_an_import_file_cannot_withdraw_a_checkpoint_of_a_thread_it_does_not_carry(
    database: Any, tmp_path: Path
) -> None:
    alice = MongoCheckpointStorage(database=database, user_id="alice", tenant_id="a")
    bob = MongoCheckpointStorage(database=database, user_id="bob", tenant_id="b")
    await _run(alice, 2)
    (theirs,) = await _run(bob, 1)
    victim = await _record(database, theirs)
    # Tenant a's export, with a receipt line forged to name bob's record: the file does
    # not hold bob's run, only its thread, seq and hash.
    path = await _export(database, tmp_path / "a.jsonl", tenant_id="a")

    def forge(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        receipt = {
            "_id": "checkpoint-deleted:forged",
            "kind": "checkpoint.deleted",
            "at": {"$date": "2026-01-01T00:00:00Z"},
            "by": "mallory",
            "checkpoint_id": theirs,
            "thread_id": victim["thread_id"],
            "seq": victim["seq"],
            "hash": victim["hash"],
            "tenant_id": "a",
            "user_id": "alice",
        }
        end = items.pop()
        end["receipts"] = end.get("receipts", 0) + 1
        return [*items, {"type": "receipt", "doc": receipt}, end]

    _edit(path, forge)
    await import_jsonl(database, path)  # alice's run is there already: a re-run
    assert "withdrawn" not in await _record(database, theirs)
    assert (await bob.load(theirs)).checkpoint_id == theirs
    assert await bob.list_checkpoint_ids(workflow_name=WF) == [theirs]
    # The forged receipt is on record now, and verify names the record it claims.
    report = await verify(database)
    assert [p.event_id for p in report.problems] == [theirs]


@pytest.mark.parametrize("mark", [7, {"$oid": "0123456789abcdef01234567"}, None, ["r"]])
async def test_an_import_file_whose_record_carries_a_mark_verify_refuses_is_refused_whole(
    database: Any, tmp_path: Path, mark: Any
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    assert await storage.delete(second) is True
    path = await _export(database, tmp_path / "run.jsonl")

    def spoil(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            if item["type"] == "event" and item["doc"].get("event_id") == second:
                item["doc"]["withdrawn"] = mark
        return items

    _edit(path, spoil)
    copy = database.client[f"{database.name}_copy"]
    try:
        with pytest.raises(InvalidInputError, match="withdrawal mark"):
            await import_jsonl(copy, path)
        assert await copy["events"].count_documents({}) == 0
        assert await copy["audit"].count_documents({}) == 0
    finally:
        await database.client.drop_database(copy.name)


async def test_a_forged_receipt_at_the_same_position_does_not_hide_the_real_ones_finding(
    database: Any,
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    assert await storage.delete(second) is True
    record = await _record(database, second)
    # An earlier build's state (a receipt, no mark), and a second receipt naming the same
    # place with another hash, written after it.
    await database["events"].update_one({"_id": record["_id"]}, {"$unset": {"withdrawn": ""}})
    receipt = await database["audit"].find_one({"kind": "checkpoint.deleted"})
    await database["audit"].insert_one({**receipt, "_id": "checkpoint-deleted:other", "hash": "0" * 64})
    report = await verify(database)
    assert [p.event_id for p in report.problems] == [second]
    assert (await verify(database, thread_id=record["thread_id"])).to_dict() == report.to_dict()
    # The operator is told which receipt: it may be the wrong one (forged, or another
    # ledger's restored with an audit trail), and then deleting again is not the answer.
    assert receipt["_id"] in report.problems[0].reason
    assert "checkpoint-deleted:other" not in report.problems[0].reason


async def test_a_wrong_mark_is_named_in_a_short_line(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    await database["events"].update_one({"event_id": second}, {"$set": {"withdrawn": ["x" * 100] * 1000}})
    assert await _gone(storage, second)
    (problem,) = (await verify(database)).problems
    assert "not a receipt id" in problem.reason
    assert len(problem.reason) < 400


async def test_receipts_of_every_shape_leave_verify_standing(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    record = await _record(database, second)
    odd: list[dict[str, Any]] = [
        {"thread_id": [record["thread_id"]], "seq": record["seq"], "hash": record["hash"]},
        {"thread_id": record["thread_id"], "seq": str(record["seq"]), "hash": record["hash"]},
        {"thread_id": record["thread_id"], "seq": True, "hash": record["hash"]},
        {"thread_id": record["thread_id"], "seq": float(record["seq"]), "hash": record["hash"]},
        {"thread_id": record["thread_id"], "seq": record["seq"], "hash": {"h": record["hash"]}},
        {"thread_id": None},
        {},
    ]
    for index, fields in enumerate(odd):
        await database["audit"].insert_one({"_id": f"odd{index}", "kind": "checkpoint.deleted", **fields})
    await database["audit"].insert_one({"_id": {"not": "a string"}, "kind": "checkpoint.deleted"})
    assert (await verify(database)).ok
    assert (await verify(database, thread_id=record["thread_id"])).ok
    assert (await storage.load(second)).checkpoint_id == second


async def test_a_delete_while_a_whole_verify_read_the_events_is_no_problem(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    real_spool = EventTallies.spool

    async def then_a_delete(self: EventTallies, *args: Any, **kwargs: Any) -> Any:
        # The whole run's one pass over the events is done; an application deletes a
        # checkpoint now, mark then receipt, as it may at any moment of a long run.
        spool = await real_spool(self, *args, **kwargs)
        assert await storage.delete(second) is True
        return spool

    monkeypatch.setattr(EventTallies, "spool", then_a_delete)
    report = await verify(database)
    assert report.ok, report.problems
    assert await _gone(storage, second)


async def test_a_checkpoint_saved_again_after_its_run_was_erased_is_deleted_with_a_receipt(
    database: Any,
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    assert await storage.delete(second) is True
    # Retention or erasure removes the run; the deletion's receipt stays (the audit trail).
    await run_erasure(database, user_id="alice", apply=True)
    # The id is free again (nothing of the run is left): saved, it starts a run of its own.
    again = WorkflowCheckpoint(workflow_name=WF, graph_signature_hash="h", checkpoint_id=second)
    assert await storage.save(again) == second
    assert (await storage.load(second)).checkpoint_id == second
    # Deleting it is a deletion like any other: reported, and on record with its own receipt.
    assert await storage.delete(second) is True
    assert await _gone(storage, second)
    record = await _record(database, second)
    receipt = await database["audit"].find_one({"_id": record["withdrawn"]})
    assert (receipt["thread_id"], receipt["seq"], receipt["hash"]) == (
        record["thread_id"],
        record["seq"],
        record["hash"],
    )
    assert await database["audit"].count_documents({"kind": "checkpoint.deleted"}) == 2
    assert await storage.delete(second) is False
    assert (await verify(database)).ok


async def test_a_mark_copied_onto_another_record_is_named_by_verify(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    assert await storage.delete(second) is True
    # The mark is outside the hash: a database writer copies a real one onto another
    # record, hiding that checkpoint. (One naming no receipt cannot be told from a copy
    # made without the audit trail, where every mark names none: that one verify allows.)
    await database["events"].update_one(
        {"event_id": first}, {"$set": {"withdrawn": (await _record(database, second))["withdrawn"]}}
    )
    assert await _gone(storage, first)
    report = await verify(database)
    assert [p.event_id for p in report.problems] == [first]
    assert "withdraws another record" in report.problems[0].reason
    thread = (await _record(database, first))["thread_id"]
    assert (await verify(database, thread_id=thread)).to_dict() == report.to_dict()


async def test_a_delete_between_verify_reading_receipts_and_events_is_no_problem(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    _, second = await _run(storage, 2)
    thread = (await _record(database, second))["thread_id"]
    real_of_kind = ReceiptStore.of_kind
    deleted: list[bool] = []

    async def then_a_delete(self: ReceiptStore, kind: str, **options: Any) -> Any:
        found = await real_of_kind(self, kind, **options)
        if kind == "checkpoint.deleted" and not deleted:
            deleted.append(await storage.delete(second))  # its mark is in the events read next
        return found

    monkeypatch.setattr(ReceiptStore, "of_kind", then_a_delete)
    for scope in ({}, {"thread_id": thread}):
        deleted.clear()
        await database["events"].update_one({"event_id": second}, {"$unset": {"withdrawn": ""}})
        await database["audit"].delete_many({"kind": "checkpoint.deleted"})
        report = await verify(database, **scope)
        assert deleted == [True]
        assert report.ok, report.problems
