"""Compaction with provenance (issue 25, item 3): a summary is an event, originals stay.

The framework's own ``CompactionProvider`` over ``InMemoryHistoryProvider`` is the
reference: the same strategy, fired at the same turns, must leave the same view.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from agent_framework import Agent, AgentSession, ChatResponse, InMemoryHistoryProvider, Message

try:
    from agent_framework import CompactionProvider, SummarizationStrategy, apply_compaction  # noqa: F401
except ImportError:  # the matrix's older releases have no compaction strategies
    pytest.skip("this agent-framework-core release has no compaction strategies", allow_module_level=True)

import chatledger
import chatledger.adapters
from chatledger import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    LedgerCompactionProvider,
    MongoHistoryProvider,
)
from chatledger.admin import export_jsonl, import_jsonl, run_erasure, verify
from chatledger.cli.commands import browse
from chatledger.cli.render import Renderer
from chatledger.demo.joker import JokerChatClient
from chatledger.ledger.compaction import compact, compacted_view

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID


class Summarizer(JokerChatClient):
    """An offline summarizer: the summary names a digest of what it was asked to summarize."""

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        seen = "\n".join(m.text or "" for m in messages)
        reply = Message("assistant", [f"summary {hashlib.sha256(seen.encode()).hexdigest()[:12]}"])

        async def respond() -> ChatResponse:
            return ChatResponse(messages=[reply])

        return respond()


class OnDemand:
    """A strategy that only compacts when armed: the reference fires at the chosen turns."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False

    async def __call__(self, messages: list[Message]) -> bool:
        if not self.armed:
            return False
        self.armed = False
        return bool(await self.inner(messages))


def strategy(keep: int = 10) -> SummarizationStrategy:
    """Summarize all but the newest ``keep`` messages once there are two more."""
    return SummarizationStrategy(
        client=Summarizer(), target_count=keep, threshold=2, max_summary_input_tokens=None
    )


def lines(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(str(m.role), m.text or "") for m in messages]


async def test_a_long_session_compacted_three_times_keeps_every_original(database: Any) -> None:
    # 200 turns with the real Agent, compacted at turns 60, 130 and 200, next to the
    # framework's in-memory provider compacting with the same strategy at the same turns.
    provider = MongoHistoryProvider(database=database, user_id="alice")
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    session = agent.create_session()
    reference = OnDemand(strategy())
    memory = InMemoryHistoryProvider(skip_excluded=True)
    twin = Agent(
        JokerChatClient(),
        "You tell jokes.",
        # after_run goes in reverse order: listed first, the compaction runs once this
        # turn is stored, as ChatLedger's compact() after the run does.
        context_providers=[
            CompactionProvider(after_strategy=reference, history_source_id=memory.source_id),
            memory,
        ],
    )
    twin_session = twin.create_session()
    for turn in range(1, 201):
        text = f"tell me joke {turn}"
        reference.armed = turn in (60, 130, 200)
        await twin.run(text, session=twin_session)
        await agent.run(text, session=session)
        if turn in (60, 130, 200):
            assert await provider.compact(session, strategy()), turn
            expected = await memory.get_messages(None, state=twin_session.state[memory.source_id])
            assert lines(await provider.transcript(session)) == lines(expected)

    # What the agent loads is the compacted view; the full transcript has all 400 originals.
    view = await provider.get_messages(None, state=session.state[SOURCE])
    assert view[0].text.startswith("summary ")
    assert len(view) < 20
    full = await provider.transcript(session, compacted=False)
    assert len(full) == 400
    assert full[0].text == "tell me joke 1"
    assert not any((m.text or "").startswith("summary ") for m in full)
    # Point in time: as the session stood after turn 100 (two summaries back), one summary.
    earlier = await provider.transcript(session, offset=101)
    assert sum((m.text or "").startswith("summary ") for m in earlier) == 1
    assert lines(earlier[1:]) == lines(full[: 2 * 100])[-(len(earlier) - 1) :]

    # Each summary is an event that commits to its range; the chain still verifies.
    summaries = await database["events"].find({"compaction": {"$exists": True}}).sort("seq", 1).to_list(None)
    assert [s["v"] for s in summaries] == [3, 3, 3]
    assert [s["compaction"]["previous"] for s in summaries] == [0, summaries[0]["seq"], summaries[1]["seq"]]
    first = await database["events"].find_one({"seq": 1})
    assert all(s["compaction"]["first_hash"] == first["hash"] for s in summaries)
    assert all(s["compaction"]["strategy"] == "SummarizationStrategy" for s in summaries)
    assert (await verify(provider.ledger)).ok

    # Export carries every original and every summary.
    out = io.StringIO()
    await export_jsonl(provider.ledger, out)
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    events = [r["doc"] for r in exported if r["type"] == "event"]
    assert sum(len(r["messages"]) for r in events) == 400
    assert sum("compaction" in r for r in events) == 3

    # Erasing the user removes originals and summaries alike: no summary text is left.
    await run_erasure(provider.ledger, user_id="alice", apply=True)
    assert await database["events"].count_documents({"compaction": {"$exists": True}}) == 0
    assert not [e for e in await database["events"].find({}).to_list(None) if e.get("messages")]


async def _two_threads(database: Any) -> tuple[MongoHistoryProvider, AgentSession, AgentSession]:
    provider = MongoHistoryProvider(database=database)
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    mine, theirs = agent.create_session(), agent.create_session()
    for turn in range(3):
        await agent.run(f"mine {turn}", session=mine)
        await agent.run(f"theirs {turn}", session=theirs)
    return provider, mine, theirs


async def test_a_summary_cannot_claim_another_threads_range(database: Any) -> None:
    provider, mine, theirs = await _two_threads(database)
    binding = provider.binding
    at = await binding.resolve(mine.state[SOURCE])
    other = (
        await database["events"]
        .find({"thread_id": theirs.state[SOURCE]["thread_id"]})
        .sort("seq", 1)
        .to_list(None)
    )
    before = await database["events"].count_documents({})
    with pytest.raises(InvalidInputError, match="does not belong to this line"):
        await compact(
            binding,
            at,
            first_seq=1,
            first_hash=other[0]["hash"],
            last_seq=2,
            last_hash=other[1]["hash"],
            summary=[Message("assistant", ["forged"])],
            strategy="forged",
        )
    assert await database["events"].count_documents({}) == before
    assert lines(await compacted_view(binding, at))[0] == ("user", "mine 0")


async def test_a_compaction_refuses_a_range_that_is_not_a_prefix_or_a_stale_plan(database: Any) -> None:
    provider, mine, _ = await _two_threads(database)
    binding = provider.binding
    at = await binding.resolve(mine.state[SOURCE])
    own = await database["events"].find({"thread_id": at.thread_id}).sort("seq", 1).to_list(None)

    async def replace(position: Any, first: int, last: int) -> Any:
        return await compact(
            binding,
            position,
            first_seq=first,
            first_hash=own[first - 1]["hash"],
            last_seq=last,
            last_hash=own[last - 1]["hash"],
            summary=[Message("assistant", ["so far"])],
            strategy="manual",
        )

    with pytest.raises(InvalidInputError, match="prefix"):
        await replace(at, 2, 2)
    head = await replace(at, 1, 2)
    # Turns 1-2 (four messages) are replaced; turn 3 follows the summary.
    assert lines(await compacted_view(binding, head)) == [
        ("assistant", "so far"),
        *lines(await binding.read(head))[4:],
    ]
    # A plan made before that summary (another process compacted meanwhile) is refused.
    with pytest.raises(ConcurrencyError, match="plan again"):
        await replace(at, 1, 3)
    # So is a range that does not reach past the previous summary's.
    with pytest.raises(InvalidInputError, match="past the previous compaction"):
        await replace(head, 1, 2)
    assert (await verify(provider.ledger)).ok


async def test_show_prints_the_compacted_view_and_raw_every_original(database: Any) -> None:
    provider, mine, _ = await _two_threads(database)
    assert await provider.compact(mine, strategy(keep=2))
    thread = mine.state[SOURCE]["thread_id"]

    async def shown(**options: Any) -> list[str]:
        buffer = io.StringIO()
        renderer = Renderer(buffer, io.StringIO(), as_json=True, width=200)
        assert await browse.show_body(database, renderer, thread=thread, **options) == 0
        return [m["contents"][0]["text"] for m in json.loads(buffer.getvalue())["messages"]]

    compacted = await shown()
    assert compacted[0].startswith("summary ")
    assert compacted[1:] == [m.text for m in (await provider.transcript(mine, compacted=False))[-2:]]
    raw = await shown(raw=True)
    assert len(raw) == 6
    assert raw[0] == "mine 0"


async def test_a_forged_or_edited_summary_is_reported_by_verify_and_refused_by_reads(database: Any) -> None:
    provider, mine, _ = await _two_threads(database)
    assert await provider.compact(mine, strategy(keep=2))
    events = database["events"]
    summary = await events.find_one({"compaction": {"$exists": True}})
    # An insider rewrites the stored summary: the chain no longer matches.
    edited = {**summary["compaction"], "messages": [*summary["compaction"]["messages"]][:0]}
    await events.update_one({"_id": summary["_id"]}, {"$set": {"compaction": edited}})
    assert not (await verify(provider.ledger)).ok
    await events.update_one({"_id": summary["_id"]}, {"$set": {"compaction": summary["compaction"]}})
    assert (await verify(provider.ledger)).ok
    # A compaction claim planted on an ordinary (version 2) event is not hashed there.
    plain = await events.find_one({"thread_id": summary["thread_id"], "seq": summary["seq"] - 1})
    await events.update_one(
        {"_id": plain["_id"]},
        {"$set": {"compaction": {**summary["compaction"], "last_seq": plain["seq"] - 1}}},
    )
    assert not (await verify(provider.ledger)).ok
    with pytest.raises(IntegrityError, match="does not hash"):
        await provider.transcript(mine, offset=plain["seq"])


async def test_an_export_with_summaries_imports_back_to_the_same_views(database: Any, tmp_path: Any) -> None:
    provider, mine, _ = await _two_threads(database)
    assert await provider.compact(mine, strategy(keep=2))
    view, full = await provider.transcript(mine), await provider.transcript(mine, compacted=False)
    path = tmp_path / "all.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(provider.ledger, out)
    for name in ("threads", "events"):
        await database[name].delete_many({})
    provider.ledger.forget()
    await import_jsonl(provider.ledger, path)
    assert lines(await provider.transcript(mine)) == lines(view)
    assert lines(await provider.transcript(mine, compacted=False)) == lines(full)
    assert (await verify(provider.ledger)).ok


async def test_a_branch_made_after_a_summary_sees_it(database: Any) -> None:
    provider, mine, _ = await _two_threads(database)
    assert await provider.compact(mine, strategy(keep=2))
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    snapshot = mine.to_dict()
    await agent.run("on the main line", session=mine)
    branch = AgentSession.from_dict(snapshot)
    await agent.run("on a branch", session=branch)  # the line moved on: this run branches
    assert branch.state[SOURCE]["thread_id"] != mine.state[SOURCE]["thread_id"]
    view = lines(await provider.transcript(branch))
    assert view[0][1].startswith("summary ")
    assert view[-2] == ("user", "on a branch")
    assert len(await provider.transcript(branch, compacted=False)) == 8


def agent_and_twin(history: MongoHistoryProvider) -> tuple[Agent, Agent, InMemoryHistoryProvider]:
    """An agent compacting into ``history``; its twin wired alike on the in-memory provider, and that."""
    agent = Agent(
        JokerChatClient(),
        "You tell jokes.",
        context_providers=[LedgerCompactionProvider(history, after_strategy=strategy()), history],
    )
    memory = InMemoryHistoryProvider(skip_excluded=True)
    twin = Agent(
        JokerChatClient(),
        "You tell jokes.",
        context_providers=[
            CompactionProvider(after_strategy=strategy(), history_source_id=memory.source_id),
            memory,
        ],
    )
    return agent, twin, memory


async def test_the_framework_compaction_provider_drives_the_ledger(database: Any) -> None:
    # The framework's own wiring: a CompactionProvider whose after_strategy fires whenever
    # the history grows past its threshold, next to the in-memory reference wired alike.
    history = MongoHistoryProvider(database=database)
    agent, twin, memory = agent_and_twin(history)
    session, twin_session = agent.create_session(), twin.create_session()
    for turn in range(30):
        await agent.run(f"joke {turn}", session=session)
        await twin.run(f"joke {turn}", session=twin_session)
        expected = await memory.get_messages(None, state=twin_session.state[memory.source_id])
        assert lines(await history.transcript(session)) == lines(expected), turn
    assert await database["events"].count_documents({"compaction": {"$exists": True}}) > 3
    assert len(await history.transcript(session, compacted=False)) == 60
    assert (await verify(history.ledger)).ok


def test_the_compaction_provider_is_exported_and_refuses_another_history() -> None:
    # Exported from chatledger (its __all__) and from the adapters package, as one class.
    assert "LedgerCompactionProvider" in chatledger.__all__
    assert chatledger.adapters.LedgerCompactionProvider is LedgerCompactionProvider
    with pytest.raises(InvalidInputError, match="must be a MongoHistoryProvider"):
        LedgerCompactionProvider(InMemoryHistoryProvider())  # type: ignore[arg-type]
