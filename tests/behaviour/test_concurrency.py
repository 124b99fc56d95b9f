"""Concurrent writers and retries: nothing is lost, nothing is duplicated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatledger import ConcurrencyError, Ledger, MongoChatMessageStore
from tests.helpers import append, msg, raw_docs, texts


async def test_writers_racing_from_one_cursor_lose_nothing(database: Any) -> None:
    origin = MongoChatMessageStore(database)
    await origin.add_messages([msg("shared start")])
    cursor = await origin.serialize_state()

    writers = []
    for _ in range(8):
        store = MongoChatMessageStore(database)
        await store.deserialize_state(cursor)
        writers.append(store)
    await asyncio.gather(*(w.add_messages([msg(f"writer {i}")]) for i, w in enumerate(writers)))

    # Every writer sees its own line: the shared start, then its own message.
    for i, w in enumerate(writers):
        assert texts(await w.list_messages()) == ["shared start", f"writer {i}"]
    # Exactly one continued the thread; the others branched from the same point.
    assert len({w.thread_id for w in writers}) == 8
    assert sum(w.thread_id == origin.thread_id for w in writers) == 1
    events = await raw_docs(database["events"])
    assert sorted(e["messages"][0]["text"] for e in events) == sorted(
        ["shared start"] + [f"writer {i}" for i in range(8)]
    )
    assert len({(e["thread_id"], e["seq"]) for e in events}) == len(events)


async def test_strict_mode_raises_instead_of_branching(database: Any) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("one")])
    cursor = await store.serialize_state()
    await store.add_messages([msg("two")])

    strict = MongoChatMessageStore(database, strict=True)
    await strict.deserialize_state(cursor)
    with pytest.raises(ConcurrencyError):
        await strict.add_messages([msg("late")])
    assert await database["threads"].count_documents({}) == 1
    assert texts(await store.list_messages()) == ["one", "two"]


async def test_a_retried_append_is_recognised_not_duplicated_or_branched(database: Any) -> None:
    ledger = Ledger(database)
    first = await append(ledger, {"thread_id": "t", "offset": 0}, [msg("hello")], event_id="evt-1")
    # The same event sent again from the same cursor (its reply was lost, say).
    again = await append(ledger, {"thread_id": "t", "offset": 0}, [msg("hello")], event_id="evt-1")

    assert again.replayed
    assert not again.branched
    assert again.position.cursor == first.position.cursor
    assert await database["events"].count_documents({}) == 1
    assert await database["threads"].count_documents({}) == 1


async def test_a_retry_of_an_append_that_branched_finds_its_branch(database: Any) -> None:
    ledger = Ledger(database)
    await append(ledger, {"thread_id": "t", "offset": 0}, [msg("a")], event_id="e1")
    await append(ledger, {"thread_id": "t", "offset": 1}, [msg("b")], event_id="e2")
    branched = await append(ledger, {"thread_id": "t", "offset": 1}, [msg("b-alt")], event_id="e3")
    retried = await append(ledger, {"thread_id": "t", "offset": 1}, [msg("b-alt")], event_id="e3")

    assert branched.branched
    assert retried.replayed
    assert retried.position.cursor == branched.position.cursor
    assert await database["events"].count_documents({}) == 3
    assert await database["threads"].count_documents({}) == 2
