"""What a hostile caller, an overlapping task or an unusual framework configuration can do (issue 21 review).

Every test drives the real ``Agent``, ``AgentSession`` and ``HistoryProvider`` classes with
offline chat clients, on every tier; where the framework's own ``InMemoryHistoryProvider``
is the reference, the test runs it side by side.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

import pytest
from agent_framework import Agent, Content, InMemoryHistoryProvider, Message

from chatledger import InvalidInputError, InvalidMessageError, MongoHistoryProvider
from chatledger.adapters import turns
from chatledger.demo.joker import JokerChatClient
from tests.behaviour.test_framework_configurations import ToolJoker, punchline

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID


def lines(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(str(m.role), m.text or "") for m in messages]


# --------------------------------------------------------------------------- the state dict


@pytest.mark.parametrize("state", ["thread_id", ["thread_id"], 5, None])
@pytest.mark.parametrize("load_messages", [True, False])
async def test_a_session_state_that_is_not_a_dict_is_refused_clearly(
    database: Any, state: Any, load_messages: bool
) -> None:
    # session.state[source_id] is the caller's to corrupt; a string, a list or None there
    # must give ChatLedger's error naming the key, never a raw TypeError from deep inside.
    agent = Agent(
        JokerChatClient(),
        "j",
        context_providers=[MongoHistoryProvider(database=database, load_messages=load_messages)],
    )
    session = agent.create_session()
    session.state[SOURCE] = state
    with pytest.raises(InvalidInputError, match=f"session.state\\[{SOURCE!r}\\]"):
        await agent.run("Tell me a joke about a cat.", session=session)
    assert await database["events"].count_documents({}) == 0


async def test_the_provider_api_refuses_a_state_that_is_not_a_dict(database: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    with pytest.raises(InvalidInputError, match="dict"):
        await provider.get_messages("s", state="thread_id")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="dict"):
        await provider.save_messages("s", [Message("user", ["hi"])], state=["x"])  # type: ignore[arg-type]
    assert await database["events"].count_documents({}) == 0


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("text", [{"a": 1}, 5, ["x"]])
async def test_a_text_content_whose_text_is_not_a_string_is_refused_clearly(database: Any, text: Any) -> None:
    # A seeded or hand-built message whose text content holds a non-string: the
    # framework builds it without complaint; storing it must fail as bad input.
    provider = MongoHistoryProvider(database=database)
    bad = Message("user", [Content.from_dict({"type": "text", "text": text})])
    with pytest.raises(InvalidMessageError):
        await provider.save_messages("s", [bad], state={})
    session_state: dict[str, Any] = {"messages": [bad.to_dict()]}
    with pytest.raises(InvalidMessageError):
        await provider.get_messages("s", state=session_state)
    assert await database["events"].count_documents({}) == 0


def heater(call_id: str, arguments: dict[str, Any]) -> list[Message]:
    """One tool exchange, as an outputs-only audit provider receives it."""
    return [
        Message("assistant", [Content.from_function_call(call_id, "set_heater", arguments=arguments)]),
        Message("tool", [Content.from_function_result(call_id, result="done")]),
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [({"on": False}, {}), ({"on": False}, {"on": None}), ({"room": ""}, {}), ({"rooms": []}, {"rooms": {}})],
)
async def test_tool_calls_that_differ_only_in_a_false_or_empty_argument_are_both_kept(
    database: Any, first: dict[str, Any], second: dict[str, Any]
) -> None:
    # Clients that number tool calls per conversation or per response ("call-1", as the
    # offline ToolJoker does) give two different calls the same id; the framework's
    # identity still tells set_heater(on=False) from set_heater() apart and keeps both.
    # Leaving out false or empty values the *caller* wrote loses the second call.
    batches = [heater("call-1", first), heater("call-1", second)]
    reference = InMemoryHistoryProvider()
    reference_state: dict[str, Any] = {}
    ours = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    for batch in batches:
        await reference.save_messages("s", batch, state=reference_state)
        await ours.save_messages("s", batch, state=state)
    expected = [m.to_dict() for m in reference_state["messages"]]
    assert len(expected) == 4
    assert [m.to_dict() for m in await ours.get_messages("s", state=state)] == expected


# --------------------------------------------------------------------------- overlapping tasks


async def test_overlapping_saves_by_session_id_alone_all_stay_readable(
    interleaving_backend: Any, database: Any
) -> None:
    # Without a state dict the session id is the only name of the history: saves that
    # overlap must all land where get_messages(session_id) reads, not on unnamed branches.
    provider = MongoHistoryProvider(database=database)
    sent = [Message("user", [f"note {i}"]) for i in range(6)]
    await asyncio.gather(*(provider.save_messages("notes", [m]) for m in sent))
    assert sorted(lines(await provider.get_messages("notes"))) == sorted(lines(sent))


async def test_a_cancelled_run_leaves_its_session_usable_and_nothing_held(database: Any) -> None:
    # A run cancelled while its save waits for the session's turn must release it, and
    # the per-session bookkeeping must not outlive the runs (a long-lived process serves
    # many sessions).
    provider = MongoHistoryProvider(database=database)
    agent = Agent(JokerChatClient(), "j", context_providers=[provider])
    session = agent.create_session()
    state = session.state.setdefault(SOURCE, {})
    async with turns.session_turn(id(state)):  # another run of this session is saving
        run = asyncio.create_task(agent.run("Tell me a joke about a robot.", session=session))
        for _ in range(200):
            await asyncio.sleep(0)
            if turns.TURNS.get(id(state), (None, 0))[1] == 2:
                break
        assert turns.TURNS[id(state)][1] == 2  # the run is waiting for the turn
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert turns.TURNS == {}
    await asyncio.wait_for(agent.run("Tell me a joke about a robot.", session=session), 30)
    assert len(await provider.get_messages(None, state=session.state[SOURCE])) == 2
    assert turns.TURNS == {}


# --------------------------------------------------------------------------- the old messages shape


async def test_a_seeded_history_larger_than_one_document_is_imported_whole(database: Any) -> None:
    # The framework's in-memory state of a long conversation (here about 19 MB) is a state
    # InMemoryHistoryProvider runs with; imported, it must become the whole history, not
    # a "batch too large" error the caller cannot act on.
    seeded = [
        Message("user" if i % 2 == 0 else "assistant", [f"{i:05d} " + "x" * 16_000]) for i in range(1_200)
    ]
    client = JokerChatClient()
    provider = MongoHistoryProvider(database=database)
    agent = Agent(client, "j", context_providers=[provider])
    session = agent.create_session()
    session.state[SOURCE] = {"messages": [m.to_dict() for m in seeded]}
    await agent.run("Tell me a joke about a cat.", session=session)
    assert client.seen == [len(seeded) + 1]
    stored = await provider.get_messages(session.session_id, state=session.state[SOURCE])
    assert [m.text for m in stored[: len(seeded)]] == [m.text for m in seeded]
    assert len(stored) == len(seeded) + 2


async def test_an_interrupted_import_resumes_without_doubling_or_dropping_a_turn(database: Any) -> None:
    # An import cut off after its first event leaves the cursor past that event and the
    # seed still in the state; the next load stores the rest once, even where the
    # conversation repeats itself (the same turn twice is two turns).
    turn = [Message("user", ["hi"]), Message("assistant", ["hello"])]
    seed = [*turn, *turn, Message("user", ["bye"])]
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {"messages": [m.to_dict() for m in turn]}
    assert len(await provider.get_messages("s", state=state)) == 2  # the part that was written
    state["messages"] = [m.to_dict() for m in seed]  # ... and the seed, still there
    assert lines(await provider.get_messages("s", state=state)) == lines(seed)
    assert "messages" not in state
    assert lines(await provider.get_messages("s", state=state)) == lines(seed)


# --------------------------------------------------------------------------- framework configurations


async def test_per_service_call_persistence_loads_the_history_like_the_in_memory_provider(
    database: Any,
) -> None:
    # With require_per_service_call_history_persistence (1.26) the framework persists and
    # reloads the providers around every model call, marking those calls with its local
    # history conversation id. That id names no service conversation: the history must
    # still reach the model, on every call, as the in-memory provider's does.
    if "require_per_service_call_history_persistence" not in inspect.signature(Agent.__init__).parameters:
        pytest.skip("this framework release has no per-service-call persistence")
    results = []
    for provider in (InMemoryHistoryProvider("memory"), MongoHistoryProvider("memory", database=database)):
        client = ToolJoker()
        agent = Agent(
            client,
            "You tell jokes.",
            tools=[punchline],
            context_providers=[provider],
            require_per_service_call_history_persistence=True,
        )
        session = agent.create_session()
        for ask in ("Tell me a joke about a robot.", "Tell me a joke about a cat."):
            reply = await agent.run(ask, session=session)
        stored = await provider.get_messages(session.session_id, state=session.state["memory"])
        results.append((client.seen, reply.text, [(str(m.role), m.text) for m in stored]))
    # Same messages handed to each model call (the second run's first call sees the
    # first run's whole tool exchange), same replies, same stored history.
    assert results[1] == results[0]
    assert results[1][0][2] > results[1][0][1]


async def test_a_clear_during_a_save_of_the_same_session_is_not_undone(
    interleaving_backend: Any, database: Any
) -> None:
    # clear() while a run of the same session is still saving: once both are done the
    # earlier history must be gone from the session's view, never silently back because
    # the save finished last and wrote its (old line's) cursor over the cleared one.
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [Message("user", ["my secret plan"])], state=state)
    saving = asyncio.create_task(provider.save_messages("s", [Message("user", ["more"])], state=state))
    await asyncio.sleep(0)  # the save has started and waits on the database
    await provider.clear("s", state=state)
    await saving
    assert "my secret plan" not in [m.text for m in await provider.get_messages("s", state=state)]


@pytest.mark.parametrize("session_id", [{"$ne": 1}, 5, ["s"]])
async def test_a_session_id_that_is_not_a_string_is_refused_clearly(database: Any, session_id: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    for state in (None, {}):
        with pytest.raises(InvalidInputError, match="session_id"):
            await provider.save_messages(session_id, [Message("user", ["hi"])], state=state)
        with pytest.raises(InvalidInputError, match="session_id"):
            await provider.get_messages(session_id, state=state)
    assert await database["events"].count_documents({}) == 0
