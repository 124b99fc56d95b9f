#!/usr/bin/env python3
"""Measure what sealing adds to the client CPU of an append and of a page read, side by side.

Usage::

    python scripts/bench_sealing.py [--mongodb-uri URI] [--rounds 7] [--appends 200]

Without a URI (or ``MONGODB_URI``) a throw-away FerretDB is started on 127.0.0.1 through
``scripts/ferretdb.py`` and removed at the end (``--mongomock`` measures in process instead,
where the "server" work is client CPU too). The database ``clseal_<id>`` is dropped at the end.

Method: two ledgers on one database, one unsealed and one sealed (a local KEK, the data
key cached: the steady state of a process). Each round appends ``--appends`` batches of
two messages (a ~300-byte user turn, a ~1.5 KB reply) to a conversation on each ledger,
alternating which goes first, then reads the last page (20 messages) of each ``--reads``
times. ``time.process_time`` measures the client's CPU (the server runs elsewhere);
figures are medians over rounds of the per-operation mean. Target: at most +10%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from chatledger import Ledger  # noqa: E402
from chatledger._maf import Message  # noqa: E402
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer  # noqa: E402

USER = "Could you summarise what we agreed about the quarterly report? " * 5
REPLY = "Here is the summary of the points we agreed on, with the owners and dates. " * 20


async def _append_round(ledger: Ledger, user: str, appends: int) -> float:
    binding = ledger.bind(user_id=user)
    at = binding.empty(uuid.uuid4().hex)
    started = time.process_time()
    for i in range(appends):
        at = (
            await binding.append(at, [Message("user", [f"{i} {USER}"]), Message("assistant", [REPLY])])
        ).position
    spent = time.process_time() - started
    ledger.position = at  # type: ignore[attr-defined]  # kept for the read round
    return spent / appends


async def _read_round(ledger: Ledger, user: str, reads: int) -> float:
    binding = ledger.bind(user_id=user)
    at = ledger.position  # type: ignore[attr-defined]
    started = time.process_time()
    for _ in range(reads):
        page = await binding.read(at, offset=at.messages - 20)
        assert len(page) == 20
    return (time.process_time() - started) / reads


async def run(database: Any, rounds: int, appends: int, reads: int) -> dict[str, dict[str, float]]:
    plain = Ledger(database)
    sealed = Ledger(
        database, sealer=Sealer(KeyStore(database), LocalKeyProvider(bytes(range(32))), cache_ttl=3600)
    )
    timings: dict[str, dict[str, list[float]]] = {
        name: {"append": [], "read": []} for name in ("unsealed", "sealed")
    }
    for ledger, user in ((plain, "warm"), (sealed, "warm")):  # indexes, key creation, code paths
        await _append_round(ledger, user, 10)
        await _read_round(ledger, user, 5)
    for r in range(rounds):
        order = [("unsealed", plain), ("sealed", sealed)]
        if r % 2:
            order.reverse()
        for name, ledger in order:
            timings[name]["append"].append(await _append_round(ledger, "bench", appends))
        for name, ledger in order:
            timings[name]["read"].append(await _read_round(ledger, "bench", reads))
    return {
        name: {op: statistics.median(values) * 1e6 for op, values in ops.items()}
        for name, ops in timings.items()
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"))
    parser.add_argument("--mongomock", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    server = client = None
    if args.mongomock:
        from mongomock_motor import AsyncMongoMockClient

        client = AsyncMongoMockClient(tz_aware=True)
        where = "mongomock (in process)"
    else:
        from pymongo import AsyncMongoClient

        uri = args.mongodb_uri
        if not uri:
            from ferretdb import FerretDBServer  # scripts/ferretdb.py

            # FerretDBServer is the one place that starts FerretDB: 127.0.0.1 only,
            # --telemetry=disable and DO_NOT_TRACK=1 (set here too), so nothing reports home.
            os.environ["DO_NOT_TRACK"] = "1"
            server = FerretDBServer(repo_root=REPO_ROOT).start()
            uri = server.uri
        client = AsyncMongoClient(uri, tz_aware=True)
        where = "FerretDB" if server is not None else "the given server"
    name = f"clseal_{uuid.uuid4().hex[:10]}"
    try:
        result = await run(client[name], args.rounds, args.appends, args.reads)
    finally:
        await client.drop_database(name)
        closing = client.close()
        if asyncio.iscoroutine(closing):
            await closing
        if server is not None:
            server.close()
    print(f"client CPU per operation, µs (median of {args.rounds} rounds; {where})")
    print(f"{'':22}{'unsealed':>10}{'sealed':>10}{'extra':>9}")
    for op, label in (("append", "append (2 messages)"), ("read", "read last 20 messages")):
        a, b = result["unsealed"][op], result["sealed"][op]
        print(f"{label:22}{a:10.1f}{b:10.1f}{(b / a - 1) * 100:8.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
