"""Operators' tools treat sessions and checkpoints like threads: list, export/import, verify."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_framework import AgentSession, WorkflowCheckpoint, WorkflowCheckpointException

from chatledger import IntegrityError, MongoCheckpointStorage, MongoSessionStore
from chatledger.admin import export_jsonl, import_jsonl, list_threads, verify


async def test_export_then_import_restores_sessions_and_checkpoints(database: Any, tmp_path: Path) -> None:
    sessions = MongoSessionStore(database=database, tenant_id="acme")
    checkpoints = MongoCheckpointStorage(database=database, tenant_id="acme")
    session = AgentSession(session_id="s")
    for turn in (1, 2):
        session.state["turn"] = turn
        await sessions.set("key", session)
    first = await checkpoints.save(WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h"))
    second = await checkpoints.save(
        WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h", previous_checkpoint_id=first)
    )
    listed = [t async for t in list_threads(database)]
    assert len(listed) == 2  # one session thread, one run thread

    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(database, out)
    copy = database.client[f"t_{uuid.uuid4().hex[:16]}"]
    try:
        await import_jsonl(copy, path)
        assert (await verify(copy)).ok
        restored = MongoSessionStore(database=copy, tenant_id="acme")
        loaded = await restored.get("key")
        assert loaded is not None
        assert loaded.state == {"turn": 2}
        assert (await restored.get_version("key", 1)).state == {"turn": 1}
        storage = MongoCheckpointStorage(database=copy, tenant_id="acme")
        assert await storage.list_checkpoint_ids(workflow_name="wf") == [first, second]
    finally:
        await database.client.drop_database(copy.name)


@pytest.mark.parametrize("kind", ["session", "checkpoint"])
async def test_tampering_with_a_stored_snapshot_is_detected(database: Any, kind: str) -> None:
    if kind == "session":
        await MongoSessionStore(database=database).set("key", AgentSession(session_id="s"))
    else:
        await MongoCheckpointStorage(database=database).save(
            WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h")
        )
    event = await database["events"].find_one({})
    forged = event["messages"][0]["text"].replace('"', "'", 1)
    await database["events"].update_one({"_id": event["_id"]}, {"$set": {"messages.0.text": forged}})
    report = await verify(database)
    assert not report.ok
    assert report.problems[0].thread_id == event["thread_id"]


async def test_sealing_applies_to_snapshots_and_checkpoint_payloads(database: Any) -> None:
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer

    def sealer() -> Sealer:
        return Sealer(KeyStore(database), LocalKeyProvider(bytes(range(32))))

    sessions = MongoSessionStore(database=database, user_id="alice", sealer=sealer())
    session = AgentSession(session_id="s")
    session.state["secret"] = "the launch code"
    await sessions.set("key", session)
    storage = MongoCheckpointStorage(database=database, user_id="alice", sealer=sealer())
    big = "the launch code " * (300 * 1024)  # over 4 MiB: its chunks are sealed too
    saved = await storage.save(
        WorkflowCheckpoint(
            workflow_name="wf", graph_signature_hash="h", state={"s": "the launch code", "big": big}
        )
    )
    async for event in database["events"].find({}):
        assert "launch code" not in str(event)

    # A fresh process with the same key store opens them.
    loaded = await MongoSessionStore(database=database, user_id="alice", sealer=sealer()).get("key")
    assert loaded is not None
    assert loaded.state == {"secret": "the launch code"}
    fresh = MongoCheckpointStorage(database=database, user_id="alice", sealer=sealer())
    assert (await fresh.load(saved)).state["big"] == big


@pytest.mark.parametrize("text", ["not json", '{"chunked": 5}', "[1, 2]"])
async def test_a_malformed_stored_record_is_an_integrity_error(database: Any, text: str) -> None:
    storage = MongoCheckpointStorage(database=database)
    saved = await storage.save(WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h"))
    sessions = MongoSessionStore(database=database)
    await sessions.set("key", AgentSession(session_id="s"))
    await database["events"].update_many({}, {"$set": {"messages.0.text": text}})
    with pytest.raises(IntegrityError):
        await MongoSessionStore(database=database).get("key")
    with pytest.raises((IntegrityError, WorkflowCheckpointException)):
        await storage.load(saved)


async def test_a_sealed_snapshot_a_store_read_is_unreadable_there_once_its_key_is_destroyed(
    database: Any,
) -> None:
    # The store keeps the event of the version it read (a later get of the unchanged session
    # reads only whether a newer one exists), but opens it again on every read: destroying
    # the user's keys in another process makes it unreadable here too (once the key is no
    # longer cached: here at once).
    from chatledger.errors import ContentErasedError
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, destroy_subject_keys

    def sealer() -> Sealer:
        return Sealer(KeyStore(database), LocalKeyProvider(bytes(range(32))), cache_ttl=0)

    await MongoSessionStore(database=database, user_id="alice", sealer=sealer()).set(
        "key", AgentSession(session_id="s", service_session_id="resp_1")
    )
    reader = MongoSessionStore(database=database, user_id="alice", sealer=sealer())
    for _ in range(2):
        loaded = await reader.get("key")
        assert loaded is not None
        assert loaded.service_session_id == "resp_1"
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    with pytest.raises(ContentErasedError):
        await reader.get("key")
