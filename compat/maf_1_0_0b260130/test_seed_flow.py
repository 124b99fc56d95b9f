"""The seed notebook's flow on the framework it was written for (agent-framework-core 1.0.0b260130).

``ChatAgent`` + ``MongoChatMessageStore`` as ``chat_message_store_factory`` + a real server:
run, ``thread.serialize()``, ``agent.deserialize_thread()``, run again. The saved thread
must stay compact (a cursor, not the history), the resumed agent must see the history, and
the database must hold each message once. Run with the old venv only::

    .venv-maf-old/bin/python -m pytest compat/maf_1_0_0b260130 -p no:cacheprovider
"""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any

import pytest
from agent_framework import ChatAgent, ChatMessage
from offline_client import EchoJokerClient, reply_for

from chatledger import MongoChatMessageStore

EXPECTED_VERSION = "1.0.0b260130"
if version("agent-framework-core") != EXPECTED_VERSION:  # a wrong venv must not pass quietly
    pytest.fail(
        f"needs agent-framework-core=={EXPECTED_VERSION}, found {version('agent-framework-core')}",
        pytrace=False,
    )

INSTRUCTIONS = "You are good at telling jokes."
MAX_SERIALIZED_BYTES = 600  # a cursor and a one-message marker; the history never travels


def make_agent(db: Any) -> tuple[ChatAgent, EchoJokerClient]:
    """The seed notebook's agent, with the ledger store as its message store."""
    client = EchoJokerClient()
    agent = ChatAgent(
        chat_client=client,
        name="Joker",
        instructions=INSTRUCTIONS,
        chat_message_store_factory=lambda: MongoChatMessageStore(db),
    )
    return agent, client


def lines(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    """(role, text) of each message."""
    return [(m.role.value, m.text) for m in messages]


async def saved(thread: Any) -> dict[str, Any]:
    """``thread.serialize()`` as it would be written to disk (JSON round trip), size-checked."""
    raw = json.dumps(await thread.serialize())
    assert len(raw.encode()) <= MAX_SERIALIZED_BYTES, f"serialized thread is {len(raw)} bytes: {raw[:200]}"
    data: dict[str, Any] = json.loads(raw)
    return data


async def test_seed_flow_resumes_from_a_compact_thread_without_rewriting_history(db: Any) -> None:
    """Run, save, resume, run: the history comes back and is stored once."""
    agent, client = make_agent(db)
    thread = agent.get_new_thread()
    first = await agent.run("Tell me a joke about a pirate.", thread=thread)

    snapshot = await saved(thread)
    resumed = await agent.deserialize_thread(snapshot)
    second = await agent.run("Now tell it in the voice of a pirate's parrot.", thread=resumed)

    # The model was handed the first turn back: its reply quotes the first joke.
    assert repr(first.text) in second.text
    assert second.text == reply_for(client.calls[1])
    assert lines(client.calls[1]) == [
        ("user", "Tell me a joke about a pirate."),
        ("assistant", first.text),
        ("user", "Now tell it in the voice of a pirate's parrot."),
    ]
    # The resumed thread continues the same ledger thread; nothing was re-appended:
    # four add_messages calls (user, then reply, per run), four events, one thread.
    store = resumed.message_store
    assert isinstance(store, MongoChatMessageStore)
    assert (
        store.thread_id
        == snapshot["chat_message_store_state"]["messages"][0]["additional_properties"]["chatledger_cursor"][
            "thread_id"
        ]
    )
    history = await store.list_messages()
    assert [r for r, _ in lines(history)] == ["user", "assistant"] * 2
    assert history[1].author_name == "Joker"
    assert await db["events"].count_documents({}) == 4
    assert await db["threads"].count_documents({}) == 1
    # The cursor marker is never stored as a message.
    assert await db["events"].count_documents({"messages.role": "system"}) == 0

    # Saving again after the second run is still a cursor, not the history.
    later = await saved(resumed)
    again = await agent.deserialize_thread(later)
    assert lines(await again.message_store.list_messages()) == lines(history)


async def test_same_snapshot_resumed_twice_branches_and_keeps_the_original(db: Any) -> None:
    """Two follow-ups from one saved point: a branch, and the original untouched."""
    agent, _client = make_agent(db)
    thread = agent.get_new_thread()
    first = await agent.run("Tell me a joke about a pirate.", thread=thread)
    snapshot = await saved(thread)

    # Two follow-ups from the same saved point (edit-and-retry).
    cats = await agent.deserialize_thread(snapshot)
    cats_reply = await agent.run("Another one, about cats.", thread=cats)
    dogs = await agent.deserialize_thread(snapshot)
    dogs_reply = await agent.run("Another one, about dogs.", thread=dogs)

    # Both replies saw the first joke; each line has only its own follow-up.
    assert repr(first.text) in cats_reply.text
    assert repr(first.text) in dogs_reply.text
    opening = [("user", "Tell me a joke about a pirate."), ("assistant", first.text)]
    assert lines(await cats.message_store.list_messages()) == [
        *opening,
        ("user", "Another one, about cats."),
        ("assistant", cats_reply.text),
    ]
    assert lines(await dogs.message_store.list_messages()) == [
        *opening,
        ("user", "Another one, about dogs."),
        ("assistant", dogs_reply.text),
    ]
    # The second follow-up branched off the first thread at the saved point.
    root = cats.message_store.thread_id
    branch = dogs.message_store.thread_id
    assert branch != root
    branch_doc = await db["threads"].find_one({"_id": branch})
    assert branch_doc["parent"] == {"thread_id": root, "offset": 2}
    # The original snapshot still shows exactly the first exchange; no event was copied.
    original = await agent.deserialize_thread(snapshot)
    assert lines(await original.message_store.list_messages()) == opening
    assert await db["events"].count_documents({}) == 6
    assert await db["threads"].count_documents({}) == 2


async def test_a_checkpoint_of_the_stock_agent_executor_warns_that_its_restore_loses_history(db: Any) -> None:
    """Its restore rebuilds the thread in memory, where ChatLedger never sees it: the save names the fix.

    ChatLedger does not read the call stack to learn who serializes, so the warning is given
    on this framework wherever a thread is serialized (``thread.serialize()`` too).
    """
    from agent_framework import AgentExecutor

    agent, _client = make_agent(db)
    executor = AgentExecutor(agent, id="joker")
    await agent.run("Tell me a joke about a pirate.", thread=executor._agent_thread)
    with pytest.warns(UserWarning, match=r"on_checkpoint_restore.*deserialize_thread"):
        checkpoint = json.loads(json.dumps(await executor.on_checkpoint_save()))
    # What the warning is about: the stock restore puts the thread in an in-memory store.
    restored = AgentExecutor(make_agent(db)[0], id="joker")
    await restored.on_checkpoint_restore(checkpoint)
    assert not isinstance(restored._agent_thread.message_store, MongoChatMessageStore)
    # Serializing outside a checkpoint still works: the same compact cursor, with the advice.
    with pytest.warns(UserWarning, match="deserialize_thread"):
        assert await saved(executor._agent_thread)


async def test_an_executor_that_restores_through_the_agent_keeps_the_history(db: Any) -> None:
    """The README's override: the restored executor sees the history and keeps writing to the ledger."""
    from agent_framework import AgentExecutor

    class LedgerAgentExecutor(AgentExecutor):
        async def on_checkpoint_restore(self, state: dict[str, Any]) -> None:
            await super().on_checkpoint_restore(state)
            if state.get("agent_thread"):
                self._agent_thread = await self._agent.deserialize_thread(state["agent_thread"])

    agent, _client = make_agent(db)
    executor = LedgerAgentExecutor(agent, id="joker")
    first = await agent.run("Tell me a joke about a pirate.", thread=executor._agent_thread)
    checkpoint = json.loads(json.dumps(await executor.on_checkpoint_save()))

    restored_agent, _restored_client = make_agent(db)
    restored = LedgerAgentExecutor(restored_agent, id="joker")
    await restored.on_checkpoint_restore(checkpoint)
    second = await restored_agent.run("And again.", thread=restored._agent_thread)
    assert repr(first.text) in second.text
    store = restored._agent_thread.message_store
    assert isinstance(store, MongoChatMessageStore)
    assert [r for r, _ in lines(await store.list_messages())] == ["user", "assistant"] * 2
    assert await db["events"].count_documents({}) == 4


async def test_the_protocols_own_state_shape_is_accepted(db: Any) -> None:
    """``{"messages": []}`` changes nothing; ``{"messages": [...]}`` becomes the thread's history."""
    store = await MongoChatMessageStore.deserialize({"messages": []}, database=db)
    assert await store.list_messages() == []
    await store.update_from_state({"messages": []})
    assert await db["events"].count_documents({}) == 0

    imported = [
        ChatMessage(role="user", text="hi").to_dict(),
        ChatMessage(role="assistant", text="hello").to_dict(),
    ]
    restored = await MongoChatMessageStore.deserialize({"messages": imported}, database=db)
    assert lines(await restored.list_messages()) == [("user", "hi"), ("assistant", "hello")]
    other = MongoChatMessageStore(db)
    await other.update_from_state({"messages": imported})
    assert len(await other.list_messages()) == 2


def test_the_history_provider_says_which_framework_it_needs() -> None:
    """Asking for MongoHistoryProvider here names the installed release and the supported range.

    This release has no HistoryProvider: the package imports and the message store works,
    and the provider's absence is explained instead of a bare "cannot import name".
    """
    import chatledger

    assert "MongoHistoryProvider" not in chatledger.__all__
    with pytest.raises(ImportError, match=r"agent-framework-core 1\.0\.0b260130 is installed.*>=1\.0\.0,<2"):
        from chatledger import MongoHistoryProvider  # noqa: F401
    assert "LedgerCompactionProvider" not in chatledger.__all__
    with pytest.raises(ImportError, match=r"CompactionProvider.*1\.0\.0b260130 is installed"):
        from chatledger import LedgerCompactionProvider  # noqa: F401
