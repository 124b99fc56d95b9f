"""MongoCheckpointStorage: the framework's CheckpointStorage contract, then what the ledger adds.

The contract tests restate agent-framework-core's checkpoint storage conformance suite
(``tests/workflow/test_checkpoint_storage_conformance.py``: ownership of copies,
filtering, unknown ids, pickle round trips) with ChatLedger's storage in place of the
in-memory and file storages, plus ``delete`` and ``get_latest`` as those storages behave.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from agent_framework import (
    WorkflowCheckpoint,
    WorkflowCheckpointException,
    WorkflowEvent,
)
from agent_framework._workflows._runner_context import WorkflowMessage

from chatledger import EventIdReusedError, InvalidInputError, MongoCheckpointStorage
from chatledger.admin import run_erasure, verify

WF = "test-workflow"


@dataclass
class _NoDeepcopy:
    """Pickles, but refuses deepcopy: a storage must round-trip it without copying in memory."""

    value: str

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("refuses deepcopy")


NO_DEEPCOPY = f"{_NoDeepcopy.__module__}:{_NoDeepcopy.__qualname__}"


def _cp(workflow_name: str = WF, **fields: Any) -> WorkflowCheckpoint:
    return WorkflowCheckpoint(workflow_name=workflow_name, graph_signature_hash="hash", **fields)


# ---------------------------------------------------------------- the framework's contract


async def test_save_returns_the_checkpoint_id_and_load_returns_an_equal_copy(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    checkpoint = _cp(
        state={"key": "original", "nested": {"deep": [1, 2.5, None, "ü"]}},
        iteration_count=3,
        metadata={"superstep": 3},
    )
    assert await storage.save(checkpoint) == checkpoint.checkpoint_id
    loaded = await storage.load(checkpoint.checkpoint_id)
    assert loaded == checkpoint
    assert loaded is not checkpoint


async def test_loaded_copies_are_owned_by_the_caller(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    checkpoint = _cp(state={"nested": {"deep": {"value": "original"}}}, metadata={"m": {"v": "original"}})
    saved = await storage.save(checkpoint)
    checkpoint.state["nested"]["deep"]["value"] = "mutated after save"
    first, second = await storage.load(saved), await storage.load(saved)
    first.state["nested"]["deep"]["value"] = "mutated"
    first.metadata["m"]["v"] = "mutated"
    assert second.state["nested"]["deep"]["value"] == "original"
    reloaded = await storage.load(saved)
    assert reloaded.state["nested"]["deep"]["value"] == "original"
    assert reloaded.metadata["m"]["v"] == "original"
    latest = await storage.get_latest(workflow_name=WF)
    assert latest is not None
    latest.state["nested"] = "mutated"
    listed = await storage.list_checkpoints(workflow_name=WF)
    assert listed[0].state["nested"]["deep"]["value"] == "original"


async def test_messages_and_pending_events_round_trip_as_objects(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    checkpoint = _cp(
        messages={"executor1": [WorkflowMessage(source_id="a", target_id="b", data="original")]},
        pending_request_info_events={"req1": WorkflowEvent(type="test", data="original")},
    )
    saved = await storage.save(checkpoint)
    loaded = await storage.load(saved)
    assert loaded.messages["executor1"][0].data == "original"
    assert loaded.pending_request_info_events["req1"].data == "original"
    loaded.messages["executor1"][0].data = "mutated"
    assert (await storage.load(saved)).messages["executor1"][0].data == "original"


async def test_values_that_refuse_deepcopy_round_trip(database: Any) -> None:
    with pytest.raises(TypeError):
        copy.deepcopy(_NoDeepcopy("x"))
    storage = MongoCheckpointStorage(database=database, allowed_checkpoint_types=[NO_DEEPCOPY])
    saved = await storage.save(_cp(state={"custom": _NoDeepcopy("test")}))
    loaded = await storage.load(saved)
    assert isinstance(loaded.state["custom"], _NoDeepcopy)
    assert loaded.state["custom"].value == "test"


async def test_a_type_that_is_not_allowed_is_refused_at_save(database: Any) -> None:
    class Unregistered:
        pass

    storage = MongoCheckpointStorage(database=database)
    with pytest.raises(WorkflowCheckpointException):
        await storage.save(_cp(state={"x": Unregistered()}))
    assert await storage.list_checkpoints(workflow_name=WF) == []


async def test_listing_filters_by_workflow_name(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    one, two, three = _cp("workflow-1"), _cp("workflow-2"), _cp("workflow-1")
    for checkpoint in (one, two, three):
        await storage.save(checkpoint)
    assert {c.checkpoint_id for c in await storage.list_checkpoints(workflow_name="workflow-1")} == {
        one.checkpoint_id,
        three.checkpoint_id,
    }
    assert await storage.list_checkpoint_ids(workflow_name="workflow-2") == [two.checkpoint_id]
    assert await storage.list_checkpoints(workflow_name="unknown") == []
    assert await storage.list_workflows() == ["workflow-1", "workflow-2"]


async def test_unknown_ids_and_workflows(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    assert await storage.get_latest(workflow_name="unknown-workflow") is None
    for bad in ("nonexistent-id", "", {"$ne": None}, "x" * 500):
        with pytest.raises(WorkflowCheckpointException):
            await storage.load(bad)  # type: ignore[arg-type]
        assert await storage.delete(bad) is False  # type: ignore[arg-type]


async def test_get_latest_follows_the_framework_rule(database: Any) -> None:
    # Same timestamp: the one the other names as its predecessor is superseded.
    storage = MongoCheckpointStorage(database=database)
    stamp = "2026-12-06T10:00:00+00:00"
    first = _cp(timestamp=stamp, checkpoint_id="b-first")
    second = _cp(timestamp=stamp, checkpoint_id="a-second", previous_checkpoint_id="b-first")
    older = _cp(timestamp="2026-12-06T09:00:00+00:00", checkpoint_id="z-older")
    for checkpoint in (first, second, older):
        await storage.save(checkpoint)
    latest = await storage.get_latest(workflow_name=WF)
    assert latest is not None
    assert latest.checkpoint_id == "a-second"
    assert await storage.list_checkpoint_ids(workflow_name=WF) == ["z-older", "b-first", "a-second"]


async def test_delete_returns_whether_it_deleted(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    keep, gone = _cp(), _cp()
    await storage.save(keep)
    await storage.save(gone)
    assert await storage.delete(gone.checkpoint_id) is True
    assert await storage.delete(gone.checkpoint_id) is False
    with pytest.raises(WorkflowCheckpointException):
        await storage.load(gone.checkpoint_id)
    assert await storage.list_checkpoint_ids(workflow_name=WF) == [keep.checkpoint_id]
    # A fresh instance agrees: the deletion is recorded, not remembered.
    assert await MongoCheckpointStorage(database=database).list_checkpoint_ids(workflow_name=WF) == [
        keep.checkpoint_id
    ]
    receipt = await database["audit"].find_one({"kind": "checkpoint.deleted"})
    assert receipt["checkpoint_id"] == gone.checkpoint_id


# ---------------------------------------------------------------- immutability, scope, integrity


async def test_a_checkpoint_is_immutable(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    checkpoint = _cp(state={"v": 1})
    await storage.save(checkpoint)
    assert await storage.save(checkpoint) == checkpoint.checkpoint_id  # the same again: a no-op
    changed = copy.deepcopy(checkpoint)
    changed.state["v"] = 2
    with pytest.raises(EventIdReusedError, match="immutable"):
        await storage.save(changed)
    assert (await storage.load(checkpoint.checkpoint_id)).state == {"v": 1}
    assert len(await storage.list_checkpoints(workflow_name=WF)) == 1


async def test_bad_checkpoints_are_refused_before_anything_is_written(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database)
    with pytest.raises(InvalidInputError):
        await storage.save(_cp(checkpoint_id="x" * 65))
    with pytest.raises(InvalidInputError):
        await storage.save(_cp(workflow_name=""))
    with pytest.raises(InvalidInputError):
        await storage.save({"workflow_name": WF})  # type: ignore[arg-type]
    assert await database["events"].count_documents({}) == 0


async def test_scopes_do_not_see_each_other(database: Any) -> None:
    mine = MongoCheckpointStorage(database=database, tenant_id="t1")
    theirs = MongoCheckpointStorage(database=database, tenant_id="t2")
    checkpoint = _cp()
    await mine.save(checkpoint)
    assert await theirs.list_checkpoints(workflow_name=WF) == []
    with pytest.raises(WorkflowCheckpointException):
        await theirs.load(checkpoint.checkpoint_id)
    assert await theirs.delete(checkpoint.checkpoint_id) is False
    assert await mine.load(checkpoint.checkpoint_id) == checkpoint


async def test_a_chain_of_checkpoints_verifies_and_erasure_removes_it(database: Any) -> None:
    storage = MongoCheckpointStorage(database=database, user_id="alice")
    previous = None
    for step in range(3):
        checkpoint = _cp(previous_checkpoint_id=previous, iteration_count=step)
        previous = await storage.save(checkpoint)
    report = await verify(database)
    assert report.ok
    assert report.events == 3
    assert report.threads == 1
    await run_erasure(database, user_id="alice", apply=True)
    assert await storage.list_checkpoints(workflow_name=WF) == []
    assert await storage.get_latest(workflow_name=WF) is None


async def test_a_checkpoint_another_process_deleted_or_erased_is_gone_here_too(database: Any) -> None:
    # This storage saved and loaded the checkpoints (it knows where their records are);
    # what another process does to them since is still seen.
    mine = MongoCheckpointStorage(database=database, user_id="alice")
    kept, deleted = _cp(), _cp()
    for checkpoint in (kept, deleted):
        await mine.save(checkpoint)
        assert await mine.load(checkpoint.checkpoint_id) == checkpoint
    assert await MongoCheckpointStorage(database=database, user_id="alice").delete(deleted.checkpoint_id)
    with pytest.raises(WorkflowCheckpointException):
        await mine.load(deleted.checkpoint_id)
    assert await mine.load(kept.checkpoint_id) == kept
    await run_erasure(database, user_id="alice", apply=True)
    with pytest.raises(WorkflowCheckpointException):
        await mine.load(kept.checkpoint_id)
