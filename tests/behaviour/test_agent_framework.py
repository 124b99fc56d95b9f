"""Agent Framework 1.x end to end: an agent, an offline chat client, the history provider."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_framework import Agent, AgentSession, Message

from chatledger import InvalidInputError, Ledger, MongoChatMessageStore, MongoHistoryProvider
from chatledger.demo.joker import JokerChatClient
from tests.helpers import read

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID


def _agent(database: Any, **options: Any) -> tuple[Agent[Any], JokerChatClient]:
    client = JokerChatClient()
    provider = MongoHistoryProvider(database=database, **options)
    return Agent(client, "You tell jokes.", name="Joker", context_providers=[provider]), client


async def test_history_persists_across_fresh_agents_and_providers(database: Any) -> None:
    agent, _ = _agent(database)
    session = agent.create_session()
    first = await agent.run("Tell me a joke about a pirate.", session=session)
    assert "plank" in first.text
    saved = json.dumps(session.to_dict())

    # A new process, as it were: new client, provider and agent; only the dict survives.
    agent2, client2 = _agent(database)
    resumed = AgentSession.from_dict(json.loads(saved))
    reply = await agent2.run("Tell the same joke in the voice of a pirate.", session=resumed)
    assert "th' pirate" in reply.text
    assert "I could see 2 earlier messages" in reply.text
    assert client2.seen == [3]


async def test_without_the_store_the_joker_cannot_remember(database: Any) -> None:
    # The control case: a session whose state lost its cursor has no history to show.
    agent, _ = _agent(database)
    reply = await agent.run("Tell the same joke again.", session=agent.create_session())
    assert "don't remember" in reply.text


async def test_session_dict_stays_compact_however_long_the_conversation(database: Any) -> None:
    agent, _ = _agent(database)
    session = agent.create_session()
    await agent.run("Tell me a joke about a cat.", session=session)
    size_after_one = len(json.dumps(session.to_dict()))
    for _ in range(20):
        await agent.run("Tell me a joke about a robot. " + "padding " * 50, session=session)

    state = session.to_dict()["state"][SOURCE]
    assert set(state) == {"thread_id", "offset", "v"}
    assert state["offset"] == 21
    assert len(json.dumps(session.to_dict())) <= size_after_one + 1


async def test_restoring_an_old_session_dict_branches_and_keeps_the_newer_line(database: Any) -> None:
    agent, _ = _agent(database)
    session = agent.create_session()
    await agent.run("Tell me a joke about a pirate.", session=session)
    old = session.to_dict()
    await agent.run("Tell the same joke in the voice of a pirate.", session=session)
    newer = session.to_dict()

    agent2, _ = _agent(database)
    restored = AgentSession.from_dict(old)
    reply = await agent2.run("Tell that joke again, but as a robot.", session=restored)
    assert "BEEP BOOP" in reply.text
    assert "I could see 2 earlier messages" in reply.text

    ledger = Ledger(database)
    branch = [m.text for m in await read(ledger, restored.state[SOURCE])]
    main = [m.text for m in await read(ledger, newer["state"][SOURCE])]
    assert branch[:2] == main[:2]
    assert len(branch) == len(main) == 4
    assert "BEEP BOOP" in branch[3]
    assert "th' pirate" in main[3]
    assert restored.state[SOURCE]["thread_id"] != newer["state"][SOURCE]["thread_id"]


async def test_max_messages_loads_only_the_newest_messages(database: Any) -> None:
    agent, client = _agent(database, max_messages=4)
    session = agent.create_session()
    for topic in ("cat", "robot", "pirate", "database"):
        await agent.run(f"Tell me a joke about a {topic}.", session=session)
    # 0, 2, 4, then capped at 4 history messages (+1 input each time).
    assert client.seen == [1, 3, 5, 5]
    # Storage is complete: nothing was dropped.
    assert len(await read(Ledger(database), session.state[SOURCE])) == 8


async def test_history_provider_flags_keep_their_meaning(database: Any) -> None:
    agent, _client = _agent(database, store_inputs=False)
    session = agent.create_session()
    await agent.run("Tell me a joke about a cat.", session=session)
    await agent.run("Tell me a joke about a robot.", session=session)
    stored = await read(Ledger(database), session.state[SOURCE])
    assert [m.role for m in stored] == ["assistant", "assistant"]

    loader, loader_client = _agent(database, load_messages=False)
    await loader.run("Tell the same joke again.", session=AgentSession.from_dict(session.to_dict()))
    assert loader_client.seen == [1]


async def test_a_session_recreated_with_the_same_id_continues_only_when_asked(database: Any) -> None:
    # Continuing a conversation by session id is an explicit choice, not what any
    # cursor-less session does (a restored pre-run snapshot must start empty).
    agent, _ = _agent(database, resume_by_session_id=True)
    await agent.run("Tell me a joke about a pirate.", session=AgentSession(session_id="user-7"))
    agent2, client2 = _agent(database, resume_by_session_id=True)
    reply = await agent2.run("Tell the same joke again.", session=AgentSession(session_id="user-7"))
    assert "plank" in reply.text
    assert client2.seen == [3]

    agent3, client3 = _agent(database)
    reply = await agent3.run("Tell the same joke again.", session=AgentSession(session_id="user-7"))
    assert "don't remember" in reply.text
    assert client3.seen == [1]


async def test_a_corrupt_session_state_is_refused(database: Any) -> None:
    agent, _ = _agent(database)
    session = AgentSession(session_id="s")
    session.state[SOURCE] = {"thread_id": {"$ne": None}, "offset": 1}
    with pytest.raises(InvalidInputError):
        await agent.run("hi", session=session)
    assert await database["events"].count_documents({}) == 0


async def test_the_old_protocols_message_shape_is_accepted_by_the_store(database: Any) -> None:
    # {"messages": []} changes nothing; {"messages": [...]} becomes the thread's history.
    store = await MongoChatMessageStore.deserialize({"messages": []}, database=database)
    await store.update_from_state({"messages": []})
    assert await store.list_messages() == []
    assert await database["events"].count_documents({}) == 0

    imported = [Message("user", ["hi"]).to_dict(), Message("assistant", ["hello"]).to_dict()]
    restored = await MongoChatMessageStore.deserialize({"messages": imported}, database=database)
    assert [m.text for m in await restored.list_messages()] == ["hi", "hello"]
