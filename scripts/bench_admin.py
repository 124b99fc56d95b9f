#!/usr/bin/env python3
"""Admin commands against the number of threads: time and peak client memory, side by side.

Usage::

    python scripts/bench_admin.py [--quick] [--sizes 1000,5000,20000] [--mongodb-uri URI]
        [--budget SECONDS] [--json FILE]

Without a URI (or ``MONGODB_URI``) a throw-away FerretDB (SQLite back end) is started on
127.0.0.1 through ``scripts/ferretdb.py`` (telemetry disabled) and removed at the end. The
database is named ``cladmin_<run id>`` and dropped at the end.

One database grows through the sizes (1k, then 5k, then 20k threads; ``--quick``: 200 and
1k): every tenth conversation has a branch, every thread two events, half the
conversations last active 400 days ago. At each size it measures, each operation once for
wall time (``time.perf_counter``) and once more under ``tracemalloc`` for the peak of
Python allocations (tracing slows code down, so the two are separate runs):

* ``plan_retention`` with a 30-day default policy (streams trees in chunks);
* ``verify`` of every thread;
* ``threads --limit 8`` (the CLI body, JSON output to a buffer);
* ``stats``;
* the same work the way it was done before this change, as the baseline: retention
  planned over ``load_forest`` (every thread document in memory, then one head query per
  thread), and ``threads --limit 8`` reading every thread before limiting.

Bounded: an operation still running after ``--budget`` seconds is cancelled and reported
as over budget; one whose projected time at the next size (from the growth seen so far, at
worst quadratic) exceeds the budget is skipped there; a size whose seeding is projected
over ``--seed-budget`` is not built. So the run stops by itself. Not part of the test suite.

Admin at scale (``--scale 400x20[,2000x50]``): N threads of M events each (every tenth
conversation a branch), built in process on mongomock, exported and imported into the
server (fast, and through the real import path). Then, each in its own child process (so
its peak RSS is its own): ``verify`` (events/s), ``export`` of every thread to a file
(events/s, MB), and ``retention --apply`` of the ``--lineages`` conversations of one tenant
made old (seconds per lineage). ``--before SRC`` runs the same children against another
checkout's ``src`` (e.g. ``git archive main src``) for the baseline, each under ``--budget``.
``--ops retention`` measures only some of them: ``--scale 2200x2 --lineages 1000 --ops
retention`` is retention of 1,000 small lineages (every conversation made old, half for
the run measured, half for the baseline), seconds per lineage side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
# A baseline run (--before) imports the library from another checkout's src.
sys.path.insert(0, os.environ.get("CHATLEDGER_BENCH_SRC") or str(REPO_ROOT / "src"))

import chatledger.ledger.documents  # noqa: E402 - after the path set-up above
from chatledger import Ledger  # noqa: E402
from chatledger._maf import Message  # noqa: E402
from chatledger.admin import RetentionPolicy, collect_stats, plan_retention, verify  # noqa: E402
from chatledger.admin.catalog import Forest, ThreadActivity, aware, load_forest  # noqa: E402
from chatledger.admin.removal import RemovalReport, lineage_removal, select_lineages  # noqa: E402
from chatledger.cli.commands.browse import threads_body  # noqa: E402
from chatledger.cli.render import Renderer  # noqa: E402
from chatledger.ledger import storage_of  # noqa: E402

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)
POLICY = RetentionPolicy(default=timedelta(days=30))
#: Appends in flight while seeding (the server, not the client, is the bottleneck).
SEED_CONCURRENCY = 32


class _Clock:
    """The time the ledger stamps on what it writes (seeding makes half the data old)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def seed(ledger: Ledger, start: int, stop: int, clock: _Clock) -> int:
    """Create conversations ``start..stop-1``; return the number of threads created."""

    async def conversation(i: int) -> int:
        book = ledger.bind(tenant_id=f"tenant{i % 7}", user_id=f"user{i % 101}")
        pos = book.empty(f"c{i:07d}")
        first = await book.append(pos, [Message("user", [f"q{i}"]), Message("assistant", [f"a{i}"])])
        second = await book.append(
            first.position, [Message("user", [f"q{i}b"]), Message("assistant", [f"a{i}b"])]
        )
        if i % 10:
            return 1
        # Edit-and-retry: a branch from the first turn, with two events of its own.
        forked = await book.append(first.position, [Message("user", [f"edit {i}"])])
        await book.append(forked.position, [Message("assistant", [f"retry {i}"])])
        assert second.position.offset == 2
        assert forked.branched
        return 2

    threads = 0
    for lo in range(start, stop, SEED_CONCURRENCY):
        ids = range(lo, min(stop, lo + SEED_CONCURRENCY))
        # Whole batches are old or new: the clock is one global the ledger reads.
        clock.now = OLD if (lo // SEED_CONCURRENCY) % 2 else NOW - timedelta(hours=1)
        threads += sum(await asyncio.gather(*(conversation(i) for i in ids)))
    clock.now = NOW
    return threads


# --------------------------------------------------------------------------- operations


async def op_retention(ledger: Ledger) -> str:
    report = await plan_retention(ledger, POLICY, now=NOW)
    return f"{len(report.planned)} lineages"


async def activity_before(ledger: Ledger, forest: Forest) -> dict[str, ThreadActivity]:
    """Activity as it was read before: counts per chunk, then one head query per thread, in turn."""
    out = {
        tid: ThreadActivity(tid, last_activity=aware(doc.get("created_at")))
        for tid, doc in forest.docs.items()
    }
    for tid, (events, messages) in (await storage_of(ledger).tallies.counts(sorted(out))).items():
        if tid in out:
            out[tid].events, out[tid].messages = events, messages
    for tid, summary in out.items():
        if summary.events:
            head = await storage_of(ledger).events.head(tid)
            if head is not None:
                summary.head_seq, summary.head_hash = head["seq"], head["hash"]
                summary.last_activity = aware(head.get("created_at")) or summary.last_activity
    return out


async def op_retention_before(ledger: Ledger) -> str:
    """Retention planning as it was: every thread document in memory, then the activity of all."""
    report = RemovalReport("retention", dry_run=True)
    forest = await load_forest(ledger, None)
    act = await activity_before(ledger, forest)
    lineages = {t: lineage_removal(forest, act, t) for t in forest.docs}
    due = {
        t
        for t, line in lineages.items()
        if line.last_activity is not None and NOW - line.last_activity > timedelta(days=30)
    }
    select_lineages(report, forest, due, lineages)
    return f"{len(report.planned)} lineages"


async def op_verify(ledger: Ledger) -> str:
    report = await verify(ledger)
    return f"{report.threads} threads ok={report.ok}"


async def op_threads8(ledger: Ledger) -> str:
    out = io.StringIO()
    await threads_body(ledger, Renderer(out, io.StringIO(), as_json=True), limit=8)
    return f"{len(json.loads(out.getvalue())['threads'])} rows"


async def op_threads8_before(ledger: Ledger) -> str:
    """``threads --limit 8`` as it was: every thread and its activity read, then 8 kept."""
    forest = await load_forest(ledger, None, with_family=False)
    acts = await activity_before(ledger, forest)
    rows = sorted(forest.docs)[:8]
    return f"{len([acts[t] for t in rows])} rows"


async def op_stats(ledger: Ledger) -> str:
    stats = await collect_stats(ledger)
    return f"{stats.threads} threads {stats.events} events"


OPERATIONS: dict[str, Callable[[Ledger], Awaitable[str]]] = {
    "retention plan": op_retention,
    "retention plan (before)": op_retention_before,
    "verify": op_verify,
    "threads --limit 8": op_threads8,
    "threads --limit 8 (before)": op_threads8_before,
    "stats": op_stats,
}


async def measure(ledger: Ledger, op: Callable[[Ledger], Awaitable[str]], budget: float) -> dict[str, Any]:
    """Return wall seconds (untraced run) and peak traced bytes (second, traced run), each time-boxed.

    An operation still running after ``budget`` seconds is cancelled and reported as over
    budget; tracing slows Python down, so the traced run gets three times the first run's time.
    """
    started = time.perf_counter()
    try:
        what = await asyncio.wait_for(op(ledger), budget)
    except TimeoutError:
        return {"over_budget": budget}
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await asyncio.wait_for(op(ledger), max(3 * seconds, 30.0))
        peak: int | None = tracemalloc.get_traced_memory()[1]
    except TimeoutError:
        peak = None
    finally:
        tracemalloc.stop()
    return {"seconds": seconds, "peak_bytes": peak, "result": what}


def projected(history: list[tuple[int, float]], size: int) -> float:
    """Time projected at ``size`` from the last measurement, assuming the growth seen (at worst n²)."""
    if not history:
        return 0.0
    n, seconds = history[-1]
    exponent = 2.0
    if len(history) >= 2:
        import math

        (n0, s0), (n1, s1) = history[-2], history[-1]
        if s0 > 0 and s1 > 0 and n1 > n0:
            exponent = min(2.0, max(1.0, math.log(s1 / s0) / math.log(n1 / n0)))
    return seconds * (size / n) ** exponent * 2  # measured twice (untraced and traced)


def table(results: list[dict[str, Any]], sizes: Sequence[int]) -> str:
    """Return the results as a Markdown table: one row per operation, time and peak per size."""
    head = "| operation | " + " | ".join(f"{n:,} threads" for n in sizes) + " |"
    rule = "|---|" + "---:|" * len(sizes)
    lines = [head, rule]
    for name in OPERATIONS:
        cells = []
        for n in sizes:
            found = next((r for r in results if r["threads"] == n and r["operation"] == name), None)
            if found is None:
                cells.append("-")
            elif found.get("skipped"):
                cells.append("skipped (projected over budget)")
            elif found.get("over_budget"):
                cells.append(f"> {found['over_budget']:.0f} s")
            else:
                peak = found["peak_bytes"]
                cells.append(f"{found['seconds']:.2f} s, " + (f"{peak / 1e6:.1f} MB" if peak else "peak n/a"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _server(args: argparse.Namespace) -> tuple[str, Any]:
    """Return the URI to measure and the throw-away FerretDB started for it (``None``: a given server)."""
    uri = args.mongodb_uri or os.environ.get("MONGODB_URI")
    if uri:
        return uri, None
    from ferretdb import FerretDBServer  # scripts/ferretdb.py

    # FerretDBServer is the one place that starts FerretDB: 127.0.0.1 only,
    # --telemetry=disable and DO_NOT_TRACK=1.
    server = FerretDBServer(repo_root=REPO_ROOT).start()
    return server.uri, server


async def amain(args: argparse.Namespace) -> int:
    from pymongo import AsyncMongoClient

    wanted = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([200, 1000] if args.quick else [1000, 5000, 20000])
    )
    # Every tenth conversation has a branch: N threads are N / 1.1 conversations.
    conversations = [round(n / 1.1) for n in wanted]
    uri, server = _server(args)
    client: Any = AsyncMongoClient(uri, tz_aware=True)
    database = client[f"cladmin_{uuid.uuid4().hex[:8]}"]
    clock = _Clock()
    chatledger.ledger.documents.utc_now_ms = clock
    results: list[dict[str, Any]] = []
    history: dict[str, list[tuple[int, float]]] = {name: [] for name in OPERATIONS}
    sizes: list[int] = []
    try:
        ledger = Ledger(database)
        await storage_of(ledger).ensure_indexes()
        threads = made = 0
        seeded: list[tuple[int, float]] = []
        for target in conversations:
            if projected(seeded, target) / 2 > args.seed_budget:
                print(f"stopping before {target:,} conversations: seeding projected over budget", flush=True)
                break
            started = time.perf_counter()
            threads += await seed(ledger, made, target, clock)
            seeded.append((target, time.perf_counter() - started))
            made = target
            sizes.append(threads)
            print(
                f"seeded {target:,} conversations, {threads} threads in {seeded[-1][1]:.1f} s",
                flush=True,
            )
            for name, op in OPERATIONS.items():
                if projected(history[name], threads) > args.budget:
                    results.append({"threads": threads, "operation": name, "skipped": True})
                    print(f"  {name:<28} skipped: projected over {args.budget:.0f} s", flush=True)
                    continue
                row = await measure(Ledger(database), op, args.budget)
                results.append({"threads": threads, "operation": name, **row})
                if "over_budget" in row:
                    history[name].append((threads, args.budget * 10))  # never again at a larger size
                    print(f"  {name:<28} over budget ({args.budget:.0f} s): cancelled", flush=True)
                    continue
                history[name].append((threads, row["seconds"]))
                peak = f"{row['peak_bytes'] / 1e6:8.1f} MB" if row["peak_bytes"] else "     n/a"
                print(f"  {name:<28} {row['seconds']:8.2f} s  peak {peak}  ({row['result']})", flush=True)
    finally:
        await client.drop_database(database.name)
        await client.close()
        if server is not None:
            server.close()
    print()
    print(table(results, sizes))
    if args.json:
        Path(args.json).write_text(  # noqa: ASYNC240 - the run is over; nothing else is waiting
            json.dumps({"uri_kind": "ferretdb" if server else "mongodb", "results": results}, indent=1)
        )
    return 0


# --------------------------------------------------------------------------- admin at scale

#: Conversations of the two tenants made old: one for the run measured, one for the baseline.
OLD_TENANTS = ("old", "oldbase")


async def _conversation(ledger: Ledger, i: int, events: int, clock: _Clock, tenant: str) -> int:
    """Write one conversation of ``events`` events (every tenth gets a branch of as many); return threads."""
    book = ledger.bind(tenant_id=tenant, user_id=f"user{i % 101}")
    position = book.empty(f"c{i:07d}")
    fork = None
    for n in range(events):
        clock.now += timedelta(milliseconds=1)
        result = await book.append(position, [Message("user", [f"q{i}.{n} " + "x" * 80])])
        position = result.position
        fork = fork or position
    if i % 10 or fork is None:
        return 1
    position = fork
    for n in range(events):
        clock.now += timedelta(milliseconds=1)
        position = (await book.append(position, [Message("assistant", [f"b{i}.{n} " + "y" * 80])])).position
    return 2


async def seed_scale(database: Any, threads: int, events: int, lineages: int, clock: _Clock) -> int:
    """Fill ``database`` with about ``threads`` threads of ``events`` events; return the threads made.

    Written on mongomock in pieces, exported and imported (the real import path), so a
    server that scans is never asked for the many per-append queries of a ledger.
    """
    from mongomock_motor import AsyncMongoMockClient

    from chatledger.admin import export_jsonl, import_jsonl

    conversations = round(threads / 1.1)
    made = 0
    piece = 25  # mongomock scans for every query: small pieces keep seeding linear
    for lo in range(0, conversations, piece):
        local: Any = AsyncMongoMockClient(tz_aware=True)["seed"]
        ledger = Ledger(local)
        for i in range(lo, min(conversations, lo + piece)):
            old = i < 2 * lineages
            clock.now = OLD if old else NOW - timedelta(hours=1)
            tenant = OLD_TENANTS[i % 2] if old else f"tenant{i % 7}"
            made += await _conversation(ledger, i, events, clock, tenant)
        path = Path(f"/tmp/chatledger-bench-seed-{os.getpid()}.jsonl")
        try:
            with path.open("w", encoding="utf-8") as out:  # noqa: ASYNC230 - a local file, nothing waits
                await export_jsonl(ledger, out)
            await import_jsonl(Ledger(database), path, by="bench")
        finally:
            path.unlink(missing_ok=True)  # noqa: ASYNC240
    clock.now = NOW
    return made


async def measure_child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one admin operation (this is a child process: its peak RSS is the operation's)."""
    import resource

    from pymongo import AsyncMongoClient

    from chatledger.admin import export_jsonl, run_retention

    client: Any = AsyncMongoClient(args.mongodb_uri, tz_aware=True)
    ledger = Ledger(client[args.database])
    started = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        if args.measure == "read":
            # The floor: the bare ordered read of every event that verify and export make,
            # with nothing done to the documents. No client can verify faster than this.
            events = 0
            async for _ in client[args.database]["events"].find({}, sort=[("thread_id", 1), ("seq", 1)]):
                events += 1
            out = {"events": events}
        elif args.measure == "verify":
            report = await verify(ledger)
            out = {"events": report.events, "threads": report.threads, "ok": report.ok}
        elif args.measure == "export":
            path = Path(f"/tmp/chatledger-bench-export-{os.getpid()}.jsonl")
            try:
                with path.open("w", encoding="utf-8") as handle:  # noqa: ASYNC230 - measured as the CLI does it
                    summary = await export_jsonl(ledger, handle)
                size = path.stat().st_size / 1e6  # noqa: ASYNC240
                out = {"events": summary.events, "threads": summary.threads, "mb": size}
            finally:
                path.unlink(missing_ok=True)  # noqa: ASYNC240
        else:
            policy = RetentionPolicy(tenants={args.tenant: timedelta(days=30)})
            removal = await run_retention(ledger, policy, apply=True, by="bench")
            out = {"lineages": len(removal.removed), "threads": removal.threads}
    finally:
        await client.close()
    out["seconds"] = time.perf_counter() - started
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(
    op: str, uri: str, database: str, budget: float, src: str | None, tenant: str = OLD_TENANTS[0]
) -> dict[str, Any]:
    """Run ``op`` in a child process (against ``src`` if given), time-boxed; return its figures."""
    import subprocess

    env = {**os.environ, "DO_NOT_TRACK": "1"}
    if src:
        env["CHATLEDGER_BENCH_SRC"] = src
    command = [sys.executable, __file__, "--measure", op, "--mongodb-uri", uri, "--database", database]
    try:
        done = subprocess.run(
            [*command, "--tenant", tenant],
            env=env,
            capture_output=True,
            text=True,
            timeout=budget,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"over_budget": budget}
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:] or ["?"]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rate(row: dict[str, Any]) -> str:
    if "over_budget" in row:
        return f"> {row['over_budget']:.0f} s (cancelled)"
    if "failed" in row:
        return f"failed: {row['failed']}"
    if "lineages" in row:
        per = row["seconds"] / row["lineages"] if row["lineages"] else float("nan")
        took = f"{row['lineages']} lineages in {row['seconds']:.1f} s"
        return f"{per:.3f} s/lineage ({took}), RSS {row['rss_mb']:.0f} MB"
    rate = row["events"] / row["seconds"] if row["seconds"] else float("nan")
    extra = f", {row['mb']:.1f} MB" if "mb" in row else ""
    took = f"{row['events']:,} events in {row['seconds']:.1f} s{extra}"
    return f"{rate:,.0f} events/s ({took}), RSS {row['rss_mb']:.0f} MB"


async def scale_main(args: argparse.Namespace) -> int:
    """Seed each N x M size into its own database, then measure verify, export and retention."""
    from pymongo import AsyncMongoClient

    uri, server = _server(args)
    clock = _Clock()
    chatledger.ledger.documents.utc_now_ms = clock
    client: Any = AsyncMongoClient(uri, tz_aware=True)
    rows: list[tuple[str, str, str]] = []
    try:
        for size in args.scale.split(","):
            threads, events = (int(x) for x in size.lower().split("x"))
            name = f"clscale_{uuid.uuid4().hex[:8]}"
            try:
                started = time.perf_counter()
                made = await seed_scale(client[name], threads, events, args.lineages, clock)
                print(f"{size}: seeded {made} threads in {time.perf_counter() - started:.1f} s", flush=True)
                ops = set(args.ops.split(","))
                plan = [(op, None) for op in ("verify", "export") if op in ops]
                if args.before:
                    plan = [(op, args.before) for op, _ in plan] + plan
                if "read" in ops:
                    plan = [("read", None), *plan]
                for op, src in plan:
                    row = run_child(op, uri, name, args.budget, src)
                    label = "bare ordered find" if op == "read" else f"{op} ({'before' if src else 'after'})"
                    rows.append((size, label, _rate(row)))
                    print(f"  {label:<20} {rows[-1][2]}", flush=True)
                for tenant, src in ((OLD_TENANTS[1], args.before), (OLD_TENANTS[0], None)):
                    if "retention" not in ops or (tenant == OLD_TENANTS[1] and not args.before):
                        continue
                    row = run_child("retention", uri, name, args.budget, src, tenant)
                    label = f"retention --apply ({'before' if src else 'after'})"
                    rows.append((size, label, _rate(row)))
                    print(f"  {label:<20} {rows[-1][2]}", flush=True)
            finally:
                await client.drop_database(name)
    finally:
        await client.close()
        if server is not None:
            server.close()
    print()
    print("| size (threads x events) | operation | result |")
    print("|---|---|---|")
    for size, label, text in rows:
        print(f"| {size} | {label} | {text} |")
    return 0


def _stop(signum: int, frame: Any) -> None:
    # SIGTERM ends the run like Ctrl-C, so the database is dropped and FerretDB stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the benchmark."""
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 threads only")
    parser.add_argument("--sizes", help="comma-separated numbers of threads (default 1000,5000,20000)")
    parser.add_argument("--mongodb-uri", help="measure this server instead of a throw-away FerretDB")
    parser.add_argument(
        "--budget", type=float, default=90.0, help="seconds one operation may take (else cancelled/skipped)"
    )
    parser.add_argument(
        "--seed-budget",
        type=float,
        default=900.0,
        help="stop before a size whose seeding is projected over this",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--scale", help="admin at scale: sizes as THREADSxEVENTS, comma-separated (e.g. 400x20)"
    )
    parser.add_argument("--lineages", type=int, default=10, help="old lineages retention removes (--scale)")
    parser.add_argument("--before", help="also measure the library in this src directory (the baseline)")
    parser.add_argument(
        "--ops",
        default="read,verify,export,retention",
        help="what --scale measures (comma-separated; read is the bare ordered find, the floor)",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", default=OLD_TENANTS[0], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(asyncio.run(measure_child(args))))
        return 0
    if args.scale:
        return asyncio.run(scale_main(args))
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
