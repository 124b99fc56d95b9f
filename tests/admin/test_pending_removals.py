"""Finding interrupted removals at the start of every run, with years of receipts behind it.

Every ``retention``/``erase`` run (and ``verify``) first looks for removals that started
and never completed. An operator running retention from cron for years has an audit trail
of thousands of completed removals, each receipt listing every thread and head it removed:
the check must find exactly the unfinished ones without reading all those bodies back.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

from bson import encode
from pymongo import monitoring

from chatledger import Ledger
from chatledger.admin import RetentionPolicy, export_jsonl, pending_removals, run_retention, verify
from chatledger.admin.receipts import COMPLETED, REMOVAL, Receipts
from tests.conftest import Backend
from tests.helpers import Listener, monitored

#: What a completed removal of a large lineage lists (never needed to find unfinished ones).
_HEADS = [{"thread_id": f"t{n:04d}", "head_seq": n, "head_hash": "ab" * 32} for n in range(200)]


async def _history(ledger: Ledger, completed: int, pending: int) -> list[str]:
    """Write ``completed`` finished removals and ``pending`` unfinished ones; return the latter's ids."""
    receipts = Receipts.of(ledger)
    unfinished = []
    for n in range(completed + pending):
        started = await receipts.record(
            REMOVAL, "cron", action="retention", heads=_HEADS, thread_ids=[f"r{n}"]
        )
        if n < completed:
            await receipts.record(COMPLETED, "cron", receipt_id=started["_id"])
        else:
            unfinished.append(started["_id"])
    return unfinished


async def test_only_the_unfinished_removals_are_found_among_many_completed(database: Any) -> None:
    ledger = Ledger(database)
    unfinished = await _history(ledger, completed=60, pending=3)
    found = await pending_removals(ledger)
    # Whole receipts, oldest first, exactly the unfinished ones.
    assert [r["_id"] for r in found] == unfinished
    assert all(r["heads"] == _HEADS and r["kind"] == REMOVAL for r in found)


async def test_malformed_receipts_are_counted_not_crashed_on(database: Any) -> None:
    ledger = Ledger(database)
    [unfinished] = await _history(ledger, completed=2, pending=1)
    # A completion naming a document instead of a receipt id refers to nothing, and a
    # removal receipt whose id is a document can have no completion: it stays unfinished.
    await database["audit"].insert_one({"_id": uuid.uuid4().hex, "kind": COMPLETED, "receipt_id": {"x": 1}})
    await database["audit"].insert_one({"_id": {"odd": 1}, "kind": REMOVAL, "thread_ids": ["r9"]})
    found = await pending_removals(ledger)
    assert sorted(map(str, (r["_id"] for r in found))) == sorted([unfinished, str({"odd": 1})])
    # The admin tools that read the audit trail report them too, and do not crash.
    report = await verify(ledger)
    assert not report.ok  # unfinished removals are a problem verify names
    dry = await run_retention(ledger, RetentionPolicy.from_mapping({"default": "30d"}))
    # The undated one is taken for interrupted; the fresh one may still be running elsewhere.
    assert dry.resumed == [str({"odd": 1})]
    out = io.StringIO()
    await export_jsonl(ledger, out, audit=True)
    assert out.getvalue()


class _ReplyBytes(Listener):
    """Sums the BSON size of the replies to reads of the audit collection."""

    def __init__(self) -> None:
        self.reads: set[int] = set()
        self.bytes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "getMore") and "audit" in (
            event.command.get("find"),
            event.command.get("collection"),
        ):
            self.reads.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self.reads:
            self.bytes += len(encode(event.reply))


async def test_the_check_reads_ids_not_the_bodies_of_completed_removals(real_backend: Backend) -> None:
    listener = _ReplyBytes()
    async with monitored(real_backend, listener) as database:
        ledger = Ledger(database)
        await _history(ledger, completed=40, pending=1)
        listener.bytes = 0
        assert len(await pending_removals(ledger)) == 1
        # 40 completed receipts carry 40 x 200 heads (~ 40 x 17 KB); reading them back
        # whole was what grew the check with the audit trail. One unfinished body is read.
        body = len(encode(await database["audit"].find_one({"kind": REMOVAL})))
        assert listener.bytes < 3 * body, (listener.bytes, body)
