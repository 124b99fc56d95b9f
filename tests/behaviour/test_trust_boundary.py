"""The trust boundary, attacked as a hostile tenant, user or caller would (issue 8).

Each test hands the library something a caller controls (a cursor, a session state,
an event id, a message property, an option) and checks it cannot widen what the
caller reads or writes, and that bad input is a clear ChatLedger error writing nothing.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from typing import Any

import pytest
from agent_framework import Message

from chatledger import (
    ChatLedgerError,
    InvalidCursorError,
    InvalidInputError,
    InvalidMessageError,
    InvalidThreadIdError,
    Ledger,
    MongoChatMessageStore,
    MongoHistoryProvider,
    UnknownThreadError,
)
from chatledger.admin import verify
from chatledger.codec import encode_messages, stored_digest
from chatledger.errors import EventIdReusedError
from chatledger.ledger import PendingAppend
from tests.helpers import msg, raw_docs, texts


async def _thread(database: Any, tenant: str | None, name: str, *words: str, **scope: Any) -> dict[str, Any]:
    """Write one event per word to the thread ``name`` of a tenant; return the final session state."""
    provider = MongoHistoryProvider(database=database, tenant_id=tenant, **scope)
    state: dict[str, Any] = {}
    for word in words:
        await provider.save_messages(name, [msg(word)], state=state)
    return state


async def _count(database: Any) -> tuple[int, int]:
    return await database["threads"].count_documents({}), await database["events"].count_documents({})


# ---------------------------------------------------------------- 1. tenants


async def test_a_tenant_cannot_read_or_append_through_another_tenant_s_cursor(database: Any) -> None:
    globex = await _thread(database, "globex", "s1", "globex secret")
    before = await raw_docs(database["events"])
    acme = MongoHistoryProvider(database=database, tenant_id="acme")

    with pytest.raises(UnknownThreadError) as read_error:
        await acme.get_messages("s1", state=dict(globex))
    with pytest.raises(UnknownThreadError) as write_error:
        await acme.save_messages("s1", [msg("acme was here")], state=dict(globex))
    # Indistinguishable from a thread that does not exist: no existence oracle.
    with pytest.raises(UnknownThreadError) as missing:
        await acme.get_messages("s1", state={"thread_id": "no-such-thread", "offset": 1, "v": 1})
    assert str(read_error.value).replace(globex["thread_id"], "X") == str(missing.value).replace(
        "no-such-thread", "X"
    )
    assert str(write_error.value).replace(globex["thread_id"], "X") == str(missing.value).replace(
        "no-such-thread", "X"
    )
    assert await raw_docs(database["events"]) == before


async def test_the_same_session_id_in_two_tenants_is_two_threads(database: Any) -> None:
    # Sessions continued by their id (resume_by_session_id): the id names one thread per scope.
    await _thread(database, "globex", "shared-id", "globex secret", resume_by_session_id=True)
    acme = MongoHistoryProvider(database=database, tenant_id="acme", resume_by_session_id=True)
    assert await acme.get_messages("shared-id", state={}) == []
    await acme.save_messages("shared-id", [msg("acme hello")], state={})
    assert texts(await acme.get_messages("shared-id", state={})) == ["acme hello"]
    globex = MongoHistoryProvider(database=database, tenant_id="globex", resume_by_session_id=True)
    assert texts(await globex.get_messages("shared-id", state={})) == ["globex secret"]
    assert await database["threads"].count_documents({}) == 2


async def test_a_store_bound_to_a_tenant_refuses_another_tenant_s_cursor(database: Any) -> None:
    globex = MongoChatMessageStore(database, thread_id="ticket", tenant_id="globex")
    await globex.add_messages([msg("globex secret")])
    cursor = await globex.serialize_state()
    acme = MongoChatMessageStore(database, tenant_id="acme")
    with pytest.raises(UnknownThreadError):
        await acme.deserialize_state(cursor)
    # The same name in another tenant is another, empty thread.
    acme_ticket = MongoChatMessageStore(database, thread_id="ticket", tenant_id="acme")
    assert await acme_ticket.list_messages() == []
    await acme_ticket.add_messages([msg("acme")])
    assert texts(await globex.list_messages()) == ["globex secret"]


async def test_users_are_enforced_like_tenants(database: Any) -> None:
    alice = await _thread(database, "acme", "s", "alice's secret", user_id="alice")
    bob = MongoHistoryProvider(database=database, tenant_id="acme", user_id="bob")
    with pytest.raises(UnknownThreadError):
        await bob.get_messages("s", state=dict(alice))
    unscoped = MongoHistoryProvider(database=database)
    with pytest.raises(UnknownThreadError):
        await unscoped.get_messages("s", state=dict(alice))


# ---------------------------------------------------------------- 2. source ids


async def test_two_source_ids_on_one_session_write_two_threads(database: Any) -> None:
    memory = MongoHistoryProvider(database=database, source_id="memory")
    audit = MongoHistoryProvider(database=database, source_id="audit")
    session_state: dict[str, dict[str, Any]] = {"memory": {}, "audit": {}}
    for turn in ("q1", "q2"):
        await memory.save_messages("session-1", [msg(turn)], state=session_state["memory"])
        await audit.save_messages("session-1", [msg(turn)], state=session_state["audit"])

    assert texts(await memory.get_messages("session-1", state=session_state["memory"])) == ["q1", "q2"]
    assert texts(await audit.get_messages("session-1", state=session_state["audit"])) == ["q1", "q2"]
    assert session_state["memory"]["thread_id"] != session_state["audit"]["thread_id"]
    # Neither can be pointed at the other's thread.
    with pytest.raises(UnknownThreadError):
        await memory.get_messages("session-1", state=dict(session_state["audit"]))


# ---------------------------------------------------------------- 3. event ids


async def test_an_event_id_of_another_thread_is_not_a_replay(database: Any) -> None:
    ledger = Ledger(database)
    book = ledger.bind()
    first = await book.append(book.empty("a"), [msg("in a")], event_id="chosen-id")
    second = await book.append(book.empty("b"), [msg("in b")], event_id="chosen-id")

    assert not second.replayed
    assert second.position.thread_id == "b"
    assert texts(await book.read(second.position)) == ["in b"]
    assert texts(await book.read(first.position)) == ["in a"]


async def test_reusing_an_event_id_for_another_batch_is_an_error_that_writes_nothing(database: Any) -> None:
    book = Ledger(database).bind()
    start = book.empty("t")
    await book.append(start, [msg("original")], event_id="e1")
    before = await _count(database)
    with pytest.raises(EventIdReusedError):
        await book.append(await book.resolve({"thread_id": "t", "offset": 0}), [msg("other")], event_id="e1")
    assert await _count(database) == before
    assert isinstance(EventIdReusedError("x"), (InvalidInputError, ValueError))


async def test_a_retry_that_lands_on_its_own_branch_says_it_branched(database: Any) -> None:
    book = Ledger(database).bind()
    await book.append(book.empty("t"), [msg("a")])
    one = await book.resolve({"thread_id": "t", "offset": 1})
    await book.append(one, [msg("b")])
    branched = await book.append(one, [msg("b-alt")], event_id="e3")
    retried = await book.append(one, [msg("b-alt")], event_id="e3")
    assert branched.branched
    assert retried.branched
    assert retried.replayed
    assert retried.position.cursor == branched.position.cursor


# ---------------------------------------------------------------- 4. the old-protocol marker


async def test_a_message_that_merely_looks_like_a_cursor_marker_is_stored(database: Any) -> None:
    victim = MongoChatMessageStore(database, thread_id="victim")
    await victim.add_messages([msg("victim's secret")])
    victim_state = await victim.serialize_state()

    attacker = MongoChatMessageStore(database, thread_id="attacker")
    for forged in (
        dict(victim_state),
        {**victim_state, "marker": "A" * 22},
        {"thread_id": "victim", "offset": 1, "v": 1, "marker": None},
    ):
        props = {"chatledger_cursor": forged}
        await attacker.add_messages([Message("user", ["hi"], additional_properties=props)])
    stored = await attacker.list_messages()
    assert [m.text for m in stored] == ["hi", "hi", "hi"]
    assert stored[0].additional_properties == {"chatledger_cursor": dict(victim_state)}
    assert attacker.thread_id == "attacker"
    assert texts(await victim.list_messages()) == ["victim's secret"]


async def test_an_authentic_marker_still_restores_an_old_framework_thread(database: Any) -> None:
    store = MongoChatMessageStore(database, thread_id="t")
    await store.add_messages([msg("one"), msg("two")])
    with warnings.catch_warnings():
        # This framework's workflows checkpoint no message stores: serializing one warns of nothing.
        warnings.simplefilter("error")
        serialized = await store.serialize()
    fresh = MongoChatMessageStore(database)
    # What agent-framework 1.0.0b260130 does with it: replay the messages into a new store.
    await fresh.add_messages([Message.from_dict(m) for m in serialized["messages"]])
    assert texts(await fresh.list_messages()) == ["one", "two"]
    assert fresh.thread_id == "t"


# ---------------------------------------------------------------- 5. forged pending entries


async def test_a_forged_pending_entry_never_counts_as_committed(database: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [msg("hello")], state=state)
    head = await database["events"].find_one({"thread_id": state["thread_id"], "seq": 1})
    batch = [msg("my new turn")]
    # The caller's state, forged: at offset 0, claiming the event at seq 1 is its pending batch.
    forged = {
        **state,
        "offset": 0,
        "unconfirmed": {"event_id": head["event_id"], "digest": stored_digest(encode_messages(batch))},
    }
    with pytest.raises(EventIdReusedError):
        await provider.save_messages("s", batch, state=forged)
    # Nothing was reported as committed: the state still points where it did.
    assert forged["offset"] == 0
    assert await database["events"].count_documents({}) == 1


# ---------------------------------------------------------------- 6. lost replies


async def test_a_lost_reply_then_the_next_turn_stays_on_the_line(database: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [msg("q0")], state=state)
    # q1 commits, but its reply is lost: the caller keeps its old state plus the pending entry.
    seen: list[dict[str, Any]] = []
    book = provider.binding
    position = await book.resolve(state)
    q1 = encode_messages([msg("q1")])

    def remember(pending: PendingAppend | None) -> None:
        if pending is not None:
            seen.append(pending.to_state())

    await book.save(position, q1, previous=None, remember=remember)
    lost = {**state, "unconfirmed": seen[0]}
    # The caller's NEXT turn (not a retry of q1).
    await provider.save_messages("s", [msg("q2")], state=lost)

    assert texts(await provider.get_messages("s", state=lost)) == ["q0", "q1", "q2"]
    assert lost["thread_id"] == state["thread_id"]
    assert "unconfirmed" not in lost
    assert await database["threads"].count_documents({}) == 1


async def test_a_retry_of_the_lost_batch_is_recognised(database: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    pending_seen: list[dict[str, Any]] = []
    position = provider.binding.empty("t-lost")
    await provider.binding.save(
        position,
        encode_messages([msg("q1")]),
        previous=None,
        remember=lambda p: pending_seen.append(p.to_state()) if p else None,
    )
    state = {"unconfirmed": pending_seen[0], "thread_id": "t-lost", "offset": 0, "v": 1}
    await provider.save_messages("t-lost", [msg("q1")], state=state)
    assert texts(await provider.get_messages("t-lost", state=state)) == ["q1"]
    assert await database["events"].count_documents({}) == 1


# ---------------------------------------------------------------- 7. inputs


@pytest.mark.parametrize(
    "message",
    [
        Message("user", ["lone \ud800 surrogate"]),
        Message("user", ["x"], additional_properties={1: "int key"}),
        Message("user", ["x"], additional_properties={"nested": {2: "int key"}}),
        Message("user", ["x"], author_name="bad \udfff name"),
    ],
)
async def test_messages_that_cannot_round_trip_are_refused_and_write_nothing(
    database: Any, message: Message
) -> None:
    store = MongoChatMessageStore(database, thread_id="t")
    with pytest.raises(InvalidMessageError):
        await store.add_messages([message])
    assert await _count(database) == (0, 0)


@pytest.mark.parametrize("bad", ["", "bad\ud800", "x" * 201, "tab\tin", 5, {"$ne": None}])
async def test_scope_names_are_checked_everywhere_alike(database: Any, bad: Any) -> None:
    for kind in ("tenant_id", "user_id", "source_id"):
        with pytest.raises(InvalidInputError):
            MongoChatMessageStore(database, **{kind: bad})
        with pytest.raises(InvalidInputError):
            Ledger(database).bind(**{kind: bad})


def _nested(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for _ in range(depth):
        tree = {"n": [tree]}
    return tree


@pytest.mark.parametrize(
    "bad",
    [
        {"$where": "1"},
        {"a.b": 1},
        {"nested": {"$gt": ""}},
        {"in list": [{"x.y": 1}]},
        {"nul\x00": 1},
        {"": 1},
        {1: "int key"},
        {"big": "x" * (65 * 1024)},
        {"object": object()},
        ["not", "a", "mapping"],
        {"when": datetime(2026, 1, 1, 12, 0, 0, 123456)},  # BSON gives back milliseconds, UTC
        {"raw": b"bytes"},
        {"nan": float("nan")},
        {"huge": 2**70},
        {"deep": _nested(25)},
        {"deeper": _nested(5000)},  # must be a clear error, not RecursionError
    ],
)
async def test_thread_metadata_every_engine_cannot_store_alike_is_refused_and_writes_nothing(
    database: Any, bad: Any
) -> None:
    # MongoDB may store a "$"- or "."-key that FerretDB refuses: the library decides, before any write.
    with pytest.raises(InvalidInputError):
        MongoChatMessageStore(database, thread_id="t", metadata=bad)
    binding = Ledger(database).bind()
    with pytest.raises(InvalidInputError):
        await binding.append(binding.empty("t"), [msg("hi")], metadata=bad)
    assert await _count(database) == (0, 0)


async def test_plain_thread_metadata_is_stored_and_verifies(database: Any) -> None:
    metadata = {"team": "support", "tags": ("a", {"k": 1}), "score": 0.5, "ok": True, "none": None}
    store = MongoChatMessageStore(database, thread_id="t", metadata=metadata)
    await store.add_messages([msg("hi")])
    doc = await database["threads"].find_one({"_id": "t"})
    assert doc["metadata"] == {
        "team": "support",
        "tags": ["a", {"k": 1}],
        "score": 0.5,
        "ok": True,
        "none": None,
    }
    # What was hashed into the thread digest is what the engine gives back.
    assert (await verify(Ledger(database))).ok


@pytest.mark.parametrize("bad", ["lone\ud800", "ctl\x00", {"$ne": None}, "", "x" * 201])
async def test_thread_ids_that_could_misbehave_are_refused(database: Any, bad: Any) -> None:
    with pytest.raises(InvalidThreadIdError):
        MongoChatMessageStore(database, thread_id=bad)
    with pytest.raises(InvalidThreadIdError):
        await Ledger(database).bind().resolve({"thread_id": bad, "offset": 0, "v": 1})


async def test_options_beside_an_existing_ledger_are_refused_not_ignored(database: Any) -> None:
    ledger = Ledger(database)
    with pytest.raises(InvalidInputError, match="write_attempts"):
        MongoChatMessageStore(ledger, write_attempts=9)
    with pytest.raises(InvalidInputError):
        Ledger(database, write_attempts=0)


async def test_wrong_database_handles_fail_clearly(database: Any) -> None:
    from pymongo import MongoClient

    sync = MongoClient("mongodb://127.0.0.1:9", connect=False)
    try:
        for wrong in (sync["db"], "chatledger", 42):
            with pytest.raises(InvalidInputError):
                Ledger(wrong)
    finally:
        sync.close()


# ---------------------------------------------------------------- signed cursors


async def test_signed_cursors_refuse_forgery_and_rotate(database: Any) -> None:
    old_key, new_key = b"k" * 32, "a new signing key of 32 bytes!!!"
    ledger = Ledger(database, signing_keys=[old_key])
    store = MongoChatMessageStore(ledger, thread_id="t")
    await store.add_messages([msg("one")])
    await store.add_messages([msg("two")])
    state = await store.serialize_state()
    assert set(state) == {"thread_id", "offset", "v", "mac"}
    assert len(json.dumps(state)) < 200

    reader = MongoChatMessageStore(ledger)
    for forged in (
        {**state, "offset": 1},  # an older offset with the newer mac
        {k: v for k, v in state.items() if k != "mac"},  # unsigned
        {**state, "mac": "A" * 22},
        {**state, "thread_id": "other"},
    ):
        with pytest.raises(InvalidCursorError):
            await reader.deserialize_state(forged)
    # A cursor signed for one scope is refused by another, even with the right key.
    with pytest.raises(InvalidCursorError):
        await MongoChatMessageStore(ledger, tenant_id="acme").deserialize_state(state)
    # Rotation: the new key signs, the old one still verifies until it is dropped.
    rotated = Ledger(database, signing_keys=[new_key, old_key])
    again = MongoChatMessageStore(rotated)
    await again.deserialize_state(state)
    assert texts(await again.list_messages()) == ["one", "two"]
    assert (await again.serialize_state())["mac"] != state["mac"]
    with pytest.raises(InvalidCursorError):
        await MongoChatMessageStore(Ledger(database, signing_keys=[new_key])).deserialize_state(state)


@pytest.mark.parametrize("keys", [[], ["short"], "a single string key, not a list"])
async def test_bad_signing_keys_are_refused(database: Any, keys: Any) -> None:
    with pytest.raises(InvalidInputError):
        Ledger(database, signing_keys=keys)


async def test_signed_provider_state_round_trips_through_json(database: Any) -> None:
    ledger = Ledger(database, signing_keys=["x" * 16])
    provider = MongoHistoryProvider(database=ledger)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [msg("hello")], state=state)
    restored = json.loads(json.dumps(state))
    assert texts(await provider.get_messages("s", state=restored)) == ["hello"]
    with pytest.raises(InvalidCursorError):
        await provider.get_messages("s", state={**restored, "offset": 0})


# ---------------------------------------------------------------- malformed stored documents


@pytest.mark.parametrize(
    "poison",
    [
        {"messages": [{"role": "user", "text": "x", "payload": "{not json"}]},
        {"messages": [{"role": "user", "rest": "[1, 2]", "text": "x"}]},
        {"messages": "not a list"},
        {"count": "1"},
        {"first_message": None},
        {"v": 99},
    ],
    ids=[
        "payload-not-json",
        "payload-not-a-message",
        "messages-not-a-list",
        "count-a-string",
        "no-first",
        "unknown-version",
    ],
)
async def test_a_poisoned_event_is_an_integrity_error_naming_it(
    database: Any, poison: dict[str, Any]
) -> None:
    from chatledger import IntegrityError

    store = MongoChatMessageStore(database, thread_id="t")
    await store.add_messages([msg("fine")])
    await store.add_messages([msg("to be poisoned")])
    await database["events"].update_one({"_id": "t#2"}, {"$set": poison})
    reader = MongoChatMessageStore(database, thread_id="t")
    with pytest.raises(IntegrityError, match="t#2"):
        await reader.list_messages()


async def test_a_malformed_thread_document_is_an_integrity_error(database: Any) -> None:
    from chatledger import IntegrityError

    await database["threads"].insert_one({"_id": "broken", "root_id": 7, "created_at": "yesterday"})
    with pytest.raises(IntegrityError, match="broken"):
        await MongoChatMessageStore(database, thread_id="broken").list_messages()
    provider = MongoHistoryProvider(database=database, resume_by_session_id=True)
    with pytest.raises(ChatLedgerError):
        await provider.get_messages("broken", state={})


@pytest.mark.parametrize(
    "name", [".", "threads.", ".threads", "a..b", "system.threads", "t$", "nul\x00", "", 5]
)
async def test_collection_names_every_engine_cannot_use_are_refused(database: Any, name: Any) -> None:
    for kind in ("threads_collection", "events_collection", "audit_collection"):
        with pytest.raises(InvalidInputError, match="invalid collection name"):
            Ledger(database, **{kind: name})
