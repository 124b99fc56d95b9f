"""Every Agent Framework configuration a history provider can be put in, judged against the framework's own.

Each scenario runs twice on the real ``Agent``: once with ``MongoHistoryProvider`` and once
with the framework's ``InMemoryHistoryProvider`` in exactly the same position (same source
ids, same flags, same chat client). What each provider stores and what the model is shown
must be the same; only where the history lives differs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from agent_framework import (
    Agent,
    AgentSession,
    ChatResponse,
    Content,
    HistoryProvider,
    InMemoryHistoryProvider,
    Message,
    ResponseStream,
    tool,
)
from opentelemetry import trace
from opentelemetry.util import types as otel_types

from chatledger import InvalidInputError, Ledger, MongoHistoryProvider, telemetry
from chatledger.codec import encode_messages
from chatledger.demo.joker import JokerChatClient
from tests.helpers import msg, texts, tricky_message

Lines = list[tuple[str, str]]


def lines(messages: Sequence[Message]) -> Lines:
    """(role, text) of each message: what a user would compare."""
    return [(str(m.role), m.text or "") for m in messages]


class Scenario:
    """One agent configuration, built twice: on the ledger and on the framework's in-memory provider."""

    def __init__(self, database: Any, providers: Sequence[tuple[str, dict[str, Any]]], **agent: Any) -> None:
        self.database = database
        self.spec = list(providers)
        self.agent_options = agent

    def build(self, *, ledger: bool) -> tuple[Agent[Any], JokerChatClient, list[HistoryProvider]]:
        client = JokerChatClient()
        providers: list[HistoryProvider] = [
            MongoHistoryProvider(source_id, database=self.database, **options)
            if ledger
            else InMemoryHistoryProvider(source_id, **options)
            for source_id, options in self.spec
        ]
        agent: Agent[Any] = Agent(
            client, "You tell jokes.", name="Joker", context_providers=providers, **self.agent_options
        )
        return agent, client, providers


async def stored(provider: HistoryProvider, session: AgentSession) -> Lines:
    """Everything the provider holds for the session (not windowed)."""
    state = session.state.get(provider.source_id)
    if isinstance(provider, InMemoryHistoryProvider):
        return lines((state or {}).get("messages", []))
    assert isinstance(provider, MongoHistoryProvider)
    full = MongoHistoryProvider(provider.source_id, database=provider.ledger)
    return lines(await full.get_messages(session.session_id, state=state))


Script = Callable[[Agent[Any], AgentSession], Awaitable[None]]


async def side_by_side(scenario: Scenario, script: Script) -> tuple[list[Lines], list[int]]:
    """Run ``script`` on both builds; assert they stored and showed the same; return the ledger's."""
    results: list[tuple[list[Lines], list[int]]] = []
    for ledger in (False, True):
        agent, client, providers = scenario.build(ledger=ledger)
        session = agent.create_session()
        await script(agent, session)
        results.append(([await stored(p, session) for p in providers], client.seen))
    (reference, reference_seen), (ours, ours_seen) = results
    assert ours == reference
    assert ours_seen == reference_seen
    return ours, ours_seen


async def three_turns(agent: Agent[Any], session: AgentSession) -> None:
    for ask in ("Tell me a joke about a pirate.", "Tell the same joke again.", "Now as a robot, again."):
        await agent.run(ask, session=session)


# --------------------------------------------------------------------------- several providers


async def test_a_memory_provider_plus_a_store_only_audit_provider(database: Any) -> None:
    scenario = Scenario(database, [("memory", {}), ("audit", {"load_messages": False})])
    (memory, audit), seen = await side_by_side(scenario, three_turns)
    assert memory == audit
    assert len(audit) == 6  # each message once
    assert seen == [1, 3, 5]


async def test_an_audit_provider_storing_the_loaded_context_does_not_grow_quadratically(
    database: Any,
) -> None:
    scenario = Scenario(
        database,
        [("memory", {}), ("audit", {"load_messages": False, "store_context_messages": True})],
    )
    (memory, audit), _ = await side_by_side(scenario, three_turns)
    assert audit == memory
    assert len(audit) == 6


async def test_two_loading_providers_each_behave_like_the_in_memory_one(database: Any) -> None:
    # Both load their history, so the model sees it twice, exactly as with the framework's own.
    scenario = Scenario(database, [("first", {}), ("second", {})])
    (first, second), _ = await side_by_side(scenario, three_turns)
    assert first == second
    assert len(first) == 6


async def test_two_agents_sharing_one_session_each_keep_their_own_history(database: Any) -> None:
    async def both(ledger: bool) -> tuple[Lines, Lines, list[int], list[int]]:
        pirate_agent, pirate_client, (pirate,) = Scenario(database, [("pirate", {})]).build(ledger=ledger)
        robot_agent, robot_client, (robot,) = Scenario(database, [("robot", {})]).build(ledger=ledger)
        session = AgentSession()
        await pirate_agent.run("Tell me a joke about a pirate.", session=session)
        await robot_agent.run("Tell me a joke about a robot.", session=session)
        await pirate_agent.run("Tell the same joke again.", session=session)
        await robot_agent.run("Tell the same joke again.", session=session)
        return (
            await stored(pirate, session),
            await stored(robot, session),
            pirate_client.seen,
            robot_client.seen,
        )

    reference, ours = await both(False), await both(True)
    assert ours == reference
    pirate_lines, robot_lines, _, _ = ours
    assert "plank" in pirate_lines[-1][1]
    assert "recharge" in robot_lines[-1][1]
    assert not any("recharge" in text for _, text in pirate_lines)


# --------------------------------------------------------------------------- de-duplication


async def test_a_client_that_resends_the_whole_transcript_stores_it_once(database: Any) -> None:
    # A stateless front end sends the whole conversation every time.
    async def resend(agent: Agent[Any], session: AgentSession) -> None:
        transcript: list[Message] = []
        for ask in ("Tell me a joke about a cat.", "Tell the same joke again."):
            transcript.append(Message("user", [ask], message_id=f"u{len(transcript)}"))
            reply = await agent.run(list(transcript), session=session)
            transcript.extend(reply.messages)

    scenario = Scenario(database, [("memory", {"load_messages": False})])
    (memory,), _ = await side_by_side(scenario, resend)
    assert [role for role, _ in memory] == ["user", "assistant", "user", "assistant"]


async def test_saying_the_same_thing_twice_is_stored_twice(database: Any) -> None:
    async def repeat(agent: Agent[Any], session: AgentSession) -> None:
        await agent.run("Tell me a joke about a cat.", session=session)
        await agent.run("Tell me a joke about a cat.", session=session)

    (memory,), _ = await side_by_side(Scenario(database, [("memory", {})]), repeat)
    assert len(memory) == 4


# --------------------------------------------------------------------------- snapshots


async def test_a_snapshot_taken_before_the_first_run_restores_an_empty_history(database: Any) -> None:
    async def restore(agent: Agent[Any], session: AgentSession) -> None:
        before = session.to_dict()
        await agent.run("Tell me a joke about a pirate.", session=session)
        restored = AgentSession.from_dict(before)
        reply = await agent.run("Tell the same joke again.", session=restored)
        assert "don't remember" in reply.text
        session.state = restored.state

    (memory,), seen = await side_by_side(Scenario(database, [("memory", {})]), restore)
    assert seen == [1, 1]
    assert len(memory) == 2


@pytest.mark.filterwarnings("ignore:.*AgentLoopMiddleware is experimental")
async def test_agent_loop_with_fresh_context_does_not_leak_earlier_iterations(database: Any) -> None:
    async def should_continue(*, iteration: int, **kwargs: Any) -> bool:
        return iteration < 3

    async def loop(agent: Agent[Any], session: AgentSession) -> None:
        await agent.run("Tell me a joke about a robot.", session=session)

    # The agent loop arrived in a later release, in a private module (the version matrix
    # runs this file on the oldest supported release too).
    harness = pytest.importorskip("agent_framework._harness._loop", reason="this release has no agent loop")
    loop_options = {"middleware": [harness.AgentLoopMiddleware(should_continue, fresh_context=True)]}
    scenario = Scenario(database, [("memory", {})], **loop_options)
    _, seen = await side_by_side(scenario, loop)
    # Every pass starts from the original task (plus the progress log), never from the
    # transcript of the passes before it.
    assert len(seen) == 3
    assert seen[1] == seen[2]


async def test_restoring_a_later_snapshot_continues_from_it_and_keeps_the_newer_line(database: Any) -> None:
    agent, _, (provider,) = Scenario(database, [("memory", {})]).build(ledger=True)
    session = agent.create_session()
    await agent.run("Tell me a joke about a pirate.", session=session)
    snapshot = session.to_dict()
    await agent.run("Tell me a joke about a cat.", session=session)

    restored = AgentSession.from_dict(snapshot)
    reply = await agent.run("Tell the same joke again.", session=restored)
    assert "plank" in reply.text
    assert len(await stored(provider, restored)) == 4
    assert "mouse" in (await stored(provider, session))[3][1]  # the newer line is untouched


# --------------------------------------------------------------------------- clear, list, close


async def test_clear_starts_the_session_over_and_keeps_the_old_line(database: Any) -> None:
    agent, client, (provider,) = Scenario(database, [("memory", {})]).build(ledger=True)
    assert isinstance(provider, MongoHistoryProvider)
    session = agent.create_session()
    await agent.run("Tell me a joke about a pirate.", session=session)
    old = dict(session.state["memory"])

    await provider.clear(session.session_id, state=session.state["memory"])
    reply = await agent.run("Tell the same joke again.", session=session)
    assert "don't remember" in reply.text
    assert client.seen == [1, 1]
    # Nothing was deleted: the old line is still there for audit.
    assert "plank" in (await provider.get_messages(None, state=old))[1].text
    thread = await provider.ledger.thread(session.state["memory"]["thread_id"], None)
    assert thread is not None
    assert thread.metadata == {
        "session_id": session.session_id,
        "cleared_from": old["thread_id"],
    }


async def test_clear_without_state_is_refused_with_the_fix(database: Any) -> None:
    provider = MongoHistoryProvider(database=database, resume_by_session_id=True)
    with pytest.raises(InvalidInputError, match="state="):
        await provider.clear("s")


async def test_list_sessions_names_the_sessions_of_this_scope_only(database: Any) -> None:
    mine = MongoHistoryProvider("memory", database=database, tenant_id="acme")
    theirs = MongoHistoryProvider("memory", database=database, tenant_id="globex")
    other_source = MongoHistoryProvider("audit", database=database, tenant_id="acme")
    for provider, session_id in ((mine, "b"), (mine, "a"), (theirs, "c"), (other_source, "d")):
        agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
        await agent.run("Tell me a joke about a cat.", session=AgentSession(session_id=session_id))
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[mine])
    session = AgentSession(session_id="a")
    await agent.run("Tell me a joke about a cat.", session=session)  # a second line, same id
    await agent.run("Tell me a joke about a cat.", session=session)

    assert await mine.list_sessions() == ["a", "b"]
    assert await theirs.list_sessions() == ["c"]
    assert await other_source.list_sessions() == ["d"]


async def test_async_with_closes_a_client_it_created_but_never_a_borrowed_one(database: Any) -> None:
    async with MongoHistoryProvider(connection_string="mongodb://127.0.0.1:1/app") as provider:
        owned = provider._connection.owned_client if provider._connection else None
        assert owned is not None
    assert provider._connection is not None
    assert not provider._connection.owns_client

    async with MongoHistoryProvider(database=database) as borrowed:
        await borrowed.save_messages(None, [Message("user", ["hi"])], state={})
    # The database we passed is still usable: the provider did not close its client.
    assert await database["threads"].count_documents({}) == 1


async def test_a_close_failure_never_hides_the_blocks_own_error(database: Any) -> None:
    class Failing(MongoHistoryProvider):
        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    with pytest.raises(ValueError, match="the block's error") as caught:
        async with Failing(database=database):
            raise ValueError("the block's error")
    assert any("close failed" in note for note in caught.value.__notes__)


def test_constructing_it_the_wrong_way_says_what_to_do(database: Any) -> None:
    import mongomock
    import pymongo

    with pytest.raises(InvalidInputError, match=r"source_id must be a string.*database="):
        MongoHistoryProvider(database)
    with pytest.raises(InvalidInputError, match="synchronous PyMongo database"):
        MongoHistoryProvider(database=pymongo.MongoClient("mongodb://127.0.0.1:1", connect=False)["app"])
    with pytest.raises(InvalidInputError, match="synchronous PyMongo database"):
        MongoHistoryProvider(database=mongomock.MongoClient()["app"])
    with pytest.raises(InvalidInputError, match="got a client"):
        MongoHistoryProvider(database=database.client)
    with pytest.raises(InvalidInputError, match="cannot be combined"):
        MongoHistoryProvider(database=Ledger(database), client=database.client)
    with pytest.raises(InvalidInputError, match="existing Ledger"):
        MongoHistoryProvider(database=Ledger(database), operation_timeout=3)
    with pytest.raises(InvalidInputError, match="max_messages"):
        MongoHistoryProvider(database=database, max_messages=-1)


# --------------------------------------------------------------------------- streaming and tools


async def test_streaming_runs_store_and_load_like_the_in_memory_provider(database: Any) -> None:
    async def stream(agent: Agent[Any], session: AgentSession) -> None:
        for ask in ("Tell me a joke about a pirate.", "Tell the same joke again."):
            async for _ in agent.run(ask, session=session, stream=True):
                pass

    (memory,), seen = await side_by_side(Scenario(database, [("memory", {})]), stream)
    assert "plank" in memory[-1][1]
    assert seen == [1, 3]


@tool
def punchline(topic: str) -> str:
    """Return the punchline for a topic."""
    return f"the {topic} punchline"


class ToolJoker(JokerChatClient):
    """Calls ``punchline`` once per user turn, then answers: a real tool exchange in the history."""

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Awaitable[ChatResponse] | ResponseStream[Any, ChatResponse]:
        if messages and messages[-1].role == "user" and not stream:
            self.seen.append(len(messages))
            turn = sum(1 for m in messages if m.role == "user")

            async def call() -> ChatResponse:
                content = Content.from_function_call(f"call-{turn}", "punchline", arguments={"topic": "cat"})
                return ChatResponse(messages=[Message("assistant", [content])])

            return call()
        return super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)


async def test_a_window_never_hands_the_model_a_tool_result_without_its_call(database: Any) -> None:
    results: list[tuple[Lines, list[int], list[list[str]]]] = []
    for ledger in (False, True):
        client = ToolJoker()
        provider: HistoryProvider = (
            MongoHistoryProvider("memory", database=database, max_messages=2)
            if ledger
            else InMemoryHistoryProvider("memory")
        )
        agent: Agent[Any] = Agent(client, "You tell jokes.", tools=[punchline], context_providers=[provider])
        session = agent.create_session()
        for ask in ("Tell me a joke about a cat.", "Tell me a joke about a robot."):
            await agent.run(ask, session=session)
        loaded = await provider.get_messages(session.session_id, state=session.state["memory"])
        results.append(
            (await stored(provider, session), client.seen, [[c.type for c in m.contents] for m in loaded])
        )
    (reference, _, _), (ours, _, window) = results
    assert ours == reference  # the whole tool exchange is stored, in order
    assert [role for role, _ in ours] == ["user", "assistant", "tool", "assistant"] * 2
    # max_messages=2 would be [function_result, answer]: the call must come too, or nothing.
    assert window == [["text"]]


# --------------------------------------------------------------------------- operators


class _Span(trace.NonRecordingSpan):
    def __init__(self, name: str, attributes: otel_types.Attributes) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.name = name
        self.attributes: dict[str, Any] = dict(attributes or {})

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)


class _Tracer(trace.NoOpTracer):
    def __init__(self, spans: list[_Span]) -> None:
        self.spans = spans

    @contextmanager  # type: ignore[override]
    def start_as_current_span(self, name: str, *args: Any, attributes: Any = None, **kwargs: Any) -> Any:
        recorded = _Span(name, attributes)
        self.spans.append(recorded)
        yield recorded


class _Provider(trace.NoOpTracerProvider):
    def __init__(self, spans: list[_Span]) -> None:
        self.spans = spans

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Tracer(self.spans)


async def test_operators_see_spans_and_a_logged_branch_but_never_content(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spans: list[_Span] = []
    telemetry.set_tracer_provider(_Provider(spans))
    try:
        agent, _, _ = Scenario(database, [("memory", {})]).build(ledger=True)
        session = agent.create_session()
        await agent.run("Tell me a joke about a pirate. SECRET-CONTENT", session=session)
        snapshot = session.to_dict()
        await agent.run("Tell me a joke about a cat.", session=session)
        with caplog.at_level(logging.INFO, logger="chatledger"):
            await agent.run("Tell the same joke again.", session=AgentSession.from_dict(snapshot))
    finally:
        telemetry.set_tracer_provider(None)

    names = {s.name for s in spans}
    assert {"chatledger.read", "chatledger.append", "chatledger.resolve"} <= names
    appends = [s.attributes for s in spans if s.name == "chatledger.append"]
    assert [a["chatledger.branched"] for a in appends] == [False, False, True]
    assert all(a["chatledger.replayed"] is False and a["chatledger.thread_id"] for a in appends)
    reads = [s.attributes for s in spans if s.name == "chatledger.read"]
    assert [a["chatledger.messages_read"] for a in reads] == [0, 2, 2]
    assert "SECRET-CONTENT" not in repr([s.attributes for s in spans])
    assert any(r.levelno == logging.INFO and "branch" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- de-duplication on stored data


async def test_a_stored_message_is_recognised_after_a_round_trip_through_the_database(database: Any) -> None:
    # Identity survives the codec: tool calls with arguments, binary data, ids, odd properties.
    provider = MongoHistoryProvider(database=database)
    batch = [
        Message("user", ["weather?"]),
        Message("assistant", [Content.from_function_call("c1", "lookup", arguments={"q": "paris", "n": 2})]),
        Message("tool", [Content.from_function_result("c1", result="sunny")]),
        tricky_message(),
    ]
    state: dict[str, Any] = {}
    await provider.save_messages("s", batch, state=state)
    await provider.save_messages("s", batch, state=state)  # a re-sent transcript
    await provider.save_messages("s", [*batch, Message("user", ["thanks"])], state=state)
    assert len(await provider.get_messages("s", state=state)) == 5
    assert await database["events"].count_documents({}) == 2


async def test_a_lost_reply_then_a_resent_transcript_stores_each_message_once(database: Any) -> None:
    # The first save committed but its reply was lost; the next call re-sends everything.
    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [msg("q0"), msg("a0", "assistant")], state=state)
    pending: list[dict[str, Any]] = []
    position = await provider.binding.resolve(state)
    await provider.binding.save(
        position,
        encode_messages([msg("q1"), msg("a1", "assistant")]),
        previous=None,
        remember=lambda p: pending.append(p.to_state()) if p else None,
    )
    state["unconfirmed"] = pending[0]
    transcript = [msg(t, "user" if t[0] == "q" else "assistant") for t in ("q0", "a0", "q1", "a1", "q2")]
    await provider.save_messages("s", transcript, state=state)
    assert texts(await provider.get_messages("s", state=state)) == ["q0", "a0", "q1", "a1", "q2"]
    assert "unconfirmed" not in state


async def test_the_old_protocol_store_reports_the_same_way(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from chatledger import MongoChatMessageStore

    spans: list[_Span] = []
    telemetry.set_tracer_provider(_Provider(spans))
    try:
        store = MongoChatMessageStore(database)
        await store.add_messages([msg("SECRET-CONTENT")])
        state = await store.serialize_state()
        await store.add_messages([msg("newer")])
        behind = MongoChatMessageStore(database)
        await behind.deserialize_state(state)
        with caplog.at_level(logging.INFO, logger="chatledger"):
            await behind.add_messages([msg("other")])
        await behind.list_messages()
    finally:
        telemetry.set_tracer_provider(None)

    appends = [s.attributes for s in spans if s.name == "chatledger.append"]
    assert [a["chatledger.branched"] for a in appends] == [False, False, True]
    assert {"chatledger.resolve", "chatledger.read"} <= {s.name for s in spans}
    assert "SECRET-CONTENT" not in repr([s.attributes for s in spans])
    assert any(r.levelno == logging.INFO and "branch" in r.getMessage() for r in caplog.records)
