"""A legal hold written by ChatLedger 0.1 (one ``legal_hold`` document per thread, no case).

Only storage/ knows that spelling; everything an operator sees of such a hold goes
through it: the thread is held (listed, counted, protected from retention and erasure),
``hold release THREAD`` releases it, and after that the thread is removed like any other.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin import (
    RetentionPolicy,
    collect_stats,
    list_threads,
    plan_erasure,
    release_hold,
    run_retention,
    set_hold,
    verify,
)
from chatledger.admin.holds import list_holds
from chatledger.errors import InvalidInputError
from chatledger.storage.documents import holds_of
from tests.admin.conftest import Clock, talk

POLICY = RetentionPolicy.from_mapping({"default": "30d"})
_LEGACY = {"reason": "court order 2025", "set_at": None, "set_by": "ops@old-host"}


async def _legacy_hold(database: Any, thread_id: str) -> None:
    # Written the way 0.1 wrote it: a single document, no case, no revision.
    await database["threads"].update_one({"_id": thread_id}, {"$set": {"legal_hold": dict(_LEGACY)}})


def test_storage_reads_every_spelling_of_a_hold() -> None:
    legacy = holds_of({"legal_hold": dict(_LEGACY)})
    assert (legacy.held, legacy.legacy, legacy.cases, legacy.case_names()) == (True, True, (), ["-"])
    both = holds_of({"legal_hold": dict(_LEGACY), "legal_holds": [{"case": "C-1"}], "holds_rev": 3})
    assert (both.held, both.legacy, both.rev, both.case_names()) == (True, True, 3, ["C-1"])
    # A released 0.1 hold is stored as null: no hold.
    assert not holds_of({"legal_hold": None, "legal_holds": []}).held
    # Any true value counted as a hold in 0.1: it still blocks removals, though it cannot be released.
    odd = holds_of({"legal_hold": True})
    assert (odd.held, odd.legacy, odd.case_names()) == (True, False, ["-"])


async def test_a_0_1_hold_is_listed_counted_and_protects_the_thread(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 2)
    await talk(ledger, "other", 1, user_id="u")
    await _legacy_hold(database, "old")
    clock.advance(days=60)
    rows = {s.thread_id: s async for s in list_threads(ledger)}
    assert (rows["old"].held, rows["old"].cases) == (True, ["-"])
    assert (rows["other"].held, rows["other"].cases) == (False, [])
    assert (await collect_stats(ledger)).held == 1
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert [s.thread_id for s in report.skipped] == ["old"]
    assert "legal hold" in report.skipped[0].reason
    assert await database["threads"].find_one({"_id": "old", "removed": {"$exists": False}}) is not None
    assert (await verify(ledger)).ok


async def test_a_0_1_hold_is_released_and_the_thread_then_removed(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 2, user_id="alice")
    await _legacy_hold(database, "old")
    erasure = await plan_erasure(ledger, user_id="alice")
    assert [s.thread_id for s in erasure.skipped] == ["old"]
    assert await release_hold(ledger, "old", reason="0.1 case closed")
    receipt = await database["audit"].find_one({"kind": "hold.released", "reason": "0.1 case closed"})
    assert receipt is not None
    assert receipt["case"] is None
    stored = await database["threads"].find_one({"_id": "old"})
    assert not holds_of(stored).held
    assert not await release_hold(ledger, "old", reason="nothing left")
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert [r.thread_id for r in report.planned] == ["old"]
    assert report.removed
    assert (await verify(ledger)).ok


async def test_releasing_without_a_case_names_the_cases_of_a_thread_held_several_times(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 1)
    await set_hold(ledger, "old", reason="a", case="A")
    await set_hold(ledger, "old", reason="b", case="B")
    await _legacy_hold(database, "old")
    with pytest.raises(InvalidInputError, match="name the case"):
        await release_hold(ledger, "old", reason="which one?")


async def test_releasing_a_case_keeps_the_0_1_hold_of_the_same_thread(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 2)
    await _legacy_hold(database, "old")
    await set_hold(ledger, "old", reason="new matter", case="C-9")
    listed = [(h["case"], h["reason"]) for h in await list_holds(ledger)]
    assert listed == [(None, "court order 2025"), ("C-9", "new matter")]
    # The case's hold ends; the 0.1 hold (which has no case) was not the one released.
    assert await release_hold(ledger, "old", reason="matter closed", case="C-9")
    assert holds_of(await database["threads"].find_one({"_id": "old"})).legacy
    assert [h["case"] for h in await list_holds(ledger)] == [None]
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert [s.thread_id for s in report.skipped] == ["old"]
    # Named without a case, it is the thread's only hold left: that release ends it.
    assert await release_hold(ledger, "old", reason="0.1 case closed")
    assert not holds_of(await database["threads"].find_one({"_id": "old"})).held
