"""MongoSessionStore: the framework's SessionStore contract, then what the ledger adds.

The contract tests restate the behaviour of the framework's own stores
(``SessionStore``, the in-memory one, and ``FileSessionStore`` in agent-framework-core
1.26) with ChatLedger's store in their place.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_framework import AgentSession

from chatledger import (
    InvalidInputError,
    LegalHoldError,
    MongoSessionStore,
    VersionConflictError,
)
from chatledger.admin import run_erasure, set_hold, verify
from chatledger.admin.receipts import REMOVAL


def _session(session_id: str = "s-1", **state: Any) -> AgentSession:
    session = AgentSession(session_id=session_id, service_session_id="resp_123")
    session.state.update(state)
    return session


# ---------------------------------------------------------------- the framework's contract


async def test_get_of_an_unknown_id_is_none(database: Any) -> None:
    assert await MongoSessionStore(database=database).get("nobody") is None


async def test_set_then_get_round_trips_the_session(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.set("key", _session(memory={"facts": ["likes tea", "ünïcode ✓"], "n": 3, "x": None}))
    loaded = await store.get("key")
    assert loaded is not None
    assert loaded.session_id == "s-1"
    assert loaded.service_session_id == "resp_123"
    assert loaded.state == {"memory": {"facts": ["likes tea", "ünïcode ✓"], "n": 3, "x": None}}


async def test_get_returns_independent_copies(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.set("key", _session(items=[1]))
    first = await store.get("key")
    assert first is not None
    first.state["items"].append(2)
    again = await store.get("key")
    assert again is not None
    assert again.state == {"items": [1]}


async def test_set_snapshots_at_call_time(database: Any) -> None:
    store = MongoSessionStore(database=database)
    session = _session(items=[1])
    await store.set("key", session)
    session.state["items"].append(2)
    loaded = await store.get("key")
    assert loaded is not None
    assert loaded.state == {"items": [1]}


async def test_set_replaces_what_get_returns(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.set("key", _session(turn=1))
    await store.set("key", _session(turn=2))
    loaded = await store.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": 2}


async def test_delete_removes_and_unknown_delete_is_a_no_op(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.delete("never-stored")
    await store.set("key", _session())
    await store.delete("key")
    assert await store.get("key") is None
    await store.delete("key")  # twice: still nothing to complain about


@pytest.mark.parametrize("bad", ["", None, 7, {"$ne": None}, "x" * 129])
async def test_a_bad_session_id_is_a_value_error_and_nothing_is_written(database: Any, bad: Any) -> None:
    store = MongoSessionStore(database=database)
    for call in (store.get(bad), store.set(bad, _session()), store.delete(bad)):
        with pytest.raises(ValueError, match="session_id must be"):
            await call
    assert await store.list_sessions() == []


async def test_ids_are_opaque_strings(database: Any) -> None:
    store = MongoSessionStore(database=database)
    for key in ("../../etc/passwd", "CON", "a/b\\c", "$where", "dot.ted", "ünï ✓"):
        await store.set(key, _session(key=key))
    for key in ("../../etc/passwd", "CON", "a/b\\c", "$where", "dot.ted", "ünï ✓"):
        loaded = await store.get(key)
        assert loaded is not None
        assert loaded.state == {"key": key}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 1.26's to_dict warns about the object first
async def test_an_unserializable_session_is_refused_before_anything_is_written(database: Any) -> None:
    store = MongoSessionStore(database=database)
    with pytest.raises(InvalidInputError, match="register_state_type"):
        await store.set("key", _session(bad=object()))
    with pytest.raises(InvalidInputError):
        await store.set("key", {"session_id": "not a session"})  # type: ignore[arg-type]
    assert await store.get("key") is None


# ---------------------------------------------------------------- versions and time travel


async def test_every_set_is_a_version_and_older_ones_stay_readable(database: Any) -> None:
    store = MongoSessionStore(database=database)
    for turn in range(1, 4):
        await store.set("key", _session(turn=turn))
    assert await store.version("key") == 3
    assert [(await store.get_version("key", v)).state for v in (1, 2, 3)] == [
        {"turn": 1},
        {"turn": 2},
        {"turn": 3},
    ]
    with pytest.raises(InvalidInputError, match="version 4 does not exist"):
        await store.get_version("key", 4)
    with pytest.raises(InvalidInputError):
        await store.get_version("key", 0)


async def test_a_fresh_store_instance_sees_every_version(database: Any) -> None:
    await MongoSessionStore(database=database).set("key", _session(turn=1))
    await MongoSessionStore(database=database).set("key", _session(turn=2))
    fresh = MongoSessionStore(database=database)
    loaded = await fresh.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": 2}
    assert await fresh.list_sessions() == ["key"]


# ---------------------------------------------------------------- compare-and-set


async def test_a_stale_writer_gets_a_conflict_and_writes_nothing(database: Any) -> None:
    # Two processes read version 1; the first to write wins, the second is told.
    await MongoSessionStore(database=database).set("key", _session(turn=1))
    alice, bob = MongoSessionStore(database=database), MongoSessionStore(database=database)
    await alice.get("key")
    await bob.get("key")
    await alice.set("key", _session(turn="alice"))
    with pytest.raises(VersionConflictError, match="version 2, not 1"):
        await bob.set("key", _session(turn="bob"))
    assert await alice.version("key") == 2
    # Re-reading settles it: bob's next write builds on alice's.
    await bob.get("key")
    await bob.set("key", _session(turn="bob"))
    loaded = await alice.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": "bob"}


async def test_concurrent_sets_one_wins_the_others_conflict(database: Any) -> None:
    await MongoSessionStore(database=database).set("key", _session(turn=0))
    stores = [MongoSessionStore(database=database) for _ in range(4)]
    for store in stores:
        await store.get("key")
    results = await asyncio.gather(
        *(s.set("key", _session(turn=i)) for i, s in enumerate(stores)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, VersionConflictError) for r in results if r is not None)
    assert await stores[0].version("key") == 2


async def test_expected_version_is_explicit_compare_and_set(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.set("key", _session(turn=1), expected_version=0)  # create only
    with pytest.raises(VersionConflictError):
        await store.set("key", _session(turn="again"), expected_version=0)
    await store.set("key", _session(turn=2), expected_version=1)
    assert await store.version("key") == 2


# ---------------------------------------------------------------- removal, holds, erasure


async def test_delete_leaves_a_receipt_and_the_id_can_be_used_again(database: Any) -> None:
    store = MongoSessionStore(database=database, deleted_by="ops@test")
    await store.set("key", _session(turn=1))
    await store.delete("key")
    receipts = [r async for r in database["audit"].find({"kind": REMOVAL})]
    assert len(receipts) == 1
    assert receipts[0]["by"] == "ops@test"
    assert "turn" not in str(receipts[0])  # never content
    await store.set("key", _session(turn="new"))
    assert await store.version("key") == 1
    assert await store.list_sessions() == ["key"]
    assert (await verify(database)).ok


async def test_a_held_session_cannot_be_deleted(database: Any) -> None:
    store = MongoSessionStore(database=database)
    await store.set("key", _session(turn=1))
    assert await store.thread_of("other") is None
    thread_id = await store.thread_of("key")
    assert thread_id is not None
    await set_hold(database, thread_id, reason="litigation")
    with pytest.raises(LegalHoldError):
        await store.delete("key")
    loaded = await store.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": 1}


async def test_erasure_of_the_user_reaches_the_sessions(database: Any) -> None:
    alice = MongoSessionStore(database=database, user_id="alice")
    bob = MongoSessionStore(database=database, user_id="bob")
    await alice.set("key", _session(secret="alice's"))
    await bob.set("key", _session(secret="bob's"))
    report = await run_erasure(database, user_id="alice", apply=True)
    assert report.removed
    assert await alice.get("key") is None
    loaded = await bob.get("key")
    assert loaded is not None
    assert loaded.state == {"secret": "bob's"}


async def test_scopes_do_not_see_each_other(database: Any) -> None:
    await MongoSessionStore(database=database, tenant_id="t1").set("key", _session(t=1))
    assert await MongoSessionStore(database=database, tenant_id="t2").get("key") is None
    assert await MongoSessionStore(database=database).get("key") is None


async def test_construction_follows_the_history_provider(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    with pytest.raises(InvalidInputError, match="no database given"):
        MongoSessionStore()
    with pytest.raises(InvalidInputError, match="source_id"):
        MongoSessionStore(database, database=database)  # type: ignore[misc]


async def test_a_delete_and_recreate_elsewhere_is_seen_and_conflicts(database: Any) -> None:
    here, there = MongoSessionStore(database=database), MongoSessionStore(database=database)
    await here.set("key", _session(turn="old"))
    await there.delete("key")
    assert await here.get("key") is None
    await there.set("key", _session(turn="new"))
    loaded = await here.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": "new"}
    # A writer still holding the old generation's version is told, and writes nothing.
    stale = MongoSessionStore(database=database)
    await stale.get("key")
    await there.delete("key")
    await there.set("key", _session(turn="newer"))
    with pytest.raises(VersionConflictError, match="deleted and re-created"):
        await stale.set("key", _session(turn="stale"))
    assert await there.version("key") == 1


async def test_a_store_that_read_a_session_sees_what_others_did_since(database: Any) -> None:
    # A get of a session this store read last builds on what it read (it keeps the event);
    # versions and deletions by another process since must still be what it returns.
    here, there = MongoSessionStore(database=database), MongoSessionStore(database=database)
    await here.set("key", _session(turn=1))
    for _ in range(2):  # read twice: the second get is served from what the first kept
        loaded = await here.get("key")
        assert loaded is not None
        assert loaded.state == {"turn": 1}
    await there.set("key", _session(turn=2))
    await there.set("key", _session(turn=3))
    loaded = await here.get("key")
    assert loaded is not None
    assert loaded.state == {"turn": 3}
    assert await here.version("key") == 3
    await there.delete("key")
    assert await here.get("key") is None
