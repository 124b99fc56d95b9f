"""Hostile review of legal holds next to a ChatLedger 0.1 single hold (``legal_hold``).

Every hold that protects a thread must be visible to ``hold list`` (an operator told a
thread was skipped for a legal hold must find it), and a release without a case must
never pick one of several holds silently.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin import RetentionPolicy, release_hold, run_retention, set_hold
from chatledger.admin.holds import list_holds
from chatledger.errors import InvalidInputError
from chatledger.storage.documents import holds_of
from tests.admin.conftest import Clock, talk

POLICY = RetentionPolicy.from_mapping({"default": "30d"})
_LEGACY = {"reason": "court order 2025", "set_at": None, "set_by": "ops@old-host"}


async def test_releasing_without_a_case_refuses_a_case_and_a_0_1_hold_together(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 1)
    await database["threads"].update_one({"_id": "old"}, {"$set": {"legal_hold": dict(_LEGACY)}})
    await set_hold(ledger, "old", reason="new matter", case="C-9")
    # Two holds: which one a bare release ends is the operator's to say, not a guess.
    with pytest.raises(InvalidInputError, match="name the case"):
        await release_hold(ledger, "old", reason="which one?")
    assert [h["case"] for h in await list_holds(ledger)] == [None, "C-9"]
    assert await release_hold(ledger, "old", reason="matter closed", case="C-9")
    assert await release_hold(ledger, "old", reason="0.1 case closed")  # the only one left
    assert not holds_of(await database["threads"].find_one({"_id": "old"})).held


@pytest.mark.parametrize("value", [True, "yes", 1])
async def test_every_0_1_hold_that_blocks_removal_is_listed(database: Any, clock: Clock, value: Any) -> None:
    # 0.1 counted any true value as a hold: it protects the thread, so hold list shows it.
    ledger = Ledger(database)
    await talk(ledger, "old", 1)
    await talk(ledger, "new", 1)
    await database["threads"].update_one({"_id": "old"}, {"$set": {"legal_hold": value}})
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert [s.thread_id for s in report.skipped] == ["old"]
    assert [(h["thread_id"], h["case"]) for h in await list_holds(ledger)] == [("old", None)]
