#!/usr/bin/env python3
"""Measure (and optionally profile) ChatLedger's append against the append floor, in one run.

Usage::

    python scripts/profile_append.py --mongodb-uri URI [--batch 1 10] [--runs 40] [--ops 20]
        [--profile store|binding] [--top 40]

The floor is what any Agent Framework store pays: ``Message.to_dict()`` of the batch plus a
raw ``insert_one`` of a document shaped like the one ChatLedger stores, through the same
client (as in ``scripts/bench.py``). ChatLedger is measured through the message store
(``MongoChatMessageStore.add_messages``, what the benchmark times) and through the
``Binding.append`` API. Each run times every operation in turn, the order rotating run by
run; figures are medians over runs of the per-operation mean, client CPU
(``time.process_time``) next to wall time. Nothing but the given server is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# chatledger from PYTHONPATH (or the installed package), as bench.py: a base tree can be compared.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pymongo import AsyncMongoClient

import bench
from chatledger import MongoChatMessageStore
from chatledger._maf import Message
from chatledger.ledger import Ledger, Position

Op = Callable[[], Awaitable[None]]


def batch_of(size: int) -> list[Message]:
    """The benchmark's batch of ``size`` messages (``scripts/bench.py``)."""
    return bench.maf_messages(bench.conversation(0, size))


def floor_op(db: Any, batch: list[Message]) -> Op:
    """``to_dict`` of the batch plus one raw ``insert_one`` of an event-shaped document (bench's floor)."""
    return bench.floor_append_op(db["raw_events"], batch)


async def store_op(ledger: Ledger, batch: list[Message]) -> Op:
    """``MongoChatMessageStore.add_messages`` on an existing thread (what bench.py times)."""
    store = MongoChatMessageStore(ledger)
    await store.add_messages(batch)  # thread creation is a one-off

    async def op() -> None:
        await store.add_messages(batch)

    return op


async def binding_op(ledger: Ledger, batch: list[Message]) -> Op:
    """``Binding.append`` carrying its position forward, on an existing thread."""
    binding = ledger.bind()
    position: Position = (await binding.append(binding.empty(uuid.uuid4().hex), batch)).position

    async def op() -> None:
        nonlocal position
        position = (await binding.append(position, batch)).position

    return op


async def timed(op: Op, ops: int) -> tuple[float, float]:
    """Mean (wall µs, CPU µs) per call over ``ops`` calls."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(ops):
        await op()
    return (time.perf_counter() - wall0) * 1e6 / ops, (time.process_time() - cpu0) * 1e6 / ops


async def measure(ops: dict[str, Op], runs: int, count: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per-run means of every operation, interleaved, the order rotating run by run."""
    names = list(ops)
    out: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for name in names:  # warm-up
        for _ in range(5):
            await ops[name]()
    for run in range(runs):
        k = run % len(names)
        for name in names[k:] + names[:k]:
            wall, cpu = await timed(ops[name], count)
            out[name][0].append(wall)
            out[name][1].append(cpu)
    return out


def report(batch: int, samples: dict[str, tuple[list[float], list[float]]]) -> None:
    """Print medians and the ratios to the floor (median of per-run ratios, and ratio of medians)."""
    floor_wall, floor_cpu = samples["floor"]
    print(f"== batch of {batch}")
    for name, (wall, cpu) in samples.items():
        line = f"  {name:8s} wall {statistics.median(wall):8.1f} µs  CPU {statistics.median(cpu):8.1f} µs"
        if name != "floor":
            rw = statistics.median(w / f for w, f in zip(wall, floor_wall, strict=True))
            rc = statistics.median(c / f for c, f in zip(cpu, floor_cpu, strict=True))
            line += (
                f"  | ratio wall {statistics.median(wall) / statistics.median(floor_wall):.3f}"
                f" (per-run {rw:.3f})  CPU {statistics.median(cpu) / statistics.median(floor_cpu):.3f}"
                f" (per-run {rc:.3f})"
            )
        print(line, flush=True)


async def profile(op: Op, count: int, top: int, sort: str) -> None:
    """cProfile ``count`` calls of ``op`` and print the ``top`` entries."""
    for _ in range(20):
        await op()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        await op()
    profiler.disable()
    pstats.Stats(profiler).strip_dirs().sort_stats(sort).print_stats(top)


async def amain(args: argparse.Namespace) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        args.mongodb_uri, serverSelectionTimeoutMS=10_000
    )
    db = client[f"clprof_{uuid.uuid4().hex[:8]}"]
    try:
        ledger = Ledger(db)
        await ledger.ensure_indexes()
        await db["raw_events"].insert_one({"_id": "warm"})
        for batch in args.batch:
            msgs = batch_of(batch)
            ops: dict[str, Op] = {"floor": floor_op(db, msgs)}
            if args.profile:
                target = await (store_op if args.profile == "store" else binding_op)(ledger, msgs)
                print(f"== profile {args.profile}, batch of {batch}, {args.ops * args.runs} calls")
                await profile(target, args.ops * args.runs, args.top, args.sort)
                print("== profile floor")
                await profile(ops["floor"], args.ops * args.runs, args.top, args.sort)
                continue
            ops["store"] = await store_op(ledger, msgs)
            ops["binding"] = await binding_op(ledger, msgs)
            report(batch, await measure(ops, args.runs, args.ops))
    finally:
        await client.drop_database(db.name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mongodb-uri", default=os.environ.get("MONGODB_URI", ""), required="MONGODB_URI" not in os.environ
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--profile", choices=["store", "binding"])
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--sort", default="tottime")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
