"""Erasure and retention while other OS processes keep appending: removed means gone, for every process.

Writer processes (tests/real/_removal_worker.py) keep appending to the subject's threads,
continuing their own lines and branching from an old cursor, before, during and after
``erase --user X --apply`` (and a retention run). Afterwards:

- no live document of the removed lineages exists (zero orphans): every thread is a
  tombstone, every event of theirs is hollow (position only, no content);
- no append was acknowledged after the removal finished (zero silent acknowledgements):
  the writers got ``ThreadRemovedError`` (or another ChatLedger error) instead;
- exactly one removal receipt per lineage, and ``verify`` passes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatledger import Ledger, MongoChatMessageStore
from chatledger.admin import RetentionPolicy, run_erasure, run_retention, verify
from tests.helpers import msg
from tests.real._support import finish_workers, start_workers

pytestmark = pytest.mark.real

WRITE_SECONDS = 4.0
TIME_LIMIT = 120


async def _no_live_documents(database: Any, user: str) -> None:
    """Nothing of the subject is left but tombstones and hollow positions."""
    async for doc in database["threads"].find({}):
        if "removed" in doc:
            assert set(doc) == {"_id", "root_id", "removed"}, doc
        else:
            assert doc.get("user_id") != user, f"live thread {doc['_id']!r} of {user!r} left behind"
    async for event in database["events"].find({}):
        if event.get("removed"):
            assert set(event) <= {"_id", "thread_id", "seq", "root_id", "removed", "sealed"}, event
        else:
            assert event.get("user_id") != user, f"orphan event {event['_id']!r} of {user!r}"
            thread = await database["threads"].find_one({"_id": event["thread_id"]})
            assert thread is not None, f"event {event['_id']!r} has no thread"
            assert "removed" not in thread, f"live event {event['_id']!r} in removed thread"


@pytest.mark.parametrize("how", ["erase", "retention"])
async def test_removal_while_other_processes_write(real_backend: Any, database: Any, how: str) -> None:
    user, tenant = "x-user", "acme"
    names = ["t1", "t2"]
    for name in names:
        store = MongoChatMessageStore(database, thread_id=name, tenant_id=tenant, user_id=user)
        await store.add_messages([msg(f"{name} start"), msg(f"{name} reply")])
    # Someone else's thread, written all along, must survive untouched.
    bystander = MongoChatMessageStore(database, thread_id="t1", tenant_id=tenant, user_id="bob")
    await bystander.add_messages([msg("bob's")])

    configs = [
        {
            "name": name,
            "mode": mode,
            "seconds": WRITE_SECONDS,
            "uri": real_backend.uri,
            "driver": real_backend.driver,
            "db": database.name,
            "tenant": tenant,
            "user": user,
        }
        for name in names
        for mode in ("line", "fork")
    ]
    procs = await start_workers("tests.real._removal_worker", configs, time_limit=TIME_LIMIT)
    await asyncio.sleep(WRITE_SECONDS / 4)  # let them write (and branch) for a while
    ledger = Ledger(database)
    if how == "erase":
        report = await run_erasure(ledger, user_id=user, apply=True, by="test")
    else:
        # As if a day had passed: every lineage is due, although the writers are still busy.
        policy = RetentionPolicy.from_mapping({"default": "1h"})
        later = datetime.now(UTC) + timedelta(days=1)
        report = await run_retention(ledger, policy, apply=True, by="test", now=later)
    finished = time.time()
    results = await finish_workers(procs, time_limit=TIME_LIMIT)

    late = [a for r in results for a in r["acked"] if a["at"] > finished]
    assert late == [], f"{len(late)} appends acknowledged after the removal finished"
    assert any(r["errors"] for r in results), "the writers never noticed the removal"
    assert all(set(r["errors"]) <= {"ThreadRemovedError", "UnknownThreadError"} for r in results)
    if how == "erase":
        await _no_live_documents(database, user)
        assert [m.text for m in await bystander.list_messages()] == ["bob's"]
        assert len(report.removed) == 2
    else:
        live = await database["events"].find({"removed": {"$exists": False}}).to_list(None)
        threads = await database["threads"].find({"removed": {"$exists": False}}).to_list(None)
        assert (threads, live) == ([], []), (report.to_dict(), [e["_id"] for e in live], threads)
    receipts = await database["audit"].find({"kind": "removal"}).to_list(None)
    assert sorted(r["thread_id"] for r in receipts) == sorted({r["thread_id"] for r in receipts})
    assert (await verify(ledger)).ok
