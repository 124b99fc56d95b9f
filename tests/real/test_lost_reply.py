"""A write whose reply is lost after the server committed it is neither duplicated nor branched.

A loopback proxy (scripts/proxy.py) sits between the client and the real server and
swallows the server's reply to the ``insert`` of an event, cutting the connection: the
event IS stored, but the client only sees a dropped connection. That is the "unknown
outcome" every network error on append really means.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from chatledger import Ledger, MongoChatMessageStore, StorageUnavailableError
from chatledger.storage.driver import close_client
from tests.helpers import append, msg, read, texts
from tests.real._support import assert_chain_intact, make_client
from tests.scripts import load_script

pytestmark = pytest.mark.real


@pytest.fixture
async def via_proxy(real_backend: Any, database: Any) -> AsyncIterator[tuple[Any, Any]]:
    """(proxy, database seen through the proxy); ``database`` itself is the direct view."""
    target = urlsplit(real_backend.uri.split(",")[0])
    proxy = await load_script("proxy").WireProxy(target.hostname or "127.0.0.1", target.port).start()
    # directConnection: a replica-set member must not lead the driver around the proxy.
    client = make_client(real_backend.driver, proxy.uri, directConnection=True, serverSelectionTimeoutMS=5000)
    try:
        yield proxy, client[database.name]
    finally:
        # Proxy first: Motor's close() blocks the event loop the proxy runs on.
        await proxy.close()
        await close_client(client)


async def test_ledger_append_with_lost_reply_is_stored_once(
    via_proxy: tuple[Any, Any], database: Any
) -> None:
    proxy, db = via_proxy
    ledger = Ledger(db)
    first = await append(ledger, {"thread_id": "t", "offset": 0}, [msg("hello")])

    # The server stores "how are you?" but its reply never reaches the client.
    proxy.drop_replies("insert", "events", count=1)
    second = await append(ledger, first.position, [msg("how are you?")])

    assert proxy.dropped == 1  # the reply really was lost
    # The ledger retried with the same event id and recognised its own event.
    assert not second.branched
    assert second.position.cursor.to_state()["offset"] == 2
    assert await database["events"].count_documents({}) == 2
    assert await database["threads"].count_documents({}) == 1
    assert texts(await read(ledger, second.position)) == ["hello", "how are you?"]
    await assert_chain_intact(database)


async def test_store_with_lost_reply_keeps_one_event_and_one_thread(
    via_proxy: tuple[Any, Any], database: Any
) -> None:
    proxy, db = via_proxy
    # strict: a mistaken "someone else wrote here" would raise instead of branching quietly.
    store = MongoChatMessageStore(db, strict=True)
    proxy.drop_replies("insert", "events", count=1)
    await store.add_messages([msg("tell me a joke")])  # the very first event of the thread
    proxy.drop_replies("insert", "events", count=1)
    await store.add_messages([msg("why did the chicken…", "assistant")])

    assert proxy.dropped == 2
    assert await database["events"].count_documents({}) == 2
    assert await database["threads"].count_documents({}) == 1
    assert texts(await store.list_messages()) == ["tell me a joke", "why did the chicken…"]
    # A fresh store on the same thread sees the same two messages.
    fresh = MongoChatMessageStore(database, thread_id=store.thread_id)
    assert texts(await fresh.list_messages()) == ["tell me a joke", "why did the chicken…"]


async def test_store_retry_after_every_reply_was_lost_does_not_duplicate(
    via_proxy: tuple[Any, Any], database: Any
) -> None:
    proxy, db = via_proxy
    store = MongoChatMessageStore(db, write_attempts=2)
    await store.add_messages([msg("one")])

    # Both tries' replies are lost: the caller gets an error although the event committed.
    proxy.drop_replies("insert", "events", count=2)
    batch = [msg("two")]
    with pytest.raises(StorageUnavailableError):
        await store.add_messages(batch)
    assert proxy.dropped == 2
    assert await database["events"].count_documents({"messages.text": "two"}) == 1

    # The caller retries the same batch: recognised, not written again, not branched.
    await store.add_messages(batch)
    assert await database["events"].count_documents({}) == 2
    assert await database["threads"].count_documents({}) == 1
    assert texts(await store.list_messages()) == ["one", "two"]

    # And the conversation simply goes on.
    await store.add_messages([msg("three")])
    assert texts(await store.list_messages()) == ["one", "two", "three"]
    await assert_chain_intact(database)
