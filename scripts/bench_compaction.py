#!/usr/bin/env python3
"""Benchmark the compacted view: what reading it costs against the history's length.

Usage::

    python scripts/ferretdb.py run -- python scripts/bench_compaction.py [--messages N]
    python scripts/bench_compaction.py --mongodb-uri URI [--messages N]

It needs a server (``--mongodb-uri``, or ``CHATLEDGER_TEST_FERRETDB_URI`` as
``scripts/ferretdb.py run`` exports it, or ``MONGODB_URI``). A database
``clbench_compaction_<id>`` is created and dropped at the end. Prints ratios, asserts
nothing.

Two sessions, of ``N/10`` and ``N`` messages (two per event), are each compacted so
that the view keeps the newest 20 messages. For each it prints the event documents the
compacted view read, the queries it sent, and the wall time, against a full read: the
compacted view's documents and queries stay the same while the history grows 10x
(FerretDB scans for every query, so its times grow anyway; on MongoDB they do not).
"""

from __future__ import annotations

import argparse
import asyncio
import os

# FerretDB must never report home: started by scripts/ferretdb.py it runs with
# --telemetry=disable; DO_NOT_TRACK=1 also covers anything started from here.
os.environ.setdefault("DO_NOT_TRACK", "1")
import time
import uuid
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.ledger.compaction import compact, compacted_view, event_at
from chatledger.models import Scope


class Counter(monitoring.CommandListener):
    """Counts the find/getMore commands sent and the documents their replies carried."""

    def __init__(self) -> None:
        self.queries = 0
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "getMore"):
            self.queries += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if event.command_name in ("find", "getMore") else None
        if cursor:
            self.documents += len(cursor.get("firstBatch") or cursor.get("nextBatch") or ())

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def session(ledger: Ledger, name: str, messages: int) -> Any:
    binding = ledger.bind(Scope())
    at = await binding.open(name)
    for turn in range(messages // 2):
        at = (
            await binding.append(at, [Message("user", [f"q{turn}"]), Message("assistant", [f"a{turn}"])])
        ).position
    last = at.offset - 10  # keep the newest 10 events (20 messages)
    first_doc, last_doc = await event_at(binding, at, 1), await event_at(binding, at, last)
    at = await compact(
        binding,
        at,
        first_seq=1,
        first_hash=first_doc["hash"],
        last_seq=last,
        last_hash=last_doc["hash"],
        summary=[Message("assistant", ["summary"])],
        strategy="bench",
    )
    return binding, at


async def measured(counter: Counter, read: Any) -> tuple[int, int, float, int]:
    counter.queries = counter.documents = 0
    started = time.perf_counter()
    result = await read  # a coroutine: nothing is sent before it is awaited here
    return counter.queries, counter.documents, time.perf_counter() - started, len(result)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    uri = args.mongodb_uri or os.environ.get("CHATLEDGER_TEST_FERRETDB_URI") or os.environ.get("MONGODB_URI")
    if not uri:
        parser.error("needs a server: --mongodb-uri URI (or run it through scripts/ferretdb.py run --)")
    counter = Counter()
    client: Any = AsyncMongoClient(uri, tz_aware=True, event_listeners=[counter])
    name = f"clbench_compaction_{uuid.uuid4().hex[:8]}"
    try:
        ledger = Ledger(client[name])
        rows = []
        for size in (args.messages // 10, args.messages):
            binding, at = await session(ledger, f"s{size}", size)
            ledger.forget()
            view = await measured(counter, compacted_view(binding, at))
            full = await measured(counter, binding.read(at))
            rows.append((size, view, full))
        for size, view, full in rows:
            print(
                f"{size:>6} messages: compacted view {view[3]} messages, {view[0]} queries, "
                f"{view[1]} documents, {view[2] * 1000:.1f} ms; full read {full[1]} documents, "
                f"{full[2] * 1000:.1f} ms"
            )
        (small, view_small, _), (large, view_large, _) = rows
        documents = view_large[1] / max(view_small[1], 1)
        queries = view_large[0] / max(view_small[0], 1)
        print(
            f"history x{large / small:.0f}: compacted view documents x{documents:.2f}, "
            f"queries x{queries:.2f}, time x{view_large[2] / view_small[2]:.2f}"
        )
    finally:
        await client.drop_database(name)
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
