#!/usr/bin/env python3
"""What one exact-``_id`` read costs as a collection grows, beside a query on another field.

Usage::

    python scripts/ferretdb.py run python scripts/probe_id_reads.py
    python scripts/probe_id_reads.py --uri mongodb://127.0.0.1:27017/

Inserts 1,000, then 10,000, then 30,000 small documents keyed like events (``thread#seq``)
into the database ``idprobe_<id>`` (dropped at the end) and prints, at each size, the
median wall time of a ``find_one`` by a key met early, by one met late, by a missing key, by
a non-``_id`` field, and of an ``update_one`` by a late key, with each one's ratio to the
early key. Where ``_id`` is an index (MongoDB, DocumentDB) every key costs the same; where
the engine scans (FerretDB v1) a late or missing key costs what the rows before it cost.
Only the given server is contacted; the script starts none itself (``scripts/ferretdb.py run``
starts FerretDB on 127.0.0.1 with ``--telemetry=disable`` and ``DO_NOT_TRACK=1``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from pymongo import MongoClient

SIZES = (1_000, 10_000, 30_000)


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """Return the median wall time of ``call`` in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default=os.environ.get("CHATLEDGER_TEST_FERRETDB_URI"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not args.uri:
        parser.error("give --uri, or run under scripts/ferretdb.py run")
    client: MongoClient[dict[str, Any]] = MongoClient(args.uri)
    name = f"idprobe_{uuid.uuid4().hex[:8]}"
    events = client[name]["events"]
    try:
        held = 0
        print("| documents | read | ms | ÷ early key |")
        print("|---:|---|---:|---:|")
        for size in SIZES:
            batch = [
                {"_id": f"t{i:06d}#1", "thread_id": f"t{i:06d}", "x": "y" * 200} for i in range(held, size)
            ]
            for start in range(0, len(batch), 1_000):
                events.insert_many(batch[start : start + 1_000])
            held = size
            late = f"t{size - 5:06d}"
            rows: dict[str, Callable[[], Any]] = {
                "`_id`, early key": partial(events.find_one, {"_id": "t000005#1"}),
                "`_id`, late key": partial(events.find_one, {"_id": f"{late}#1"}),
                "`_id`, missing key": partial(events.find_one, {"_id": "zzz#1"}),
                "another field": partial(events.find_one, {"thread_id": late}),
                "`update_one` by late `_id`": partial(
                    events.update_one, {"_id": f"{late}#1"}, {"$inc": {"n": 1}}
                ),
            }
            early = 0.0
            for label, call in rows.items():
                ms = median_ms(call, args.runs)
                early = early or ms
                print(f"| {size:,} | {label} | {ms:.1f} | {ms / early:.1f}× |")
    finally:
        client.drop_database(name)
        client.close()


if __name__ == "__main__":
    main()
