"""Whole-database verify and export read every event in one ordered pass, whatever the number of threads.

What an operator of a large deployment notices: ``verify`` and ``export`` of everything cost
one query on the events (not one per thread, which a server that scans pays in full each
time), report exactly what a thread-by-thread run reports, and say how far they got.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin import export_jsonl, verify
from chatledger.ledger import storage_of
from tests.admin.conftest import branch, talk
from tests.admin.test_scale import _Replies
from tests.conftest import Backend
from tests.helpers import monitored


async def _conversations(ledger: Ledger, n: int, *, start: int = 0) -> list[str]:
    out: list[str] = []
    for i in range(start, start + n):
        root = f"c{i:03d}"
        await talk(ledger, root, 3, tenant_id="acme")
        out += [root, await branch(ledger, root, 2, turns=2)]
    return out


async def test_the_spool_returns_exactly_what_a_query_returns(database: Any) -> None:
    ledger = Ledger(database)
    await _conversations(ledger, 3)
    events = database["events"]
    # What a reader meets in a damaged or busy database: a removal's claim at position -1,
    # a seq stored as a string and as a document (each sorts and matches
    # differently on the server), and a document with no thread id at all.
    claim = {"_id": "c000#claim", "thread_id": "c000", "seq": -1, "removed": True, "claim": "r"}
    await events.insert_one(claim)
    await events.insert_one({"_id": "c001#s", "thread_id": "c001", "seq": "7", "messages": []})
    await events.insert_one({"_id": "c002#b", "thread_id": "c002", "seq": {"n": 1}, "messages": []})
    await events.insert_one({"_id": "lost", "seq": 1})
    store = storage_of(ledger).events
    spool = await storage_of(ledger).tallies.spool()
    try:
        assert spool.documents == await events.count_documents({})
        for tid in ("c000", "c001", "c002", "nothing"):
            for after in (None, 0, 2):
                expected = [d async for d in store.stream(tid, after_seq=after)]
                assert list(spool.events(tid, after_seq=after)) == expected, (tid, after)
    finally:
        spool.close()


async def test_a_whole_run_reports_what_a_thread_by_thread_run_reports(database: Any) -> None:
    ledger = Ledger(database)
    walk = await _conversations(ledger, 4)
    events = database["events"]
    await events.update_one({"_id": f"{walk[2]}#3"}, {"$set": {"hash": "0" * 64}})  # a broken chain
    await events.update_one({"_id": f"{walk[4]}#1"}, {"$set": {"seq": "1"}})  # a poisoned seq
    await events.update_one({"_id": f"{walk[6]}#3"}, {"$set": {"removed": True}})  # hollowed, thread live
    whole = await verify(ledger)
    # The tenant-scoped run reads thread by thread (no spool): the same verdicts.
    scoped = await verify(ledger, tenant_id="acme")
    assert whole.to_dict() == scoped.to_dict()
    assert {p.thread_id for p in whole.problems} == {walk[2], walk[4], walk[6]}
    # Events whose thread document was deleted are still found by the whole run.
    await database["threads"].delete_one({"_id": walk[1]})
    reasons = {p.thread_id: p.reason for p in (await verify(ledger)).problems}
    assert reasons[walk[1]] == "2 events have no thread document (it was deleted)"


async def test_progress_counts_the_events_read(database: Any) -> None:
    ledger = Ledger(database)
    await _conversations(ledger, 2)
    total = await database["events"].count_documents({})
    for operation in ("verify", "export"):
        seen: list[tuple[int, int | None]] = []

        def progress(done: int, of: int | None, seen: list[tuple[int, int | None]] = seen) -> None:
            seen.append((done, of))

        if operation == "verify":
            await verify(ledger, on_progress=progress)
        else:
            await export_jsonl(ledger, io.StringIO(), on_progress=progress)
        assert seen[-1] == (total, total)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize("operation", ["verify", "export"])
async def test_one_query_on_the_events_whatever_the_number_of_threads(
    real_backend: Backend, operation: str
) -> None:
    listener = _Replies()
    async with monitored(real_backend, listener) as database:
        ledger = Ledger(database)
        finds: list[int] = []
        for start, n in ((0, 3), (3, 9)):  # 6 threads, then 24
            await _conversations(ledger, n, start=start)
            listener.finds.clear()
            if operation == "verify":
                assert (await verify(Ledger(database))).ok
            else:
                out = io.StringIO()
                await export_jsonl(Ledger(database), out)
                assert json.loads(out.getvalue().splitlines()[-1])["threads"] == 2 * (start + n)
            finds.append(listener.finds.get("events", 0))
        # One ordered pass: as many queries on the events for 24 threads as for 6.
        assert finds[0] == finds[1] == 1, finds
