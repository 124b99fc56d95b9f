#!/usr/bin/env python3
"""Client CPU of reading the last 20 messages of a 1,000-message thread, against its floors, in one run.

Usage::

    python scripts/profile_read.py --uri URI [--runs 30] [--ops 20] [--only NAME ...]
        [--profile NAME] [--top 40] [--before SRC] [--rounds 4]

Measured side by side, every operation in each run, the order rotating run by run; figures
are medians over runs of the per-operation mean, client CPU (``time.process_time``) and wall:

* ``ChatLedger warm`` / ``cold``: ``MongoChatMessageStore.list_messages(offset=-20)`` on the
  same store object / on a new store over the same client (what ``bench_documentdb.py`` times);
  ``Binding.read``: the ledger's read without the store around it.
* ``langchain-mongodb warm``: its ``messages`` with ``history_size=20`` (synchronous PyMongo:
  ``count_documents`` then a ``find`` with ``skip``).
* Bare driver calls for the same 2 events of ChatLedger's page (the query ``EventStore.page``
  sends), asynchronous (``AsyncMongoClient``) and synchronous (``MongoClient``): ``find`` and
  ``to_list``; ``find`` decoded as ``RawBSONDocument``; the ``find`` command run through
  ``db.command``; ``aggregate``; ``find_one`` by ``_id`` (one round trip, one document); and
  langchain-mongodb's own two queries (``count`` + ``find``, no JSON decoding).

``--before SRC`` (the ``src`` of another checkout, e.g. ``git archive main src``) runs the
measuring in child processes, alternating that tree and this one round by round, each child
measuring every operation itself, so ratios against the bare driver come from one process.
``--profile NAME`` runs cProfile over that operation and prints the top functions.
Only the given server is contacted; the database ``clread_<id>`` is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bson import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from pymongo import AsyncMongoClient, MongoClient  # noqa: E402

Op = Callable[[], Awaitable[None]]
PAGE, SIZE, TURN = 20, 1_000, 10
#: The projection and hint ``EventStore.page`` uses (copied: the script measures old trees too).
PROJECTION = {
    "first_message": 1,
    "count": 1,
    "messages": 1,
    "seq": 1,
    "thread_id": 1,
    "hash": 1,
    "removed": 1,
    "v": 1,
}
HINT = "thread_first_message"


async def seed(uri: str, name: str) -> dict[str, Any]:
    """A 1,000-message ChatLedger thread and langchain-mongodb session (bench_documentdb's seeding)."""
    from bench_documentdb import chatledger_thread, langchain_session
    from chatledger import Ledger

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    sync: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        ledger = Ledger(client[name])
        await ledger.ensure_indexes()
        state = await chatledger_thread(client[name], ledger, SIZE)
        lc = langchain_session(sync[name], SIZE)
    finally:
        await client.close()
        sync.close()
    return {"db": name, "cl": state, "lc": lc}


async def prepare(client: Any, sync: Any, handles: dict[str, Any]) -> dict[str, Op]:
    """Build every operation; each reads the same last page."""
    from langchain_mongodb import MongoDBChatMessageHistory

    from chatledger import Ledger, MongoChatMessageStore
    from chatledger.ledger import storage_of

    name, state, session = handles["db"], handles["cl"], handles["lc"]
    db, sdb = client[name], sync[name]
    events, sevents = storage_of(Ledger(db)).events.collection, sdb["events"]  # the gate's concerns
    ledger = Ledger(db)
    warm = MongoChatMessageStore(ledger)
    await warm.deserialize_state(state)
    binding = ledger.bind()
    position = await binding.resolve(state)
    thread_id = state["thread_id"]
    lo, hi = SIZE - PAGE, SIZE
    query = {"thread_id": thread_id, "first_message": {"$gte": lo, "$lt": hi}, "count": {"$gt": 0}}
    raw_events = events.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    first_id = f"{thread_id}#{SIZE // TURN}"
    history = MongoDBChatMessageHistory(
        None,
        session,
        database_name=name,
        collection_name="lc_history",
        client=sync,
        history_size=PAGE,
        create_index=False,
    )
    lc = sdb["lc_history"]
    want = PAGE // TURN

    async def cl_warm() -> None:
        assert len(await warm.list_messages(offset=-PAGE)) == PAGE

    async def cl_cold() -> None:
        store = MongoChatMessageStore(Ledger(db))
        await store.deserialize_state(state)
        assert len(await store.list_messages(offset=-PAGE)) == PAGE

    async def cl_binding() -> None:
        assert len(await binding.read(position, offset=-PAGE)) == PAGE

    async def cl_page() -> None:
        assert len(await storage_of(ledger).events.page(thread_id, lo, hi)) == want

    async def lc_warm() -> None:
        assert len(history.messages) == PAGE

    async def async_find() -> None:
        cursor = events.find(query, PROJECTION).sort("first_message", 1).hint(HINT).limit(PAGE)
        cursor = cursor.batch_size(256)
        assert len(await cursor.to_list(None)) == want

    async def async_find_bare() -> None:
        assert len(await events.find(query).to_list(None)) == want

    async def async_find_raw() -> None:
        cursor = raw_events.find(query, PROJECTION).sort("first_message", 1).hint(HINT).limit(PAGE)
        docs = await cursor.to_list(None)
        assert len(docs) == want
        assert docs[0]["count"] == TURN

    async def async_command() -> None:
        reply = await db.command(
            {
                "find": "events",
                "filter": query,
                "projection": PROJECTION,
                "sort": {"first_message": 1},
                "hint": HINT,
                "limit": PAGE,
                "singleBatch": True,
            }
        )
        assert len(reply["cursor"]["firstBatch"]) == want

    async def async_aggregate() -> None:
        cursor = await events.aggregate(
            [{"$match": query}, {"$sort": {"first_message": 1}}, {"$limit": PAGE}, {"$project": PROJECTION}],
            hint=HINT,
        )
        assert len(await cursor.to_list(None)) == want

    async def async_find_one() -> None:
        assert await events.find_one({"_id": first_id}) is not None

    async def sync_find() -> None:
        cursor = sevents.find(query, PROJECTION).sort("first_message", 1).hint(HINT).limit(PAGE)
        cursor = cursor.batch_size(256)
        assert len(cursor.to_list(None)) == want

    async def sync_find_one() -> None:
        assert sevents.find_one({"_id": first_id}) is not None

    async def lc_queries() -> None:
        skip = max(0, lc.count_documents({"SessionId": session}) - PAGE)
        assert len(list(lc.find({"SessionId": session}, skip=skip))) == PAGE

    async def async_lc_queries() -> None:
        alc = db["lc_history"]
        skip = max(0, await alc.count_documents({"SessionId": session}) - PAGE)
        assert len(await alc.find({"SessionId": session}, skip=skip).to_list(None)) == PAGE

    return {
        "ChatLedger warm": cl_warm,
        "ChatLedger cold": cl_cold,
        "Binding.read": cl_binding,
        "EventStore.page": cl_page,
        "langchain-mongodb warm": lc_warm,
        "async find (page query)": async_find,
        "async find (filter only)": async_find_bare,
        "async find RawBSON": async_find_raw,
        "async db.command(find)": async_command,
        "async aggregate": async_aggregate,
        "async find_one(_id)": async_find_one,
        "sync find (page query)": sync_find,
        "sync find_one(_id)": sync_find_one,
        "sync count+find (langchain's queries)": lc_queries,
        "async count+find (langchain's queries)": async_lc_queries,
    }


async def measure(
    uri: str, handles: dict[str, Any], runs: int, per: int, only: list[str], churn: int = 0
) -> dict[str, Any]:
    """Per-run CPU and wall (µs per operation) of every operation, interleaved run by run.

    ``churn``: before each timed operation, untimed, build that many small dicts (kept until
    the next one), as the benchmark's heavier peers (LangGraph) do between its samples.
    """
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    sync: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        ops = await prepare(client, sync, handles)
        if only:
            ops = {k: v for k, v in ops.items() if k in only}
        names = list(ops)
        cpu: dict[str, list[float]] = {n: [] for n in names}
        wall: dict[str, list[float]] = {n: [] for n in names}
        for name in names:  # warm-up: connections, caches, code paths
            for _ in range(5):
                await ops[name]()
        for run in range(runs):
            k = run % len(names)
            for name in names[k:] + names[:k]:
                op = ops[name]
                if churn:
                    junk = [{"i": i} for i in range(churn)]  # noqa: F841 - alive until replaced
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(per):
                    await op()
                cpu[name].append((time.process_time() - c0) / per * 1e6)
                wall[name].append((time.perf_counter() - w0) / per * 1e6)
        return {n: {"cpu": cpu[n], "wall": wall[n]} for n in names}
    finally:
        await client.close()
        sync.close()


async def profile(uri: str, handles: dict[str, Any], name: str, calls: int, top: int) -> None:
    """cProfile ``calls`` runs of one operation; print the top functions by own and cumulative time."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    sync: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        op = (await prepare(client, sync, handles))[name]
        for _ in range(5):
            await op()
        prof = cProfile.Profile(time.process_time)  # CPU, not wall: the server runs meanwhile
        prof.enable()
        for _ in range(calls):
            await op()
        prof.disable()
        stats = pstats.Stats(prof)
        for key in ("tottime", "cumulative"):
            print(f"--- {name}: {calls} calls, by {key}")
            stats.sort_stats(key).print_stats(top)
    finally:
        await client.close()
        sync.close()


def table(results: list[dict[str, Any]], labels: list[str]) -> None:
    """Print median CPU and wall per operation, each variant a column, and ratios to langchain's."""
    names = list(results[0])
    head = "| operation | " + " | ".join(f"{lab} CPU µs | {lab} wall µs" for lab in labels) + " |"
    print(head)
    print("|" + " --- |" * (1 + 2 * len(labels)))
    for n in names:
        cells = []
        for r in results:
            cells += [f"{statistics.median(r[n]['cpu']):.0f}", f"{statistics.median(r[n]['wall']):.0f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    for lab, r in zip(labels, results, strict=True):
        if "langchain-mongodb warm" not in r:
            continue
        base = statistics.median(r["langchain-mongodb warm"]["cpu"])
        floors = {
            "sync find": r.get("sync find (page query)"),
            "async find": r.get("async find (page query)"),
        }
        print(f"\n{lab}: CPU ÷ langchain-mongodb warm (÷ the bare finds of the same process)")
        for n in names:
            line = f"  {n}: {statistics.median(r[n]['cpu']) / base:.2f}×"
            for floor, sample in floors.items():
                if sample:
                    cpu = statistics.median(r[n]["cpu"]) / statistics.median(sample["cpu"])
                    line += f"  ÷ {floor} {cpu:.2f}×"
            print(line)


def merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for n, v in part.items():
        slot = into.setdefault(n, {"cpu": [], "wall": []})
        slot["cpu"] += v["cpu"]
        slot["wall"] += v["wall"]


def ab(args: argparse.Namespace, handles: dict[str, Any]) -> None:
    """Measure in child processes, alternating the ``--before`` tree and this one round by round."""
    spec = Path(f"/tmp/profile_read_{handles['db']}.json")
    spec.write_text(json.dumps(handles, default=str))
    trees = {"before": str(Path(args.before).resolve()), "after": str(HERE.parent / "src")}
    merged: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
    try:
        for rnd in range(args.rounds):
            for label in ["before", "after"] if rnd % 2 == 0 else ["after", "before"]:
                cmd = [sys.executable, __file__, "--uri", args.uri, "--child", str(spec)]
                cmd += ["--runs", str(args.runs), "--ops", str(args.ops)]
                cmd += ["--churn", str(args.churn)]
                if args.only:
                    cmd += ["--only", *args.only]
                env = {**os.environ, "PYTHONPATH": trees[label]}
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                merge(merged[label], json.loads(out.strip().splitlines()[-1]))
                print(f"  round {rnd + 1}: {label} measured", flush=True)
    finally:
        spec.unlink(missing_ok=True)
    table([merged["before"], merged["after"]], ["before", "after"])


async def drop(uri: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    await client.drop_database(name)
    await client.close()


def run(args: argparse.Namespace) -> int:
    """Seed, then measure (in this process, or A/B in children), or profile; drop the database."""
    if args.child:
        handles = json.loads(Path(args.child).read_text())
        print(json.dumps(asyncio.run(measure(args.uri, handles, args.runs, args.ops, args.only, args.churn))))
        return 0
    name = f"clread_{uuid.uuid4().hex[:8]}"
    handles = asyncio.run(seed(args.uri, name))
    try:
        if args.profile:
            asyncio.run(profile(args.uri, handles, args.profile, args.calls, args.top))
        elif args.before:
            ab(args, handles)
        else:
            table(
                [asyncio.run(measure(args.uri, handles, args.runs, args.ops, args.only, args.churn))],
                ["this tree"],
            )
    finally:
        asyncio.run(drop(args.uri, name))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", required=True, help="the server (FerretDB or DocumentDB) on 127.0.0.1")
    parser.add_argument("--runs", type=int, default=30, help="runs (every operation once per run)")
    parser.add_argument("--ops", type=int, default=20, help="calls per operation per run")
    parser.add_argument("--only", nargs="*", default=[], help="measure only these operations")
    parser.add_argument("--profile", help="cProfile this operation instead of measuring")
    parser.add_argument("--calls", type=int, default=500, help="calls under --profile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--before", help="another tree's src: A/B in alternating child processes")
    parser.add_argument("--rounds", type=int, default=4, help="child processes per tree under --before")
    parser.add_argument(
        "--churn", type=int, default=0, help="small dicts built (untimed) before each timed operation"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
