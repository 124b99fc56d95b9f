"""The server is SIGKILLed in the middle of a stream of appends, then restarted on its data.

What a user must see: the failing call raises ChatLedger's ``StorageUnavailableError``
promptly (no hang, no raw driver exception); after the restart every acknowledged append
is there, intact and hash-chained, nothing half-written; the very same store object keeps
working; and re-sending the batch that failed stores it exactly once.

Runs against a dedicated FerretDB (this test kills it), never the session's server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agent_framework import Message
from pymongo.errors import PyMongoError

from chatledger import MongoChatMessageStore, StorageUnavailableError
from chatledger.storage.driver import close_client
from tests.helpers import raw_docs, tricky_message
from tests.real._support import assert_chain_intact, make_client
from tests.scripts import start_ferretdb

pytestmark = pytest.mark.real

#: Client timeouts (ms) and the ledger's per-operation limit (s): small, so a dead server
#: is noticed fast. HANG_LIMIT bounds every call that is expected to fail.
CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 1500, "connectTimeoutMS": 1000, "socketTimeoutMS": 3000}
LEDGER_OPTIONS = {"operation_timeout": 3.0, "write_attempts": 2}
HANG_LIMIT = 15.0
KILL_AFTER = 30  # acknowledged appends before the crash
MAX_APPENDS = 400  # the stream stops by itself even if the kill never bit


@pytest.fixture
def server() -> Iterator[Any]:
    """A FerretDB of our own, on its own data directory, removed afterwards."""
    srv = start_ferretdb()
    if srv is None:
        pytest.skip("FerretDB is not available (no Go toolchain, no cached binary)")
    try:
        yield srv
    finally:
        srv.close()


def batch(i: int) -> list[Message]:
    """A user turn and an assistant turn; every 10th batch carries the codec's hardest message."""
    user = Message("user", [f"question {i}"], message_id=f"q{i}", additional_properties={"a.b": i})
    reply = (
        tricky_message() if i % 10 == 0 else Message("assistant", [f"answer {i} — ok"], author_name="Jöker")
    )
    return [user, reply]


def as_dicts(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in messages]


async def expect_unavailable(call: Any) -> None:
    """Await ``call``; it must fail with StorageUnavailableError within HANG_LIMIT seconds."""
    error: Exception | None = None
    try:
        await asyncio.wait_for(call, HANG_LIMIT)
    except TimeoutError:
        pytest.fail(f"the call hung for more than {HANG_LIMIT}s with the server down")
    except Exception as e:
        error = e
    assert error is not None, "the call succeeded although the server is down"
    assert isinstance(error, StorageUnavailableError), f"a raw error leaked: {type(error)!r}: {error}"
    assert not isinstance(error, PyMongoError)


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
async def test_sigkill_mid_stream_keeps_acknowledged_appends_and_store_recovers(
    server: Any, driver: str
) -> None:
    client = make_client(driver, server.uri, **CLIENT_OPTIONS)
    store = MongoChatMessageStore(client["crash"], **LEDGER_OPTIONS)
    acked: list[Message] = []
    killer: asyncio.Task[None] | None = None
    failed: list[Message] | None = None
    error: Exception | None = None
    try:
        # A stream of appends; once KILL_AFTER are acknowledged, SIGKILL the server while
        # the stream goes on, so the kill lands in the middle of one.
        for i in range(MAX_APPENDS):
            if len(acked) == 2 * KILL_AFTER and killer is None:
                killer = asyncio.create_task(asyncio.to_thread(server.kill))
            try:
                await asyncio.wait_for(store.add_messages(batch(i)), HANG_LIMIT)
            except TimeoutError:
                pytest.fail(f"append {i} hung for more than {HANG_LIMIT}s after the kill")
            except Exception as e:
                error = e
                failed = batch(i)
                break
            acked += batch(i)
        assert killer is not None
        await killer
        assert failed is not None, "the stream never noticed the dead server"
        # The user sees ChatLedger's own error, never a driver exception.
        assert isinstance(error, StorageUnavailableError), f"a raw error leaked: {type(error)!r}: {error}"
        assert not isinstance(error, PyMongoError)

        # While it is down: retrying the same batch, and reading, fail cleanly too.
        await expect_unavailable(store.add_messages(failed))
        await expect_unavailable(store.list_messages())

        # Same data, same port. The same store (and client) must work again.
        await asyncio.to_thread(server.restart)
        await asyncio.wait_for(store.add_messages(failed), HANG_LIMIT)
        everything = acked + failed
        assert as_dicts(await store.list_messages()) == as_dicts(everything)

        # On disk: one event per acknowledged batch plus the retried one, exactly once,
        # contiguous, each chained to the one before, none torn.
        events = sorted(await raw_docs(client["crash"]["events"]), key=lambda e: e["seq"])
        assert len(events) == len(everything) // 2
        await assert_chain_intact(client["crash"])
        failed_text = failed[0].text
        assert sum(m["text"] == failed_text for e in events for m in e["messages"]) == 1

        # A fresh client and store on the same thread read the same conversation.
        other = make_client(driver, server.uri, **CLIENT_OPTIONS)
        try:
            fresh = MongoChatMessageStore(other["crash"], thread_id=store.thread_id)
            assert as_dicts(await fresh.list_messages()) == as_dicts(everything)
        finally:
            await close_client(other)

        # And the conversation goes on through the same store object.
        more = [Message("user", ["still there?"]), Message("assistant", ["yes"])]
        await store.add_messages(more)
        assert as_dicts(await store.list_messages(offset=-2)) == as_dicts(more)
        assert await client["crash"]["threads"].count_documents({}) == 1
    finally:
        await close_client(client)


async def test_append_while_down_then_retried_after_restart_is_stored_once(server: Any) -> None:
    client = make_client("pymongo", server.uri, **CLIENT_OPTIONS)
    store = MongoChatMessageStore(client["crash"], **LEDGER_OPTIONS)
    try:
        await store.add_messages(batch(1))
        server.kill()

        # The server is gone before the append starts: a clean, prompt error.
        await expect_unavailable(store.add_messages(batch(2)))

        server.restart()
        # The caller retries the same batch through the same store: stored once.
        await asyncio.wait_for(store.add_messages(batch(2)), HANG_LIMIT)
        await asyncio.wait_for(store.add_messages(batch(2)), HANG_LIMIT)  # a new, deliberate repeat
        events = sorted(await raw_docs(client["crash"]["events"]), key=lambda e: e["seq"])
        await assert_chain_intact(client["crash"])
        assert [e["messages"][0]["text"] for e in events] == ["question 1", "question 2", "question 2"]
        assert as_dicts(await store.list_messages()) == as_dicts(batch(1) + batch(2) + batch(2))
    finally:
        await close_client(client)
