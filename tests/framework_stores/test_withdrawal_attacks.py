"""Attacks on a checkpoint's withdrawal (the mark on its record, then its receipt).

A load sees a withdrawal only in the record it reads, so every way a withdrawal's receipt
can exist beside an unmarked record would bring a deleted checkpoint back: an import onto
a run the database holds already, an export read while a delete ran, a mark that missed
its record. And a few that held: scopes, legal holds.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_framework import WorkflowCheckpoint

from chatledger import MongoCheckpointStorage
from chatledger.admin import export_jsonl, import_jsonl, release_hold, run_erasure, set_hold, verify
from tests.framework_stores.test_checkpoint_withdrawal import WF, _gone, _record, _run


async def _export(database: Any, path: Path, *, audit: bool) -> Path:
    with path.open("w") as out:
        await export_jsonl(database, out, audit=audit)
    return path


@pytest.mark.parametrize("audit", [True, False], ids=["audit", "no-audit"])
async def test_a_withdrawal_imported_onto_the_run_already_there_hides_the_checkpoint(
    database: Any, tmp_path: Path, audit: bool
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second, third = await _run(storage)
    before = await _export(database, tmp_path / "before.jsonl", audit=False)
    copy = database.client[f"t_{uuid.uuid4().hex[:16]}"]
    try:
        await import_jsonl(copy, before)  # the copy holds the run, nothing withdrawn
        assert await storage.delete(second) is True
        # The same run again, now with the withdrawal: its events are there already.
        await import_jsonl(copy, await _export(database, tmp_path / "after.jsonl", audit=audit))
        restored = MongoCheckpointStorage(database=copy, user_id="alice")
        assert await _gone(restored, second)
        assert await restored.list_checkpoint_ids(workflow_name=WF) == [first, third]
        assert (await verify(copy)).ok
    finally:
        await database.client.drop_database(copy.name)


async def test_an_export_read_while_a_delete_ran_still_withdraws_on_import(
    database: Any, tmp_path: Path
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    assert await storage.delete(second) is True
    path = await _export(database, tmp_path / "raced.jsonl", audit=True)
    # An export reads the events before the receipts: a delete between the two leaves
    # its receipt in the file and its record there unmarked.
    lines = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item.get("type") == "event":
            item["doc"].pop("withdrawn", None)
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    copy = database.client[f"t_{uuid.uuid4().hex[:16]}"]
    try:
        await import_jsonl(copy, path)
        restored = MongoCheckpointStorage(database=copy, user_id="alice")
        assert await _gone(restored, second)
        assert await restored.list_checkpoint_ids(workflow_name=WF) == [first]
    finally:
        await database.client.drop_database(copy.name)


async def test_a_delete_whose_mark_misses_its_record_still_hides_it(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    # A record stored off its key (verify reports it; it is still read by its id).
    record = await _record(database, second)
    await database["events"].delete_one({"_id": record["_id"]})
    await database["events"].insert_one({**record, "_id": "re-keyed"})
    fresh = MongoCheckpointStorage(database=database, user_id="alice")
    assert await fresh.delete(second) is True
    assert await _gone(fresh, second)
    assert await _gone(MongoCheckpointStorage(database=database, user_id="alice"), second)
    assert await fresh.list_checkpoint_ids(workflow_name=WF) == [first]


async def test_no_scope_can_mark_or_hide_another_scopes_checkpoint(database: Any) -> None:
    alice = MongoCheckpointStorage(database=database, user_id="alice")
    (mine,) = await _run(alice, 1)
    others = [
        MongoCheckpointStorage(database=database, user_id="bob"),
        MongoCheckpointStorage(database=database, user_id="alice", tenant_id="acme"),
        MongoCheckpointStorage("elsewhere", database=database, user_id="alice"),
    ]
    for other in others:
        assert await other.delete(mine) is False
    assert "withdrawn" not in await _record(database, mine)
    # Bob's own checkpoint under the same id: his delete withdraws his alone.
    bob = others[0]
    await bob.save(WorkflowCheckpoint(workflow_name=WF, graph_signature_hash="h", checkpoint_id=mine))
    assert await bob.delete(mine) is True
    assert await _gone(bob, mine)
    assert (await alice.load(mine)).checkpoint_id == mine
    assert await MongoCheckpointStorage(database=database, user_id="alice").load(mine) is not None


async def test_a_delete_under_legal_hold_withdraws_as_before_and_the_hold_keeps_the_mark(
    database: Any,
) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    first, second = await _run(storage, 2)
    run = (await _record(database, second))["thread_id"]
    await set_hold(database, run, reason="case 7")
    assert await storage.delete(second) is True
    assert await _gone(storage, second)
    assert (await verify(database)).ok
    await run_erasure(database, user_id="alice", apply=True)
    # Held: the record, its mark and the withdrawal stay.
    assert (await _record(database, second))["withdrawn"]
    assert await _gone(MongoCheckpointStorage(database=database, user_id="alice"), second)
    assert (await storage.load(first)).checkpoint_id == first
    await release_hold(database, run, reason="case closed", case="case 7")
    await run_erasure(database, user_id="alice", apply=True)
    assert await database["events"].count_documents({"withdrawn": {"$exists": True}}) == 0
