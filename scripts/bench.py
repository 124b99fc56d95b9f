#!/usr/bin/env python3
"""Benchmark ChatLedger against the raw driver and against peer stores, on one server, in one run.

Usage::

    python scripts/bench.py [--quick] [--sealing-only] [--mongodb-uri URI] [--out docs/benchmarks.md]
        [--json docs/benchmarks.json] [--plot docs/benchmarks.png]

Without a URI (or ``MONGODB_URI``) a throw-away FerretDB (SQLite back end) is started on
127.0.0.1 through ``scripts/ferretdb.py`` (telemetry disabled) and removed at the end. With
a URI, that server is measured instead. The database the script creates is named
``clbench_<run id>`` and dropped at the end. Nothing here contacts anything but the database
server; the peers are used as storage classes only (no model, no LLM API).

Method (what makes it fair):

* **One shared collection per system.** Every system keeps all its threads — every thread
  length measured, plus "other threads" of other conversations — in the collections it
  uses in production, in one database. Nothing is measured alone in its collection, so
  costs that grow with the collection (a scan) show, and a plot shows how each system's
  last-page cost grows with the thread and with the collection.
* **Interleaved.** Each run measures every system in turn (the order rotates run by run),
  so drift on a shared machine hits all of them alike. Figures are medians over runs, with
  the min–max spread; ratios are taken between medians of the same run set.
* **Cold and warm reads.** Warm: the same store object reads again (its caches are warm).
  Cold: a new store object (as in a new process; the connection pool is kept) reads.
* **Peers as their users use them.** LangGraph: one checkpoint per turn (``put``) after the
  turn's ``put_writes``, the whole ``messages`` channel in each checkpoint. OpenAI Agents
  SDK session: user items as sent, assistant items shaped like Responses API output
  (``id``, ``status``, ``output_text`` with ``annotations`` and ``logprobs``).
  langchain-mongodb: one document per message, as ``add_messages`` writes them.
* **Client CPU and wall time.** Every operation is timed with ``time.process_time`` (the
  client's CPU: the server runs in another process) and ``time.perf_counter`` (wall).
* **Sealing.** A sealed and an unsealed ChatLedger on one collection, interleaved in the
  same runs: append and last page, client CPU and wall, and the ratio (``--sealing-only``
  runs just this part).
* **Floors.** Append: ``Message.to_dict()`` of the batch plus a raw ``insert_one`` of the
  document ChatLedger stores. Replay: a raw ``find`` of the thread's events plus
  ``Message.from_dict`` of every message. Last page: a raw ``find`` of the newest events.

Bounded: fixed counts everywhere; the whole run takes a few minutes (``--quick``: about one).
LangGraph threads are capped in length (each turn stores the whole history again, so
building a long one is quadratic); the cap is stated in the output.
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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bson  # noqa: E402
from agent_framework import Message  # noqa: E402
from pymongo import AsyncMongoClient, MongoClient  # noqa: E402

from chatledger import Ledger, MongoChatMessageStore  # noqa: E402
from chatledger.codec import encode_messages  # noqa: E402

Op = Callable[[], Awaitable[Any]]

#: Messages per stored turn when building threads (an agent turn with its replies).
TURN = 10
PAGE = 20
USER_TEXT = "Could you look up the order status for customer {i} and summarise what changed since last week?"
ASSISTANT_TEXT = (
    "Order {i}: shipped on Tuesday, the carrier reports one delay at the regional hub; "
    "the customer was refunded the express fee. Two line items were back-ordered and will "
    "ship separately. No further action is needed unless the customer asks for a callback."
)
SYSTEMS = ("ChatLedger", "raw floor", "langchain-mongodb", "OpenAI Agents session", "LangGraph MongoDBSaver")
PEERS = SYSTEMS[2:]


# --------------------------------------------------------------------------- conversation data


def conversation(i: int, size: int) -> list[tuple[str, str, str | None]]:
    """``(role, text, id)`` of ``size`` alternating messages from ``i``; assistant replies have an id."""
    out: list[tuple[str, str, str | None]] = []
    for k in range(i, i + size):
        if k % 2 == 0:
            out.append(("user", USER_TEXT.format(i=k), None))
        else:
            out.append(("assistant", ASSISTANT_TEXT.format(i=k), f"msg_{uuid.uuid4().hex}{k:016x}"))
    return out


def maf_messages(items: Sequence[tuple[str, str, str | None]]) -> list[Message]:
    """The conversation as MAF messages (a model's reply carries its response message id)."""
    return [Message(role, [text], message_id=mid) for role, text, mid in items]


def openai_items(items: Sequence[tuple[str, str, str | None]]) -> list[Any]:
    """The conversation as OpenAI Agents SDK session items: input items, then model output items."""
    out: list[Any] = []
    for role, text, mid in items:
        if role == "user":
            out.append({"role": "user", "content": text})
        else:
            out.append(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }
            )
    return out


def lc_messages(items: Sequence[tuple[str, str, str | None]]) -> list[Any]:
    """The conversation as LangChain messages, with the ids LangGraph's ``add_messages`` assigns."""
    from langchain_core.messages import AIMessage, HumanMessage

    return [
        HumanMessage(content=t, id=str(uuid.uuid4()))
        if r == "user"
        else AIMessage(content=t, id=f"run-{mid}")
        for r, t, mid in items
    ]


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """Per-run means of one operation: wall and client-CPU milliseconds per operation."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        """Record one run."""
        self.wall.append(wall)
        self.cpu.append(cpu)

    def median(self, kind: str = "wall") -> float:
        """Median over runs of ``wall`` or ``cpu``."""
        values = getattr(self, kind)
        return statistics.median(values) if values else float("nan")

    def cell(self, kind: str = "wall") -> str:
        """Markdown cell: median (min–max)."""
        values = getattr(self, kind)
        if not values:
            return "n/a"
        med = fmt(statistics.median(values))
        return med if len(values) == 1 else f"{med} ({fmt(min(values))}–{fmt(max(values))})"


def fmt(ms: float) -> str:
    """Milliseconds, three significant figures."""
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


async def timed(op: Op, ops: int, cpu: Callable[[], float] = time.process_time) -> tuple[float, float]:
    """Run ``op`` ``ops`` times; return mean (wall ms, client CPU ms by the ``cpu`` clock) per call."""
    wall0, cpu0 = time.perf_counter(), cpu()
    for _ in range(ops):
        await op()
    return (time.perf_counter() - wall0) * 1000 / ops, (cpu() - cpu0) * 1000 / ops


async def interleaved(
    ops: dict[str, tuple[Op, int]],
    runs: int,
    samples: dict[str, Sample],
    cpu: Callable[[], float] = time.process_time,
) -> None:
    """Measure every operation in each run, rotating the order run by run (one warm-up each)."""
    names = list(ops)
    for name in names:
        await ops[name][0]()
    for run in range(runs):
        k = run % len(names)
        for name in names[k:] + names[:k]:
            op, count = ops[name]
            samples.setdefault(name, Sample()).add(*await timed(op, count, cpu))


def say(text: str) -> None:
    """Print progress immediately."""
    print(text, flush=True)


@dataclass
class Plan:
    """Sizes and counts (``--quick`` shrinks everything)."""

    runs: int = 5
    #: Runs of the page reads (each read scans the collection on FerretDB: the slow part).
    page_runs: int = 4
    sizes: tuple[int, ...] = (100, 1_000, 10_000)
    #: LangGraph stores the whole history at every turn; longer threads are not built.
    langgraph_max: int = 1_000
    #: Messages of other conversations added to every system's collection, stage by stage.
    other_stages: tuple[int, ...] = (0, 4_000, 10_000)
    other_thread: int = 100
    append_ops: int = 20
    peer_append_ops: int = 10
    langgraph_append_ops: int = 2
    #: The sealing comparison, (runs, operations per run) of appends and of page reads:
    #: one operation per run, so sealed and unsealed alternate operation by operation,
    #: and medians of hundreds of single operations, which resolve a few percent (means
    #: of a few operations scattered by ±10% here). A page read is slow on FerretDB (it
    #: scans the collection), hence fewer.
    sealing_appends: tuple[int, int] = (240, 1)
    sealing_pages: tuple[int, int] = (80, 1)

    @classmethod
    def quick(cls) -> Plan:
        """Smoke-sized (checks the script; not for publishing)."""
        return cls(
            runs=3,
            page_runs=3,
            sizes=(100, 1_000),
            langgraph_max=1_000,
            other_stages=(0, 2_000, 6_000),
            other_thread=20,
            append_ops=10,
            peer_append_ops=5,
            langgraph_append_ops=1,
            sealing_appends=(6, 1),
            sealing_pages=(4, 1),
        )


# --------------------------------------------------------------------------- systems


def floor_append_op(raw: Any, batch: list[Message]) -> Op:
    """The floor any MAF store pays per append: ``to_dict`` of the batch, one raw ``insert_one``.

    The inserted document is event-shaped (same fields and messages as ChatLedger's), so
    the comparison is of the work around the insert, not of document sizes.
    """
    template = {
        "_id": "x",
        "v": 2,
        "thread_id": uuid.uuid4().hex,
        "seq": 0,
        "first_message": 0,
        "count": len(batch),
        "messages": encode_messages(batch),
        "event_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC),
        "root_id": uuid.uuid4().hex,
        "source_id": "default",
        "prev_hash": "0" * 64,
        "hash": "0" * 64,
    }
    seq = iter(range(1, 10**9))

    async def op() -> None:
        # The floor any MAF store pays: to_dict() of the batch, one insert of the document.
        for m in batch:
            m.to_dict()
        n = next(seq)
        await raw.insert_one({**template, "_id": f"{template['thread_id']}#{n}", "seq": n})

    return op


class System:
    """One store under test, with all its threads in its own shared collection(s)."""

    name = ""
    collections: tuple[str, ...] = ()

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.db = bench.db
        #: Messages of conversations written so far (what the collection holds, logically).
        self.written = 0

    async def build(self, size: int) -> Any:
        """Write a ``size``-message conversation the way this system's users write it."""
        raise NotImplementedError

    async def fill(self, messages: int) -> None:
        """Add ``messages`` messages of other conversations (threads of ``plan.other_thread``)."""
        n = self.bench.plan.other_thread
        for _ in range(messages // n):
            await self.build(n)

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        """(warm, cold) reads of the last ``PAGE`` messages of a thread."""
        raise NotImplementedError

    async def append_op(self) -> Op:
        """An operation appending a 2-message turn to a thread of 100 messages."""
        raise NotImplementedError

    async def bytes_per_message(self, handle: Any, size: int) -> float:
        """BSON bytes stored for one thread, per message."""
        raise NotImplementedError

    async def collection_bytes(self) -> int:
        """BSON bytes of every document of this system's collections (what a scan reads)."""
        total = 0
        for name in self.collections:
            async for doc in self.db[name].find({}).batch_size(1000):
                total += len(bson.encode(doc))
        return total


class ChatLedgerSystem(System):
    """ChatLedger's ``MongoChatMessageStore`` (PyMongo async)."""

    name = "ChatLedger"
    collections = ("threads", "events")

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.ledger = Ledger(self.db)

    async def build(self, size: int) -> Any:
        self.written += size
        store = MongoChatMessageStore(self.ledger)
        for i in range(0, size, TURN):
            await store.add_messages(maf_messages(conversation(i, min(TURN, size - i))))
        return await store.serialize_state()

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        warm_store = MongoChatMessageStore(self.ledger)

        async def warm() -> None:
            if not hasattr(warm_store, "_bench_ready"):
                await warm_store.deserialize_state(handle)
                warm_store._bench_ready = True  # type: ignore[attr-defined]
            assert len(await warm_store.list_messages(offset=-PAGE)) == PAGE

        async def cold() -> None:
            store = MongoChatMessageStore(Ledger(self.db))  # empty caches: a new process
            await store.deserialize_state(handle)
            assert len(await store.list_messages(offset=-PAGE)) == PAGE

        return warm, cold

    async def append_op(self) -> Op:
        store = MongoChatMessageStore(self.ledger)
        for i in range(0, 100, TURN):
            await store.add_messages(maf_messages(conversation(i, TURN)))
        turn = maf_messages(conversation(0, 2))

        async def op() -> None:
            self.written += 2
            await store.add_messages(turn)

        return op

    async def bytes_per_message(self, handle: Any, size: int) -> float:
        thread = handle["thread_id"]
        total = 0
        async for doc in self.db["events"].find({"thread_id": thread}):
            total += len(bson.encode(doc))
        thread_doc = await self.db["threads"].find_one({"_id": thread})
        total += len(bson.encode(thread_doc or {}))
        return total / size

    def replay_op(self, handle: Any, size: int) -> Op:
        async def op() -> None:
            store = MongoChatMessageStore(self.ledger)
            await store.deserialize_state(handle)
            assert len(await store.list_messages()) == size

        return op


class RawFloor(System):
    """The raw driver on ChatLedger's own collection: what any store must at least pay."""

    name = "raw floor"
    collections = ("events",)

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        events = self.db["events"]
        thread = handle["thread_id"]

        async def page() -> None:
            docs = await events.find({"thread_id": thread}).sort("seq", -1).limit(PAGE // TURN).to_list(None)
            assert sum(d["count"] for d in docs) == PAGE

        return page, page

    def replay_op(self, handle: Any, size: int) -> Op:
        events = self.db["events"]
        thread = handle["thread_id"]

        async def op() -> None:
            out = []
            async for doc in events.find({"thread_id": thread}).sort("seq", 1).batch_size(1000):
                for m in doc["messages"]:
                    d: dict[str, Any] = {
                        "type": "message",
                        "role": m["role"],
                        "contents": [{"type": "text", "text": m["text"]}],
                    }
                    if "message_id" in m:
                        d["message_id"] = m["message_id"]
                    out.append(Message.from_dict(d))
            assert len(out) == size

        return op

    async def append_ops(self, size: int) -> Op:
        return floor_append_op(self.db["raw_events"], maf_messages(conversation(0, size)))


class LangchainSystem(System):
    """langchain-mongodb ``MongoDBChatMessageHistory``: one document per message (sync PyMongo)."""

    name = "langchain-mongodb"
    collections = ("lc_history",)

    def history(self, session: str) -> Any:
        from langchain_mongodb import MongoDBChatMessageHistory

        return MongoDBChatMessageHistory(
            None,
            session,
            database_name=self.db.name,
            collection_name="lc_history",
            client=self.bench.sync_client,
            history_size=PAGE,
        )

    async def build(self, size: int) -> Any:
        from langchain_core.messages import message_to_dict

        self.written += size
        session = uuid.uuid4().hex
        # Exactly the documents add_messages writes, inserted in bulk (one insert per message is slow).
        docs = [
            {"SessionId": session, "History": json.dumps(message_to_dict(m))}
            for m in lc_messages(conversation(0, size))
        ]
        for i in range(0, size, 1000):
            self.bench.sync_client[self.db.name]["lc_history"].insert_many(docs[i : i + 1000])
        return session

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        warm_history = self.history(handle)

        async def warm() -> None:
            assert len(warm_history.messages) == PAGE

        async def cold() -> None:
            assert len(self.history(handle).messages) == PAGE

        return warm, cold

    async def append_op(self) -> Op:
        session = await self.build(100)
        history = self.history(session)
        turn = lc_messages(conversation(0, 2))

        async def op() -> None:
            self.written += 2
            history.add_messages(turn)

        return op

    async def bytes_per_message(self, handle: Any, size: int) -> float:
        total = 0
        async for doc in self.db["lc_history"].find({"SessionId": handle}):
            total += len(bson.encode(doc))
        return total / size


class OpenAISystem(System):
    """OpenAI Agents SDK ``MongoDBSession`` (PyMongo async): one document per ``add_items`` batch."""

    name = "OpenAI Agents session"
    collections = ("agent_sessions", "agent_messages")

    def session(self, session_id: str) -> Any:
        from agents.extensions.memory import MongoDBSession

        return MongoDBSession(session_id, client=self.bench.client, database=self.db.name)

    async def build(self, size: int) -> Any:
        self.written += size
        session_id = uuid.uuid4().hex
        session = self.session(session_id)
        for i in range(0, size, TURN):
            await session.add_items(openai_items(conversation(i, min(TURN, size - i))))
        return session_id

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        warm_session = self.session(handle)

        async def warm() -> None:
            assert len(await warm_session.get_items(limit=PAGE)) == PAGE

        async def cold() -> None:
            assert len(await self.session(handle).get_items(limit=PAGE)) == PAGE

        return warm, cold

    async def append_op(self) -> Op:
        session = self.session(await self.build(100))
        turn = openai_items(conversation(0, 2))

        async def op() -> None:
            self.written += 2
            await session.add_items(turn)

        return op

    async def bytes_per_message(self, handle: Any, size: int) -> float:
        total = 0
        async for doc in self.db["agent_messages"].find({"session_id": handle}):
            total += len(bson.encode(doc))
        total += len(bson.encode(await self.db["agent_sessions"].find_one({"session_id": handle}) or {}))
        return total / size


class _Recording:
    """A stand-in for a PyMongo client that records what ``MongoDBSaver`` would write.

    Building a long LangGraph thread through the server costs one full collection scan per
    checkpoint on an engine that scans (each upsert looks its key up), which would dominate
    the whole benchmark; the saver writes the very same documents through this recorder,
    and they are inserted in bulk. Timed operations always use a real saver.
    """

    def __init__(self) -> None:
        self.docs: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, database: str) -> Any:
        return _RecordingDatabase(self)


class _RecordingDatabase:
    def __init__(self, recorder: _Recording) -> None:
        self.recorder = recorder

    def __getitem__(self, name: str) -> Any:
        return _RecordingCollection(self.recorder.docs.setdefault(name, []))


class _RecordingCollection:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def list_indexes(self) -> list[Any]:
        return []

    def create_index(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update_one(self, filter: dict[str, Any], update: dict[str, Any], upsert: bool = False) -> None:
        self.docs.append({**filter, **next(iter(update.values()))})

    def bulk_write(self, operations: list[Any]) -> None:
        for op in operations:
            self.update_one(op._filter, op._doc, upsert=True)


class LangGraphSystem(System):
    """LangGraph ``MongoDBSaver``: per turn, the turn's ``put_writes`` then a checkpoint of the state."""

    name = "LangGraph MongoDBSaver"
    collections = ("checkpoints", "checkpoint_writes")

    def saver(self) -> Any:
        from langgraph.checkpoint.mongodb import MongoDBSaver

        return MongoDBSaver(self.bench.sync_client, db_name=self.db.name)

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.main_saver = self.saver()
        self.recording = _Recording()

    def recording_saver(self) -> Any:
        from langgraph.checkpoint.mongodb import MongoDBSaver

        saver = MongoDBSaver.__new__(MongoDBSaver)
        MongoDBSaver.__init__(saver, self.recording, db_name="x")  # type: ignore[arg-type]
        return saver

    def flush(self) -> None:
        """Insert what the recording saver wrote, in bulk, into the real collections."""
        target = self.bench.sync_client[self.db.name]
        for name, docs in self.recording.docs.items():
            for i in range(0, len(docs), 200):
                target[name].insert_many(docs[i : i + 200])
            docs.clear()

    def turn(self, saver: Any, thread: dict[str, Any], new: list[Any]) -> None:
        """One graph step: the node's writes (``put_writes``), then the checkpoint holding the whole state."""
        from langgraph.checkpoint.base import empty_checkpoint

        config = thread["config"]
        if "checkpoint_id" in config["configurable"]:
            saver.put_writes(config, [("messages", new)], str(uuid.uuid4()))
        thread["messages"].extend(new)
        thread["step"] += 1
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": thread["messages"]}
        checkpoint["channel_versions"] = {"messages": thread["step"]}
        thread["config"] = saver.put(
            config,
            checkpoint,
            {"source": "loop", "step": thread["step"], "parents": {}},
            {"messages": thread["step"]},
        )

    def new_thread(self) -> dict[str, Any]:
        tid = uuid.uuid4().hex
        return {
            "id": tid,
            "config": {"configurable": {"thread_id": tid, "checkpoint_ns": ""}},
            "messages": [],
            "step": 0,
        }

    async def build(self, size: int) -> Any:
        if size > self.bench.plan.langgraph_max:
            return None
        self.written += size
        thread = self.new_thread()
        msgs = lc_messages(conversation(0, size))
        saver = self.recording_saver()
        for i in range(0, size, TURN):
            self.turn(saver, thread, msgs[i : i + TURN])
        self.flush()
        return thread

    def page_ops(self, handle: Any) -> tuple[Op, Op]:
        read_config = {"configurable": {"thread_id": handle["id"], "checkpoint_ns": ""}}

        def page(saver: Any) -> None:
            found = saver.get_tuple(read_config)
            assert found is not None
            assert len(found.checkpoint["channel_values"]["messages"][-PAGE:]) == PAGE

        async def warm() -> None:
            page(self.main_saver)

        async def cold() -> None:
            page(self.saver())

        return warm, cold

    async def append_op(self) -> Op:
        thread = await self.build(100)
        turn = lc_messages(conversation(0, 2))

        async def op() -> None:
            self.written += 2
            self.turn(self.main_saver, thread, turn)

        return op

    async def bytes_per_message(self, handle: Any, size: int) -> float:
        total = 0
        for name in self.collections:
            async for doc in self.db[name].find({"thread_id": handle["id"]}):
                total += len(bson.encode(doc))
        return total / size


# --------------------------------------------------------------------------- the benchmark


class Bench:
    """Runs every part against one server and keeps the figures."""

    def __init__(self, uri: str, plan: Plan) -> None:
        self.uri = uri
        self.plan = plan
        self.run_id = uuid.uuid4().hex[:8]
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.sync_client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.db = self.client[f"clbench_{self.run_id}"]
        self.results: dict[str, Any] = {}
        self.server: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}

    def keep(self, section: str, case: str, samples: dict[str, Sample]) -> None:
        """Record and print one measured case."""
        self.results.setdefault(section, {})[case] = {k: asdict(v) for k, v in samples.items()}
        cells = "; ".join(f"{k} {v.cell()} ms wall, {v.cell('cpu')} ms CPU" for k, v in samples.items())
        say(f"  [{section}] {case}: {cells}")

    async def run(self) -> None:
        """Every part, in order; each prints as it goes."""
        info = await self.client.admin.command("buildInfo")
        self.server = {"version": info.get("version"), "ferretdb": info.get("ferretdbVersion")}
        say(f"== server {self.server}")
        plan = self.plan
        systems: list[System] = [
            ChatLedgerSystem(self),
            RawFloor(self),
            LangchainSystem(self),
            OpenAISystem(self),
            LangGraphSystem(self),
        ]
        cl, floor = systems[0], systems[1]
        assert isinstance(cl, ChatLedgerSystem)
        assert isinstance(floor, RawFloor)
        stores = [s for s in systems if s is not floor]

        start = time.perf_counter()
        handles: dict[str, dict[int, Any]] = {s.name: {} for s in systems}
        for size in plan.sizes:
            for s in stores:
                t0 = time.perf_counter()
                handles[s.name][size] = await s.build(size)
                say(f"  built {s.name} {size:,} in {time.perf_counter() - t0:.1f} s")
            handles[floor.name][size] = handles[cl.name][size]
        self.seconds["build"] = time.perf_counter() - start

        # ---- last page against thread length (all sizes share each system's collection)
        start = time.perf_counter()
        for size in plan.sizes:
            ops: dict[str, tuple[Op, int]] = {}
            for s in systems:
                handle = handles[s.name][size]
                if handle is None:
                    continue
                warm, cold = s.page_ops(handle)
                ops[f"{s.name} warm"] = (warm, 1)
                if s is not floor:  # the raw query has no cache: cold is warm
                    ops[f"{s.name} cold"] = (cold, 1)
            samples: dict[str, Sample] = {}
            await interleaved(ops, plan.page_runs, samples)
            self.keep("last page vs thread length", str(size), samples)
        self.seconds["page"] = time.perf_counter() - start

        # ---- bytes per message (thread of the middle size)
        size = 1_000 if 1_000 in plan.sizes else plan.sizes[-1]
        self.results["bytes per message"] = {
            s.name: await s.bytes_per_message(handles[s.name][size], size)
            for s in stores
            if handles[s.name].get(size) is not None
        }
        say(f"  [bytes per message] {self.results['bytes per message']}")

        # ---- append
        start = time.perf_counter()
        for batch in (1, 10):
            store = MongoChatMessageStore(cl.ledger)
            await store.add_messages(maf_messages(conversation(0, batch)))  # thread creation is a one-off
            msgs = maf_messages(conversation(0, batch))

            cl.written += batch

            async def cl_op(store: MongoChatMessageStore = store, msgs: list[Message] = msgs) -> None:
                cl.written += len(msgs)
                await store.add_messages(msgs)

            samples = {}
            await interleaved(
                {
                    "ChatLedger": (cl_op, plan.append_ops),
                    "floor": (await floor.append_ops(batch), plan.append_ops),
                },
                plan.runs + 2,
                samples,
            )
            self.keep("append vs floor", f"batch of {batch}", samples)
        ops = {}
        for s in stores:
            count = plan.langgraph_append_ops if isinstance(s, LangGraphSystem) else plan.peer_append_ops
            ops[s.name] = (await s.append_op(), count)
        samples = {}
        await interleaved(ops, plan.runs, samples)
        self.keep("append a 2-message turn", "thread of 100+", samples)
        self.seconds["append"] = time.perf_counter() - start

        # ---- full replay
        start = time.perf_counter()
        size = plan.sizes[-1]
        samples = {}
        await interleaved(
            {
                "ChatLedger": (cl.replay_op(handles[cl.name][size], size), 1),
                "floor": (floor.replay_op(handles[cl.name][size], size), 1),
            },
            plan.runs,
            samples,
        )
        self.keep("full replay", f"{size:,} messages", samples)
        self.seconds["replay"] = time.perf_counter() - start

        # ---- last page of a 100-message thread against collection size
        start = time.perf_counter()
        done = 0
        base = min(plan.sizes)
        for stage in plan.other_stages:
            for s in stores:
                await s.fill(stage - done)
            done = stage
            sizes: dict[str, dict[str, int]] = {}
            for s in stores:
                sizes[s.name] = {"messages": s.written, "bytes": await s.collection_bytes()}
            sizes[floor.name] = sizes[cl.name]
            ops = {}
            for s in systems:
                warm, cold = s.page_ops(handles[s.name][base])
                ops[f"{s.name} warm"] = (warm, 1)
                if s is not floor:
                    ops[f"{s.name} cold"] = (cold, 1)
            samples = {}
            await interleaved(ops, plan.page_runs, samples)
            self.keep("last page vs collection size", str(stage), samples)
            self.results.setdefault("collection sizes", {})[str(stage)] = sizes
            say(f"  collection sizes after {stage:,} other messages: {sizes}")
        self.seconds["collection"] = time.perf_counter() - start

        await run_sealing(self)

    async def close(self) -> None:
        """Drop the database and close the clients."""
        with contextlib.suppress(Exception):
            await self.client.drop_database(self.db.name)
        await self.client.close()
        self.sync_client.close()


# --------------------------------------------------------------------------- sealing

#: The sealing comparison's turns: (case, user text, assistant reply). The long one is the
#: shape sealing costs most on per message (a long reply to open on every page).
SEALING_TURNS = (
    ("short turn (~100 + ~250 chars)", USER_TEXT.format(i=1), ASSISTANT_TEXT.format(i=2)),
    (
        "long turn (~300 B + ~1.5 KB)",
        "Could you summarise what we agreed about the quarterly report? " * 5,
        "Here is the summary of the points we agreed on, with the owners and dates. " * 20,
    ),
)
#: Turns (2-message events) of the thread whose last page is read.
SEALING_THREAD_TURNS = 20
#: The padding bucket floor whose stored size is reported (``Sealer(pad_to=...)``).
SEALING_PAD_TO = 256
#: The ledgers compared, and how each is configured: unsealed; sealed as configured by
#: default (a page read reuses the events it opened or sealed while their key is cached);
#: sealed keeping no opened event (every read decrypts: the cost of a first read).
SEALING_LEDGERS: dict[str, dict[str, Any] | None] = {
    "unsealed": None,
    "sealed": {},
    "sealed, every read decrypts": {"opened_events": 0},
}


def sealed_ledger(db: Any, **options: Any) -> Ledger:
    """A ledger sealing under a local KEK, its data key cached (a process's steady state)."""
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer

    return Ledger(
        db, sealer=Sealer(KeyStore(db), LocalKeyProvider(bytes(range(32))), cache_ttl=3600, **options)
    )


async def sealing_thread(ledger: Ledger, turn: list[Message], turns: int) -> MongoChatMessageStore:
    """A store on a new thread of ``turns`` 2-message events (a chat: one event per turn)."""
    store = MongoChatMessageStore(ledger, user_id="bench")
    for _ in range(turns):
        await store.add_messages(turn)
    return store


async def sealing_ops(ledger: Ledger, turn: list[Message]) -> tuple[Op, Op]:
    """(append a 2-message turn, read the last ``PAGE`` messages of a thread of 2-message turns)."""
    reader = await sealing_thread(ledger, turn, SEALING_THREAD_TURNS)
    writer = await sealing_thread(ledger, turn, SEALING_THREAD_TURNS)

    async def append() -> None:
        await writer.add_messages(turn)

    async def page() -> None:
        assert len(await reader.list_messages(offset=-PAGE)) == PAGE

    return append, page


async def stored_bytes_per_message(store: MongoChatMessageStore, db: Any) -> float:
    """BSON bytes of a store's thread's events, per message."""
    thread = store.thread_id
    total = count = 0
    async for doc in db["events"].find({"thread_id": thread}):
        total += len(bson.encode(doc))
        count += int(doc["count"])
    return total / count


async def run_sealing(bench: Bench) -> None:
    """Sealed vs unsealed ChatLedger, side by side: append and last page, client CPU and wall.

    The ledgers (:data:`SEALING_LEDGERS`) share one collection in a database of their own,
    new for each case (small: a page read on FerretDB scans the collection), measured
    interleaved in the same runs (:attr:`Plan.sealing_appends`, :attr:`Plan.sealing_pages`:
    one operation per run, the order rotating); the ratios are sealed ÷ unsealed of the
    medians. CPU is
    the event loop thread's (``time.thread_time``): the work of an operation, without the
    drivers' monitor threads, whose heartbeats would land in whichever operation waits
    longest on the server.
    """
    start = time.perf_counter()
    plan = bench.plan
    for case, user, reply in SEALING_TURNS:
        db = bench.client[f"{bench.db.name}_sealing"]
        try:
            ledgers = {
                name: Ledger(db) if options is None else sealed_ledger(db, **options)
                for name, options in SEALING_LEDGERS.items()
            }
            turn = [
                Message("user", [user]),
                Message("assistant", [reply], message_id=f"msg_{uuid.uuid4().hex}"),
            ]
            appends: dict[str, tuple[Op, int]] = {}
            pages: dict[str, tuple[Op, int]] = {}
            (append_runs, append_count), (page_runs, page_count) = plan.sealing_appends, plan.sealing_pages
            for name, ledger in ledgers.items():
                append, page = await sealing_ops(ledger, turn)
                appends[name], pages[name] = (append, append_count), (page, page_count)
            for operation, ops, runs in (("append", appends, append_runs), ("last page", pages, page_runs)):
                samples: dict[str, Sample] = {}
                await interleaved(ops, runs, samples, cpu=time.thread_time)
                bench.keep("sealing", f"{case}: {operation}", samples)
                for name in list(ledgers)[1:]:
                    cpu, wall = (
                        samples[name].median(k) / samples["unsealed"].median(k) for k in ("cpu", "wall")
                    )
                    say(
                        f"  [sealing] {case}: {operation}: {name} ÷ unsealed "
                        f"client CPU {cpu:.2f}×, wall {wall:.2f}×"
                    )
            sizes = {
                name: await stored_bytes_per_message(await sealing_thread(ledger, turn, 10), db)
                for name, ledger in {
                    "unsealed": ledgers["unsealed"],
                    "sealed": ledgers["sealed"],
                    f"sealed, pad_to={SEALING_PAD_TO}": sealed_ledger(db, pad_to=SEALING_PAD_TO),
                }.items()
            }
            bench.results.setdefault("sealing bytes per message", {})[case] = sizes
            say(f"  [sealing] {case}: stored bytes per message {sizes}")
        finally:
            await bench.client.drop_database(db.name)
    bench.seconds["sealing"] = time.perf_counter() - start


def sealing_lines(results: dict[str, Any]) -> list[str]:
    """The sealing section of the benchmarks page (nothing if it was not measured)."""
    data = results.get("sealing")
    if not data:
        return []

    def measured(operation: str) -> int:
        # Counted from the samples, so a --quick page states its own counts.
        return max(
            (len(s["unsealed"]["cpu"]) for c, s in data.items() if c.endswith(f": {operation}")), default=0
        )

    lines = [
        "",
        "## Sealing: sealed vs unsealed ChatLedger (same runs, interleaved)",
        "",
        "Ledgers on one collection: unsealed; sealed (`Sealer`, local KEK, data key cached; a page read",
        "reuses the events it opened or sealed while their key is cached); sealed keeping no opened event",
        "(`opened_events=0`: every read decrypts, the cost of a first read). A chat of 2-message turns",
        f"(one event each). Append: `add_messages` of a turn to a thread of {2 * SEALING_THREAD_TURNS}+",
        f"messages; last page: `list_messages(offset=-{PAGE})` of a {2 * SEALING_THREAD_TURNS}-message",
        "thread (warm store). CPU: the event loop thread's (`time.thread_time`, without the drivers'",
        "monitor threads). Each ledger's operations alternate with the others' one by one, the order",
        f"rotating ({measured('append')} appends and {measured('last page')} page reads per ledger);"
        " figures are medians of single operations",
        "(min–max). Ratios: medians ÷ the unsealed median of the same runs. The two sealed ledgers append",
        "by the same code: the gap between their append ratios shows the noise.",
        "",
        "| case | ledger | client CPU ms | CPU ÷ unsealed | wall ms | wall ÷ unsealed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case, s in data.items():
        for name in s:
            lines.append(
                f"| {case} | {name} | {cell(s, name, 'cpu')} | "
                f"{ratio(med(s, name, 'cpu'), med(s, 'unsealed', 'cpu'))} | {cell(s, name)} | "
                f"{ratio(med(s, name), med(s, 'unsealed'))} |"
            )
    sizes = results.get("sealing bytes per message", {})
    if sizes:
        names = list(next(iter(sizes.values())))
        lines += [
            "",
            "Stored BSON bytes per message (the events of a 20-message thread ÷ 20):",
            "",
            "| turn | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names),
            *[
                f"| {case} | " + " | ".join(f"{row[n]:,.0f}" for n in names) + " |"
                for case, row in sizes.items()
            ],
        ]
    return lines


# --------------------------------------------------------------------------- output


def versions() -> dict[str, str]:
    """Versions of every package the figures depend on."""
    out = {"python": platform.python_version()}
    for dist in (
        "chatledger",
        "pymongo",
        "orjson",
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
    return {"os": platform.platform(), "cpu": cpu, "cores": os.cpu_count()}


def med(samples: dict[str, Any], name: str, kind: str = "wall") -> float:
    """Median of a recorded sample (NaN if absent)."""
    s = samples.get(name)
    return statistics.median(s[kind]) if s and s[kind] else float("nan")


def cell(samples: dict[str, Any], name: str, kind: str = "wall") -> str:
    """Markdown cell of a recorded sample."""
    s = samples.get(name)
    return Sample(**s).cell(kind) if s else "n/a"


def ratio(a: float, b: float) -> str:
    """``a ÷ b`` as text."""
    if a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def write_plot(path: Path, results: dict[str, Any], plan: Plan) -> bool:
    """Last-page cost against thread length and against collection size, one line per system."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("  (matplotlib not installed: no plot)")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    by_len = results["last page vs thread length"]
    by_coll = results["last page vs collection size"]
    sizes = results["collection sizes"]
    for i, system in enumerate(SYSTEMS):
        colour = f"C{i}"
        for temp, style in (("warm", "-"), ("cold", "--")):
            name = f"{system} {temp}"
            xs = [int(k) for k in by_len if name in by_len[k]]
            ys = [med(by_len[str(x)], name) for x in xs]
            if xs and not (system == "raw floor" and temp == "cold"):
                axes[0].plot(xs, ys, style, marker="o", color=colour, label=f"{system} ({temp})")
            xs2 = [sizes[k][system]["messages"] for k in by_coll if name in by_coll[k]]
            ys2 = [med(by_coll[k], name) for k in by_coll if name in by_coll[k]]
            if xs2 and not (system == "raw floor" and temp == "cold"):
                axes[1].plot(xs2, ys2, style, marker="o", color=colour, label=f"{system} ({temp})")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="messages in the thread",
        ylabel=f"last {PAGE} messages, wall ms",
        title="Last page vs thread length",
    )
    axes[1].set(
        yscale="log",
        xlabel=f"messages in the system's collection (page of a {min(plan.sizes)}-message thread)",
        ylabel=f"last {PAGE} messages, wall ms",
        title="Last page vs collection size",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("FerretDB 1.24.2 (SQLite), one run, medians; solid warm, dashed cold", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"
#: The section scripts/bench_documentdb.py writes: kept as it is when this page is rewritten.
DOCUMENTDB_START, DOCUMENTDB_END = "<!-- documentdb:start -->", "<!-- documentdb:end -->"


def kept_section(path: Path) -> list[str]:
    """The DocumentDB section of an existing page (``[]`` if it has none)."""
    with contextlib.suppress(OSError):
        text = path.read_text()
        if DOCUMENTDB_START in text and DOCUMENTDB_END in text:
            inner = text.split(DOCUMENTDB_START, 1)[1].split(DOCUMENTDB_END, 1)[0]
            return ["", DOCUMENTDB_START + inner + DOCUMENTDB_END]
    return []


def kept_notes(path: Path) -> str:
    """The hand-written notes of an existing page, so a re-run keeps them."""
    try:
        text = path.read_text()
    except OSError:
        return "(notes to be written from the figures)"
    if NOTES_START in text and NOTES_END in text:
        return text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip()
    return "(notes to be written from the figures)"


def write_markdown(
    path: Path, meta: dict[str, Any], results: dict[str, Any], plot: str | None, notes: str
) -> None:
    """The benchmarks page: method, tables, plot, notes."""
    v = meta["versions"]
    m = meta["machine"]
    lines = [
        "# ChatLedger benchmarks",
        "",
        "<!-- Generated by scripts/bench.py; the notes section is written by hand from the figures. -->",
        "",
        f"Reproduce: `make bench` (or `{meta['command']}`). Measured {meta['date']}, run took "
        f"{meta['seconds']:.0f} s{' (--quick: smoke sizes, not for publishing)' if meta['quick'] else ''}.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['os']}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"- Server: {meta['server']}, on 127.0.0.1, same run.",
        "",
        "Method: every system keeps all its threads (all lengths below, plus other conversations) in",
        "its own shared collection(s) in one database; each run measures every system in turn (order",
        "rotating), figures are medians over runs with the min–max spread, and ratios are between",
        "medians of the same runs. *Wall* is elapsed time; *CPU* is the client process's CPU time",
        "(`time.process_time`; the server is another process). *Warm*: the same store object reads",
        "again; *cold*: a new store object (new caches, as in a new process; same connection pool).",
        f"Threads are written in turns of {TURN} messages (user and assistant alternating, ~100 and",
        "~250 characters; assistant replies carry a response id). LangGraph writes one checkpoint per",
        "turn after that turn's `put_writes`; its threads stop at "
        f"{meta['plan']['langgraph_max']:,} messages",
        "(each checkpoint holds the whole history, so building longer ones is quadratic).",
        "",
    ]
    if plot:
        lines += [f"![last page cost against thread length and collection size]({plot})", ""]

    ap = results["append vs floor"]
    lines += [
        "## Append: ChatLedger `add_messages` vs the floor",
        "",
        "Floor: `Message.to_dict()` of the batch + raw `insert_one` of the document ChatLedger stores.",
        "",
        "| batch | ChatLedger wall ms | floor wall ms | wall ratio | ChatLedger CPU ms | floor CPU ms "
        "| CPU ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, s in ap.items():
        lines.append(
            f"| {case} | {cell(s, 'ChatLedger')} | {cell(s, 'floor')} | "
            f"{ratio(med(s, 'ChatLedger'), med(s, 'floor'))} | {cell(s, 'ChatLedger', 'cpu')} | "
            f"{cell(s, 'floor', 'cpu')} | {ratio(med(s, 'ChatLedger', 'cpu'), med(s, 'floor', 'cpu'))} |"
        )
    rp = results["full replay"]
    lines += [
        "",
        "## Full replay: ChatLedger `list_messages()` vs raw `find` + `Message.from_dict`",
        "",
        "| thread | ChatLedger wall ms | floor wall ms | rate ratio (floor ÷ ChatLedger time) | "
        "ChatLedger CPU ms | floor CPU ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case, s in rp.items():
        lines.append(
            f"| {case} | {cell(s, 'ChatLedger')} | {cell(s, 'floor')} | "
            f"{ratio(med(s, 'floor'), med(s, 'ChatLedger'))} | {cell(s, 'ChatLedger', 'cpu')} | "
            f"{cell(s, 'floor', 'cpu')} |"
        )
    bpm = results["bytes per message"]
    lines += [
        "",
        "## Bytes stored per message (BSON of one 1,000-message thread's documents ÷ 1,000)",
        "",
        "| system | bytes per message |",
        "| --- | --- |",
        *[f"| {k} | {val:,.0f} B |" for k, val in bpm.items()],
    ]
    tl = results["append a 2-message turn"]["thread of 100+"]
    lines += [
        "",
        "## Append a 2-message turn (threads of 100 messages, growing)",
        "",
        "| system | wall ms | client CPU ms | wall ÷ ChatLedger |",
        "| --- | --- | --- | --- |",
    ]
    for name in tl:
        lines.append(
            f"| {name} | {cell(tl, name)} | {cell(tl, name, 'cpu')} | "
            f"{ratio(med(tl, name), med(tl, 'ChatLedger'))} |"
        )
    for section, label in (
        ("last page vs thread length", "messages in the thread"),
        ("last page vs collection size", "other messages in the collection"),
    ):
        data = results[section]
        lines += [
            "",
            f"## Last {PAGE} messages: {section.removeprefix('last page vs ')}",
            "",
            f"Cells: wall ms (client CPU ms). Columns: {label}.",
            "",
            "| system | " + " | ".join(f"{int(k):,}" for k in data) + " |",
            "| --- |" + " --- |" * len(data),
        ]
        for system in SYSTEMS:
            for temp in ("warm", "cold"):
                name = f"{system} {temp}"
                if system == "raw floor" and temp == "cold":
                    continue
                row = [
                    f"{cell(data[k], name)} ({fmt(med(data[k], name, 'cpu'))})" if name in data[k] else "n/a"
                    for k in data
                ]
                lines.append(f"| {name} | " + " | ".join(row) + " |")
    if "collection sizes" in results:
        lines += ["", "Collection sizes at each stage (messages, MB of BSON a scan reads):", ""]
        for stage, sizes in results["collection sizes"].items():
            parts = [f"{k} {val['messages']:,} msg / {val['bytes'] / 1e6:.1f} MB" for k, val in sizes.items()]
            lines.append(f"- +{int(stage):,} other messages: " + "; ".join(parts))
    lines += sealing_lines(results)
    lines += kept_section(path)
    lines += ["", "## What the numbers mean", "", NOTES_START, notes, NOTES_END, ""]
    path.write_text("\n".join(lines))


def write_outputs(
    args: argparse.Namespace, meta: dict[str, Any], results: dict[str, Any], plan: Plan
) -> None:
    """Write the JSON figures, the plot and the page (keeping the page's hand-written notes)."""
    out = Path(args.out)
    notes = kept_notes(out)
    Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    plot_path = Path(args.plot)
    plotted = write_plot(plot_path, results, plan)
    rel = os.path.relpath(plot_path, out.parent) if plotted else None
    write_markdown(out, meta, results, rel, notes)
    say(
        f"done in {meta['seconds']:.0f} s; wrote {args.out}, {args.json}"
        + (f", {args.plot}" if plotted else "")
    )


async def amain(args: argparse.Namespace) -> int:
    """Start FerretDB (unless a URI is given), measure, write the outputs."""
    plan = Plan.quick() if args.quick else Plan()
    started = time.perf_counter()
    server = None
    uri = args.mongodb_uri
    if not uri:
        from ferretdb import FerretDBServer  # scripts/ferretdb.py

        # FerretDBServer is the one place that starts FerretDB: 127.0.0.1 only,
        # --telemetry=disable and DO_NOT_TRACK=1, so the benchmark never reports home.
        server = FerretDBServer(repo_root=REPO_ROOT).start()
        uri = server.uri
    bench = Bench(uri, plan)
    try:
        if args.sealing_only:
            await run_sealing(bench)  # printed as it goes; no page is written
            return 0
        await bench.run()
    finally:
        await bench.close()
        if server is not None:
            server.close()
    flavour = (
        f"FerretDB {bench.server['ferretdb']} (SQLite back end)"
        if bench.server.get("ferretdb")
        else "MongoDB"
    )
    meta = {
        "command": ".venv-bench/bin/python scripts/bench.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "part_seconds": bench.seconds,
        "quick": args.quick,
        "plan": asdict(plan),
        "machine": machine(),
        "versions": versions(),
        "server": f"{flavour}, reports MongoDB {bench.server['version']}",
    }
    write_outputs(args, meta, bench.results, plan)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mongodb-uri",
        default=os.environ.get("MONGODB_URI"),
        help="measure this server instead of a throw-away FerretDB (default: $MONGODB_URI)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke-sized run (about a minute; not for publishing)"
    )
    parser.add_argument(
        "--sealing-only",
        action="store_true",
        help="only the sealed vs unsealed comparison; print it, write nothing",
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--json", default=str(REPO_ROOT / "docs" / "benchmarks.json"))
    parser.add_argument("--plot", default=str(REPO_ROOT / "docs" / "benchmarks.png"))
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
