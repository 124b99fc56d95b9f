"""The storage gate: only ChatLedger errors leave it, and what it sends is what it promises.

- Every public operation against a server that is down raises a ChatLedger error (here
  ``StorageUnavailableError``), never a raw driver error, a traceback or a hang.
- On a real wire server, PyMongo's command monitoring shows the durability the gate
  promises (majority + journaled writes, majority reads from the primary) and the
  round-trip budget: an append is one insert (two for a new thread); a page is at
  most two range queries per lineage segment, each an equality on the thread plus a
  range on the message index, sorted, limited and hinted.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring

from chatledger import (
    InvalidInputError,
    Ledger,
    MongoChatMessageStore,
    MongoHistoryProvider,
    StorageUnavailableError,
)
from chatledger.admin import (
    RetentionPolicy,
    ThreadFilter,
    collect_stats,
    export_jsonl,
    head_anchors,
    import_jsonl,
    release_hold,
    run_erasure,
    run_retention,
    set_hold,
    verify,
)
from chatledger.admin.browse import read_transcript
from chatledger.admin.catalog import activity, load_forest
from chatledger.admin.receipts import pending_removals
from chatledger.ledger import storage_of
from tests.conftest import Backend
from tests.helpers import Listener, msg, texts


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _operations(ledger: Ledger, tmp: Path) -> dict[str, Callable[[], Awaitable[Any]]]:
    book = ledger.bind()
    store = MongoChatMessageStore(ledger, thread_id="t")
    provider = MongoHistoryProvider(database=ledger)
    policy = RetentionPolicy.from_mapping({"default": "1d"})
    export = tmp / "x.jsonl"
    export.write_text("", encoding="utf-8")

    async def export_all() -> Any:
        return await export_jsonl(ledger, io.StringIO())

    return {
        "binding.open": lambda: book.open("t"),
        "binding.resolve": lambda: book.resolve({"thread_id": "t", "offset": 1, "v": 1}),
        "binding.append": lambda: book.append(book.empty("t"), [msg("x")]),
        "store.add_messages": lambda: store.add_messages([msg("x")]),
        "store.list_messages": lambda: MongoChatMessageStore(ledger, thread_id="t").list_messages(),
        "store.serialize": lambda: MongoChatMessageStore(ledger).serialize(),
        "provider.get_messages": lambda: provider.get_messages("s", state={"thread_id": "s", "offset": 1}),
        "provider.save_messages": lambda: provider.save_messages("s", [msg("x")], state={}),
        "verify": lambda: verify(ledger),
        "head_anchors": lambda: head_anchors(ledger),
        "stats": lambda: collect_stats(ledger),
        "threads": lambda: load_forest(ledger, ThreadFilter(tenant_id="acme")),
        "show": lambda: read_transcript(ledger, "t"),
        "hold set": lambda: set_hold(ledger, "t", reason="case 1"),
        "hold release": lambda: release_hold(ledger, "t", reason="done"),
        "retention": lambda: run_retention(ledger, policy, apply=True),
        "erase": lambda: run_erasure(ledger, user_id="u", apply=True),
        "export": export_all,
        "pending removals": lambda: pending_removals(ledger),
    }


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
async def test_every_operation_against_a_dead_server_raises_a_chatledger_error(
    driver: str, tmp_path: Path
) -> None:
    uri = f"mongodb://127.0.0.1:{_closed_port()}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    handle: Any
    if driver == "pymongo":
        from pymongo import AsyncMongoClient

        handle = AsyncMongoClient(uri)
    else:
        from motor.motor_asyncio import AsyncIOMotorClient

        handle = AsyncIOMotorClient(uri)
    database = handle["chatledger"]
    try:
        ledger = Ledger(database, write_attempts=1)
        for name, operation in _operations(ledger, tmp_path).items():
            with pytest.raises(StorageUnavailableError) as caught:
                await operation()
            assert "unavailable" in str(caught.value) or "in time" in str(caught.value), name
        # A file is checked before the database is touched: a bad one is bad input.
        path = tmp_path / "empty.jsonl"
        path.write_text("", encoding="utf-8")
        with pytest.raises(InvalidInputError):
            await import_jsonl(ledger, path)
    finally:
        from chatledger.storage.driver import close_client

        await close_client(handle)


class _Commands(Listener):
    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def named(self, *names: str) -> list[dict[str, Any]]:
        return [dict(e.command) for e in self.events if e.command_name in names]

    def names(self) -> list[str]:
        return [e.command_name for e in self.events]

    def clear(self) -> None:
        self.events.clear()


async def _monitored(backend: Backend) -> tuple[Any, Any, _Commands]:
    import uuid

    from pymongo import AsyncMongoClient

    if backend.driver != "pymongo":
        pytest.skip("command monitoring is PyMongo's; one run per server suffices")

    listener = _Commands()
    client: Any = AsyncMongoClient(backend.uri, event_listeners=[listener], tz_aware=True)
    return client, client[f"t_{uuid.uuid4().hex[:12]}"], listener


async def test_writes_are_majority_and_journaled_reads_majority_from_primary(real_backend: Backend) -> None:
    client, database, commands = await _monitored(real_backend)
    try:
        book = Ledger(database).bind()
        position = (await book.append(book.empty("t"), [msg("hello")])).position
        # A fresh process: nothing cached, so resolving reads the thread and the event.
        fresh = Ledger(database).bind()
        await fresh.read(await fresh.resolve(book.state(position)))
        for insert in commands.named("insert"):
            assert insert.get("writeConcern") == {"w": "majority", "j": True}, insert
        finds = commands.named("find")
        assert finds
        for find in finds:
            assert find.get("readConcern") == {"level": "majority"}, find
        # The caller may weaken it, but only explicitly.
        commands.clear()
        weak = Ledger(database, consistency="client").bind()
        await weak.append(weak.empty("t2"), [msg("hi")])
        assert all("writeConcern" not in i for i in commands.named("insert"))
    finally:
        await client.drop_database(database.name)
        await client.close()


async def test_round_trip_budget_and_query_shapes(real_backend: Backend) -> None:
    client, database, commands = await _monitored(real_backend)
    try:
        book = Ledger(database).bind()
        await book.ledger.ensure_indexes()
        position = book.empty("t")
        commands.clear()
        # A new thread: one thread insert and one event insert, nothing else.
        position = (await book.append(position, [msg("m0")])).position
        assert commands.names() == ["insert", "insert"]
        # Uneven batch sizes: 1, 7, 2, 13, 1, 30, 3 ... messages per event.
        sizes = [1, 7, 2, 13, 1, 30, 3, 5, 1, 21, 2, 8]
        for n, size in enumerate(sizes):
            commands.clear()
            position = (await book.append(position, [msg(f"e{n}.{i}") for i in range(size)])).position
            assert commands.names() == ["insert"]
        # A branch, so the line has two segments.
        fork = await book.resolve(book.state(position))
        await book.append(await book.at("t", 6), [msg("other line")])
        branched = (await book.append(await book.at("t", 6), [msg("b")] * 4)).position
        assert branched.thread_id != "t"
        for line in (fork, branched):
            total = line.messages
            for offset, limit in ((0, None), (-100, None), (-20, None), (3, 17), (total - 1, 1)):
                commands.clear()
                page = await book.read(line, offset=offset, limit=limit)
                start, stop, _ = slice(offset, None).indices(total)
                assert len(page) == (stop - start if limit is None else min(limit, stop - start))
                finds = commands.named("find")
                assert len(finds) <= 2 * len(line.segments()), (offset, limit, len(finds))
                assert commands.names() == ["find"] * len(finds)
                for find in finds:
                    # Summary events (compaction) hold no messages: a page never reads them.
                    assert set(find["filter"]) == {"thread_id", "first_message", "count"}
                    assert find["filter"]["count"] == {"$gt": 0}
                    assert isinstance(find["filter"]["thread_id"], str)
                    assert find["hint"] == "thread_first_message"
                    assert list(find["sort"]) == ["first_message"]
                    assert find["limit"] >= 1
    finally:
        await client.drop_database(database.name)
        await client.close()


def _stages(plan: Any) -> list[str]:
    """Every stage name in an explain plan tree."""
    if isinstance(plan, dict):
        found = [plan["stage"]] if isinstance(plan.get("stage"), str) else []
        for value in plan.values():
            found.extend(_stages(value))
        return found
    if isinstance(plan, list):
        return [stage for item in plan for stage in _stages(item)]
    return []


def _plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL (DocumentDB) explain plan."""
    if isinstance(plan, dict):
        found = [plan] if isinstance(plan.get("Node Type"), str) else []
        for value in plan.values():
            found.extend(_plan_nodes(value))
        return found
    if isinstance(plan, list):
        return [node for item in plan for node in _plan_nodes(item)]
    return []


async def test_page_queries_are_index_scans_bounded_on_both_ends(real_backend: Backend) -> None:
    """``explain`` of every page query (tail, middle, across a fork): the hinted index serves the
    thread and both ends of the range.

    MongoDB's plan: an index scan examining at most returned + 1 documents. DocumentDB's (a
    PostgreSQL plan): index scans of the hinted index only, no sequential scan, and the
    thread equality and both range bounds in the index condition, so whatever it sorts
    is already bounded by the page, however long the thread.
    """
    if real_backend.explain_format is None:
        pytest.skip("no query plan to read (FerretDB v1 scans every collection; see the README)")
    client, database, commands = await _monitored(real_backend)
    try:
        book = Ledger(database).bind()
        position = book.empty("t")
        for n in range(300):
            position = (await book.append(position, [msg(f"m{n}.{i}") for i in range(1 + n % 4)])).position
        # Noise: other threads in the same collection.
        for k in range(20):
            other = book.empty(f"other-{k}")
            for _ in range(10):
                other = (await book.append(other, [msg("noise")])).position
        # A lineage: a branch forked at event 200, read across the fork.
        await book.append(await book.at("t", 200), [msg("other line")])
        branched = (await book.append(await book.at("t", 200), [msg("b")] * 4)).position
        assert branched.thread_id != "t"
        commands.clear()
        await book.read(position, offset=-20)
        await book.read(position, offset=100, limit=37)
        await book.read(position, offset=2, limit=5)  # inside event 1 (messages 1-2): two queries
        await book.read(branched, offset=-30)
        finds = commands.named("find")
        assert len(finds) >= 6
        assert {find["filter"]["thread_id"] for find in finds} == {"t", branched.thread_id}
        for find in finds:
            fields = ("find", "filter", "projection", "sort", "limit", "hint")
            query = {k: find[k] for k in fields if k in find}
            if real_backend.explain_format == "mongodb":
                explained = await database.command({"explain": query, "verbosity": "executionStats"})
                stats = explained["executionStats"]
                assert "IXSCAN" in _stages(explained["queryPlanner"]["winningPlan"])
                assert "COLLSCAN" not in _stages(explained["queryPlanner"]["winningPlan"])
                assert stats["totalDocsExamined"] <= stats["nReturned"] + 1, stats
                continue
            explained = await database.command({"explain": query})
            nodes = _plan_nodes(explained["queryPlanner"]["Plan"])
            scans = [n for n in nodes if "Scan" in n["Node Type"]]
            assert scans, nodes
            assert not [n for n in scans if n["Node Type"] == "Seq Scan"], scans
            indexed = [n for n in scans if "Index Name" in n]
            assert {n["Index Name"] for n in indexed} == {find["hint"]}, scans
            condition = " ".join(str(n.get("Index Cond", "")) for n in indexed)
            assert "@=)" in condition, condition  # thread_id
            assert "@>=)" in condition, (query["filter"], condition)
            assert "@<)" in condition, (query["filter"], condition)
    finally:
        await client.drop_database(database.name)
        await client.close()


def _uses_an_index(backend: Backend, explained: dict[str, Any]) -> list[str]:
    """The indexes a plan reads (failing the test if any node scans a whole collection)."""
    if backend.explain_format == "mongodb":
        stages = _stages(explained)
        assert "COLLSCAN" not in stages, stages
        return [s for s in stages if s in ("IXSCAN", "IDHACK", "EXPRESS_IXSCAN")]
    nodes = _plan_nodes(explained["queryPlanner"]["Plan"])
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    indexed = [n for n in nodes if "Index Name" in n]
    # An index scan bounded by nothing but the shard key reads the whole collection: every
    # one must apply a condition of the query (a DocumentDB operator on the document or on
    # the ``_id`` key).
    assert all("OPERATOR(" in str(n.get("Index Cond", "")) for n in indexed), indexed
    return [str(n["Index Name"]) for n in indexed]


async def test_admin_batch_reads_and_the_head_are_index_scans(real_backend: Backend) -> None:
    """``explain`` of every batch read the admin commands make over many threads at once
    (counts, seq totals, heads by key, a tree's threads, receipts by id, positions, the
    sealed probe) and of the head query: each is served by an index, never a collection
    scan, so ``threads``, ``retention``, ``export`` and ``erase`` cost what they touch.
    """
    if real_backend.explain_format is None:
        pytest.skip("no query plan to read (FerretDB v1 scans every collection; see the README)")
    client, database, commands = await _monitored(real_backend)
    try:
        ledger = Ledger(database)
        await ledger.ensure_indexes()
        book = ledger.bind(tenant_id="acme")
        tips = []
        for k in range(12):
            position = book.empty(f"c{k}")
            for n in range(40 if k else 600):
                position = (await book.append(position, [msg(f"m{n}")])).position
            tips.append(position)
        # A branch, so a tree has two threads.
        await book.append(await book.at("c1", 20), [msg("other line")])
        branched = (await book.append(await book.at("c1", 20), [msg("b")])).position
        # Noise: other tenants' threads in the same collections.
        noise = ledger.bind(tenant_id="other")
        for k in range(40):
            await noise.append(noise.empty(f"n{k}"), [msg("noise")] * 3)
        storage = storage_of(ledger)
        commands.clear()
        forest = await load_forest(ledger, ThreadFilter(tenant_id="acme"))
        active = await activity(ledger, forest)
        assert active[branched.thread_id].head_seq == 21
        assert active[tips[0].thread_id].head_seq == 600
        assert await storage.events.head(tips[0].thread_id) is not None
        assert await storage.receipts.for_ids(["r-1", "r-2"]) == []
        assert len(await storage.events.positions([(tips[2].thread_id, 3), (tips[3].thread_id, 40)])) == 2
        assert not await storage.tallies.any_sealed([t.thread_id for t in tips])
        assert [r async for r in storage.receipts.about([tips[0].thread_id], ["removal"])] == []
        reads = [c for c in commands.events if c.command_name in ("find", "aggregate")]
        read_kinds = {(c.command_name, c.command[c.command_name]) for c in reads}
        assert read_kinds == {
            ("find", "threads"),
            ("find", "events"),
            ("find", "audit"),  # the receipts
            ("aggregate", "events"),
        }, read_kinds
        for event in reads:
            command = dict(event.command)
            fields = ("find", "filter", "projection", "sort", "limit", "hint", "aggregate", "pipeline")
            query = {k: command[k] for k in fields if k in command}
            if "aggregate" in query:
                query["cursor"] = {}
            explained = await database.command({"explain": query})
            used = _uses_an_index(real_backend, explained)
            assert used, (query, explained)
    finally:
        await client.drop_database(database.name)
        await client.close()


async def test_opening_at_the_head_and_a_provider_turn_cost_no_extra_reads(real_backend: Backend) -> None:
    client, database, commands = await _monitored(real_backend)
    try:
        book = Ledger(database).bind()
        position = book.empty("t")
        for n in range(5):
            position = (await book.append(position, [msg(f"m{n}")])).position
        # A fresh process opens the thread at its head: the thread by key, which positions
        # of the thread exist (by key: it brackets the head), then the head query (over the
        # whole thread, as it is shorter than the window a long thread's query is bounded
        # to), which already carries what the position needs (no read by key after it).
        commands.clear()
        opened = await Ledger(database).bind().open("t")
        assert opened.cursor == position.cursor
        assert [(e.command_name, e.command.get(e.command_name)) for e in commands.events] == [
            ("find", "threads"),
            ("find", "events"),
            ("find", "events"),
        ]
        probe, head = commands.named("find")[1:]
        assert set(probe["filter"]) == {"_id"}
        assert "seq" not in head["filter"]
        assert head["limit"] == 1
        # A provider turn: load the history, then save the run's messages. The save's
        # de-duplication reuses what the load read: one page read, one insert, nothing else.
        provider = MongoHistoryProvider(database=Ledger(database))
        state: dict[str, Any] = {}
        await provider.save_messages("s", [msg("q0"), msg("a0")], state=state)
        history = await provider.get_messages("s", state=state)
        commands.clear()
        history = await provider.get_messages("s", state=state)
        await provider.save_messages("s", [*history, msg("q1"), msg("a1")], state=state)
        assert [e.command_name for e in commands.events] == ["find", "insert"]
        assert [m.text for m in await provider.get_messages("s", state=state)] == ["q0", "a0", "q1", "a1"]
    finally:
        await client.drop_database(database.name)
        await client.close()


async def test_a_page_inside_an_event_longer_than_the_lookback_window(database: Any) -> None:
    """The event running into a page is found however far back it starts (the window widens)."""
    book = Ledger(database).bind()
    long = [f"long{i}" for i in range(5000)]
    position = (await book.append(book.empty("t"), [msg(text) for text in long])).position
    position = (await book.append(position, [msg("a"), msg("b")])).position
    written = [*long, "a", "b"]
    assert texts(await book.read(position, offset=4000, limit=10)) == written[4000:4010]
    assert texts(await book.read(position, offset=300, limit=3)) == written[300:303]
    assert texts(await book.read(position, offset=-3)) == written[-3:]
