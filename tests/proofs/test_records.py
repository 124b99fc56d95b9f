"""Receipts and legal holds in the Merkle log: an insider who edits them is caught by the next run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatledger import IntegrityError, Ledger
from chatledger.admin import release_hold, set_hold
from chatledger.admin.merkle import audit_findings, checkpoint, prove_consistency, sequence
from tests.admin.conftest import talk
from tests.proofs.test_log import SIGNING, entries, holds


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    # A disagreeing hold is re-read after a pause (a change in flight); tests need no pause.
    monkeypatch.setattr("chatledger.admin.merkle.HOLD_SETTLE_SECONDS", 0.0)


async def held_ledger(database: Any) -> Ledger:
    ledger = Ledger(database)
    await talk(ledger, "a", 2)
    await talk(ledger, "b", 1)
    await set_hold(ledger, "a", reason="litigation", case="C-1", by="legal@corp")
    await set_hold(ledger, "b", reason="audit", case="C-2", by="legal@corp")
    await release_hold(ledger, "b", reason="closed", case="C-2", by="legal@corp")
    return ledger


async def test_hold_receipts_become_leaves_of_the_default_log(database: Any) -> None:
    ledger = await held_ledger(database)
    first = await checkpoint(ledger, SIGNING)
    leaves = await entries(database)
    receipts = [json.loads(e["data"]) for e in leaves if e.get("kind") == "receipt"]
    assert sorted(r["type"] for r in receipts) == ["hold.released", "hold.set", "hold.set"]
    assert first.report.size == 3 + 3
    assert await audit_findings(ledger) == []
    # A later hold extends the same log: consistent with the earlier checkpoint.
    await set_hold(ledger, "b", reason="again", case="C-3", by="legal@corp")
    second = await checkpoint(ledger, SIGNING)
    assert second.report.added == 1
    holds(await prove_consistency(ledger, first.note, second.note), first.note, second.note)


async def test_an_insider_deleting_a_receipt_is_caught_by_the_next_checkpoint(database: Any) -> None:
    ledger = await held_ledger(database)
    await checkpoint(ledger, SIGNING)
    await database["audit"].delete_one({"kind": "hold.released"})
    with pytest.raises(IntegrityError, match="deleted from the audit collection"):
        await checkpoint(ledger, SIGNING)


async def test_an_insider_editing_a_receipt_is_caught(database: Any) -> None:
    ledger = await held_ledger(database)
    await sequence(ledger)
    await database["audit"].update_one({"kind": "hold.released"}, {"$set": {"by": "someone@else"}})
    with pytest.raises(IntegrityError, match="altered after it was logged"):
        await sequence(ledger)


async def test_an_insider_editing_or_lifting_a_hold_is_caught(database: Any) -> None:
    ledger = await held_ledger(database)
    await checkpoint(ledger, SIGNING)
    # Lifting the hold without a receipt, so that retention could remove the thread.
    await database["threads"].update_one({"_id": "a"}, {"$set": {"legal_holds": []}})
    with pytest.raises(IntegrityError, match="the receipts hold it for case 'C-1'"):
        await checkpoint(ledger, SIGNING)
    # Putting it back with another reason is caught too.
    doc = await database["threads"].find_one({"_id": "a"})
    assert doc is not None
    await database["threads"].update_one(
        {"_id": "a"}, {"$set": {"legal_holds": [{"case": "C-1", "reason": "nothing to see"}]}}
    )
    edited = "thread 'a': the hold for case 'C-1' was edited after its receipt"
    assert await audit_findings(ledger) == [edited]
    # And a hold set behind the admin functions' back.
    await database["threads"].update_one(
        {"_id": "b"}, {"$set": {"legal_holds": [{"case": "X", "reason": "forged"}]}}
    )
    with pytest.raises(IntegrityError, match="held for case 'X' without a receipt"):
        await sequence(ledger)


async def test_an_insider_deleting_a_receipt_and_its_leaf_is_caught(database: Any) -> None:
    ledger = await held_ledger(database)
    first = await checkpoint(ledger, SIGNING)
    # Every trace of the hold on b: both its receipts and both their leaves.
    for receipt in await database["audit"].find({"thread_id": "b"}).to_list(None):
        await database["audit"].delete_one({"_id": receipt["_id"]})
        await database["log_entries"].delete_one({"event": f"receipt:{receipt['_id']}"})
    with pytest.raises(IntegrityError, match="leaves were deleted"):
        await checkpoint(ledger, SIGNING)
    # Rebuilding the log without it cannot reproduce the checkpoint kept outside.
    await database["log_entries"].delete_many({})
    await database["log_tree"].delete_many({})
    await talk(ledger, "c", 3)
    rebuilt = await checkpoint(ledger, SIGNING)
    assert rebuilt.report.size == first.report.size - 2 + 3
    with pytest.raises(IntegrityError, match="no longer gives the root"):
        await prove_consistency(ledger, first.note, rebuilt.note)


async def test_a_hold_without_a_receipt_is_put_right_by_releasing_and_setting_it(database: Any) -> None:
    ledger = await held_ledger(database)
    await sequence(ledger)
    # What a crash between a hold's write and its receipt's leaves behind.
    await database["threads"].update_one(
        {"_id": "b"}, {"$set": {"legal_holds": [{"case": "C-9", "reason": "unrecorded"}]}}
    )
    with pytest.raises(IntegrityError, match="without a receipt"):
        await sequence(ledger)
    assert await release_hold(ledger, "b", reason="re-record", case="C-9", by="legal@corp")
    await set_hold(ledger, "b", reason="unrecorded", case="C-9", by="legal@corp")
    assert (await sequence(ledger)).added == 2
    assert await audit_findings(ledger) == []
