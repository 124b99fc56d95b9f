"""Erasure and shredding killed between destroying the keys and recording them, then run again."""

from __future__ import annotations

from typing import Any

from chatledger.admin.erasure import run_erasure
from chatledger.sealing.keys import KEYS_DESTROYED, destroy_subject_keys
from tests.helpers import raw_docs
from tests.sealing.test_sealing import sealed_ledger, talk


async def test_keys_destroyed_by_a_killed_run_are_all_recorded_by_the_next(database: Any) -> None:
    ledger = sealed_ledger(database)
    await talk(ledger, "alice", ["one"])
    await talk(ledger, "alice", ["at work"], tenant="acme")
    await run_erasure(ledger, user_id="alice", apply=True, shred_keys=False)
    assert ledger.sealer is not None
    # The run that would shred dies after the tombstones, before its keys.destroyed receipt.
    died = await destroy_subject_keys(
        ledger.sealer.key_store,
        user_id="alice",
        apply=True,
        receipt_id="r-killed",
        ledger_id=ledger.ledger_id,
    )
    assert died.destroyed
    assert len(died.key_ids) >= 2
    await run_erasure(ledger, user_id="alice", apply=True)
    receipts = [r for r in await raw_docs(database["audit"]) if r["kind"] == KEYS_DESTROYED]
    # Every key the killed run destroyed is named by a receipt: the audit trail has no hole.
    recorded = {k for r in receipts for k in r["key_ids"]}
    assert set(died.key_ids) <= recorded, (died.key_ids, receipts)
