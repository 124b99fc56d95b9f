"""The framework-conformance building blocks the adapters call (issue 10), judged against MAF 1.23 itself.

Each rule is checked against the framework's own code on the same input: de-duplication
against ``filter_new_messages``, the window against ``TruncationStrategy``, and the
whole audit-provider scenario against ``InMemoryHistoryProvider`` on a real ``Agent``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_framework import Agent, AgentSession, Content, HistoryProvider, InMemoryHistoryProvider, Message
from agent_framework import observability as af_observability
from agent_framework._compaction import TruncationStrategy, annotate_message_groups, included_messages
from agent_framework._sessions import filter_new_messages
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.util import types as otel_types

from chatledger import telemetry
from chatledger.adapters.connection import (
    APP_NAME,
    DEFAULT_DATABASE_NAME,
    MongoConnection,
    check_database,
    check_source_id,
    connect,
)
from chatledger.adapters.dedup import message_fingerprint, stored_tail_length, unseen
from chatledger.adapters.window import WINDOW_LOOKBEHIND, group_starts, window, window_fetch_size
from chatledger.demo.joker import JokerChatClient
from chatledger.errors import InvalidInputError

# --------------------------------------------------------------------------- messages


def user(text: str, message_id: str | None = None) -> Message:
    return Message("user", [text], message_id=message_id)


def answer(text: str, message_id: str | None = None) -> Message:
    return Message("assistant", [text], message_id=message_id)


def call(*call_ids: str, message_id: str | None = None) -> Message:
    return Message(
        "assistant",
        [Content.from_function_call(c, "lookup", arguments={"q": c}) for c in call_ids],
        message_id=message_id,
    )


def result(call_id: str, message_id: str | None = None) -> Message:
    return Message(
        "tool", [Content.from_function_result(call_id, result=f"r-{call_id}")], message_id=message_id
    )


def reasoning(text: str, message_id: str | None = None) -> Message:
    return Message("assistant", [Content.from_text_reasoning(text=text)], message_id=message_id)


def labels(messages: Sequence[Message]) -> list[str]:
    return [m.message_id or "?" for m in messages]


# --------------------------------------------------------------------------- de-duplication


def _stored_by_unseen(history: Sequence[Message], incoming: Sequence[Message]) -> list[Message]:
    """What a ledger-backed provider would append, given only the tail it reads."""
    need = stored_tail_length(len(history), len(incoming))
    tail = [message_fingerprint(m) for m in history[len(history) - need :]]
    return unseen(incoming, tail, stored_count=len(history))


_ALPHABET = [
    user("yes"),
    user("no"),
    answer("ok"),
    answer("ok", message_id="a1"),
    user("yes", message_id="u1"),
    call("c1"),
    result("c1"),
    Message("user", ["yes"], author_name="someone else"),  # same identity as user("yes")
]
_pick = st.sampled_from(range(len(_ALPHABET))).map(lambda i: copy.deepcopy(_ALPHABET[i]))
_history = st.lists(_pick, max_size=7)


@st.composite
def _history_and_batch(draw: st.DrawFn) -> tuple[list[Message], list[Message]]:
    history = draw(_history)
    fresh = draw(st.lists(_pick, max_size=5))
    shape = draw(st.sampled_from(["random", "replay", "tail"]))
    if shape == "replay":  # a client re-sending the whole transcript, then the new turn
        return history, [*copy.deepcopy(history), *fresh]
    if shape == "tail" and history:  # the batch starts with the end of the history
        cut = draw(st.integers(0, len(history) - 1))
        return history, [*copy.deepcopy(history[cut:]), *fresh]
    return history, fresh


@settings(max_examples=400, deadline=None)
@given(_history_and_batch())
def test_unseen_stores_exactly_what_the_framework_stores(case: tuple[list[Message], list[Message]]) -> None:
    history, incoming = case
    expected = filter_new_messages(history, incoming)
    assert [id(m) for m in _stored_by_unseen(history, incoming)] == [id(m) for m in expected]


def test_a_resent_transcript_is_stored_once() -> None:
    history = [user("hi"), answer("hello"), user("joke?"), answer("a joke")]
    resent = [*copy.deepcopy(history), user("another"), answer("another joke")]
    assert [m.text for m in _stored_by_unseen(history, resent)] == ["another", "another joke"]


def test_saying_the_same_thing_twice_is_two_turns() -> None:
    # The framework keeps a repeated id-less user input rather than guess it was a replay.
    assert [m.text for m in _stored_by_unseen([user("yes")], [user("yes"), answer("ok")])] == ["yes", "ok"]


def test_messages_with_ids_are_matched_by_id_not_content() -> None:
    history = [answer("draft", message_id="resp-1")]
    edited = Message("assistant", ["final wording"], message_id="resp-1")
    assert _stored_by_unseen(history, [edited]) == []


def test_unseen_refuses_a_tail_too_short_to_decide() -> None:
    with pytest.raises(InvalidInputError, match="newest 2 stored fingerprints"):
        unseen([user("a"), user("b")], [message_fingerprint(user("x"))], stored_count=5)


def test_fingerprints_say_what_the_rule_needs_and_nothing_more() -> None:
    assert message_fingerprint(user("yes")).startswith("u:")
    assert message_fingerprint(user("yes", message_id="u1")).startswith("i:")
    assert message_fingerprint(answer("ok")).startswith("c:")
    assert message_fingerprint(user("yes")) == message_fingerprint(Message("user", ["yes"], author_name="x"))
    assert message_fingerprint(user("yes")) != message_fingerprint(answer("yes"))
    assert "yes" not in message_fingerprint(user("yes"))


class FingerprintAudit(HistoryProvider):
    """An audit provider that, like the ledger will, reads back only a bounded tail of fingerprints."""

    def __init__(self, source_id: str) -> None:
        super().__init__(source_id, load_messages=False, store_context_messages=True)
        self.stored: list[Message] = []
        self.fingerprints: list[str] = []
        self.tail_reads: list[int] = []

    async def get_messages(
        self, session_id: str | None, *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Message]:
        return list(self.stored)

    async def save_messages(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        *,
        state: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        need = stored_tail_length(len(self.fingerprints), len(messages))
        self.tail_reads.append(need)
        tail = self.fingerprints[len(self.fingerprints) - need :]
        new = unseen(messages, tail, stored_count=len(self.fingerprints))
        self.stored.extend(new)
        self.fingerprints.extend(message_fingerprint(m) for m in new)


async def test_an_audit_provider_stores_each_message_once_like_the_in_memory_one() -> None:
    # A loading memory provider plus two store-only audit providers that also store the
    # loaded context: the framework's own, and one on fingerprints as the ledger will be.
    memory = InMemoryHistoryProvider("memory")
    reference = InMemoryHistoryProvider("reference_audit", load_messages=False, store_context_messages=True)
    ours = FingerprintAudit("ledger_audit")
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[memory, reference, ours])
    session = agent.create_session()
    for ask in ("tell me a pirate joke", "tell me the same joke again", "and as a robot"):
        await agent.run(ask, session=session)

    expected = session.state["reference_audit"]["messages"]
    assert [(m.role, m.text) for m in ours.stored] == [(m.role, m.text) for m in expected]
    assert len(ours.stored) == 6  # three turns of two messages: linear, not quadratic
    # Each save needed at most as many stored fingerprints as the batch was long.
    assert ours.tail_reads == [0, 2, 4]


# --------------------------------------------------------------------------- window


def test_a_window_never_opens_with_a_tool_result() -> None:
    # The case from the issue: max_messages=2 used to load [function_result, answer].
    history = [user("weather?", "u"), call("c1", message_id="c"), result("c1", "r"), answer("sunny", "a")]
    assert labels(window(history, 2)) == ["a"]
    assert labels(window(history, 3)) == ["c", "r", "a"]
    assert labels(window(history, 4)) == ["u", "c", "r", "a"]
    assert window(history, 0) == []


def test_a_call_keeps_all_its_results_and_the_reasoning_before_it() -> None:
    history = [
        user("compare", "u"),
        reasoning("need both", "t"),
        call("c1", "c2", message_id="c"),
        result("c1", "r1"),
        result("c2", "r2"),
        answer("done", "a"),
    ]
    assert labels(window(history, 4)) == ["a"]
    assert labels(window(history, 5)) == ["t", "c", "r1", "r2", "a"]


def test_a_result_whose_call_is_in_an_earlier_group_pulls_the_window_back() -> None:
    # The framework links a late result to its call across groups (_link_tool_call_result_spans).
    history = [user("go", "u"), call("c1", message_id="c"), user("still there?", "u2"), result("c1", "r")]
    assert labels(window(history, 2)) == []
    assert labels(window(history, 3)) == ["c", "u2", "r"]


def test_the_newest_group_larger_than_the_window_gives_an_empty_window() -> None:
    history = [user("go", "u"), call("c1", "c2", message_id="c"), result("c1", "r1"), result("c2", "r2")]
    assert window(history, 2) == []


def test_window_rejects_a_bad_size() -> None:
    with pytest.raises(InvalidInputError):
        window([user("x")], -1)
    with pytest.raises(InvalidInputError):
        window([user("x")], True)


@st.composite
def _conversation(draw: st.DrawFn) -> list[Message]:
    """A well-formed conversation: user turns, tool loops with optional reasoning, answers."""
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(Message("system", ["be brief"]))
    calls = 0
    for _ in range(draw(st.integers(1, 5))):
        messages.append(user("q"))
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                messages.append(reasoning("think"))
            ids = [f"c{calls + i}" for i in range(draw(st.integers(1, 3)))]
            calls += len(ids)
            messages.append(call(*ids))
            if draw(st.booleans()):
                messages.append(reasoning("after"))
            messages.extend(result(i) for i in ids)
        if draw(st.booleans()):
            messages.append(answer("a"))
    for n, message in enumerate(messages):
        message.message_id = f"m{n}"
    return messages


def _framework_truncation(messages: list[Message], max_messages: int) -> list[str]:
    copies = copy.deepcopy(messages)
    annotate_message_groups(copies)
    strategy = TruncationStrategy(max_n=max_messages, compact_to=max_messages, preserve_system=False)
    asyncio.run(strategy(copies))
    return labels(included_messages(copies))


@settings(max_examples=300, deadline=None)
@given(_conversation(), st.integers(1, 12))
def test_window_keeps_what_the_framework_truncation_keeps(messages: list[Message], max_messages: int) -> None:
    kept = _framework_truncation(messages, max_messages)
    ours = labels(window(messages, max_messages))
    if len(kept) <= max_messages:
        assert ours == kept
    else:  # the framework keeps an oversized newest group; we keep the limit
        assert ours == []


@settings(max_examples=300, deadline=None)
@given(_conversation(), st.integers(1, 12), st.integers(0, WINDOW_LOOKBEHIND))
def test_a_bounded_read_never_gives_a_wrong_window(
    messages: list[Message], max_messages: int, extra: int
) -> None:
    full = window(messages, max_messages)
    read = messages[max(0, len(messages) - max_messages - extra) :]
    partial = window(read, max_messages, complete=len(read) == len(messages))
    # Never a different start: the same window, or (read too short to prove it) a later one.
    assert labels(partial) == labels(full)[len(full) - len(partial) :]
    if any(m.role in ("user", "system") for m in read[: len(read) - len(full)]) or len(read) == len(messages):
        assert labels(partial) == labels(full)
    if partial:
        assert partial[0].role != "tool"


def test_the_recommended_read_is_exact_after_a_user_turn() -> None:
    history = [user("q", "u1"), answer("a", "a1")] * 30 + [user("go", "u"), call("c1", message_id="c")]
    history += [result("c1", "r"), answer("done", "a")]
    read = history[-window_fetch_size(4) :]
    assert labels(window(read, 4, complete=False)) == labels(window(history, 4)) == ["u", "c", "r", "a"]


def test_group_starts_skip_what_a_partial_read_cannot_place() -> None:
    read = [result("c0"), reasoning("t"), call("c1"), result("c1"), user("u"), answer("a")]
    assert group_starts(read, complete=False) == [4, 5]
    assert group_starts(read, complete=True) == [0, 1, 4, 5]


# --------------------------------------------------------------------------- construction


def _borrowed_client() -> Any:
    """An application's AsyncMongoClient that records whether anyone closed it."""
    from pymongo import AsyncMongoClient

    class Borrowed(AsyncMongoClient[dict[str, Any]]):
        closed = False

        async def close(self) -> None:
            type(self).closed = True
            await super().close()

    return Borrowed("mongodb://127.0.0.1:1", connect=False)


def test_a_synchronous_pymongo_database_is_refused_with_the_fix() -> None:
    from pymongo import MongoClient

    sync_client: Any = MongoClient("mongodb://127.0.0.1:1", connect=False)
    with pytest.raises(InvalidInputError, match=r"synchronous PyMongo database .*AsyncMongoClient"):
        check_database(sync_client["app"])
    with pytest.raises(InvalidInputError, match="synchronous PyMongo client"):
        check_database(sync_client)


def test_a_client_or_a_collection_instead_of_a_database_is_named() -> None:
    from mongomock_motor import AsyncMongoMockClient
    from pymongo import AsyncMongoClient

    clients: list[Any] = [AsyncMongoClient("mongodb://127.0.0.1:1"), AsyncMongoMockClient()]
    for client in clients:
        with pytest.raises(InvalidInputError, match=r"got a client .*client\[name\]"):
            check_database(client)
        with pytest.raises(InvalidInputError, match="got a collection"):
            check_database(client["app"]["events"])
        assert check_database(client["app"]) is not None


def test_source_id_first_positionally_is_explained_both_ways() -> None:
    from mongomock_motor import AsyncMongoMockClient

    # Today's signature: MongoHistoryProvider("chatledger") puts the source id where the database goes.
    with pytest.raises(InvalidInputError, match=r"source_id='chatledger'"):
        check_database("chatledger")
    # The framework's signature: a database passed first lands in source_id.
    with pytest.raises(InvalidInputError, match=r"database by keyword"):
        check_source_id(AsyncMongoMockClient()["app"])
    with pytest.raises(InvalidInputError):
        check_source_id("")
    assert check_source_id("audit") == "audit"


async def test_a_connection_string_gives_a_client_we_own_and_close() -> None:
    connection = connect(connection_string="mongodb://127.0.0.1:1/app")
    client = connection.owned_client
    assert connection.owns_client
    assert connection.database.name == "app"
    metadata = client.options.pool_options.metadata
    assert metadata["application"]["name"] == APP_NAME
    assert metadata["driver"]["name"].endswith("|chatledger")
    await connection.aclose()
    await connection.aclose()  # idempotent
    assert not connection.owns_client


async def test_a_borrowed_client_is_never_closed() -> None:
    client = _borrowed_client()
    connection = connect(client=client, database_name="app")
    assert connection.database.name == "app"
    assert not connection.owns_client
    await connection.aclose()
    assert not type(client).closed
    await client.close()


def test_the_official_mongodb_environment_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1/")
    monkeypatch.setenv("MONGODB_DATABASE_NAME", "from_env")
    monkeypatch.setenv("MONGODB_APP_NAME", "billing-bot")
    connection = connect()
    assert connection.database.name == "from_env"
    assert connection.owned_client.options.pool_options.metadata["application"]["name"] == "billing-bot"
    assert connect(database_name="explicit").database.name == "explicit"  # arguments win


def test_an_env_file_is_read_before_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MONGODB_DATABASE_NAME", raising=False)
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1/ignored")
    env = tmp_path / ".env"
    env.write_text("MONGODB_URI=mongodb://127.0.0.1:2/from_file\n", encoding="utf-8")
    assert connect(env_file_path=str(env)).database.name == "from_file"


def test_the_database_name_defaults_like_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONGODB_DATABASE_NAME", raising=False)
    assert connect(connection_string="mongodb://127.0.0.1:1").database.name == DEFAULT_DATABASE_NAME


def test_no_source_or_conflicting_sources_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mongomock_motor import AsyncMongoMockClient

    monkeypatch.delenv("MONGODB_URI", raising=False)
    with pytest.raises(InvalidInputError, match="MONGODB_URI"):
        connect()
    client: Any = AsyncMongoMockClient()
    with pytest.raises(InvalidInputError, match="cannot be combined with client"):
        connect(database=client["app"], client=client)
    with pytest.raises(InvalidInputError, match="cannot be combined with connection_string"):
        connect(client=client, connection_string="mongodb://127.0.0.1:1")
    with pytest.raises(InvalidInputError, match="expects a client, got a database"):
        connect(client=client["app"])
    with pytest.raises(InvalidInputError, match="invalid database name"):
        connect(client=client, database_name="a.b")


def test_a_bad_connection_string_error_keeps_the_password_out() -> None:
    with pytest.raises(InvalidInputError) as caught:
        connect(connection_string="mongodb://alice:s3cret@host:notaport/app")
    assert "s3cret" not in str(caught.value)


def test_a_database_handle_is_used_as_is() -> None:
    from mongomock_motor import AsyncMongoMockClient

    database: Any = AsyncMongoMockClient()["app"]
    assert connect(database=database) == MongoConnection(database)


# --------------------------------------------------------------------------- telemetry


class _RecordedSpan(trace.NonRecordingSpan):
    def __init__(self, name: str, attributes: otel_types.Attributes) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.name = name
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.ended = False

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)

    def end(self, end_time: int | None = None) -> None:
        self.ended = True


class _RecordingTracer(trace.NoOpTracer):
    def __init__(self, spans: list[_RecordedSpan]) -> None:
        self.spans = spans

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, *args: Any, attributes: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        recorded = _RecordedSpan(name, attributes)
        self.spans.append(recorded)
        try:
            yield recorded
        finally:
            recorded.end()


class _RecordingProvider(trace.NoOpTracerProvider):
    def __init__(self) -> None:
        self.spans: list[_RecordedSpan] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _RecordingTracer(self.spans)


@pytest.fixture
def spans() -> Iterator[list[_RecordedSpan]]:
    provider = _RecordingProvider()
    telemetry.set_tracer_provider(provider)
    try:
        yield provider.spans
    finally:
        telemetry.set_tracer_provider(None)


@contextmanager
def _instrumentation_disabled() -> Iterator[None]:
    settings_ = af_observability.OBSERVABILITY_SETTINGS
    saved = (settings_._enable_instrumentation, settings_._user_disabled)
    af_observability.disable_instrumentation()
    try:
        yield
    finally:
        settings_._enable_instrumentation, settings_._user_disabled = saved


def test_spans_carry_operator_attributes(spans: list[_RecordedSpan]) -> None:
    with telemetry.span("append", thread_id="t-1", source_id="audit", tenant_id=None) as recorder:
        recorder.set(branched=True, events_read=3)
    (recorded,) = spans
    assert recorded.name == "chatledger.append"
    assert recorded.ended
    assert recorded.attributes == {
        "chatledger.thread_id": "t-1",
        "chatledger.source_id": "audit",
        "chatledger.branched": True,
        "chatledger.events_read": 3,
        "db.system.name": "mongodb",
    }


def test_message_content_cannot_become_an_attribute(spans: list[_RecordedSpan]) -> None:
    with pytest.raises(TypeError, match="never puts message content"):
        telemetry.span("read", message=user("my password is hunter2")).__enter__()
    with telemetry.span("read") as recorder, pytest.raises(TypeError):
        recorder.set(messages=["hunter2"])
    assert all("hunter2" not in str(s.attributes) for s in spans)


def test_an_error_inside_a_span_propagates_and_ends_it(spans: list[_RecordedSpan]) -> None:
    with pytest.raises(InvalidInputError), telemetry.span("resolve", thread_id="t"):
        raise InvalidInputError("bad cursor")
    assert spans[0].ended


def test_the_frameworks_switch_turns_spans_off(spans: list[_RecordedSpan]) -> None:
    with _instrumentation_disabled():
        with telemetry.span("read", thread_id="t") as recorder:
            recorder.set(events_read=1)
        assert not recorder.recording
        with pytest.raises(TypeError):  # mistakes still show up with telemetry off
            recorder.set(content=[1])
    assert spans == []
    with telemetry.span("read"):
        pass
    assert len(spans) == 1


def test_chatledger_logs_under_its_own_name_without_printing_by_default() -> None:
    assert telemetry.logger.name == "chatledger"
    assert any(type(h).__name__ == "NullHandler" for h in telemetry.logger.handlers)


def test_sessions_round_trip_the_state_shape_the_adapters_rely_on() -> None:
    # Guard for the integration: session.state[source_id] is a plain dict that survives
    # to_dict/from_dict, so a cursor stored there comes back.
    session = AgentSession(session_id="s")
    session.state.setdefault("chatledger", {}).update({"thread_id": "t", "offset": 3, "v": 1})
    restored = AgentSession.from_dict(session.to_dict())
    assert restored.state["chatledger"] == {"thread_id": "t", "offset": 3, "v": 1}
