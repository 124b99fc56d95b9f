"""A bad document in the log's own collections: the sequencer and the prover say IntegrityError."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatledger import IntegrityError, InvalidInputError, Ledger, proofs
from chatledger.admin import run_erasure
from chatledger.admin.merkle import checkpoint, prove_consistency, prove_event, prove_receipt, sequence
from tests.admin.conftest import branch, talk
from tests.proofs.test_log import SIGNING


@pytest.mark.parametrize("data", ["not json", "[1, 2]", "null"])
async def test_a_garbled_leaf_of_a_predecessor_is_an_integrity_error_for_the_sequencer(
    database: Any, data: str
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    await checkpoint(ledger, SIGNING)
    # The insider garbles the leaf of t#2; t#3, appended later, is checked against it.
    await database["log_entries"].update_one({"log": "default", "event": "t#2"}, {"$set": {"data": data}})
    await talk(ledger, "t", 1)
    with pytest.raises(IntegrityError, match="t#2"):
        await checkpoint(ledger, SIGNING)


@pytest.mark.parametrize("data", ["[1, 2]", "{}", '{"messages": 3}', '{"digest": 3}'])
async def test_a_leaf_rewritten_with_its_hash_is_an_integrity_error_for_the_prover(
    database: Any, data: str
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 1, user_id="alice")
    await talk(ledger, "u", 3, user_id="bob")
    await checkpoint(ledger, SIGNING)
    await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request")
    await checkpoint(ledger, SIGNING)
    receipt = await database["audit"].find_one({"kind": "removal"})
    assert receipt is not None
    # The insider rewrites two leaves (data and hash agree; the tree's nodes above them stay).
    changed = {"data": data, "hash": proofs.leaf_hash(data.encode()).hex()}
    for event in ("u#2", f"receipt:{receipt['_id']}"):
        await database["log_entries"].update_one({"log": "default", "event": event}, {"$set": changed})
    with pytest.raises(IntegrityError, match="malformed"):
        await prove_event(ledger, "u", 2)
    with pytest.raises(IntegrityError, match="malformed"):
        await prove_receipt(ledger, str(receipt["_id"]))


async def test_another_logs_checkpoint_is_a_wrong_argument_not_tampering(database: Any) -> None:
    # The operator at 3 a.m. passes the bank tenant's checkpoint to prove a default-log event:
    # nothing was altered, so this must not read as an IntegrityError ("the log was altered").
    ledger = Ledger(database)
    await talk(ledger, "b", 3, tenant_id="bank")
    await talk(ledger, "c", 3)
    bank = await checkpoint(ledger, SIGNING, tenant="bank")
    await checkpoint(ledger, SIGNING)
    with pytest.raises(InvalidInputError, match="tenant/bank"):
        await prove_event(ledger, "c", 1, checkpoint_note=bank.note)
    # The same with two of the bank's checkpoints and no --tenant.
    await talk(ledger, "b", 1, tenant_id="bank")
    later = await checkpoint(ledger, SIGNING, tenant="bank")
    with pytest.raises(InvalidInputError, match="tenant/bank"):
        await prove_consistency(ledger, bank.note, later.note)
    assert (await prove_consistency(ledger, bank.note, later.note, tenant="bank"))["new_size"] == 4


async def test_racing_writers_branches_and_sequencers_raise_no_false_gap(database: Any) -> None:
    # A live system: writers append to their threads and branch, while two sequencers run
    # again and again. Nothing vanished, so no run may refuse; the log ends complete.
    ledger = Ledger(database)
    for name in ("a", "b", "c"):
        await talk(ledger, name, 2)
    done = False

    async def write(name: str) -> None:
        for turn in range(6):
            await talk(ledger, name, 1)
            if turn == 2:
                await branch(ledger, name, 1, turns=2)

    async def run() -> None:
        for _ in range(4):
            await sequence(ledger)
            if done:
                break

    async def writers() -> None:
        nonlocal done
        try:
            await asyncio.gather(*(write(name) for name in ("a", "b", "c")))
        finally:
            done = True

    await asyncio.gather(writers(), run(), run())
    await sequence(ledger, full=True)
    count = await database["events"].count_documents({})
    assert await database["log_entries"].count_documents({"log": "default"}) == count
