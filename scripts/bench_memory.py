#!/usr/bin/env python3
"""Memory of a long-lived history provider over many sessions: is it flat after warm-up?

Usage::

    python scripts/bench_memory.py [--sessions N] [--mongodb-uri URI]

One ``MongoHistoryProvider`` lives for the whole run, as in a server process. Each
session is new: the framework's ``get_messages`` (empty history) and ``save_messages``
of one user and one assistant message, with a fresh ``state`` dict per session. The
resident set size (``VmRSS`` from ``/proc/self/status``) and Python's own traced
allocations (``tracemalloc``, counted only for ``chatledger``'s files, so the driver's
pools and the interpreter's arenas do not blur it) are sampled every tenth of the run.

Prints, after warm-up (``--warmup``, by default the first fifth; the ledger's bounded caches
fill at 10,000 threads), the
growth per session of RSS and of memory allocated in ChatLedger's code and still held.
Asserts nothing. Without a URI (or ``MONGODB_URI``) a throw-away FerretDB (SQLite back
end) is started on 127.0.0.1 through ``scripts/ferretdb.py`` (telemetry disabled) and
removed at the end; the database ``clmem_<run id>`` is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "src"))

from agent_framework import Message  # noqa: E402

from chatledger import MongoHistoryProvider  # noqa: E402

_SRC = str(REPO_ROOT / "src" / "chatledger")


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _ours() -> int:
    """Bytes allocated by ChatLedger's own lines that are still alive."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, _SRC + "/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def amain(args: argparse.Namespace) -> int:
    from pymongo import AsyncMongoClient

    server = None
    uri = args.mongodb_uri or os.environ.get("MONGODB_URI")
    if not uri:
        os.environ["DO_NOT_TRACK"] = "1"
        from ferretdb import FerretDBServer  # scripts/ferretdb.py: 127.0.0.1, telemetry off

        server = FerretDBServer(repo_root=REPO_ROOT).start()
        uri = server.uri
    client: Any = AsyncMongoClient(uri, tz_aware=True)
    database = client[f"clmem_{uuid.uuid4().hex[:8]}"]
    total = args.sessions
    every = max(1, total // 10)
    warm = args.warmup if args.warmup is not None else max(every, total // 5)
    samples: list[tuple[int, int, int]] = []
    try:
        provider = MongoHistoryProvider(database=database)
        tracemalloc.start(1)
        started = time.perf_counter()
        for i in range(1, total + 1):
            state: dict[str, Any] = {}
            await provider.get_messages(None, state=state)
            await provider.save_messages(
                None,
                [Message(role="user", contents=[f"hello {i}"]), Message(role="assistant", contents=["hi"])],
                state=state,
            )
            if i % every == 0:
                gc.collect()
                samples.append((i, _rss_bytes(), _ours()))
                rate = i / (time.perf_counter() - started)
                print(
                    f"{i:>8} sessions  RSS {samples[-1][1] / 2**20:8.1f} MiB  "
                    f"chatledger-held {samples[-1][2] / 2**20:7.2f} MiB  ({rate:,.0f} sessions/s)",
                    flush=True,
                )
        base = next((s for s in samples if s[0] >= warm), samples[0])
        last = samples[-1]
        span = max(1, last[0] - base[0])
        print(
            f"after warm-up ({base[0]} sessions): RSS {(last[1] - base[1]) / span:+.1f} B/session, "
            f"ChatLedger-held {(last[2] - base[2]) / span:+.1f} B/session over {span} sessions"
        )
    finally:
        tracemalloc.stop()
        await client.drop_database(database.name)
        await client.close()
        if server is not None:
            server.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000, help="sessions to run (default 200,000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="sessions before growth is counted (default: a fifth; the ledger's caches hold 10,000 threads)",
    )
    parser.add_argument("--mongodb-uri", default=None, help="server to use (default: a throw-away FerretDB)")
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
