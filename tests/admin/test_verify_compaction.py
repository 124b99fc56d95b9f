"""verify cross-checks a compaction summary's range claims against the events of its own line.

The forgeries below re-hash the chain after changing a claim, so every hash and link is
consistent: only the range check can name them.
"""

from __future__ import annotations

from typing import Any

import pytest
from agent_framework import Agent, AgentSession

from chatledger import Ledger, MongoHistoryProvider
from chatledger.admin import verify
from chatledger.demo.joker import JokerChatClient
from chatledger.hashing import event_hash
from chatledger.ledger import Binding, Position
from tests.admin.test_cli import chatledger
from tests.helpers import compact_prefix, msg

SOURCE = MongoHistoryProvider.DEFAULT_SOURCE_ID


async def _event(database: Any, thread_id: str, seq: int) -> dict[str, Any]:
    doc = await database["events"].find_one({"thread_id": thread_id, "seq": seq})
    assert doc is not None
    return dict(doc)


async def _summarize(provider: MongoHistoryProvider, session: AgentSession, last_seq: int) -> None:
    """Compact the session's line from seq 1 through ``last_seq`` (hashes read from the line)."""
    binding, state = provider.binding, session.state[SOURCE]
    head = await compact_prefix(binding, await binding.resolve(state), last_seq)
    state.update(binding.state(head))


async def _story(database: Any) -> tuple[MongoHistoryProvider, str, str, dict[str, Any]]:
    """Two threads; ``mine`` has summaries at seq 4 (seqs 1-2) and 6 (seqs 1-3, previous 4).

    Also returns a snapshot of the ``mine`` session at seq 5 (after the first summary).
    """
    provider = MongoHistoryProvider(database=database)
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    mine, theirs = agent.create_session(), agent.create_session()
    for turn in range(3):
        await agent.run(f"mine {turn}", session=mine)
        await agent.run(f"theirs {turn}", session=theirs)
    await _summarize(provider, mine, 2)
    await agent.run("mine 3", session=mine)
    snapshot = mine.to_dict()
    await _summarize(provider, mine, 3)
    await agent.run("mine 4", session=mine)
    return provider, mine.state[SOURCE]["thread_id"], theirs.state[SOURCE]["thread_id"], snapshot


async def _branch(provider: MongoHistoryProvider, snapshot: dict[str, Any]) -> AgentSession:
    """A branch from ``snapshot`` (seq 5 of ``mine``): one event of its own, then a summary
    through seq 5 of its parent (its seq 7, superseding the parent's summary at seq 4)."""
    agent = Agent(JokerChatClient(), "You tell jokes.", context_providers=[provider])
    branch = AgentSession.from_dict(snapshot)
    await agent.run("on a branch", session=branch)
    await _summarize(provider, branch, 5)
    return branch


async def _rehash_from(database: Any, thread_id: str, seq: int, change: dict[str, Any]) -> None:
    """Change the summary at ``seq``'s compaction claims, then re-hash it and every later event."""
    events = database["events"]
    doc = await _event(database, thread_id, seq)
    doc["compaction"] = {**doc["compaction"], **change}
    prev = doc["prev_hash"]
    async for later in events.find({"thread_id": thread_id, "seq": {"$gte": seq}}).sort("seq", 1):
        current = doc if later["seq"] == seq else dict(later)
        current["prev_hash"] = prev
        current["hash"] = prev = event_hash(prev, current)
        await events.replace_one({"_id": current["_id"]}, current)


async def test_genuine_summaries_verify_on_a_line_and_on_a_branch(database: Any) -> None:
    provider, mine, _, snapshot = await _story(database)
    assert (await verify(provider.ledger)).ok
    branch = await _branch(provider, snapshot)
    assert branch.state[SOURCE]["thread_id"] != mine
    summary = await database["events"].find_one(
        {"thread_id": branch.state[SOURCE]["thread_id"], "compaction": {"$exists": True}}
    )
    assert (summary["seq"], summary["compaction"]["previous"]) == (7, 4)
    report = await verify(provider.ledger)
    assert report.ok, report.problems
    assert (await verify(provider.ledger, thread_id=branch.state[SOURCE]["thread_id"])).ok


async def _forgeries(database: Any, mine: str, theirs: str) -> dict[str, tuple[int, dict[str, Any]]]:
    one, three = await _event(database, mine, 1), await _event(database, mine, 3)
    other = await _event(database, theirs, 1)
    return {
        # The range claims to end on seq 3 (whose messages the view would then hide).
        "last_hash": (4, {"last_hash": three["hash"]}),
        # The range claims to begin on another thread's first event.
        "first_hash": (4, {"first_hash": other["hash"]}),
        # The view would skip two messages the range does not cover.
        "through_message": (4, {"through_message": 6}),
        # The second summary forgets the first one (two compactions that both won).
        "previous_dropped": (6, {"previous": 0}),
        # The second summary names an ordinary event as the summary it supersedes.
        "previous_not_a_summary": (6, {"previous": 2}),
        # Consistent last_seq/last_hash/through_message of another position still must match the line.
        "range_of_seq_1": (4, {"last_seq": 1, "last_hash": one["hash"], "through_message": 6}),
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "last_hash",
        "first_hash",
        "through_message",
        "previous_dropped",
        "previous_not_a_summary",
        "range_of_seq_1",
    ],
)
async def test_a_forged_range_claim_with_a_rehashed_chain_is_named(
    backend: Any, database: Any, forgery: str
) -> None:
    provider, mine, theirs, _ = await _story(database)
    seq, change = (await _forgeries(database, mine, theirs))[forgery]
    await _rehash_from(database, mine, seq, change)
    provider.ledger.forget()
    report = await verify(provider.ledger)
    assert not report.ok
    [problem] = report.problems
    assert (problem.thread_id, problem.seq) == (mine, seq)
    assert "compaction summary" in problem.reason
    assert [p.seq for p in (await verify(provider.ledger, thread_id=mine)).problems] == [seq]
    assert (await verify(provider.ledger, thread_id=theirs)).ok
    if backend.real_server:
        done = chatledger("verify", uri=backend.uri, database=database.name, check=1)
        assert f"{mine}#{seq}" in done.stdout + done.stderr


@pytest.mark.parametrize("previous", [0, 6])
async def test_a_forged_claim_on_a_branch_summary_is_checked_against_its_parent(
    backend: Any, database: Any, previous: int
) -> None:
    # The branch's summary supersedes its parent's at seq 4: not none, not its own event at seq 6.
    provider, _, _, snapshot = await _story(database)
    tid = (await _branch(provider, snapshot)).state[SOURCE]["thread_id"]
    await _rehash_from(database, tid, 7, {"previous": previous})
    provider.ledger.forget()
    [problem] = (await verify(provider.ledger)).problems
    assert (problem.thread_id, problem.seq) == (tid, 7)
    assert "the newest summary before it on its line is seq 4" in problem.reason
    # Verifying the branch alone does not walk its parent's events, yet reaches the same
    # verdict: the summaries its parent holds before the fork are read from the index.
    assert (await verify(provider.ledger, thread_id=tid)).problems == [problem]
    if backend.real_server:
        done = chatledger("verify", "--thread", tid, uri=backend.uri, database=database.name, check=1)
        assert f"{tid}#7" in done.stdout + done.stderr
        assert "the newest summary before it on its line is seq 4" in done.stdout + done.stderr


async def _compact_at(book: Binding, at: Position, last_seq: int) -> Position:
    head: Position = await compact_prefix(book, at, last_seq)
    return head


async def _grandchild(database: Any) -> tuple[Ledger, str, str]:
    """root: seqs 1-2, a summary at 3 (through 2), seq 4; ``middle`` forks at 3 (seq 4 of its
    own, no summary); ``leaf`` forks at 4 of ``middle``, appends seq 5 and compacts through
    it at seq 6: its summary supersedes the root's at seq 3, two levels up."""
    ledger = Ledger(database)
    book = ledger.bind()
    at = book.empty("root")
    for text in ("a", "b"):
        at = (await book.append(at, [msg(text)])).position
    summarized = await _compact_at(book, at, 2)
    await book.append(summarized, [msg("root goes on")])
    middle = await book.append(await book.at("root", 3), [msg("middle")])
    assert middle.branched
    await book.append(middle.position, [msg("middle goes on")])
    leaf = await book.append(await book.at(middle.position.thread_id, 4), [msg("leaf")])
    assert leaf.branched
    head = await _compact_at(book, leaf.position, 5)
    assert head.offset == 6
    return ledger, middle.position.thread_id, leaf.position.thread_id


async def test_a_summary_forgetting_one_two_levels_up_is_named_on_the_branch_alone(database: Any) -> None:
    ledger, middle, leaf = await _grandchild(database)
    summary = await _event(database, leaf, 6)
    assert summary["compaction"]["previous"] == 3
    assert (await verify(ledger)).ok
    assert (await verify(Ledger(database), thread_id=leaf)).ok
    await _rehash_from(database, leaf, 6, {"previous": 0})
    whole = (await verify(Ledger(database))).problems
    alone = (await verify(Ledger(database), thread_id=leaf)).problems
    assert whole == alone
    [problem] = alone
    assert (problem.thread_id, problem.seq) == (leaf, 6)
    assert "names seq 0 as the summary it supersedes" in problem.reason
    assert "the newest summary before it on its line is seq 3" in problem.reason
    assert (await verify(Ledger(database), thread_id=middle)).ok
