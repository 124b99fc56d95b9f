"""Workflows checkpointed to ChatLedger: restored by a fresh storage, resumed from the past, and large."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agent_framework import (
    Executor,
    Workflow,
    WorkflowBuilder,
    WorkflowCheckpointException,
    WorkflowContext,
    handler,
)

import chatledger.ledger.documents
from chatledger import InvalidInputError, MongoCheckpointStorage
from chatledger.adapters.checkpoints import CHUNK_CHARS, CHUNK_ID_PREFIX
from chatledger.admin import RetentionPolicy, run_retention, verify
from tests.conftest import Backend


class Count(Executor):
    """Counts to four, one superstep (and so one checkpoint) per number."""

    @handler
    async def step(self, n: int, ctx: WorkflowContext[int, int]) -> None:
        if n >= 4:
            await ctx.yield_output(n)
        else:
            await ctx.send_message(n + 1)


def _workflow(storage: Any) -> Workflow:
    count = Count(id="count")
    return (
        WorkflowBuilder(start_executor=count, checkpoint_storage=storage, name="counter")
        .add_edge(count, count)
        .build()
    )


@pytest.mark.filterwarnings("ignore:Self-loop")
async def test_a_workflow_restored_by_a_fresh_storage_resumes_and_branches(database: Any) -> None:
    result = await _workflow(MongoCheckpointStorage(database=database)).run(0)
    assert result.get_outputs() == [4]

    # Another process: a new storage instance and a new workflow, only the database is shared.
    storage = MongoCheckpointStorage(database=database)
    first_run = await storage.list_checkpoints(workflow_name="counter")
    assert len(first_run) >= 3
    latest = await storage.get_latest(workflow_name="counter")
    assert latest is not None
    assert latest.checkpoint_id == first_run[-1].checkpoint_id
    older = first_run[1]

    resumed = await _workflow(storage).run(checkpoint_id=older.checkpoint_id)
    assert resumed.get_outputs() == [4]

    # Resuming the past branched: the first run is untouched, the new checkpoints
    # chain back to the older one, and every chain verifies.
    after = await storage.list_checkpoints(workflow_name="counter")
    new = [c for c in after if c.checkpoint_id not in {f.checkpoint_id for f in first_run}]
    assert new
    assert [c.checkpoint_id for c in after[: len(first_run)]] == [c.checkpoint_id for c in first_run]
    by_id = {c.checkpoint_id: c for c in after}
    link = new[-1]
    while link.previous_checkpoint_id in by_id and link.checkpoint_id != older.checkpoint_id:
        link = by_id[link.previous_checkpoint_id]
    assert link.checkpoint_id == older.checkpoint_id
    threads = [t async for t in database["threads"].find({"metadata.workflow_name": "counter"})]
    assert len(threads) == 2
    assert sum(t["parent"] is not None for t in threads) == 1
    report = await verify(database)
    assert report.ok
    assert report.events == len(after)


async def test_a_20_mib_checkpoint_is_stored_in_chunks_and_loads_whole(
    backend: Backend, database: Any
) -> None:
    if backend.driver == "motor":
        pytest.skip("the 16 MiB limit is the server's: one driver on each server proves it")
    storage = MongoCheckpointStorage(database=database)
    blob = hashlib.sha256(b"seed").hexdigest() * (20 * 1024 * 1024 // 64)  # 20 MiB, incompressible-ish
    small = await storage.save(_checkpoint(state={"n": 1}))
    big = await storage.save(_checkpoint(previous_checkpoint_id=small, state={"blob": blob}))

    fresh = MongoCheckpointStorage(database=database)
    loaded = await fresh.load(big)
    assert loaded.state["blob"] == blob
    latest = await fresh.get_latest(workflow_name="big")
    assert latest is not None
    assert latest.checkpoint_id == big
    # No document comes near the 16 MiB limit; the record commits to its chunks.
    largest = max([len(e["messages"][0]["text"]) async for e in database["events"].find({})])
    assert largest <= CHUNK_CHARS
    assert (await verify(database)).ok
    # Saving it again (a retry) writes nothing new.
    count = await database["events"].count_documents({})
    await fresh.save(loaded)
    assert await database["events"].count_documents({}) == count


async def test_chunks_without_their_record_are_invisible(database: Any) -> None:
    # A save that died after writing its chunks: nothing refers to them, nothing lists them.
    storage = MongoCheckpointStorage(database=database)
    small = await storage.save(_checkpoint())
    text = "x" * (CHUNK_CHARS + 10)
    at = await storage.binding.head((await database["events"].find_one({"event_id": small}))["thread_id"])
    await storage._records.write_chunks(at, text, hashlib.sha256(text.encode()).hexdigest(), "big")
    assert await storage.list_checkpoint_ids(workflow_name="big") == [small]
    latest = await storage.get_latest(workflow_name="big")
    assert latest is not None
    assert latest.checkpoint_id == small
    for chunk_id in (await database["events"].find_one({"seq": 2}))["event_id"], CHUNK_ID_PREFIX + "x":
        with pytest.raises(WorkflowCheckpointException):
            await storage.load(chunk_id)
        assert await storage.delete(chunk_id) is False
    with pytest.raises(InvalidInputError):
        await storage.save(_checkpoint(checkpoint_id=CHUNK_ID_PREFIX + "mine"))


async def test_a_large_checkpoints_chunks_live_and_go_with_its_run(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    monkeypatch.setattr(chatledger.ledger.documents, "utc_now_ms", lambda: now[0])
    storage = MongoCheckpointStorage(database=database)
    blob = "x" * (CHUNK_CHARS + 100)  # two chunks
    first = await storage.save(_checkpoint(state={"n": 1}))
    big = await storage.save(_checkpoint(previous_checkpoint_id=first, state={"blob": blob}))
    now[0] += timedelta(days=30)
    await storage.save(_checkpoint(previous_checkpoint_id=big, state={"n": 2}))

    # The chunks were written 30 days ago, the run's newest checkpoint today: a 7-day
    # policy removes nothing, and the old large checkpoint still loads whole.
    week = RetentionPolicy(default=timedelta(days=7))
    report = await run_retention(database, week, apply=True, now=now[0] + timedelta(days=1))
    assert report.planned == []
    assert (await storage.load(big)).state["blob"] == blob

    # Idle past the policy, the run goes, its chunks with it: no content stays.
    report = await run_retention(database, week, apply=True, now=now[0] + timedelta(days=8))
    assert report.threads == 1
    with pytest.raises(WorkflowCheckpointException):
        await storage.load(big)
    assert await database["events"].count_documents({"removed": {"$exists": False}}) == 0
    assert await database["events"].count_documents({"messages": {"$exists": True}}) == 0
    assert (await verify(database)).ok


async def test_large_checkpoints_resumed_from_the_past_branch_with_their_chunks(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    first = await storage.save(_checkpoint(state={"n": 1}))
    one, two = "1" * (CHUNK_CHARS + 1), "2" * (CHUNK_CHARS + 1)
    big = await storage.save(_checkpoint(previous_checkpoint_id=first, state={"blob": one}))
    # Resumed from the first again: this one's chunks and record go to a branch.
    other = await storage.save(_checkpoint(previous_checkpoint_id=first, state={"blob": two}))
    assert (await storage.load(big)).state["blob"] == one
    assert (await storage.load(other)).state["blob"] == two
    assert await storage.list_checkpoint_ids(workflow_name="big") == [first, big, other]
    assert await database["threads"].count_documents({}) == 2
    assert (await verify(database)).ok


def _checkpoint(**fields: Any) -> Any:
    from agent_framework import WorkflowCheckpoint

    return WorkflowCheckpoint(workflow_name="big", graph_signature_hash="h", **fields)
