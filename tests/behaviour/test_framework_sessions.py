"""Sessions the way every supported framework release drives them (issue 21).

Each test runs the real ``Agent`` and ``AgentSession`` with an offline chat client, on every
tier, and on every framework release of the CI matrix (``make test-maf-matrix``): what the
framework's own ``InMemoryHistoryProvider`` does in the same configuration is the reference,
and where ChatLedger deliberately differs the test says why.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
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
)

import chatledger
from chatledger import ConcurrencyError, InvalidInputError, Ledger, MongoHistoryProvider
from chatledger.adapters.dedup import message_fingerprint
from chatledger.demo.joker import JokerChatClient, joker_reply
from tests.helpers import read

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID
TOPICS = ("pirate", "robot", "cat", "database", "pirate ship", "robot dog")


def lines(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(str(m.role), m.text or "") for m in messages]


async def thread_count(database: Any) -> int:
    return int(await database["threads"].count_documents({}))


# --------------------------------------------------------------------------- service-managed


class ServiceChatClient(JokerChatClient):
    """A chat client whose service keeps the conversation, as the Responses API does.

    Like the real service, it answers with a ``conversation_id`` and remembers every
    message it was sent under that id, so a request that repeats earlier turns is visible.
    """

    STORES_BY_DEFAULT = True

    def __init__(self) -> None:
        super().__init__()
        self.conversation: list[Message] = []

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        self.seen.append(len(messages))
        self.conversation.extend(messages)
        text = joker_reply(self.conversation)
        reply = Message("assistant", [text])
        self.conversation.append(reply)

        async def respond() -> ChatResponse:
            return ChatResponse(messages=[reply], conversation_id="conv_1")

        return respond()


async def test_a_service_managed_session_is_never_sent_its_history_twice(database: Any) -> None:
    # Three runs on a session whose conversation the service keeps (service_session_id set
    # after the first reply). The framework writes its own keys into this provider's state
    # on 1.26; the next run must neither fail on them nor re-send what the service holds.
    client = ServiceChatClient()
    provider = MongoHistoryProvider(database=database)
    agent = Agent(client, "You tell jokes.", context_providers=[provider])
    session = agent.create_session()
    session.state.setdefault(SOURCE, {})["an_application_key"] = {"kept": True}
    await agent.run("Tell me a joke about a pirate.", session=session)
    assert session.service_session_id == "conv_1"
    restored = AgentSession.from_dict(json.loads(json.dumps(session.to_dict())))
    reply = await agent.run("Tell the same joke again.", session=restored)
    await agent.run("Tell me a joke about a robot.", session=restored)

    assert "plank" in reply.text  # the service remembered the first turn ...
    assert client.seen == [1, 1, 1]  # ... and was sent each input exactly once
    assert restored.state[SOURCE]["an_application_key"] == {"kept": True}
    # The ledger still holds the whole conversation, in order, for audit.
    stored = await MongoHistoryProvider(database=database).get_messages(None, state=restored.state[SOURCE])
    assert [m.role for m in stored] == ["user", "assistant"] * 3
    assert "plank" in (stored[3].text or "")


async def test_a_run_continuing_a_service_conversation_by_option_loads_nothing(database: Any) -> None:
    # The same rule for a conversation named per run (options={"conversation_id": ...}),
    # the other way the framework recognises service-managed history.
    client = ServiceChatClient()
    agent = Agent(client, "You tell jokes.", context_providers=[MongoHistoryProvider(database=database)])
    session = agent.create_session()
    await agent.run("Tell me a joke about a pirate.", session=session, options={"store": False})
    session.service_session_id = None
    await agent.run("Tell the same joke again.", session=session, options={"conversation_id": "conv_1"})
    assert client.seen == [1, 1]
    stored = await MongoHistoryProvider(database=database).get_messages(None, state=session.state[SOURCE])
    assert len(stored) == 4


async def test_keys_the_framework_or_the_application_put_in_the_state_are_left_alone(database: Any) -> None:
    agent = Agent(
        JokerChatClient(), "You tell jokes.", context_providers=[MongoHistoryProvider(database=database)]
    )
    session = agent.create_session()
    await agent.run("Tell me a joke about a cat.", session=session)
    foreign = {"identity": '[["conversation_id","c"]]', "fingerprint": "0" * 64}
    # The framework's key is the framework's business (1.26 replaces it after each run);
    # an application's key stays as it was.
    session.state[SOURCE]["_agent_framework_service_history_coverage"] = foreign
    session.state[SOURCE]["tags"] = ["vip"]
    reply = await agent.run("Tell the same joke again.", session=session)
    assert "mouse" in reply.text
    assert session.state[SOURCE]["tags"] == ["vip"]


# --------------------------------------------------------------------------- overlapping runs


class GatheringChatClient(JokerChatClient):
    """Once :meth:`gather` is called, replies only when that many requests are in flight.

    So every overlapping run loads its history before any of them saves.
    """

    barrier: asyncio.Barrier | None = None

    def gather(self, runs: int) -> None:
        self.barrier = asyncio.Barrier(runs)

    def _inner_get_response(self, **kwargs: Any) -> Any:
        reply = super()._inner_get_response(**kwargs)
        barrier = self.barrier

        async def respond() -> ChatResponse:
            if barrier is not None:
                await asyncio.wait_for(barrier.wait(), 30)
            return await reply  # type: ignore[no-any-return,misc]

        return respond()


async def six_overlapping_runs(provider: HistoryProvider) -> AgentSession:
    client = GatheringChatClient()
    agent = Agent(client, "You tell jokes.", context_providers=[provider])
    session = agent.create_session()
    await agent.run("Tell me a joke about a database.", session=session)
    client.gather(len(TOPICS))
    runs: list[Awaitable[Any]] = [
        agent.run(f"Tell me a joke about a {topic}.", session=session) for topic in TOPICS
    ]
    await asyncio.gather(*runs)
    return session


async def test_overlapping_runs_on_one_session_all_land_on_its_line(
    interleaving_backend: Any, database: Any
) -> None:
    # Six agent.run calls on one AgentSession at once: one conversation. The framework's
    # in-memory provider keeps every turn in the session; so must the ledger, on the
    # session's own line, each turn whole (its input next to its reply), no branch.
    reference = await six_overlapping_runs(InMemoryHistoryProvider())
    expected = lines(reference.state["in_memory"]["messages"])

    provider = MongoHistoryProvider(database=database)
    session = await six_overlapping_runs(provider)
    ours = lines(await provider.get_messages(session.session_id, state=session.state[SOURCE]))

    assert len(ours) == len(expected) == 2 + 2 * len(TOPICS)
    assert sorted(ours) == sorted(expected)
    # Each turn whole: every input directly followed by the reply to it.
    opening = [Message(role, [text]) for role, text in ours[:2]]
    for (role, ask), (reply_role, reply) in zip(ours[2::2], ours[3::2], strict=True):
        assert (role, reply_role) == ("user", "assistant")
        assert reply == joker_reply([*opening, Message("user", [ask])])
    assert await thread_count(database) == 1
    assert session.state[SOURCE]["offset"] == 1 + len(TOPICS)


async def test_resuming_an_older_snapshot_on_purpose_still_branches(database: Any) -> None:
    agent = Agent(
        JokerChatClient(), "You tell jokes.", context_providers=[MongoHistoryProvider(database=database)]
    )
    session = agent.create_session()
    await agent.run("Tell me a joke about a pirate.", session=session)
    snapshot = session.to_dict()
    await agent.run("Tell me a joke about a robot.", session=session)

    older = AgentSession.from_dict(snapshot)
    await agent.run("Tell me a joke about a cat.", session=older)
    assert older.state[SOURCE]["thread_id"] != session.state[SOURCE]["thread_id"]
    assert await thread_count(database) == 2


async def test_strict_mode_refuses_a_second_process_writing_behind_the_head(database: Any) -> None:
    # Two processes holding copies of one session dict share nothing in memory: the
    # second to save is behind the thread's head. By default it branches; strict raises.
    first = Agent(JokerChatClient(), "j", context_providers=[MongoHistoryProvider(database=database)])
    session = first.create_session()
    await first.run("Tell me a joke about a pirate.", session=session)
    copy = AgentSession.from_dict(session.to_dict())
    await first.run("Tell me a joke about a robot.", session=session)

    strict = Agent(
        JokerChatClient(), "j", context_providers=[MongoHistoryProvider(database=database, strict=True)]
    )
    with pytest.raises(ConcurrencyError):
        await strict.run("Tell me a joke about a cat.", session=copy)
    assert await thread_count(database) == 1


# --------------------------------------------------------------------------- smaller gaps


async def test_saving_without_state_is_read_back_by_session_id(database: Any) -> None:
    provider = MongoHistoryProvider(database=database)
    await provider.save_messages("s-1", [Message("user", ["hi"]), Message("assistant", ["hello"])])
    assert await provider.list_sessions() == ["s-1"]
    assert lines(await provider.get_messages("s-1")) == [("user", "hi"), ("assistant", "hello")]

    with pytest.raises(InvalidInputError, match="read these messages back"):
        await provider.save_messages(None, [Message("user", ["lost?"])])
    assert len(await provider.get_messages("s-1")) == 2


async def test_a_state_seeded_with_the_old_messages_shape_becomes_the_history(database: Any) -> None:
    seeded = [
        Message("user", ["Tell me a joke about a cat."]),
        Message("assistant", ["Why did the cat sit on the computer? To keep an eye on the mouse."]),
    ]
    for form in ([m.to_dict() for m in seeded], seeded):
        client = JokerChatClient()
        agent = Agent(client, "j", context_providers=[MongoHistoryProvider(database=database)])
        session = AgentSession(session_id="imported")
        session.state[SOURCE] = {"messages": list(form)}
        reply = await agent.run("Tell the same joke again.", session=session)
        assert "mouse" in reply.text
        assert client.seen == [3]
        assert set(session.state[SOURCE]) == {"thread_id", "offset", "v"}
        assert len(await read(Ledger(database), session.state[SOURCE])) == 4


@pytest.mark.parametrize("seeded", ["not a list", [{"role": "user", "contents": 5}]])
async def test_a_messages_state_that_holds_no_messages_is_refused(database: Any, seeded: Any) -> None:
    agent = Agent(JokerChatClient(), "j", context_providers=[MongoHistoryProvider(database=database)])
    session = AgentSession(session_id="bad")
    session.state[SOURCE] = {"messages": seeded}
    with pytest.raises(InvalidInputError, match="messages"):
        await agent.run("hi", session=session)
    assert await database["events"].count_documents({}) == 0


def approval_response(*, approved: bool | None) -> Message:
    call = Content.from_function_call("c1", "deploy", arguments={"env": "prod"})
    content = Content.from_dict(
        {"type": "function_approval_response", "id": "a1", "function_call": call.to_dict()}
        | ({} if approved is None else {"approved": approved})
    )
    return Message("user", [content])


async def test_an_approval_response_keeps_its_identity_when_a_release_adds_defaults(database: Any) -> None:
    # 1.26 adds ``approved: False`` to a bare function_approval_response on a round trip;
    # a message must be recognised as the same one on every release.
    bare, defaulted = approval_response(approved=None), approval_response(approved=False)
    assert message_fingerprint(bare) == message_fingerprint(defaulted)
    assert message_fingerprint(defaulted) != message_fingerprint(approval_response(approved=True))

    provider = MongoHistoryProvider(database=database)
    state: dict[str, Any] = {}
    await provider.save_messages("s", [Message("user", ["deploy?"]), bare], state=state)
    await provider.save_messages(
        "s", [Message("user", ["deploy?"]), defaulted, Message("assistant", ["ok"])], state=state
    )
    assert [m.role for m in await provider.get_messages("s", state=state)] == ["user", "user", "assistant"]


def test_no_adapter_imports_a_private_framework_name() -> None:
    # Private names come and go between releases (get_message_identity is absent from
    # 1.13.0 and broke the import there).
    root = Path(chatledger.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agent_framework"):
                assert not any(part.startswith("_") for part in (node.module or "").split(".")), path
                assert not any(alias.name.startswith("_") for alias in node.names), path
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("agent_framework._") for alias in node.names), path
