"""Admin commands at scale: filters and limits in the query, trees judged one chunk at a time.

What an operator of a large deployment notices: ``threads --limit 8`` reads 8 threads
(not every thread, then 8), planning retention or an erasure gives the same plan
whatever the chunking (a tree is never split, a hold anywhere in a tree still counts),
and every long command has a progress bar whose total is known before it starts.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo import monitoring
from rich.progress import Progress

from chatledger import Ledger
from chatledger.admin import (
    RetentionPolicy,
    ThreadFilter,
    catalog,
    collect_stats,
    count_erasure_candidates,
    count_events,
    count_retention_candidates,
    count_threads,
    list_threads,
    plan_erasure,
    plan_retention,
    run_erasure,
    run_retention,
    set_hold,
)
from chatledger.admin.catalog import family_chunks
from chatledger.cli.commands import browse
from chatledger.cli.render import Renderer, Ticker, _Count
from chatledger.storage.events import EventStore
from chatledger.storage.tallies import EventTallies
from chatledger.storage.threads import ThreadStore
from tests.admin.conftest import Clock, branch, talk
from tests.conftest import Backend
from tests.helpers import Listener, monitored


def ui(as_json: bool = False) -> tuple[Renderer, Callable[[], str]]:
    buffer = io.StringIO()
    return Renderer(buffer, io.StringIO(), as_json=as_json, width=200), buffer.getvalue


class _Reads:
    """Counts thread documents handed to admin code and head queries, by wrapping the storage gate."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.thread_docs = 0
        #: Threads whose newest event was asked for (per thread, or by key in one query).
        self.heads: list[str] = []
        self.head_queries = 0
        select = ThreadStore._select
        head, heads_at = EventStore.head, EventTallies.heads_at

        def counted(method: Any) -> Any:
            def wrapper(store: ThreadStore, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
                async def gen() -> AsyncIterator[dict[str, Any]]:
                    async for doc in method(store, *args, **kwargs):
                        self.thread_docs += 1
                        yield doc

                return gen()

            return wrapper

        async def counted_head(store: EventStore, thread_id: str) -> Any:
            self.heads.append(thread_id)
            self.head_queries += 1
            return await head(store, thread_id)

        async def counted_heads_at(store: EventTallies, expected: Any) -> Any:
            self.heads.extend(expected)
            self.head_queries += 1
            return await heads_at(store, expected)

        # Every read of thread documents goes through this one generator.
        monkeypatch.setattr(ThreadStore, "_select", counted(select))
        monkeypatch.setattr(EventStore, "head", counted_head)
        monkeypatch.setattr(EventTallies, "heads_at", counted_heads_at)


async def _many(ledger: Ledger, n: int, **scope: str) -> list[str]:
    ids = [f"t{i:03d}" for i in range(n)]
    for tid in ids:
        await talk(ledger, tid, 1, **scope)
    return ids


async def test_threads_limit_reads_only_the_page(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(database)
    ids = await _many(ledger, 20)
    reads = _Reads(monkeypatch)
    r, text = ui(as_json=True)
    assert await browse.threads_body(database, r, limit=8) == 0
    rows = json.loads(text())["threads"]
    assert [row["thread_id"] for row in rows] == ids[:8]
    assert all(row["events"] == 1 and row["head_seq"] == 1 for row in rows)
    # 8 thread documents, and the heads of those 8 only, read by key in one query:
    # the other 12 threads were never read.
    assert reads.thread_docs == 8
    assert sorted(reads.heads) == ids[:8]
    assert reads.head_queries == 1


async def test_heads_that_cannot_be_read_by_key_are_read_exactly(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    await _many(ledger, 3)
    await talk(ledger, "t001", 1)
    b = await branch(ledger, "t001", 1, turns=2)
    # A missing event makes a gap: the head of t002 is no longer at "events after the fork".
    await database["events"].delete_one({"_id": "t002#1"})
    reads = _Reads(monkeypatch)
    summaries = {s.thread_id: s.activity async for s in list_threads(ledger)}
    assert {t: (a.events, a.head_seq) for t, a in summaries.items()} == {
        "t000": (1, 1),
        "t001": (2, 2),
        b: (2, 3),  # forked at 1: its own events are seq 2 and 3
        "t002": (0, 0),
    }
    assert reads.heads.count("t002") == 0  # no events left: nothing to ask
    await database["events"].insert_one(
        {**(await database["events"].find_one({"_id": f"{b}#3"})), "_id": f"{b}#5", "seq": 5}
    )
    summaries = {s.thread_id: s.activity async for s in list_threads(ledger)}
    assert summaries[b].head_seq == 5  # the gap (no seq 4) sent it to the exact query
    assert reads.heads.count(b) == 2  # asked by key once, then exactly


async def test_a_limit_that_cuts_a_conversation_lists_parents_first(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "a", 3)
    b1 = await branch(ledger, "a", 1)
    b2 = await branch(ledger, "a", 2)
    await talk(ledger, b1, 1)
    await branch(ledger, b1, 2)
    await talk(ledger, "z", 1)
    listed = [s.thread_id async for s in list_threads(ledger, limit=2)]
    assert listed[0] == "a"
    assert listed[1] in {b1, b2}
    everything = [s async for s in list_threads(ledger)]
    assert [s.thread_id for s in everything][-1] == "z"
    depths = [s.doc.get("depth") for s in everything[:-1]]
    assert depths == sorted(depths)  # within the conversation, parents before branches
    assert len(everything) == await count_threads(ledger) == 5


async def test_limit_with_an_age_filter_stops_at_the_limit(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await _many(ledger, 6)
    clock.advance(days=100)
    await talk(ledger, "recent", 1)
    old = [s.thread_id async for s in list_threads(ledger, older_than=_days(30), limit=4, now=clock.now)]
    assert old == ["t000", "t001", "t002", "t003"]
    new = [s.thread_id async for s in list_threads(ledger, newer_than=_days(1), limit=4, now=clock.now)]
    assert new == ["recent"]


def _days(n: int) -> Any:
    from datetime import timedelta

    return timedelta(days=n)


async def test_family_chunks_never_split_a_tree(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(database)
    trees: dict[str, set[str]] = {}
    for root in ("r1", "r2", "r3", "r4"):
        await talk(ledger, root, 3, user_id="u")
        trees[root] = {root, await branch(ledger, root, 1), await branch(ledger, root, 2)}
    seen: list[str] = []
    async for chunk in family_chunks(ledger, ThreadFilter(user_id="u"), whole=True, chunk=4):
        # At most the chunk size plus the tree that crossed it: memory is bounded by the chunk.
        assert sum(len(f.forest.docs) for f in chunk) <= 4 + 3
        for family in chunk:
            assert family.root_id is not None
            assert set(family.forest.docs) == trees[family.root_id]
            assert family.matching[0] == family.root_id  # parents first
            seen.append(family.root_id)
    assert seen == ["r1", "r2", "r3", "r4"]


async def _forest_story(ledger: Ledger, clock: Clock) -> dict[str, str]:
    """Old trees, a tree kept alive by a recent branch, a held tree, another tenant's old tree."""
    names: dict[str, str] = {}
    for root in ("old1", "old2", "kept", "held"):
        await talk(ledger, root, 2, tenant_id="acme", user_id="alice")
        names[f"{root}-b"] = await branch(ledger, root, 1)
    await talk(ledger, "bank-old", 1, tenant_id="bank", user_id="bob")
    clock.advance(days=100)
    await talk(ledger, names["kept-b"], 1, tenant_id="acme", user_id="alice")
    await set_hold(ledger, names["held-b"], reason="case 7")
    return names


@pytest.mark.parametrize("chunk", [1, 2, 500])
async def test_retention_plan_is_the_same_whatever_the_chunking(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(catalog, "CHUNK_THREADS", chunk)
    ledger = Ledger(database)
    names = await _forest_story(ledger, clock)
    policy = RetentionPolicy(default=_days(30))
    seen: list[str] = []
    report = await plan_retention(ledger, policy, now=clock.now, on_thread=seen.append)
    planned = {r.thread_id: set(r.thread_ids) for r in report.planned}
    assert planned == {
        "old1": {"old1", names["old1-b"]},
        "old2": {"old2", names["old2-b"]},
        "bank-old": {"bank-old"},
    }
    assert [s.thread_id for s in report.skipped] == ["held"]
    # Every thread was examined once, and the total was known before planning started.
    assert sorted(seen) == sorted({*names.values(), "old1", "old2", "kept", "held", "bank-old"})
    assert await count_retention_candidates(ledger, policy) == len(seen)

    only_bank = await plan_retention(ledger, RetentionPolicy(tenants={"bank": _days(30)}), now=clock.now)
    assert [r.thread_id for r in only_bank.planned] == ["bank-old"]


@pytest.mark.parametrize("chunk", [1, 500])
async def test_erasure_plan_judges_whole_trees(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(catalog, "CHUNK_THREADS", chunk)
    ledger = Ledger(database)
    names = await _forest_story(ledger, clock)
    report = await plan_erasure(ledger, user_id="alice")
    assert sorted(r.thread_id for r in report.planned) == ["kept", "old1", "old2"]
    assert [s.thread_id for s in report.skipped] == ["held"]
    assert await count_erasure_candidates(ledger, user_id="alice") == 8
    assert names  # the story's branches went with their roots
    assert {t for r in report.planned for t in r.thread_ids} >= {names["old1-b"], names["kept-b"]}


async def test_the_plan_is_announced_before_anything_is_removed(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await _many(ledger, 5, user_id="carol")
    clock.advance(days=100)
    announced: list[int] = []
    removed: list[str] = []

    def on_plan(report: Any) -> None:
        assert not removed  # known before the first removal
        announced.append(len(report.planned))

    report = await run_erasure(
        ledger, user_id="carol", apply=True, on_plan=on_plan, on_removal=lambda r: removed.append(r.thread_id)
    )
    assert announced == [5]
    assert len(removed) == len(report.removed) == 5
    assert await count_threads(ledger) == 0

    removed.clear()
    dry = await run_retention(ledger, RetentionPolicy(default=_days(1)), on_plan=on_plan, now=clock.now)
    assert announced == [5, 0]
    assert dry.dry_run


async def test_stats_stream_in_two_queries_per_scope(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(database)
    await _many(ledger, 4, tenant_id="acme")
    await talk(ledger, "other", 2, tenant_id="bank")
    reads = _Reads(monkeypatch)
    acme = await collect_stats(ledger, tenant_id="acme")
    assert (acme.threads, acme.roots, acme.events, acme.messages) == (4, 4, 4, 8)
    assert reads.head_queries == 0  # no per-thread query
    assert await count_events(ledger, tenant_id="acme") == acme.events
    everyone = await collect_stats(ledger)
    assert (everyone.threads, everyone.events) == (5, 6)


def test_progress_totals_grow_instead_of_overflowing() -> None:
    with Progress(disable=True) as bar:
        tick = Ticker(bar, bar.add_task("x", total=None))
        tick()
        assert _Count().render(bar.tasks[0]).plain == "1"  # no "1/?"
        tick.stage("planning", 2)
        tick()
        tick()
        tick()  # the total was an estimate (e.g. export's ancestors): it grows
        assert _Count().render(bar.tasks[0]).plain == "3/3"
        tick.stage("removing", 10)
        tick.to(4)
        assert _Count().render(bar.tasks[0]).plain == "4/10"


async def test_a_whole_database_verify_shows_its_reading_then_its_walking(database: Any) -> None:
    """The bar an operator watches moves through both phases, each with its own count."""
    from chatledger.admin import verify

    ledger = Ledger(database)
    await _many(ledger, 3)
    seen: list[tuple[str, str]] = []
    with Progress(disable=True) as bar:
        tick = Ticker(bar, bar.add_task("verifying", total=None))
        tick.stage("verifying", 3)
        reading, walking = tick.counting("reading events"), tick.phase("verifying", 3)

        def on_progress(done: int, total: int | None) -> None:
            reading(done, total)
            seen.append((bar.tasks[0].description, _Count().render(bar.tasks[0]).plain))

        def on_thread(thread_id: str) -> None:
            walking(thread_id)
            seen.append((bar.tasks[0].description, _Count().render(bar.tasks[0]).plain))

        assert (await verify(ledger, on_thread=on_thread, on_progress=on_progress)).ok
    phases = [label for n, (label, _) in enumerate(seen) if n == 0 or seen[n - 1][0] != label]
    assert phases == ["reading events", "verifying"]
    assert seen[-1] == ("verifying", "3/3")
    assert [count for label, count in seen if label == "reading events"][-1].startswith("3")  # 3 events


# ---------------------------------------------------------------------- real server, PyMongo


class _Replies(Listener):
    """Counts the documents each collection's find/getMore replies carried."""

    def __init__(self) -> None:
        self.collections: dict[int, str] = {}
        self.documents: dict[str, int] = {}
        self.finds: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.collections[event.request_id] = str(event.command["find"])
            self.finds[str(event.command["find"])] = self.finds.get(str(event.command["find"]), 0) + 1
        elif event.command_name == "getMore":
            self.collections[event.request_id] = str(event.command["collection"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        name = self.collections.pop(event.request_id, None)
        if name is not None:
            cursor = event.reply.get("cursor") or {}
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.documents[name] = self.documents.get(name, 0) + len(batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.collections.pop(event.request_id, None)


async def test_threads_limit_on_the_wire(real_backend: Backend) -> None:
    listener = _Replies()
    async with monitored(real_backend, listener) as database:
        ids = await _many(Ledger(database), 20)
        listener.documents.clear()
        listener.finds.clear()
        r, text = ui(as_json=True)
        assert await browse.threads_body(database, r, limit=8) == 0
        assert [row["thread_id"] for row in json.loads(text())["threads"]] == ids[:8]
        # The server sent 8 thread documents (and one to the check that the database holds
        # ChatLedger data at all), and the 8 heads in one query by key.
        assert listener.documents.get("threads") == 8 + 1
        assert listener.documents.get("events") == 8
        assert listener.finds.get("events") == 1


# ------------------------------------------------------------- verify and export stream


class _Lookahead:
    """Records, at each progress callback, how many thread documents had been read beyond those done.

    Whatever is read and not yet processed is held in memory: a command that streams keeps
    this below one chunk (plus the tree that crossed it), one that loads everything first
    has read every thread before its first callback.
    """

    def __init__(self, reads: _Reads) -> None:
        self.reads = reads
        self.done: list[str] = []
        self.ahead: list[int] = []

    def __call__(self, thread_id: str) -> None:
        self.done.append(thread_id)
        self.ahead.append(self.reads.thread_docs - len(self.done))


async def _trees(ledger: Ledger, n: int) -> list[str]:
    """``n`` conversations of one root and one branch each, in the order admin commands walk them."""
    out: list[str] = []
    for i in range(n):
        root = f"c{i:03d}"
        await talk(ledger, root, 2, tenant_id="acme")
        out += [root, await branch(ledger, root, 1)]
    return out


async def test_verify_and_export_hold_one_chunk_of_conversations(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatledger.admin import export_jsonl, head_anchors, verify

    ledger = Ledger(database)
    walk = await _trees(ledger, 15)  # 30 threads
    # One broken chain, in a conversation of the middle: found whatever the chunking.
    await database["events"].update_one({"_id": f"{walk[15]}#2"}, {"$set": {"hash": "0" * 64}})
    expected = (await verify(ledger)).to_dict()
    assert [p["thread_id"] for p in expected["problems"]] == [walk[15]]

    reads = _Reads(monkeypatch)
    for scope in ({}, {"tenant_id": "acme"}):
        reads.thread_docs = 0
        seen = _Lookahead(reads)
        report = await verify(ledger, **scope, on_thread=seen, chunk=4)
        assert report.to_dict() == expected
        assert seen.done == walk  # conversation by conversation, parents first
        # Never more than a chunk (4) plus the conversation that crossed it (2) read ahead;
        # loading every thread first would have read all 30 before the first callback.
        assert max(seen.ahead) <= 4 + 2, seen.ahead

    reads.thread_docs = 0
    seen = _Lookahead(reads)
    out = io.StringIO()
    summary = await export_jsonl(ledger, out, on_thread=seen, chunk=4)
    assert summary.threads == 30
    assert seen.done == walk
    assert max(seen.ahead) <= 4 + 2, seen.ahead
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["threads"] == 30  # the header still announces the total
    assert [x["doc"]["_id"] for x in lines if x["type"] == "thread"] == walk

    # One thread: its conversation only (ancestors and branches), the header counting them.
    reads.thread_docs = 0
    out = io.StringIO()
    await export_jsonl(ledger, out, ThreadFilter(thread_id=walk[7]), chunk=4)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["doc"]["_id"] for x in lines if x["type"] == "thread"] == walk[6:8]
    assert lines[0]["threads"] == 2
    assert reads.thread_docs == 1 + 2  # the thread, then its tree: no other conversation

    anchors = await head_anchors(ledger)
    assert sorted(a.thread_id for a in anchors) == sorted(walk)
    assert (await verify(ledger, anchors=anchors, chunk=4)).to_dict() == {**expected, "anchors": 30}
