#!/usr/bin/env python3
"""ChatLedger and its peers side by side on DocumentDB (real indexes): what grows with the thread.

Usage::

    python scripts/bench_documentdb.py [--quick] [--pid-file FILE | --uri URI] [--out docs/benchmarks.md]
        [--parts pages,appends,replay,bytes,scale]
    python scripts/bench_documentdb.py --bytes-only [--ferretdb | --uri URI | --pid-file FILE]

Without ``--uri``/``--pid-file`` a throw-away DocumentDB (PostgreSQL 15 + FerretDB v2, built by
``make documentdb``) is started on 127.0.0.1 through ``scripts/documentdb.py`` (telemetry
disabled) and removed at the end; if it is not built, the script says so and exits 0.
``--pid-file`` reuses a server started with ``scripts/documentdb.py start --pid-file FILE``
(its PostgreSQL port lets the script run ``ANALYZE`` after seeding, as a server that has been
up for a while would have). The database ``cldoc_<run id>`` is dropped at the end.

Measured in one run, every system interleaved run by run (``bench.py``'s ``interleaved``):

* **Last 20 messages** of threads of 100, 1,000 and 100,000 messages (10-message turns), warm
  (same store object) and cold (new store object), wall and client CPU; the ratio
  "at 100,000 ÷ at 100" per system. ChatLedger also opens the thread at its head (no saved
  position: the head query) and reads the page. The raw row is the plain design
  ``find(thread).sort(seq: -1).limit(2)`` on ChatLedger's own collection.
* **Append a 2-message turn** to the thread of 100 and of 100,000 messages, and the ratio.
* **Read CPU** at 1,000 messages: ChatLedger's client CPU ÷ each peer's.
* **Replay of a thread over 48 MB** (22,000 messages of ~2.5 KB): ``list_messages()`` and
  ``stream_messages()`` on a new store, one after the other, each under ``tracemalloc``: both
  complete (the server's 48 MB reply limit is never reached: batches are bounded); the peak
  Python allocations of each, side by side.
* **At scale** (``--parts ...,scale``; not in the default run, it seeds ~1,000,000 events): a
  thread of 100 events and one of 100,000 events (2-message turns) among ~1,000,000 events in the
  database (the rest in threads of 500 events); the last 20 messages (same store, and a new
  store), 20 messages at a random offset, and an append, at 100,000 events ÷ at 100.
* **Bytes per message** of a mixed conversation (user and assistant text, tool calls and
  results, 1-10 messages a turn), unsealed and sealed, ÷ a minimal ``{session_id, role,
  content}`` document per message. Sealed three ways, side by side: the form written now
  (``cl4``), the form before it (``cl3``, still read) and ``cl4`` with ``compress=True``.
  ``--bytes-only`` measures just this table (a few seconds) and prints it; the sizes are
  the client-side BSON of the stored documents, so any server gives the same figures
  (``--ferretdb`` starts a throw-away FerretDB instead of DocumentDB).

Long threads are seeded in bulk with the documents each system writes (ChatLedger's events
chained and hashed exactly as ``Ledger`` writes them), so seeding does not dominate the run.
LangGraph stores the whole history in every checkpoint: it is measured up to 1,000
messages (building longer threads is quadratic). Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bson  # noqa: E402
from agent_framework import Content, Message  # noqa: E402
from pymongo import AsyncMongoClient, MongoClient  # noqa: E402

from bench import (  # noqa: E402 - scripts/bench.py
    PAGE,
    TURN,
    LangGraphSystem,
    Sample,
    conversation,
    fmt,
    interleaved,
    lc_messages,
    maf_messages,
    openai_items,
    say,
    sealed_ledger,
)
from chatledger import Ledger, MongoChatMessageStore  # noqa: E402
from chatledger.codec import encode_messages  # noqa: E402
from chatledger.hashing import event_hash  # noqa: E402

SECTION_START, SECTION_END = "<!-- documentdb:start -->", "<!-- documentdb:end -->"
#: Hand-written notes inside the section, kept when it is rewritten.
NOTES_START, NOTES_END = "<!-- documentdb-notes:start -->", "<!-- documentdb-notes:end -->"
#: The replay thread: more than FerretDB's 48 MB reply limit in all.
REPLAY_MESSAGES, REPLAY_TEXT = 22_000, 2_500
REPLAY_START, REPLAY_END = "<!-- documentdb-replay:start -->", "<!-- documentdb-replay:end -->"
#: The scale part: events in the database, in the long thread, in the short one, per filler thread.
SCALE_EVENTS, SCALE_BIG, SCALE_SMALL, SCALE_FILLER = 1_000_000, 100_000, 100, 500
SCALE_START, SCALE_END = "<!-- documentdb-scale:start -->", "<!-- documentdb-scale:end -->"
#: Blocks a run that did not measure them keeps as they were (a part not run, the notes).
KEPT_BLOCKS = ((REPLAY_START, REPLAY_END), (SCALE_START, SCALE_END), (NOTES_START, NOTES_END))
PARTS = ("pages", "appends", "replay", "bytes", "scale")
DEFAULT_PARTS = ("pages", "appends", "replay", "bytes")


@dataclass
class Plan:
    """Sizes and counts (``--quick`` shrinks them)."""

    sizes: tuple[int, ...] = (100, 1_000, 100_000)
    runs: int = 7
    append_runs: int = 7
    append_ops: int = 5
    replay: bool = True
    #: The 1,000,000-event part (``--parts ...,scale``).
    scale_events: int = SCALE_EVENTS
    scale_big: int = SCALE_BIG
    #: LangGraph stores the whole history at every turn; longer threads are not built.
    langgraph_max: int = 1_000

    @classmethod
    def quick(cls) -> Plan:
        """Smoke-sized (checks the script; not for publishing)."""
        return cls(
            sizes=(100, 1_000, 10_000),
            runs=3,
            append_runs=3,
            append_ops=2,
            replay=False,
            scale_events=20_000,
            scale_big=10_000,
        )


# --------------------------------------------------------------------------- seeding in bulk


async def chatledger_thread(db: Any, ledger: Ledger, size: int, *, text: str | None = None) -> dict[str, Any]:
    """A ``size``-message thread of ``TURN``-message events: the first appended, the rest chained in bulk.

    Every event is what ``Ledger`` writes after the first (same fields, ``prev_hash`` chain,
    ``hash`` by :func:`chatledger.hashing.event_hash`); a new store reads it like any thread.
    """
    store = MongoChatMessageStore(ledger)

    def turn(i: int) -> list[Message]:
        if text is None:
            return maf_messages(conversation(i, min(TURN, size - i)))
        return [Message("user" if k % 2 == 0 else "assistant", [text]) for k in range(min(TURN, size - i))]

    await store.add_messages(turn(0))
    state = await store.serialize_state()
    first = await db["events"].find_one({"thread_id": state["thread_id"]})
    assert first is not None
    first.pop("thread_digest", None)
    prev, seq, batch = first["hash"], 1, []
    for i in range(TURN, size, TURN):
        seq += 1
        messages = turn(i)
        doc = copy.copy(first)
        doc.update(
            _id=f"{first['thread_id']}#{seq}",
            seq=seq,
            first_message=i,
            count=len(messages),
            messages=encode_messages(messages),
            event_id=uuid.uuid4().hex,
            created_at=datetime.now(UTC),
            prev_hash=prev,
        )
        doc.pop("hash", None)
        doc["hash"] = prev = event_hash(prev, doc)
        batch.append(doc)
        if len(batch) == 1_000:
            await db["events"].insert_many(batch)
            batch = []
    if batch:
        await db["events"].insert_many(batch)
    return {**state, "offset": seq}


def _turn_pool(n: int = 64) -> list[list[dict[str, Any]]]:
    """``n`` stored 2-message turns (user question, assistant reply with its id), encoded once."""
    return [encode_messages(maf_messages(conversation(2 * k, 2))) for k in range(n)]


async def started_thread(db: Any, ledger: Ledger) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new thread's saved state and first event, appended by a store (thread document included)."""
    store = MongoChatMessageStore(ledger)
    await store.add_messages(maf_messages(conversation(0, 2)))
    state = await store.serialize_state()
    first = await db["events"].find_one({"thread_id": state["thread_id"]})
    assert first is not None
    first.pop("thread_digest", None)
    return state, first


def chained_events(first: dict[str, Any], events: int, pool: list[list[dict[str, Any]]]) -> Any:
    """Yield events 2 to ``events`` of ``first``'s thread: 2-message events, chained and hashed.

    Like :func:`chatledger_thread` (every event what ``Ledger`` writes), with the stored
    turns taken from ``pool`` so a million events are not encoded one by one.
    """
    prev, now = first["hash"], datetime.now(UTC)
    for seq in range(2, events + 1):
        doc = copy.copy(first)
        doc.update(
            _id=f"{first['thread_id']}#{seq}",
            seq=seq,
            first_message=2 * (seq - 1),
            count=2,
            messages=pool[seq % len(pool)],
            event_id=uuid.uuid4().hex,
            created_at=now,
            prev_hash=prev,
        )
        doc.pop("hash", None)
        doc["hash"] = prev = event_hash(prev, doc)
        yield doc


async def openai_session(db: Any, size: int) -> str:
    """An OpenAI Agents ``MongoDBSession`` of ``size`` items, as its ``add_items`` writes them."""
    from agents.extensions.memory import MongoDBSession

    session_id = uuid.uuid4().hex
    await MongoDBSession(session_id, client=db.client, database=db.name).add_items(
        openai_items(conversation(0, 2))
    )
    await db["agent_messages"].delete_many({"session_id": session_id})
    docs = []
    for i in range(0, size, TURN):
        items = openai_items(conversation(i, min(TURN, size - i)))
        docs.append(
            {
                "session_id": session_id,
                "seq": i + len(items) - 1,
                "generation": 0,
                "message_data": [json.dumps(it, separators=(",", ":")) for it in items],
            }
        )
    for k in range(0, len(docs), 2_000):
        await db["agent_messages"].insert_many(docs[k : k + 2_000])
    await db["agent_sessions"].update_one({"session_id": session_id}, {"$set": {"_seq": size}})
    return session_id


def langchain_session(sync_db: Any, size: int) -> str:
    """A langchain-mongodb history of ``size`` messages, one document each, as it writes them."""
    from langchain_core.messages import message_to_dict
    from langchain_mongodb import MongoDBChatMessageHistory

    session = uuid.uuid4().hex
    MongoDBChatMessageHistory(
        None, session, database_name=sync_db.name, collection_name="lc_history", client=sync_db.client
    )  # creates its SessionId index
    docs = [
        {"SessionId": session, "History": json.dumps(message_to_dict(m))}
        for m in lc_messages(conversation(0, size))
    ]
    for k in range(0, size, 5_000):
        sync_db["lc_history"].insert_many(docs[k : k + 5_000])
    return session


# --------------------------------------------------------------------------- the run


class Run:
    """One server, one database, every part in order."""

    def __init__(self, uri: str, plan: Plan, pg_port: int | None) -> None:
        self.plan = plan
        self.pg_port = pg_port
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.sync: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        name = f"cldoc_{uuid.uuid4().hex[:8]}"
        self.db = self.client[name]
        self.sync_db = self.sync[name]
        self.ledger = Ledger(self.db)
        self.results: dict[str, Any] = {}
        self.lines: list[str] = []

    def analyze(self) -> None:
        """``ANALYZE`` (PostgreSQL): fresh tables otherwise get plans made for empty ones."""
        if self.pg_port is None:
            say("  (no PostgreSQL port: ANALYZE skipped, plans may be a fresh collection's)")
            return
        import documentdb  # scripts/documentdb.py

        subprocess.run(documentdb.psql(self.pg_port, "ANALYZE"), check=True, capture_output=True, timeout=120)

    async def seed(self) -> dict[str, dict[int, Any]]:
        """Every system's threads of every size, in its own collections of one database."""
        await self.ledger.ensure_indexes()
        handles: dict[str, dict[int, Any]] = {
            "ChatLedger": {},
            "langchain-mongodb": {},
            "OpenAI Agents session": {},
            "LangGraph MongoDBSaver": {},
        }
        langgraph = LangGraphSystem(self)  # type: ignore[arg-type]
        for size in self.plan.sizes:
            t0 = time.perf_counter()
            handles["ChatLedger"][size] = await chatledger_thread(self.db, self.ledger, size)
            handles["langchain-mongodb"][size] = langchain_session(self.sync_db, size)
            handles["OpenAI Agents session"][size] = await openai_session(self.db, size)
            if size <= 1_000:
                handles["LangGraph MongoDBSaver"][size] = await langgraph.build(size)
            say(f"  seeded threads of {size:,} messages in {time.perf_counter() - t0:.1f} s")
        self.analyze()
        return handles

    # The attributes LangGraphSystem (scripts/bench.py) reads from its bench.
    @property
    def sync_client(self) -> Any:
        return self.sync

    def lc_history(self, session: str, history_size: int | None = None) -> Any:
        """A langchain-mongodb history of this database (its index already exists)."""
        from langchain_mongodb import MongoDBChatMessageHistory

        return MongoDBChatMessageHistory(
            None,
            session,
            database_name=self.db.name,
            collection_name="lc_history",
            client=self.sync,
            history_size=history_size,
            create_index=False,
        )

    async def pages(self, handles: dict[str, dict[int, Any]]) -> None:
        """Last 20 messages per size, every system interleaved; ratios biggest ÷ smallest."""
        from agents.extensions.memory import MongoDBSession

        langgraph = LangGraphSystem(self)  # type: ignore[arg-type]
        events = self.db["events"]
        table: dict[int, dict[str, Sample]] = {}
        for size in self.plan.sizes:
            cl = handles["ChatLedger"][size]
            warm_store = MongoChatMessageStore(self.ledger)
            await warm_store.deserialize_state(cl)
            lc, oa = handles["langchain-mongodb"][size], handles["OpenAI Agents session"][size]
            lc_warm = self.lc_history(lc, PAGE)
            oa_warm = MongoDBSession(oa, client=self.client, database=self.db.name)

            async def cl_warm(store: MongoChatMessageStore = warm_store) -> None:
                assert len(await store.list_messages(offset=-PAGE)) == PAGE

            async def cl_cold(state: dict[str, Any] = cl) -> None:
                store = MongoChatMessageStore(Ledger(self.db))
                await store.deserialize_state(state)
                assert len(await store.list_messages(offset=-PAGE)) == PAGE

            async def cl_open(thread_id: str = cl["thread_id"]) -> None:
                book = Ledger(self.db).bind()  # no saved position: the head query finds it
                assert len(await book.read(await book.head(thread_id), offset=-PAGE)) == PAGE

            async def raw(thread_id: str = cl["thread_id"]) -> None:
                docs = (
                    await events.find({"thread_id": thread_id})
                    .sort("seq", -1)
                    .limit(PAGE // TURN)
                    .to_list(None)
                )
                assert sum(d["count"] for d in docs) == PAGE

            async def lc_w(h: Any = lc_warm) -> None:
                assert len(h.messages) == PAGE

            async def lc_c(session: str = lc) -> None:
                assert len(self.lc_history(session, PAGE).messages) == PAGE

            async def oa_w(s: Any = oa_warm) -> None:
                assert len(await s.get_items(limit=PAGE)) == PAGE

            async def oa_c(session: str = oa) -> None:
                assert (
                    len(
                        await MongoDBSession(session, client=self.client, database=self.db.name).get_items(
                            limit=PAGE
                        )
                    )
                    == PAGE
                )

            ops = {
                "ChatLedger warm": (cl_warm, 1),
                "ChatLedger cold": (cl_cold, 1),
                "ChatLedger open at head": (cl_open, 1),
                "raw sort(seq: -1).limit": (raw, 1),
                "langchain-mongodb warm": (lc_w, 1),
                "langchain-mongodb cold": (lc_c, 1),
                "OpenAI Agents session warm": (oa_w, 1),
                "OpenAI Agents session cold": (oa_c, 1),
            }
            graph = handles["LangGraph MongoDBSaver"].get(size)
            if graph is not None:
                warm, cold = langgraph.page_ops(graph)
                ops["LangGraph MongoDBSaver warm"], ops["LangGraph MongoDBSaver cold"] = (warm, 1), (cold, 1)
            samples: dict[str, Sample] = {}
            await interleaved(ops, self.plan.runs, samples)
            table[size] = samples
            say(f"  [last {PAGE}] {size:,}: " + "; ".join(f"{k} {v.cell()} ms" for k, v in samples.items()))
        self.results["pages"] = table

    async def appends(self, handles: dict[str, dict[int, Any]]) -> None:
        """Append a 2-message turn at the smallest and the biggest size, interleaved."""
        from agents.extensions.memory import MongoDBSession

        turn = conversation(0, 2)
        ops: dict[str, tuple[Any, int]] = {}
        for size in (min(self.plan.sizes), max(self.plan.sizes)):
            store = MongoChatMessageStore(self.ledger)
            await store.deserialize_state(handles["ChatLedger"][size])
            msgs = maf_messages(turn)
            h = self.lc_history(handles["langchain-mongodb"][size])
            lc_turn = lc_messages(turn)
            s = MongoDBSession(
                handles["OpenAI Agents session"][size], client=self.client, database=self.db.name
            )
            oa_turn = openai_items(turn)

            async def cl(store: MongoChatMessageStore = store, msgs: list[Message] = msgs) -> None:
                await store.add_messages(msgs)

            async def lc(h: Any = h, m: Any = lc_turn) -> None:
                h.add_messages(m)

            async def oa(s: Any = s, items: Any = oa_turn) -> None:
                await s.add_items(items)

            ops[f"ChatLedger @{size}"] = (cl, self.plan.append_ops)
            ops[f"langchain-mongodb @{size}"] = (lc, self.plan.append_ops)
            ops[f"OpenAI Agents session @{size}"] = (oa, self.plan.append_ops)
        samples: dict[str, Sample] = {}
        await interleaved(ops, self.plan.append_runs, samples)
        self.results["appends"] = samples
        say("  [append a 2-message turn] " + "; ".join(f"{k} {v.cell()} ms" for k, v in samples.items()))

    async def replay(self) -> None:
        """A thread of more than 48 MB of events, replayed whole by a new store: listed, then streamed."""
        state = await chatledger_thread(self.db, self.ledger, REPLAY_MESSAGES, text="x" * REPLAY_TEXT)
        stored = 0
        async for doc in self.db["events"].find({"thread_id": state["thread_id"]}).batch_size(100):
            stored += len(bson.encode(doc))

        async def listed(store: MongoChatMessageStore) -> int:
            return len(await store.list_messages())

        async def streamed(store: MongoChatMessageStore) -> int:
            n = 0
            async for _ in store.stream_messages():
                n += 1
            return n

        out: dict[str, Any] = {"stored_mb": stored / 1e6}
        for name, replay in (("list_messages()", listed), ("stream_messages()", streamed)):
            error = None
            gc.collect()
            tracemalloc.start()
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                store = MongoChatMessageStore(Ledger(self.db))
                await store.deserialize_state(state)
                assert await replay(store) == REPLAY_MESSAGES
            except Exception as e:  # reported, not raised: the figure is whether it completes
                error = f"{type(e).__name__}: {e}"
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            out[name] = {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak, "error": error}
            say(
                f"  [replay] {REPLAY_MESSAGES:,} messages, {stored / 1e6:.1f} MB stored, {name}: "
                + (error or f"{wall:.2f} s wall, {cpu:.2f} s CPU (under tracemalloc), peak {peak:.1f} MB")
            )
        self.results["replay"] = out

    async def scale(self) -> None:
        """~1,000,000 events in the database: reads and appends at 100,000 events ÷ at 100."""
        await self.ledger.ensure_indexes()
        pool = _turn_pool()
        inflight: set[asyncio.Task[Any]] = set()

        async def sink(docs: list[dict[str, Any]]) -> None:
            # Inserts in flight while the next batch is built: the server's cores stay busy.
            while len(inflight) >= 3:
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    inflight.discard(task)
                    task.result()
            inflight.add(asyncio.create_task(self.db["events"].insert_many(docs, ordered=False)))

        big, small = self.plan.scale_big, SCALE_SMALL
        sizes = [small, big]
        while sum(sizes) < self.plan.scale_events:
            sizes.append(min(SCALE_FILLER, self.plan.scale_events - sum(sizes)))
        t0 = time.perf_counter()
        # Every thread starts with a real append (its thread document, its first event)...
        threads = [await started_thread(self.db, self.ledger) for _ in sizes]
        handles = {small: {**threads[0][0], "offset": small}, big: {**threads[1][0], "offset": big}}
        # ...then the rest is a bulk load: the events indexes are built after it, as a restore
        # would (inserting into six indexes runs ~7x slower here); the same indexes result.
        await self.db["events"].drop_indexes()
        batch: list[dict[str, Any]] = []
        for (_, first), n in zip(threads, sizes, strict=True):
            for doc in chained_events(first, n, pool):
                batch.append(doc)
                if len(batch) == 5_000:
                    await sink(batch)
                    batch = []
        if batch:
            await sink(batch)
        await asyncio.gather(*inflight)
        loaded = time.perf_counter() - t0
        await Ledger(self.db).ensure_indexes()  # a new ledger: its storage creates them again
        seeded = time.perf_counter() - t0
        counted = await self.db["events"].count_documents({})
        say(
            f"  [scale] {counted:,} events in the database ({len(sizes):,} threads):"
            f" loaded in {loaded:.0f} s, indexed in {seeded - loaded:.0f} s"
        )
        self.analyze()

        rng = random.Random(24)
        ops: dict[str, tuple[Any, int]] = {}
        turn = maf_messages(conversation(0, 2))
        for size in (small, big):
            state = handles[size]
            reader = MongoChatMessageStore(self.ledger)
            await reader.deserialize_state(state)
            writer = MongoChatMessageStore(self.ledger)
            await writer.deserialize_state(state)
            messages = 2 * size

            async def tail(store: MongoChatMessageStore = reader) -> None:
                assert len(await store.list_messages(offset=-PAGE)) == PAGE

            async def tail_new(state: dict[str, Any] = state) -> None:
                store = MongoChatMessageStore(Ledger(self.db))
                await store.deserialize_state(state)
                assert len(await store.list_messages(offset=-PAGE)) == PAGE

            async def page(store: MongoChatMessageStore = reader, messages: int = messages) -> None:
                offset = rng.randrange(0, messages - PAGE)
                assert len(await store.list_messages(offset=offset, limit=PAGE)) == PAGE

            async def append(store: MongoChatMessageStore = writer) -> None:
                await store.add_messages(turn)

            ops[f"tail read @{size}"] = (tail, self.plan.append_ops)
            ops[f"tail read, new store @{size}"] = (tail_new, self.plan.append_ops)
            ops[f"page read @{size}"] = (page, self.plan.append_ops)
            ops[f"append @{size}"] = (append, self.plan.append_ops)
        samples: dict[str, Sample] = {}
        await interleaved(ops, self.plan.runs, samples)
        self.results["scale"] = {
            "events": counted,
            "seeded": sum(sizes),
            "threads": len(sizes),
            "seed_s": seeded,
            "load_s": loaded,
            "small": small,
            "big": big,
            "samples": samples,
        }
        for line in scale_lines(self.results["scale"])[2:]:
            say("  " + line)

    async def bytes_per_message(self) -> None:
        """A mixed conversation (text, tool calls and results, 1-10 messages a turn) vs minimal documents."""
        rng = random.Random(7)
        turns: list[list[Message]] = []
        minimal: list[dict[str, Any]] = []
        session = uuid.uuid4().hex
        n = 0
        while n < 1_000:
            turn = [Message("user", [USER_QUESTIONS[n % len(USER_QUESTIONS)]])]
            for k in range(rng.randint(0, 4)):
                call_id = f"call_{uuid.uuid4().hex[:24]}"
                args = {"customer_id": f"C{rng.randint(1000, 9999)}", "fields": ["status", "eta"]}
                result = {
                    "status": rng.choice(["shipped", "delayed", "delivered"]),
                    "eta": f"2026-12-0{k + 1}",
                }
                turn.append(
                    Message(
                        "assistant", [Content.from_function_call(call_id, "lookup_order", arguments=args)]
                    )
                )
                turn.append(
                    Message("tool", [Content.from_function_result(call_id, result=json.dumps(result))])
                )
            turn.append(Message("assistant", [ANSWER.format(n=n)], message_id=f"msg_{uuid.uuid4().hex}"))
            turn = turn[:10]
            turns.append(turn)
            for m in turn:
                content = m.text or json.dumps([c.to_dict() for c in m.contents], separators=(",", ":"))
                minimal.append(
                    {"_id": bson.ObjectId(), "session_id": session, "role": str(m.role), "content": content}
                )
            n += len(turn)
        floor = sum(len(bson.encode(d)) for d in minimal) / len(minimal)
        out: dict[str, float] = {"minimal {session_id, role, content}": floor}
        examples: dict[str, dict[str, Any]] = {}
        for name, ledger, form in (
            ("ChatLedger unsealed", self.ledger, None),
            ("ChatLedger sealed, cl3 (the form before cl4)", sealed_ledger(self.db), "cl3"),
            ("ChatLedger sealed (cl4)", sealed_ledger(self.db), None),
            ("ChatLedger sealed (cl4), compress=True", sealed_ledger(self.db, compress=True), None),
        ):
            store = MongoChatMessageStore(ledger)
            with sealing_cl3() if form == "cl3" else contextlib.nullcontext():
                for turn in turns:
                    await store.add_messages(turn)
            thread = store.thread_id
            total = len(bson.encode(await self.db["threads"].find_one({"_id": thread}) or {}))
            async for doc in self.db["events"].find({"thread_id": thread}):
                total += len(bson.encode(doc))
                if doc["count"] == 6 and name not in examples:  # a typical turn: two tool calls
                    examples[name] = doc
            out[name] = total / len(minimal)
        self.results["bytes"] = out
        self.results["bytes_examples"] = examples
        say(
            "  [bytes per message] " + "; ".join(f"{k} {v:,.0f} B ({v / floor:.2f}×)" for k, v in out.items())
        )

    async def close(self) -> None:
        """Drop the database, close the clients."""
        with contextlib.suppress(Exception):
            await self.client.drop_database(self.db.name)
        await self.client.close()
        self.sync.close()


@contextlib.contextmanager
def sealing_cl3() -> Any:
    """Seal in the form written before ``cl4`` (readers still open it): the "before" row."""
    from chatledger.sealing.datakey import DataKey

    seal = DataKey.seal
    DataKey.seal = DataKey._seal_cl3  # type: ignore[method-assign]
    try:
        yield
    finally:
        DataKey.seal = seal  # type: ignore[method-assign]


USER_QUESTIONS = (
    "Where is my order? It was supposed to arrive on Monday.",
    "Can you check both of my open orders and tell me which one ships first?",
    "Thanks. And the refund for the express fee, has it gone through?",
)
ANSWER = (
    "I checked your orders (turn {n}): the first one left the regional hub this morning and should "
    "arrive tomorrow; the express fee was refunded to your card on file."
)


# --------------------------------------------------------------------------- output


def med(samples: dict[str, Sample], name: str, kind: str = "wall") -> float:
    """Median of one sample (NaN if absent)."""
    s = samples.get(name)
    return s.median(kind) if s is not None else float("nan")


def ratio(a: float, b: float) -> str:
    """``a ÷ b`` as text."""
    return "n/a" if a != a or b != b or b == 0 else f"{a / b:.2f}×"


def section(run: Run, meta: dict[str, Any]) -> list[str]:
    """The DocumentDB section of docs/benchmarks.md (also printed)."""
    r, sizes = run.results, run.plan.sizes
    small, big = min(sizes), max(sizes)
    pages: dict[int, dict[str, Sample]] = r["pages"]
    names = list(pages[small])
    lines = [
        SECTION_START,
        "## On DocumentDB (real indexes): ChatLedger and the peers side by side",
        "",
        "`scripts/bench_documentdb.py` (`make bench` runs it after the FerretDB run). Measured"
        f" {meta['date']}, run took {meta['seconds']:.0f} s"
        f"{' (--quick: smoke sizes)' if meta['quick'] else ''}.",
        f"Server on every row: {meta['server']}, on 127.0.0.1, one database, `ANALYZE` after seeding"
        f"{'' if run.pg_port else ' (skipped: no PostgreSQL port)'}. Medians of {run.plan.runs} interleaved"
        " runs (min–max); same machine and method as above.",
        "",
        f"### Last {PAGE} messages against thread length (wall ms, client CPU ms in brackets)",
        "",
        "| system (DocumentDB) | "
        + " | ".join(f"{s:,} msg" for s in sizes)
        + f" | {big:,} ÷ {small:,} (wall) |",
        "| --- |" + " --- |" * (len(sizes) + 1),
    ]
    for name in names:
        cells = [
            f"{pages[s][name].cell()} ({fmt(med(pages[s], name, 'cpu'))})" if name in pages[s] else "n/a"
            for s in sizes
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {ratio(med(pages[big], name), med(pages[small], name))} |"
        )
    mid = 1_000 if 1_000 in sizes else small
    lines += [
        "",
        f"Read CPU at {mid:,} messages, ChatLedger ÷ peer (client CPU, medians; goal ≤ 1.00×):",
        "",
        "| ChatLedger | " + " | ".join(n for n in names if not n.startswith(("ChatLedger", "raw"))) + " |",
        "| --- |" + " --- |" * len([n for n in names if not n.startswith(("ChatLedger", "raw"))]),
    ]
    for mine in ("ChatLedger warm", "ChatLedger cold"):
        row = [
            ratio(med(pages[mid], mine, "cpu"), med(pages[mid], n, "cpu"))
            for n in names
            if not n.startswith(("ChatLedger", "raw"))
        ]
        lines.append(f"| {mine} | " + " | ".join(row) + " |")
    ap: dict[str, Sample] = r["appends"]
    lines += [
        "",
        f"### Append a 2-message turn at {small:,} and at {big:,} messages",
        "",
        f"| system (DocumentDB) | @{small:,} wall ms (CPU) | @{big:,} wall ms (CPU) | {big:,} ÷ {small:,} |",
        "| --- | --- | --- | --- |",
    ]
    for system in ("ChatLedger", "langchain-mongodb", "OpenAI Agents session"):
        a, b = f"{system} @{small}", f"{system} @{big}"
        lines.append(
            f"| {system} | {ap[a].cell()} ({fmt(med(ap, a, 'cpu'))}) | {ap[b].cell()} "
            f"({fmt(med(ap, b, 'cpu'))}) | {ratio(med(ap, b), med(ap, a))} |"
        )
    lines += ["", *block(REPLAY_START, REPLAY_END, replay_lines(r["replay"]) if "replay" in r else [])]
    lines += ["", *block(SCALE_START, SCALE_END, scale_lines(r["scale"]) if "scale" in r else [])]
    lines += [
        "",
        "### Bytes per message: a mixed conversation (text, tool calls and results, 1–10 messages a turn)",
        "",
        *bytes_table(r["bytes"]),
        "",
        NOTES_START,
        NOTES_END,
        SECTION_END,
    ]
    return lines


def block(start: str, end: str, lines: list[str]) -> list[str]:
    """``lines`` between two markers (empty: the page keeps what it had there)."""
    return [start, *lines, end]


def replay_lines(rp: dict[str, Any], when: str = "") -> list[str]:
    """The replay paragraph: ``list_messages()`` and ``stream_messages()`` side by side."""
    out = [
        "### Replay of a thread over 48 MB (DocumentDB)",
        "",
        f"{when}{REPLAY_MESSAGES:,} messages of {REPLAY_TEXT:,} characters,"
        f" {rp['stored_mb']:.1f} MB of events,"
        " replayed whole by a new store, one after the other in one run (client CPU and peak Python"
        " allocations under tracemalloc):",
        "",
        "| replay | outcome | wall s | client CPU s | peak Python allocations |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("list_messages()", "stream_messages()"):
        m = rp[name]
        what = "the returned list" if name == "list_messages()" else "each message dropped once seen"
        out.append(
            f"| `{name}` ({what}) | {m['error'] or 'completes'} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} |"
            f" {m['peak_mb']:.1f} MB |"
        )
    listed, streamed = rp["list_messages()"]["peak_mb"], rp["stream_messages()"]["peak_mb"]
    out += ["", f"Peak memory, streamed ÷ listed: {ratio(streamed, listed)}."]
    return out


def scale_lines(sc: dict[str, Any], when: str = "") -> list[str]:
    """The scale table: each operation at the long thread ÷ at the short one."""
    samples: dict[str, Sample] = sc["samples"]
    small, big = sc["small"], sc["big"]
    out = [
        f"### {sc['events']:,} events in the database: {big:,} events in one thread ÷ {small:,}",
        "",
        f"{when}Threads of 2-message events: one of {small:,} events, one of {big:,}, and"
        f" {sc['seeded'] - small - big:,} more in {sc['threads'] - 2:,} threads of {SCALE_FILLER:,};"
        f" {sc['events']:,} events in the database in all, counted after seeding (other parts' threads"
        f" included). Seeded in {sc['seed_s']:.0f} s: an append starts each thread, the rest is a bulk"
        f" load ({sc['load_s']:.0f} s), then the events indexes are built; `ANALYZE` after."
        f" Reads of {PAGE} messages on a store at the thread's"
        " head (and on a new store from its saved state), a page at a random offset, an append of a"
        " 2-message turn. Goal: each within 1.50×.",
        "",
        f"| operation | @{small:,} events wall ms (CPU) | @{big:,} events wall ms (CPU)"
        f" | {big:,} ÷ {small:,} |",
        "| --- | --- | --- | --- |",
    ]
    for op in ("tail read", "tail read, new store", "page read", "append"):
        a, b = f"{op} @{small}", f"{op} @{big}"
        out.append(
            f"| {op} | {samples[a].cell()} ({fmt(med(samples, a, 'cpu'))}) | {samples[b].cell()}"
            f" ({fmt(med(samples, b, 'cpu'))}) | {ratio(med(samples, b), med(samples, a))} |"
        )
    return out


def _keep_blocks(block_text: str, old: str) -> str:
    """Fill every empty kept block of ``block_text`` with what ``old`` holds there."""
    for start, end in KEPT_BLOCKS:
        if start in old and end in old:
            kept = old.split(start, 1)[1].split(end, 1)[0]
            block_text = block_text.replace(start + "\n" + end, start + kept + end)
    return block_text


def write_blocks(path: Path, lines: list[str]) -> None:
    """Replace, in the page's DocumentDB section, only the kept blocks ``lines`` fills."""
    text = path.read_text()
    new = "\n".join(lines)
    for start, end in KEPT_BLOCKS:
        if start + "\n" + end in new or start not in new:
            continue
        inner = new.split(start, 1)[1].split(end, 1)[0]
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + start + inner + end + rest.split(end, 1)[1]
        else:  # a page written before the block existed: it goes before the notes
            text = text.replace(NOTES_START, start + inner + end + "\n\n" + NOTES_START, 1)
    path.write_text(text)


def write_section(path: Path, lines: list[str]) -> None:
    """Put the section into the page, replacing the previous one (or before the notes)."""
    text = path.read_text() if path.exists() else "# ChatLedger benchmarks\n"
    block = _keep_blocks("\n".join(lines), text)
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + block + rest.split(SECTION_END, 1)[1]
    elif "## What the numbers mean" in text:
        head, rest = text.split("## What the numbers mean", 1)
        text = head + block + "\n\n## What the numbers mean" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def bytes_table(bpm: dict[str, float]) -> list[str]:
    """The bytes-per-message table (markdown lines)."""
    floor = next(iter(bpm.values()))
    return [
        "| documents | BSON bytes per message | ÷ minimal (goal ≤ 1.50×) |",
        "| --- | --- | --- |",
        *[f"| {k} | {v:,.0f} | {v / floor:.2f}× |" for k, v in bpm.items()],
    ]


async def server_name(client: Any) -> str:
    """What the server reports itself as (DocumentDB behind FerretDB v2, or FerretDB 1.x)."""
    info = await client.admin.command("buildInfo")
    ferret = (info.get("ferretdb") or {}).get("version") or info.get("ferretdbVersion")
    if (info.get("ferretdb") or {}).get("version"):
        return f"DocumentDB (PostgreSQL 15) behind FerretDB {ferret}, reports MongoDB {info.get('version')}"
    if ferret:
        return f"FerretDB {ferret}, reports MongoDB {info.get('version')}"
    return f"MongoDB-compatible server, reports {info.get('version')}"


def start_documentdb(unbuilt: str) -> Any:
    """Start a throw-away DocumentDB, or say ``unbuilt`` and return ``None`` where it is not built."""
    import documentdb  # scripts/documentdb.py: 127.0.0.1 only, telemetry disabled

    if not documentdb.is_built(REPO_ROOT):
        say(unbuilt)
        return None
    server = documentdb.DocumentDBServer(documentdb.ensure_built(REPO_ROOT))
    server.start()
    return server


async def bytes_only(args: argparse.Namespace) -> int:
    """Measure and print only the bytes-per-message table (on any server: client-side BSON sizes)."""
    server: Any = None
    uri = args.uri or (args.pid_file["uri"] if args.pid_file else None)
    if not uri and args.ferretdb:
        from ferretdb import FerretDBServer  # scripts/ferretdb.py: 127.0.0.1 only, telemetry disabled

        server = FerretDBServer(repo_root=REPO_ROOT).start()
        uri = server.uri
    elif not uri:
        server = start_documentdb("DocumentDB is not built (`make documentdb`): use --ferretdb or --uri")
        if server is None:
            return 0
        uri = server.uri
    run = Run(uri, Plan.quick(), None)
    try:
        name = await server_name(run.client)
        say(f"== {name}")
        await run.bytes_per_message()
    finally:
        await run.close()
        if server is not None:
            server.close()
    print(f"\nBytes per message, mixed conversation; server: {name}\n")
    print("\n".join(bytes_table(run.results["bytes"])))
    print("\nWhere the bytes of one 6-message event go (BSON bytes, the event's messages summed):\n")
    print("\n".join(breakdown(run.results["bytes_examples"])))
    return 0


def breakdown(examples: dict[str, dict[str, Any]]) -> list[str]:
    """Bytes of each part of one event in every form (markdown lines): what sealing adds, where."""

    def element(name: str, value: Any) -> int:
        return len(bson.encode({name: value})) - 5  # type byte, name, value

    rows: dict[str, dict[str, int]] = {}
    for form, doc in examples.items():
        parts = rows.setdefault(form, {})
        parts["envelope (ids, hashes, scope, counts)"] = sum(
            element(k, v) for k, v in doc.items() if k != "messages"
        )
        parts["messages array and documents"] = element("messages", doc["messages"])
        for message in doc["messages"]:
            for k, v in message.items():
                key = f"message field {k!r}"
                if k == "ciphertext":
                    parts["ciphertext: nonce + tag"] = parts.get("ciphertext: nonce + tag", 0) + 28
                    key, v = "ciphertext: sealed plaintext (+ field overhead)", v[28:]
                parts[key] = parts.get(key, 0) + element(k, v)
        parts["messages array and documents"] -= sum(
            v for k, v in parts.items() if k.startswith(("message field", "ciphertext"))
        )
        parts["total"] = len(bson.encode(doc))
    names = list(rows)
    fields = [k for k in dict.fromkeys(k for r in rows.values() for k in r) if k != "total"] + ["total"]
    return [
        "| part | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
        *[f"| {f} | " + " | ".join(str(rows[n].get(f, 0)) for n in names) + " |" for f in fields],
    ]


async def amain(args: argparse.Namespace) -> int:
    """Start DocumentDB (unless given one), measure, print, write the section."""
    if args.bytes_only:
        return await bytes_only(args)
    plan = Plan.quick() if args.quick else Plan()
    parts = set(args.parts)
    started = time.perf_counter()
    server, uri, pg_port = None, args.uri, args.pg_port
    if args.pid_file:
        uri, pg_port = args.pid_file["uri"], args.pid_file.get("pg_port")
    if not uri:
        server = start_documentdb(
            "DocumentDB is not built (`make documentdb`, root on Debian 12): its benchmark is skipped"
        )
        if server is None:
            return 0
        uri, pg_port = server.uri, server.pg_port
    run = Run(uri, plan, pg_port)
    try:
        info = await run.client.admin.command("buildInfo")
        ferret = (info.get("ferretdb") or {}).get("version", "?")
        server_name = (
            f"DocumentDB (PostgreSQL 15) behind FerretDB {ferret}, reports MongoDB {info.get('version')}"
        )
        say(f"== {server_name}")
        if parts & {"pages", "appends"}:
            handles = await run.seed()
            if "pages" in parts:
                await run.pages(handles)
            if "appends" in parts:
                await run.appends(handles)
        if plan.replay and "replay" in parts:
            await run.replay()
        if "bytes" in parts:
            await run.bytes_per_message()
        if "scale" in parts:
            await run.scale()
    finally:
        await run.close()
        if server is not None:
            server.close()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "quick": args.quick,
        "server": server_name,
    }
    if {"pages", "appends", "bytes"} <= parts:
        lines = section(run, meta)
        print("\n".join(lines[1:-1]))
        if args.out:
            write_section(Path(args.out), lines)
    else:  # a partial run rewrites only the blocks it measured
        head = [f"({meta['server']}, {meta['date']}, {meta['seconds']:.0f} s)"]
        when = (
            f"Measured {meta['date']} by `--parts {','.join(args.parts)}`"
            f"{' (--quick: smoke sizes)' if args.quick else ''}, on {meta['server']}, 127.0.0.1. "
        )
        lines = [
            *head,
            *block(
                REPLAY_START,
                REPLAY_END,
                replay_lines(run.results["replay"], when) if "replay" in run.results else [],
            ),
        ]
        lines += block(
            SCALE_START, SCALE_END, scale_lines(run.results["scale"], when) if "scale" in run.results else []
        )
        print("\n".join(lines))
        if args.out:
            write_blocks(Path(args.out), lines)
        say(f"done in {meta['seconds']:.0f} s; wrote the DocumentDB section of {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", help="measure this DocumentDB instead of a throw-away one")
    parser.add_argument("--pg-port", type=int, help="with --uri: its PostgreSQL port (for ANALYZE)")
    parser.add_argument(
        "--pid-file", help="a server started by `scripts/documentdb.py start --pid-file FILE`"
    )
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (not for publishing)")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all but scale, which seeds"
        " ~1,000,000 events); without pages, appends and bytes only the replay and scale blocks of"
        " the page are rewritten",
    )
    parser.add_argument(
        "--bytes-only",
        action="store_true",
        help="measure and print only the bytes-per-message table (writes nothing)",
    )
    parser.add_argument(
        "--ferretdb", action="store_true", help="with --bytes-only: on a throw-away FerretDB, not DocumentDB"
    )
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "docs" / "benchmarks.md"),
        help="the page to write the section into ('' to only print)",
    )
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} (choose among {', '.join(PARTS)})")
    if args.pid_file:
        args.pid_file = json.loads(Path(args.pid_file).read_text())
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
