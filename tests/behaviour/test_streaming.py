"""Streamed replay: ``stream_messages`` yields what ``list_messages`` returns, in bounded batches.

Issue 24: a thread of any size (one whose events add up to more than the server's reply
limit included) replays with memory bounded by the batch, not by the thread. The stream
must be the same messages in the same order as ``list_messages``, along branches, deep
(windowed) lineages, compactions and sealed events, and resumable from an offset.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agent_framework import Message

from chatledger import InvalidInputError, Ledger, MongoChatMessageStore
from chatledger.ledger import Binding, Position
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.behaviour.test_deep_lineage import build_chain
from tests.conftest import Backend
from tests.helpers import compact_prefix, msg, texts

KEK = bytes(range(32))


async def collect(messages: AsyncIterator[Message]) -> list[Message]:
    return [m async for m in messages]


async def streamed_pages(book: Binding, at: Position, **options: Any) -> list[list[str]]:
    return [texts(page) async for page in book.pages(at, **options)]


def dicts(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in messages]


@pytest.mark.parametrize("offset", [0, 1, -3])
async def test_the_stream_is_list_messages_along_branches_and_deep_lineages(
    database: Any, offset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatledger.models

    monkeypatch.setattr(chatledger.models, "LINEAGE_WINDOW", 3)  # the chain crosses the window
    lines = await build_chain(Ledger(database).bind(), 8)
    fresh = Ledger(database).bind()  # nothing cached: ancestors are read as the stream needs them
    for line in lines:
        at = await fresh.head(line.thread_id)
        # Tiny batches: every page boundary falls somewhere along the line, across forks.
        pages = await streamed_pages(fresh, at, offset=offset, batch_messages=2)
        assert [t for page in pages for t in page] == line.messages()[offset:]
        assert all(1 <= len(page) <= 2 for page in pages)

        store = MongoChatMessageStore(database, thread_id=line.thread_id)
        assert dicts(await collect(store.stream_messages(offset=offset))) == dicts(
            await store.list_messages(offset=offset)
        )


async def test_a_store_behind_its_head_streams_its_own_cursor_and_branches(database: Any) -> None:
    store = MongoChatMessageStore(database)
    for i in range(4):
        await store.add_messages([msg(f"q{i}"), msg(f"a{i}", "assistant")])
    old = MongoChatMessageStore(database)
    await old.deserialize_state({"thread_id": store.thread_id, "offset": 2})
    assert texts(await collect(old.stream_messages())) == ["q0", "a0", "q1", "a1"]
    await old.add_messages([msg("other")])  # behind the head: a branch
    assert old.thread_id != store.thread_id
    streamed = await collect(old.stream_messages(batch_messages=1))
    assert texts(streamed) == ["q0", "a0", "q1", "a1", "other"]
    assert dicts(streamed) == dicts(await old.list_messages())


async def test_a_compacted_thread_streams_its_transcript_like_list_messages(database: Any) -> None:
    store = MongoChatMessageStore(database)
    for i in range(5):
        await store.add_messages([msg(f"m{i}")])
    book = store.binding
    head = await compact_prefix(book, await book.head(store.thread_id), 3, "summary of m0-m2")
    await book.append(head, [msg("m5")])
    fresh = MongoChatMessageStore(database, thread_id=store.thread_id)
    listed = await fresh.list_messages()
    assert texts(listed) == [f"m{i}" for i in range(6)]  # the summary is no transcript message
    assert dicts(await collect(fresh.stream_messages(batch_messages=2))) == dicts(listed)


async def test_a_sealed_thread_streams_opened_like_list_messages(database: Any) -> None:
    def sealer() -> Sealer:
        return Sealer(KeyStore(database), LocalKeyProvider(KEK))

    store = MongoChatMessageStore(database, user_id="alice", sealer=sealer())
    for i in range(6):
        await store.add_messages([msg(f"secret {i}"), msg(f"reply {i}", "assistant")])
    fresh = MongoChatMessageStore(database, user_id="alice", sealer=sealer())
    await fresh.deserialize_state(await store.serialize_state())
    listed = await fresh.list_messages()
    assert len(listed) == 12
    assert listed[0].text == "secret 0"
    assert dicts(await collect(fresh.stream_messages(batch_messages=5))) == dicts(listed)


async def test_pages_stay_within_the_byte_budget(database: Any) -> None:
    book = Ledger(database).bind()
    at = book.empty("long")
    for i in range(30):
        at = (await book.append(at, [msg(f"{i:02d}" + "x" * 998), msg(f"{i:02d}" + "y" * 998)])).position
    pages = await streamed_pages(book, at, batch_bytes=10_000)
    assert [t for page in pages for t in page] == texts(await book.read(at))
    assert len(pages[0]) == 1  # before any size is known, one message
    # Every later page holds about 10,000 bytes of 1,000-byte messages: never more than ten.
    assert all(len(page) <= 10 for page in pages)
    assert all(len(page) >= 9 for page in pages[1:-1])  # and no fewer: the budget is used


async def test_a_stream_cut_short_resumes_at_its_offset_and_ignores_later_appends(database: Any) -> None:
    store = MongoChatMessageStore(database)
    for i in range(10):
        await store.add_messages([msg(f"m{i}")])
    state = await store.serialize_state()
    handled: list[str] = []
    async for message in store.stream_messages(batch_messages=3):
        handled.append(message.text)
        if len(handled) == 4:
            break  # the consumer stopped (a crash, a cancelled task)
    await store.add_messages([msg("later")])  # the store moves on; the cursor saved does not
    resumed = MongoChatMessageStore(database)
    await resumed.deserialize_state(state)
    handled += [m.text async for m in resumed.stream_messages(offset=len(handled), batch_messages=3)]
    assert handled == [f"m{i}" for i in range(10)]


@pytest.mark.parametrize(
    "options",
    [
        {"batch_bytes": 0},
        {"batch_bytes": "4096"},
        {"batch_bytes": True},
        {"batch_messages": -1},
        {"batch_messages": 2.0},
        {"offset": "1"},
        {"offset": None},
    ],
)
async def test_bad_stream_arguments_are_refused_before_iterating(
    database: Any, options: dict[str, Any]
) -> None:
    store = MongoChatMessageStore(database)
    await store.add_messages([msg("hello")])
    with pytest.raises(InvalidInputError):
        store.stream_messages(**options)
    book = store.binding
    with pytest.raises(InvalidInputError):
        book.pages(await book.head(store.thread_id), **options)


async def test_streaming_memory_is_bounded_by_the_batch_not_the_thread(
    real_backend: Backend, database: Any
) -> None:
    # On a real server only: mongomock keeps every stored document in this process.
    store = MongoChatMessageStore(database)
    text = "z" * 2_000
    turns = 200  # 2,000 messages, 4 MB of text
    for i in range(turns):
        turn = [Message("user" if k % 2 else "assistant", [f"{i}.{k} {text}"]) for k in range(10)]
        await store.add_messages(turn)
    budget = 100_000

    async def peak(replay: Any) -> int:
        fresh = MongoChatMessageStore(database, thread_id=store.thread_id)
        await fresh.list_messages(offset=-1)  # the thread is opened before measuring
        gc.collect()
        tracemalloc.start()
        try:
            count = await replay(fresh)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert count == 10 * turns

    async def streamed(s: MongoChatMessageStore) -> int:
        n = 0
        async for _ in s.stream_messages(batch_bytes=budget):
            n += 1
        return n

    async def listed(s: MongoChatMessageStore) -> int:
        return len(await s.list_messages())

    stream_peak, list_peak = await peak(streamed), await peak(listed)
    # A page of ~100 KB of text is ~50 messages (5 events); its decoded messages, the
    # events and the driver's reply stay within a few times that. The whole thread is 4 MB.
    assert stream_peak < 15 * budget, (stream_peak, list_peak)
    assert list_peak > 4_000_000 > 2 * stream_peak, (stream_peak, list_peak)
