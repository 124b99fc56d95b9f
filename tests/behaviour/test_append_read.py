"""Appending events and replaying them: what a user of the store sees."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from agent_framework import Message

from chatledger import IntegrityError, Ledger, MongoChatMessageStore
from tests.helpers import msg, raw_docs, texts, tricky_message


async def test_each_add_messages_call_is_one_event_and_replays_in_order(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("q1"), msg("a1", "assistant")])
    await store.add_messages([msg("q2")])
    await store.add_messages([msg("a2", "assistant"), msg("q3"), msg("a3", "assistant")])

    assert texts(await store.list_messages()) == ["q1", "a1", "q2", "a2", "q3", "a3"]
    events = await raw_docs(database["events"])
    assert sorted(e["seq"] for e in events) == [1, 2, 3]
    assert sorted(e["count"] for e in events) == [1, 2, 3]


async def test_messages_round_trip_exactly(database: Any) -> None:
    original = tricky_message()
    store = MongoChatMessageStore(database)
    await store.add_messages([original, msg("plain")])

    fresh = MongoChatMessageStore(database, thread_id=store.thread_id)
    replayed = await fresh.list_messages()
    assert replayed[0].to_dict() == original.to_dict()
    assert replayed[1].to_dict() == msg("plain").to_dict()


def _walk(value: Any, inside_list: bool = False) -> list[str]:
    """Return the problems FerretDB/old MongoDB would have with a stored value."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            if "." in key or key.startswith("$"):
                problems.append(f"key {key!r}")
            problems += _walk(child)
    elif isinstance(value, list):
        if inside_list:
            problems.append("nested array")
        for child in value:
            problems += _walk(child, inside_list=True)
    return problems


async def test_stored_documents_are_plain_and_readable_by_an_admin(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([tricky_message(), msg("what is 2+2?")])

    (event,) = await raw_docs(database["events"])
    # Every engine accepts it: no dotted/$ keys, no arrays inside arrays.
    assert _walk(event) == []
    # An operator in mongosh can read who said what without decoding anything.
    assert [m["role"] for m in event["messages"]] == ["assistant", "user"]
    assert event["messages"][1]["text"] == "what is 2+2?"
    assert event["messages"][0]["author_name"] == "Jöker"
    assert isinstance(event["created_at"], datetime)
    assert event["created_at"].microsecond % 1000 == 0


@pytest.mark.parametrize("offset", [-12, -11, -5, -1, 0, 1, 4, 10, 11, 30])
@pytest.mark.parametrize("limit", [None, 0, 1, 3, 20])
async def test_list_messages_slices_like_python(database: Any, offset: int, limit: int | None) -> None:
    store = MongoChatMessageStore(database)
    everything = [f"m{i}" for i in range(11)]
    for start, size in ((0, 1), (1, 3), (4, 2), (6, 5)):  # uneven batches
        await store.add_messages([msg(t) for t in everything[start : start + size]])

    assert texts(await store.list_messages(offset=offset, limit=limit)) == everything[offset:][:limit]


async def test_last_page_does_not_read_the_start_of_the_thread(database: Any) -> None:
    store = MongoChatMessageStore(database)
    for i in range(30):
        await store.add_messages([msg(f"q{i}"), msg(f"a{i}", "assistant")])
    # Remove the oldest event behind the store's back. A page at the end must not
    # notice (it never touches the start); a full replay must refuse to paper over it.
    await database["events"].delete_one({"thread_id": store.thread_id, "seq": 1})

    assert texts(await store.list_messages(offset=-4)) == ["q28", "a28", "q29", "a29"]
    assert texts(await store.list_messages(offset=20, limit=2)) == ["q10", "a10"]
    with pytest.raises(IntegrityError):
        await store.list_messages()


async def test_serialized_state_is_a_small_cursor_that_does_not_grow(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("first")])
    small = await store.serialize_state()
    for i in range(50):
        await store.add_messages([msg("x" * 1000 + str(i))])
    later = await store.serialize_state()

    assert set(later) == {"thread_id", "offset", "v"}
    assert later["thread_id"] == small["thread_id"]
    assert later["offset"] == 51
    assert json.loads(json.dumps(later)) == later
    assert len(json.dumps(later)) == len(json.dumps(small)) + 1  # "1" became "51"


async def test_resuming_shows_history_as_of_the_cursor_not_later_appends(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("one")])
    await store.add_messages([msg("two")])
    saved = await store.serialize_state()
    await store.add_messages([msg("three")])

    resumed = MongoChatMessageStore(database)
    await resumed.deserialize_state(saved)
    assert texts(await resumed.list_messages()) == ["one", "two"]


async def test_appending_at_the_head_continues_the_same_thread(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("one")])
    saved = await store.serialize_state()

    resumed = MongoChatMessageStore(database)
    await resumed.deserialize_state(saved)
    await resumed.add_messages([msg("two")])

    assert resumed.thread_id == saved["thread_id"]
    assert texts(await MongoChatMessageStore(database, thread_id=saved["thread_id"]).list_messages()) == [
        "one",
        "two",
    ]


async def test_appending_behind_the_head_branches_and_never_changes_the_original(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("q1"), msg("a1", "assistant")])
    fork_point = await store.serialize_state()
    await store.add_messages([msg("q2"), msg("a2", "assistant")])
    original_events = await raw_docs(database["events"])

    branch = MongoChatMessageStore(database)
    await branch.deserialize_state(fork_point)
    await branch.add_messages([msg("q2-alt")])

    assert branch.thread_id != store.thread_id
    assert texts(await branch.list_messages()) == ["q1", "a1", "q2-alt"]
    assert texts(await store.list_messages()) == ["q1", "a1", "q2", "a2"]
    # The original's events are byte-for-byte what they were.
    still = [e for e in await raw_docs(database["events"]) if e["thread_id"] == store.thread_id]
    assert still == original_events
    # The branch records where it came from, and continues its parent's numbering.
    thread = await database["threads"].find_one({"_id": branch.thread_id})
    assert thread["parent"] == {"thread_id": store.thread_id, "offset": 1}
    assert (await branch.serialize_state())["offset"] == 2


async def test_branches_of_branches_resume_anywhere_along_their_line(database: Any) -> None:
    store = MongoChatMessageStore(database)
    cursors: list[dict[str, Any]] = []
    for i in range(3):
        await store.add_messages([msg(f"root{i}")])
        cursors.append(await store.serialize_state())
    b1 = MongoChatMessageStore(database)
    await b1.deserialize_state(cursors[1])  # after root0, root1
    await b1.add_messages([msg("b1-0")])
    await b1.add_messages([msg("b1-1")])
    b1_mid = await b1.serialize_state()
    await b1.add_messages([msg("b1-2")])

    b2 = MongoChatMessageStore(database)
    await b2.deserialize_state(b1_mid)
    await b2.add_messages([msg("b2-0")])
    assert texts(await b2.list_messages()) == ["root0", "root1", "b1-0", "b1-1", "b2-0"]
    assert texts(await b2.list_messages(offset=-2, limit=1)) == ["b1-1"]

    # A cursor on the branch that points before its fork point reads the ancestor's
    # history, and appending there forks from the ancestor, leaving everyone intact.
    early = MongoChatMessageStore(database)
    await early.deserialize_state({"thread_id": b2.thread_id, "offset": 1})
    assert texts(await early.list_messages()) == ["root0"]
    await early.add_messages([msg("early-alt")])
    assert texts(await early.list_messages()) == ["root0", "early-alt"]
    assert texts(await store.list_messages()) == ["root0", "root1", "root2"]
    assert texts(await b1.list_messages()) == ["root0", "root1", "b1-0", "b1-1", "b1-2"]


async def test_opening_a_named_thread_starts_at_its_head(database: Any) -> None:
    first = MongoChatMessageStore(database, thread_id="support-ticket-42")
    await first.add_messages([msg("hello")])
    again = MongoChatMessageStore(database, thread_id="support-ticket-42")
    await again.add_messages([msg("still there?")])

    assert texts(await again.list_messages()) == ["hello", "still there?"]
    # In the default scope the name is the thread id, as in ChatLedger 0.1.
    assert again.thread_id == "support-ticket-42"


async def test_a_named_thread_in_a_scope_is_that_scope_s_own(database: Any) -> None:
    acme = MongoChatMessageStore(database, thread_id="support-ticket-42", tenant_id="acme", user_id="u1")
    await acme.add_messages([msg("hello")])
    again = MongoChatMessageStore(database, thread_id="support-ticket-42", tenant_id="acme", user_id="u1")
    assert texts(await again.list_messages()) == ["hello"]
    thread = await database["threads"].find_one({"_id": again.thread_id})
    assert (thread["tenant_id"], thread["user_id"]) == ("acme", "u1")
    # Another scope using the same name gets a thread of its own, empty.
    for other in ({}, {"tenant_id": "globex", "user_id": "u1"}, {"tenant_id": "acme", "user_id": "u2"}):
        stranger = MongoChatMessageStore(database, thread_id="support-ticket-42", **other)
        assert await stranger.list_messages() == []
        assert stranger.thread_id != again.thread_id


async def test_empty_batch_writes_nothing(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([])
    assert await database["events"].count_documents({}) == 0
    assert await database["threads"].count_documents({}) == 0
    assert await store.list_messages() == []


async def test_a_store_shared_by_concurrent_tasks_keeps_one_line(
    interleaving_backend: Any, database: Any
) -> None:
    import asyncio

    store = MongoChatMessageStore(database)
    await asyncio.gather(*(store.add_messages([msg(f"m{i}")]) for i in range(10)))
    got = texts(await store.list_messages())
    assert sorted(got) == sorted(f"m{i}" for i in range(10))
    assert await database["threads"].count_documents({}) == 1


async def test_ledger_indexes_are_created_idempotently(database: Any) -> None:
    for _ in range(2):
        ledger = Ledger(database)
        await ledger.ensure_indexes()
    names = set(await database["events"].index_information())
    assert {"thread_seq_unique", "thread_first_message", "event_id"} <= names


async def test_message_objects_are_returned_not_dicts(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("x")])
    (m,) = await store.list_messages()
    assert isinstance(m, Message)


async def test_keys_the_engine_refuses_are_still_stored_losslessly(backend: Any, database: Any) -> None:
    from pymongo.errors import WriteError

    if not backend.accepts_dotted_keys:
        # The capability this tier declares is real: the raw driver cannot store it...
        with pytest.raises(WriteError):
            await database["raw"].insert_one({"additional_properties": {"a.b": 1}})
    # ...while ChatLedger stores and replays such a message exactly, on every tier.
    store = MongoChatMessageStore(database)
    await store.add_messages([tricky_message()])
    (back,) = await store.list_messages()
    assert back.to_dict() == tricky_message().to_dict()


async def test_pages_are_exact_when_batch_sizes_vary_wildly(database: Any) -> None:
    # One huge event then many small ones (and the reverse on a branch): paging must not
    # depend on events being of similar size.
    store = MongoChatMessageStore(database)
    everything = [f"m{i}" for i in range(80)]
    await store.add_messages([msg(t) for t in everything[:50]])
    for t in everything[50:70]:
        await store.add_messages([msg(t)])
    await store.add_messages([msg(t) for t in everything[70:]])

    for offset, limit in ((40, 20), (-25, 25), (45, 30), (0, None), (-1, None), (49, 2), (69, 3)):
        assert texts(await store.list_messages(offset=offset, limit=limit)) == everything[offset:][:limit]


async def test_resuming_a_branch_at_offset_zero_starts_afresh_and_changes_nothing(database: Any) -> None:
    # Found by the state machine: offset 0 on a branch is the start of its root's line.
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("m1")])
    await store.add_messages([msg("m2")])
    branch = MongoChatMessageStore(database)
    await branch.deserialize_state({"thread_id": store.thread_id, "offset": 1})
    await branch.add_messages([msg("m3")])
    branch_state = await branch.serialize_state()

    fresh = MongoChatMessageStore(database)
    await fresh.deserialize_state({"thread_id": branch_state["thread_id"], "offset": 0})
    assert await fresh.list_messages() == []
    await fresh.add_messages([msg("m4")])

    assert texts(await fresh.list_messages()) == ["m4"]
    again = MongoChatMessageStore(database)
    await again.deserialize_state(branch_state)
    assert texts(await again.list_messages()) == ["m1", "m3"]
    assert texts(await store.list_messages()) == ["m1", "m2"]
