"""Bad input gets a clear ChatLedger exception and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import (
    BatchTooLargeError,
    ChatLedgerError,
    InvalidCursorError,
    InvalidMessageError,
    InvalidThreadIdError,
    MongoChatMessageStore,
    UnknownThreadError,
)
from tests.helpers import msg, raw_docs


async def _snapshot(database: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return await raw_docs(database["threads"]), await raw_docs(database["events"])


@pytest.fixture
async def seeded(database: Any) -> MongoChatMessageStore:
    store = MongoChatMessageStore(database, thread_id="t-1")
    await store.add_messages([msg("one")])
    await store.add_messages([msg("two")])
    return store


@pytest.mark.parametrize(
    "thread_id", [{"$ne": None}, {"$gt": ""}, ["t-1"], 42, b"t-1", "", "x" * 201, "bad\nid", True]
)
async def test_operator_dicts_and_non_strings_are_not_thread_ids(
    database: Any, seeded: MongoChatMessageStore, thread_id: Any
) -> None:
    before = await _snapshot(database)
    with pytest.raises(InvalidThreadIdError) as info:
        MongoChatMessageStore(database, thread_id=thread_id)
    assert isinstance(info.value, (TypeError, ValueError))
    with pytest.raises(InvalidThreadIdError):
        await seeded.deserialize_state({"thread_id": thread_id, "offset": 1})
    assert await _snapshot(database) == before
    # The store that was refused a bad cursor still shows its own conversation.
    assert [m.text for m in await seeded.list_messages()] == ["one", "two"]


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("t-1", InvalidCursorError),
        ([("thread_id", "t-1")], InvalidCursorError),
        ({"thread_id": "t-1"}, InvalidCursorError),
        ({"offset": 1}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": -1}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": "1"}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": 1.0}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": True}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": {"$gt": 0}}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": 1, "v": 99}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": 1, "history": []}, InvalidCursorError),
        ({"thread_id": "t-1", "offset": 3}, InvalidCursorError),  # past the head
        ({"thread_id": "nope", "offset": 1}, UnknownThreadError),
    ],
)
async def test_malformed_or_unknown_cursors_are_refused(
    database: Any, seeded: MongoChatMessageStore, state: Any, error: type[Exception]
) -> None:
    before = await _snapshot(database)
    store = MongoChatMessageStore(database)
    with pytest.raises(error) as info:
        await store.deserialize_state(state)
    assert isinstance(info.value, ChatLedgerError)
    assert isinstance(info.value, ValueError)
    assert await _snapshot(database) == before


@pytest.mark.parametrize(
    "batch",
    [
        "hello",
        [{"role": "user", "contents": ["hi"]}],
        ["hi"],
        [None],
        42,
        [msg("good"), "bad"],
    ],
)
async def test_non_messages_are_refused_and_nothing_is_written(
    database: Any, seeded: MongoChatMessageStore, batch: Any
) -> None:
    before = await _snapshot(database)
    with pytest.raises(InvalidMessageError) as info:
        await seeded.add_messages(batch)
    assert isinstance(info.value, TypeError)
    assert await _snapshot(database) == before
    await seeded.add_messages([msg("three")])  # the store is still usable
    assert [m.text for m in await seeded.list_messages()] == ["one", "two", "three"]


async def test_a_batch_too_large_for_one_document_is_refused_whole(
    database: Any, seeded: MongoChatMessageStore
) -> None:
    before = await _snapshot(database)
    huge = [msg("x" * (3 * 1024 * 1024)) for _ in range(6)]  # ~18 MiB, over BSON's 16 MiB
    with pytest.raises(BatchTooLargeError) as info:
        await seeded.add_messages(huge)
    assert isinstance(info.value, ValueError)
    assert "split" in str(info.value)
    assert await _snapshot(database) == before
    # Split into several calls, the same messages fit.
    for message in huge:
        await seeded.add_messages([message])
    assert len(await seeded.list_messages()) == 8


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"offset": "0"}, ValueError),
        ({"offset": 1.5}, ValueError),
        ({"offset": None}, ValueError),
        ({"limit": -1}, ValueError),
        ({"limit": "10"}, ValueError),
    ],
)
async def test_bad_page_arguments_are_refused(
    seeded: MongoChatMessageStore, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        await seeded.list_messages(**kwargs)
    assert isinstance(info.value, ChatLedgerError)
