#!/usr/bin/env python3
"""Benchmark ChatLedger against the raw driver and against peer stores, on one server, in one run.

Usage::

    python scripts/bench.py [--mongodb-uri URI] [--quick] [--only PART]
        [--out docs/benchmarks.md] [--json docs/benchmarks.json]

Without a URI (or ``MONGODB_URI``) only the test tier's real wire server is measured: a
throw-away FerretDB (SQLite back end) started on 127.0.0.1 through ``scripts/ferretdb.py``
and removed at the end. With a URI, that server is measured as well, each in its own
section. Every database the script creates is named ``clbench_<run id>_*`` and dropped at
the end. Nothing here contacts anything but the database server(s); the peers are used
as storage classes only (no model, no LLM API).

Method: every figure is measured in ``runs`` repeated runs; one run performs ``ops``
operations and yields the mean time per operation. We report the median over the runs and
the spread (min..max), plus the ratio of the medians to the baseline measured in the same
run. Subject and baseline runs are interleaved (A, B, A, B, ...) so drift hits both.
The script bounds itself: fixed counts everywhere, fewer runs for the slow cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from agent_framework import Message  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from chatledger import Ledger, MongoChatMessageStore  # noqa: E402
from chatledger.codec import encode_messages  # noqa: E402
from chatledger.hashing import GENESIS_HASH  # noqa: E402
from chatledger.models import utc_now_ms  # noqa: E402

Op = Callable[[], Awaitable[Any]]

#: Messages per event when building long threads: one agent "turn" with tool calls.
BUILD_BATCH = 10
PAGE = 20
USER_TEXT = "Could you look up the order status for customer {i} and summarise what changed since last week?"
ASSISTANT_TEXT = (
    "Order {i}: shipped on Tuesday, the carrier reports one delay at the regional hub; "
    "the customer was refunded the express fee. Two line items were back-ordered and will "
    "ship separately. No further action is needed unless the customer asks for a callback."
)


# --------------------------------------------------------------------------- measuring


@dataclass
class Figure:
    """Per-run values of one measured quantity (milliseconds per op, bytes, messages/s)."""

    label: str
    runs: list[float]
    unit: str = "ms"

    @property
    def median(self) -> float:
        """Median over the runs."""
        return statistics.median(self.runs)

    def cell(self) -> str:
        """Markdown cell: median and min..max spread."""
        if len(self.runs) == 1 or min(self.runs) == max(self.runs):
            return _fmt(self.median, self.unit)
        return f"{_fmt(self.median, self.unit)} ({_fmt(min(self.runs), '')}–{_fmt(max(self.runs), '')})"


@dataclass
class Row:
    """One line of a results table: a subject, its baseline, and their ratio."""

    section: str
    case: str
    subject: Figure | None
    baseline: Figure | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Subject median / baseline median (``None`` without both)."""
        if self.subject is None or self.baseline is None or self.baseline.median == 0:
            return None
        return self.subject.median / self.baseline.median


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    text = f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


async def per_op_ms(op: Op, ops: int) -> float:
    """Run ``op`` ``ops`` times; return the mean milliseconds per call."""
    start = time.perf_counter()
    for _ in range(ops):
        await op()
    return (time.perf_counter() - start) * 1000 / ops


async def compare(
    label_a: str, op_a: Op, label_b: str, op_b: Op, *, ops: int, runs: int, warmup: int = 1
) -> tuple[Figure, Figure]:
    """Measure two operations in interleaved runs; return their figures (ms per op)."""
    for _ in range(warmup):
        await op_a()
        await op_b()
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(await per_op_ms(op_a, ops))
        b.append(await per_op_ms(op_b, ops))
    return Figure(label_a, a), Figure(label_b, b)


def say(text: str) -> None:
    """Print progress immediately (figures are printed as they are measured)."""
    print(text, flush=True)


def report(row: Row) -> Row:
    """Print a row as soon as it is measured, and return it."""
    parts = [f"  [{row.section}] {row.case}:"]
    if row.subject is not None:
        parts.append(f"{row.subject.label} {row.subject.cell()}")
    if row.baseline is not None:
        parts.append(f"vs {row.baseline.label} {row.baseline.cell()}")
    if row.ratio is not None:
        parts.append(f"ratio {ratio_text(row.ratio)}")
    if row.note:
        parts.append(f"({row.note})")
    say(" ".join(parts))
    return row


# --------------------------------------------------------------------------- data


def maf_turn(i: int, size: int) -> list[Message]:
    """Return ``size`` alternating user/assistant MAF messages numbered from ``i``."""
    out: list[Message] = []
    for k in range(i, i + size):
        if k % 2 == 0:
            out.append(Message(role="user", contents=[USER_TEXT.format(i=k)]))
        else:
            out.append(Message(role="assistant", contents=[ASSISTANT_TEXT.format(i=k)]))
    return out


def texts(i: int, size: int) -> list[tuple[str, str]]:
    """Return the same conversation as :func:`maf_turn` as plain ``(role, text)`` pairs."""
    return [
        ("user", USER_TEXT.format(i=k)) if k % 2 == 0 else ("assistant", ASSISTANT_TEXT.format(i=k))
        for k in range(i, i + size)
    ]


def raw_event(thread_id: str, seq: int, first: int, messages: Sequence[Message]) -> dict[str, Any]:
    """Return a document shaped like a ChatLedger event, built without the library's checks."""
    stored = encode_messages(messages)
    return {
        "v": 1,
        "thread_id": thread_id,
        "seq": seq,
        "first_message": first,
        "count": len(stored),
        "messages": stored,
        "event_id": uuid.uuid4().hex,
        "created_at": utc_now_ms(),
        "prev_hash": GENESIS_HASH,
        "hash": GENESIS_HASH,
    }


async def build_thread(ledger: Ledger, messages: int, *, batch: int = BUILD_BATCH) -> dict[str, Any]:
    """Append a ``messages``-long thread through the library; return its cursor state."""
    store = MongoChatMessageStore(ledger)
    turn = maf_turn(0, batch)
    for _ in range(messages // batch):
        await store.add_messages(turn)
    return await store.serialize_state()


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Plan:
    """How many operations and runs each part uses (``--quick`` shrinks everything)."""

    runs: int = 7
    append_ops: int = 100
    read_ops: int = 20
    sizes: tuple[int, ...] = (100, 1_000, 10_000, 100_000)
    replay_runs: int = 5
    peer_size: int = 10_000
    peer_append_ops: int = 20
    depths: tuple[int, ...] = (1, 10, 50)
    #: Run only these parts (``--only``); empty means all.
    only: tuple[str, ...] = ()

    @classmethod
    def quick(cls) -> Plan:
        """A smoke-sized plan (for checking the script, not for publishing)."""
        return cls(
            runs=3,
            append_ops=20,
            read_ops=5,
            sizes=(100, 1_000, 10_000),
            replay_runs=2,
            peer_size=1_000,
            peer_append_ops=5,
            depths=(1, 10, 50),
        )

    def read_ops_for(self, size: int) -> int:
        """Fewer operations per run on big threads: a scan-bound server makes them slow."""
        return max(1, self.read_ops // max(1, size // 1_000))

    def runs_for(self, size: int) -> int:
        """Fewer runs on the 100k thread (stated in the output)."""
        return 3 if size >= 100_000 else self.runs


class Bench:
    """Runs every part of the benchmark against one server."""

    def __init__(self, name: str, uri: str, plan: Plan) -> None:
        self.name = name
        self.uri = uri
        self.plan = plan
        self.run_id = uuid.uuid4().hex[:8]
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.rows: list[Row] = []
        self.databases: list[str] = []
        self.server: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def db(self, part: str) -> Any:
        """Return a fresh database for one part (scan-bound servers must not mix parts)."""
        name = f"clbench_{self.run_id}_{part}"
        self.databases.append(name)
        return self.client[name]

    def add(self, row: Row) -> None:
        """Record and print a row."""
        self.rows.append(report(row))

    async def run(self) -> None:
        """Run every part; a failing part is recorded as such instead of ending the run."""
        info = await self.client.admin.command("buildInfo")
        self.server = {
            "name": self.name,
            "version": info.get("version"),
            "ferretdb_version": info.get("ferretdbVersion") or (info.get("ferretdbFeatures") and "yes"),
            "uri_host": self.uri.split("@")[-1].split("/")[2] if "//" in self.uri else "",
        }
        flavour = self.server["ferretdb_version"] or "MongoDB"
        say(f"== {self.name}: server {self.server['version']} ({flavour})")
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("append", self.bench_append),
            ("paged read", self.bench_paged_read),
            ("branches", self.bench_branches),
            ("peers", self.bench_peers),
            ("drivers", self.bench_drivers),
        ]
        for name, part in parts:
            if self.plan.only and name not in self.plan.only:
                continue
            start = time.perf_counter()
            try:
                await part()
            except Exception as e:  # a broken part must not hide the others
                traceback.print_exc()
                self.add(Row(name, "failed", None, note=f"n/a: {type(e).__name__}: {e}"[:200]))
            self.timings[name] = time.perf_counter() - start
            say(f"  ({name} took {self.timings[name]:.0f} s)")

    async def close(self) -> None:
        """Drop the databases this run created and close the client."""
        for name in self.databases:
            with contextlib.suppress(Exception):
                await self.client.drop_database(name)
        await self.client.close()

    # ------------------------------------------------------------------ append

    async def bench_append(self) -> None:
        """ChatLedger ``add_messages`` (1 and 10 messages) vs ``insert_one`` of the same event."""
        plan = self.plan
        db = self.db("append")
        ledger = Ledger(db)
        raw = db["raw_events"]
        for size in (1, 10):
            batch = maf_turn(0, size)
            store = MongoChatMessageStore(ledger)
            await store.add_messages(batch)  # thread creation is a one-off, not what we time
            template = raw_event(uuid.uuid4().hex, 0, 0, batch)
            seq = iter(range(1, 10**9))

            async def chatledger_op(
                store: MongoChatMessageStore = store, batch: list[Message] = batch
            ) -> None:
                await store.add_messages(batch)

            async def raw_op(template: dict[str, Any] = template, seq: Any = seq) -> None:
                await raw.insert_one({**template, "seq": next(seq)})

            a, b = await compare(
                "ChatLedger add_messages",
                chatledger_op,
                "raw insert_one",
                raw_op,
                ops=plan.append_ops,
                runs=plan.runs,
            )
            self.add(Row("append", f"batch of {size}", a, b))

    # ------------------------------------------------------------------ paged read and replay

    async def bench_paged_read(self) -> None:
        """Last 20 messages of threads of growing length; full replay; serialized state size."""
        plan = self.plan
        self.states: dict[int, tuple[Any, dict[str, Any]]] = {}
        for size in plan.sizes:
            db = self.db(f"read{size}")
            ledger = Ledger(db)
            start = time.perf_counter()
            state = await build_thread(ledger, size)
            say(
                f"  built a {size:,}-message thread ({size // BUILD_BATCH:,} appends) in "
                f"{time.perf_counter() - start:.1f} s"
            )
            self.states[size] = (db, state)
            thread_id = state["thread_id"]
            events = db["events"]

            async def chatledger_page(ledger: Ledger = ledger, state: dict[str, Any] = state) -> None:
                store = MongoChatMessageStore(ledger)
                await store.deserialize_state(state)
                page = await store.list_messages(offset=-PAGE)
                assert len(page) == PAGE

            async def raw_page(events: Any = events, thread_id: str = thread_id) -> None:
                docs = (
                    await events.find({"thread_id": thread_id})
                    .sort("seq", -1)
                    .limit(PAGE // BUILD_BATCH)
                    .to_list(None)
                )
                assert sum(d["count"] for d in docs) == PAGE

            a, b = await compare(
                "ChatLedger list_messages(offset=-20)",
                chatledger_page,
                "raw find(sort seq desc, limit 2)",
                raw_page,
                ops=plan.read_ops_for(size),
                runs=plan.runs_for(size),
            )
            self.add(
                Row(
                    "paged read",
                    f"{size:,} messages",
                    a,
                    b,
                    extra={"ops_per_run": plan.read_ops_for(size), "runs": plan.runs_for(size)},
                )
            )
            if size == plan.peer_size or (size == plan.sizes[-1] and plan.peer_size not in plan.sizes):
                await self.bench_replay(size, ledger, state)
        await self.bench_state_size()

    async def bench_replay(self, size: int, ledger: Ledger, state: dict[str, Any]) -> None:
        """Full replay throughput (messages/s) vs a raw ``find`` of the same event documents."""
        events = ledger.events
        thread_id = state["thread_id"]

        async def chatledger_all() -> None:
            store = MongoChatMessageStore(ledger)
            await store.deserialize_state(state)
            assert len(await store.list_messages()) == size

        async def raw_all() -> None:
            docs = await events.find({"thread_id": thread_id}).sort("seq", 1).to_list(None)
            assert sum(d["count"] for d in docs) == size

        a, b = await compare(
            "ChatLedger list_messages()",
            chatledger_all,
            "raw find (no decoding)",
            raw_all,
            ops=1,
            runs=self.plan.replay_runs,
            warmup=0,
        )
        # Throughput: messages per second; the ratio is ChatLedger's share of the floor's rate.
        a_rate = Figure("ChatLedger replay", [size / (ms / 1000) for ms in a.runs], "msg/s")
        b_rate = Figure("raw find", [size / (ms / 1000) for ms in b.runs], "msg/s")
        self.add(Row("replay", f"{size:,} messages", a_rate, b_rate, extra={"ms": [a.runs, b.runs]}))

    async def bench_state_size(self) -> None:
        """Bytes of serialized state vs history length, ChatLedger cursor vs the seed's in-memory store."""
        for size in (10, *self.plan.sizes):
            if size in self.states:
                db, state = self.states[size]
                store = MongoChatMessageStore(Ledger(db))
                await store.deserialize_state(state)
                ours = len(json.dumps(await store.serialize_state()).encode())
            else:
                store = MongoChatMessageStore(Ledger(self.db("state")))
                await store.add_messages(maf_turn(0, size))
                ours = len(json.dumps(await store.serialize_state()).encode())
            # The seed notebook's CustomChatMessageStore serializes {"messages": [every message]}.
            history = [m.to_dict() for m in maf_turn(0, BUILD_BATCH)] * (size // BUILD_BATCH)
            seed = len(json.dumps({"messages": history}).encode())
            self.add(
                Row(
                    "state size",
                    f"{size:,} messages",
                    Figure("ChatLedger cursor", [ours], "B"),
                    Figure("seed in-memory store", [seed], "B"),
                )
            )

    # ------------------------------------------------------------------ branches

    async def bench_branches(self) -> None:
        """Last page of a branch 1, 10 and 50 levels deep vs the same page of a root thread."""
        plan = self.plan
        ledger = Ledger(self.db("branches"))
        root_state = await build_thread(ledger, 100)
        position = await ledger.resolve(root_state)
        cursors: dict[int, dict[str, Any]] = {0: root_state}
        for depth in range(1, max(plan.depths) + 1):
            # Two events on the current line, then append again after the first: that
            # cursor is behind the head, so the append forks a branch one level deeper.
            first = (await ledger.append(position, maf_turn(0, 5))).position
            await ledger.append(first, maf_turn(5, 5))
            branched = await ledger.append(first, maf_turn(10, 5))
            assert branched.branched
            position = (await ledger.append(branched.position, maf_turn(15, 5))).position
            if depth in plan.depths:
                cursors[depth] = position.cursor.to_state()
                assert position.thread is not None
                assert position.thread.depth == depth

        async def page(state: dict[str, Any]) -> None:
            store = MongoChatMessageStore(ledger)
            await store.deserialize_state(state)
            assert len(await store.list_messages(offset=-PAGE)) == PAGE

        for depth in plan.depths:

            def at_depth(state: dict[str, Any] = cursors[depth]) -> Awaitable[None]:
                return page(state)

            a, b = await compare(
                f"branch depth {depth}",
                at_depth,
                "root thread (depth 0)",
                lambda: page(root_state),
                ops=max(1, plan.read_ops // 4),
                runs=plan.runs,
            )
            self.add(Row("branches", f"depth {depth}", a, b))

    # ------------------------------------------------------------------ peers

    async def bench_peers(self) -> None:
        """Append a 2-message turn, and load the last 20 of a long thread, for each store."""
        size = self.plan.peer_size
        peers: list[tuple[str, Callable[[int], Awaitable[tuple[Op, Op]]]]] = [
            ("ChatLedger MongoChatMessageStore", self.peer_chatledger),
            ("langchain-mongodb MongoDBChatMessageHistory", self.peer_langchain),
            ("OpenAI Agents SDK MongoDBSession", self.peer_openai),
            ("LangGraph MongoDBSaver (checkpointer)", self.peer_langgraph),
        ]
        loads: dict[str, Figure] = {}
        appends: dict[str, Figure] = {}
        for name, setup in peers:
            try:
                start = time.perf_counter()
                load, append = await setup(size)
                say(f"  {name}: loaded {size:,} messages in {time.perf_counter() - start:.1f} s")
                # LangGraph rewrites the whole history on every append: fewer of those (stated).
                heavy = "LangGraph" in name
                runs = 3 if heavy else self.plan.runs
                append_ops = max(1, self.plan.peer_append_ops // 4) if heavy else self.plan.peer_append_ops
                await load()
                read_ops = self.plan.read_ops_for(size)
                loads[name] = Figure(name, [await per_op_ms(load, read_ops) for _ in range(runs)])
                await append()
                appends[name] = Figure(name, [await per_op_ms(append, append_ops) for _ in range(runs)])
            except Exception as e:
                traceback.print_exc()
                reason = f"n/a: {type(e).__name__}: {e}".splitlines()[0][:160]
                self.add(Row("peers", f"{name}", None, note=reason))
        ours = "ChatLedger MongoChatMessageStore"
        cases = ((f"load last {PAGE} of {size:,}", loads), ("append a 2-message turn", appends))
        for label, figures in cases:
            for name, figure in figures.items():
                if name != ours:
                    self.add(Row("peers", f"{label}: {name}", figures.get(ours), figure))

    async def peer_chatledger(self, size: int) -> tuple[Op, Op]:
        """ChatLedger, built the same way as the peers (turns of 10 messages)."""
        ledger = Ledger(self.db("peer_chatledger"))
        state = await build_thread(ledger, size)
        writer = MongoChatMessageStore(ledger)
        await writer.deserialize_state(state)
        turn = maf_turn(0, 2)

        async def load() -> None:
            store = MongoChatMessageStore(ledger)
            await store.deserialize_state(state)
            assert len(await store.list_messages(offset=-PAGE)) == PAGE

        async def append() -> None:
            await writer.add_messages(turn)

        return load, append

    async def peer_langchain(self, size: int) -> tuple[Op, Op]:
        """langchain-mongodb: one document per message; the last N via count + skip (sync PyMongo)."""
        from langchain_core.messages import AIMessage, HumanMessage, message_to_dict
        from langchain_mongodb import MongoDBChatMessageHistory
        from pymongo import MongoClient

        def lc(role: str, text: str) -> Any:
            return HumanMessage(content=text) if role == "user" else AIMessage(content=text)

        name = self.db("peer_langchain").name
        sync_client: MongoClient[dict[str, Any]] = MongoClient(self.uri, serverSelectionTimeoutMS=10_000)
        self._sync_clients.append(sync_client)
        session = uuid.uuid4().hex
        history = MongoDBChatMessageHistory(
            None, session, database_name=name, client=sync_client, history_size=PAGE
        )
        # Bulk-load exactly the documents add_message writes (one insert per message is slow).
        turn = [json.dumps(message_to_dict(lc(r, t))) for r, t in texts(0, BUILD_BATCH)]
        docs = [{"SessionId": session, "History": turn[i % BUILD_BATCH]} for i in range(size)]
        for i in range(0, size, 1000):
            history.collection.insert_many(docs[i : i + 1000])
        new_turn = [lc(r, t) for r, t in texts(0, 2)]

        async def load() -> None:
            assert len(history.messages) == PAGE

        async def append() -> None:
            history.add_messages(new_turn)

        return load, append

    async def peer_openai(self, size: int) -> tuple[Op, Op]:
        """OpenAI Agents SDK ``MongoDBSession`` (PyMongo async), fed turns of 10 items."""
        from agents.extensions.memory import MongoDBSession

        name = self.db("peer_openai").name
        session = MongoDBSession(uuid.uuid4().hex, client=self.client, database=name)
        turn: list[Any] = [{"role": r, "content": t} for r, t in texts(0, BUILD_BATCH)]
        for _ in range(size // BUILD_BATCH):
            await session.add_items(turn)
        new_turn: list[Any] = [{"role": r, "content": t} for r, t in texts(0, 2)]

        async def load() -> None:
            assert len(await session.get_items(limit=PAGE)) == PAGE

        async def append() -> None:
            await session.add_items(new_turn)

        return load, append

    async def peer_langgraph(self, size: int) -> tuple[Op, Op]:
        """LangGraph ``MongoDBSaver``: each checkpoint holds the whole ``messages`` channel."""
        from langchain_core.messages import AIMessage, HumanMessage
        from langgraph.checkpoint.base import empty_checkpoint
        from langgraph.checkpoint.mongodb import MongoDBSaver
        from pymongo import MongoClient

        sync_client: MongoClient[dict[str, Any]] = MongoClient(self.uri, serverSelectionTimeoutMS=10_000)
        self._sync_clients.append(sync_client)
        saver = MongoDBSaver(sync_client, db_name=self.db("peer_langgraph").name)
        thread = uuid.uuid4().hex
        messages: list[Any] = [
            HumanMessage(content=t) if r == "user" else AIMessage(content=t) for r, t in texts(0, size)
        ]
        config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        step = 0

        def put(msgs: list[Any]) -> None:
            nonlocal config, step
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": msgs}
            checkpoint["channel_versions"] = {"messages": step + 1}
            step += 1
            config = saver.put(config, checkpoint, {"source": "loop", "step": step}, {"messages": step})

        # Favourable to LangGraph: the 10k history is ONE checkpoint; a real graph would
        # have left one (ever larger) checkpoint per step behind it.
        put(messages)
        new_turn = [HumanMessage(content=texts(0, 1)[0][1]), AIMessage(content=texts(1, 1)[0][1])]
        read_config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}

        async def load() -> None:
            found = saver.get_tuple(read_config)  # type: ignore[arg-type]
            assert found is not None
            assert len(found.checkpoint["channel_values"]["messages"][-PAGE:]) == PAGE

        async def append() -> None:
            # A step adds a turn to the state; the checkpointer stores the whole list again.
            messages.extend(new_turn)
            put(messages)

        return load, append

    _sync_clients: list[Any] = []  # noqa: RUF012 - closed in main()

    # ------------------------------------------------------------------ drivers

    async def bench_drivers(self) -> None:
        """ChatLedger on PyMongo's AsyncMongoClient vs on Motor: append and a last-20 page."""
        try:
            from motor.motor_asyncio import AsyncIOMotorClient
        except ImportError as e:
            self.add(Row("drivers", "Motor", None, note=f"n/a: {e}"))
            return
        motor: Any = AsyncIOMotorClient(self.uri, serverSelectionTimeoutMS=10_000)
        try:
            name = self.db("drivers").name
            on_pymongo, on_motor = Ledger(self.client[name]), Ledger(motor[name])
            state = await build_thread(on_pymongo, 1_000)
            batch = maf_turn(0, 1)
            stores = {}
            for label, ledger in (("pymongo", on_pymongo), ("motor", on_motor)):
                stores[label] = MongoChatMessageStore(ledger)
                await stores[label].add_messages(batch)

            def appender(label: str) -> Op:
                async def op() -> None:
                    await stores[label].add_messages(batch)

                return op

            def pager(ledger: Ledger) -> Op:
                async def op() -> None:
                    store = MongoChatMessageStore(ledger)
                    await store.deserialize_state(state)
                    assert len(await store.list_messages(offset=-PAGE)) == PAGE

                return op

            m, p = await compare(
                "Motor",
                appender("motor"),
                "PyMongo async",
                appender("pymongo"),
                ops=self.plan.append_ops,
                runs=self.plan.runs,
            )
            self.add(Row("drivers", "append, batch of 1", m, p))
            m, p = await compare(
                "Motor",
                pager(on_motor),
                "PyMongo async",
                pager(on_pymongo),
                ops=self.plan.read_ops,
                runs=self.plan.runs,
            )
            self.add(Row("drivers", "last 20 of 1,000", m, p))
        finally:
            motor.close()


# --------------------------------------------------------------------------- output


def versions() -> dict[str, str]:
    """Versions of every package the figures depend on."""
    out = {"python": platform.python_version()}
    for dist in (
        "chatledger",
        "pymongo",
        "motor",
        "agent-framework-core",
        "langchain-mongodb",
        "langchain-core",
        "openai-agents",
        "langgraph-checkpoint-mongodb",
        "langgraph-checkpoint",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    """The machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {"os": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory": mem}


def write_json(path: Path, meta: dict[str, Any], benches: Sequence[Bench]) -> None:
    """Write every raw per-run figure as JSON."""

    def row(r: Row) -> dict[str, Any]:
        d: dict[str, Any] = {"section": r.section, "case": r.case, "note": r.note, "ratio": r.ratio}
        d.update(r.extra)
        for key in ("subject", "baseline"):
            fig = getattr(r, key)
            d[key] = None if fig is None else {**asdict(fig), "median": fig.median}
        return d

    data = {
        **meta,
        "servers": [
            {"server": b.server, "part_seconds": b.timings, "rows": [row(r) for r in b.rows]} for b in benches
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def ratio_text(ratio: float | None) -> str:
    """A ratio as ``1.23×``, or ``1/456`` when it is tiny."""
    if ratio is None:
        return ""
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"1/{1 / ratio:,.0f}"


def table(rows: Sequence[Row], subject: str, baseline: str, ratio: str) -> list[str]:
    """Markdown table of rows: subject, baseline, ratio."""
    out = [f"| case | {subject} | {baseline} | {ratio} |", "| --- | --- | --- | --- |"]
    for r in rows:
        if r.subject is None:
            out.append(f"| {r.case} | {r.note} | | |")
            continue
        cells = [r.case, r.subject.cell(), r.baseline.cell() if r.baseline else "", ratio_text(r.ratio)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def write_markdown(path: Path, meta: dict[str, Any], benches: Sequence[Bench], notes: str) -> None:
    """Write docs/benchmarks.md: setup, one table per result, and the notes."""
    m, v = meta["machine"], meta["versions"]
    lines = [
        "# ChatLedger benchmarks",
        "",
        "<!-- Generated by scripts/bench.py; the notes section is written by hand from the figures. -->",
        "",
        f"Reproduce: `{meta['command']}` (or `make bench`). Measured {meta['date']}, "
        f"run took {meta['seconds']:.0f} s{QUICK_WARNING if meta['quick'] else ''}.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
    ]
    for b in benches:
        s = b.server
        lines.append(
            f"- Server `{s['name']}`: reports MongoDB {s['version']}"
            + (f", FerretDB {s['ferretdb_version']} (SQLite back end)" if s["ferretdb_version"] else "")
            + ", on 127.0.0.1, same run."
        )
    lines += [
        "",
        "Every figure: median over repeated runs, with the spread (min–max) in brackets; a run is the",
        "mean of several operations. Ratios are median ÷ median of the baseline measured in the same run,",
        "subject and baseline runs interleaved. Mongomock (the in-process test tier) is not measured:",
        "its numbers would not be representative of any server.",
        "",
    ]
    sections = [
        (
            "append",
            "Append: `add_messages` vs raw `insert_one` of an equivalent event document",
            "ChatLedger",
            "raw insert_one",
            "ChatLedger ÷ raw",
        ),
        (
            "paged read",
            "Paged read: the last 20 messages of a thread (threads built 10 messages per event)",
            "ChatLedger",
            "raw find of the 2 newest events",
            "ChatLedger ÷ raw",
        ),
        (
            "replay",
            "Full replay throughput",
            "ChatLedger (decoded MAF messages)",
            "raw find (BSON docs)",
            "ChatLedger ÷ raw (rate)",
        ),
        (
            "branches",
            "Branches: last 20 messages at the tip of a branch N levels deep",
            "branch",
            "root thread, same page",
            "branch ÷ root",
        ),
        (
            "state size",
            "Serialized state size vs history length",
            "ChatLedger cursor",
            "seed in-memory store",
            "ChatLedger ÷ seed",
        ),
        (
            "peers",
            "Peers on the same server with the same messages",
            "ChatLedger",
            "peer",
            "ChatLedger ÷ peer",
        ),
        (
            "drivers",
            "Drivers: ChatLedger on Motor vs on PyMongo async",
            "Motor",
            "PyMongo async",
            "Motor ÷ PyMongo",
        ),
    ]
    for b in benches:
        lines += [f"## Server: {b.server['name']}", ""]
        for key, title, subj, base, ratio in sections:
            rows = [r for r in b.rows if r.section == key]
            if rows:
                lines += [f"### {title}", "", *table(rows, subj, base, ratio), ""]
        failed = [r for r in b.rows if r.case == "failed"]
        for r in failed:
            lines += [f"- part `{r.section}` failed: {r.note}", ""]
    lines += ["## What the numbers mean", "", NOTES_START, notes.strip(), NOTES_END, ""]
    path.write_text("\n".join(lines))


QUICK_WARNING = " (--quick: smoke sizes, not for publishing)"
PARTS = ("append", "paged read", "branches", "peers", "drivers")
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"


def kept_notes(path: Path) -> str:
    """Return the hand-written notes of an existing benchmarks page, so a re-run keeps them."""
    try:
        text = path.read_text()
    except OSError:
        return "(notes to be written from the figures)"
    if NOTES_START in text and NOTES_END in text:
        return text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip()
    return "(notes to be written from the figures)"


async def amain(args: argparse.Namespace) -> int:
    """Start FerretDB, measure it (and ``--mongodb-uri``), write the outputs."""
    plan = Plan.quick() if args.quick else Plan()
    plan.only = tuple(args.only or ())
    started = time.perf_counter()
    targets: list[tuple[str, str]] = []
    server = None
    if not args.no_ferretdb:
        from ferretdb import FerretDBServer  # scripts/ferretdb.py

        # FerretDBServer is the one place that starts FerretDB: 127.0.0.1 only,
        # --telemetry=disable and DO_NOT_TRACK=1, so the benchmark never reports home.
        server = FerretDBServer(repo_root=REPO_ROOT).start()
        targets.append(("FerretDB", server.uri))
    if args.mongodb_uri:
        targets.append(("MONGODB_URI", args.mongodb_uri))
    benches: list[Bench] = []
    try:
        for name, uri in targets:
            bench = Bench(name, uri, plan)
            benches.append(bench)
            try:
                await bench.run()
            finally:
                await bench.close()
    finally:
        for c in Bench._sync_clients:
            c.close()
        if server is not None:
            server.close()
    meta = {
        "command": ".venv-bench/bin/python scripts/bench.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "quick": args.quick,
        "plan": asdict(plan),
        "machine": machine(),
        "versions": versions(),
    }
    notes = kept_notes(Path(args.out)) if args.out else ""
    if args.json:
        write_json(Path(args.json), meta, benches)
    if args.out:
        write_markdown(Path(args.out), meta, benches, notes)
    say(f"done in {meta['seconds']:.0f} s; wrote {args.out} and {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mongodb-uri",
        default=os.environ.get("MONGODB_URI"),
        help="also measure this server (default: $MONGODB_URI)",
    )
    parser.add_argument("--no-ferretdb", action="store_true", help="do not start and measure FerretDB")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (not for publishing)")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--json", default=str(REPO_ROOT / "docs" / "benchmarks.json"))
    args = parser.parse_args(argv)
    if args.no_ferretdb and not args.mongodb_uri:
        parser.error("--no-ferretdb needs --mongodb-uri")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
