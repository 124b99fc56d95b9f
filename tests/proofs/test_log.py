"""The Merkle log on every tier: sequencing, checkpoints, proofs, races, resumption, insiders."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from chatledger import IntegrityError, InvalidInputError, Ledger, proofs
from chatledger.admin import run_erasure
from chatledger.admin.merkle import checkpoint, prove_consistency, prove_event, sequence
from tests.admin.conftest import branch, talk

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNING = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def holds(proof: dict[str, Any], *notes: str) -> proofs.Verdict:
    """Verify a proof the way a reviewer does: from its JSON text, offline."""
    return proofs.verify_proof(json.dumps(proof), list(notes), PUBLIC)


async def entries(database: Any, log: str = "default") -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = (
        await database["log_entries"].find({"log": log}).sort("index", 1).to_list(None)
    )
    return docs


async def test_every_event_proves_against_a_checkpoint_and_later_checkpoints_extend_it(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "main", 4)
    b = await branch(ledger, "main", 2, turns=2)
    first = await checkpoint(ledger, SIGNING)
    # Branch events are events like any other: 4 on the main line, 2 on the branch.
    assert (first.report.added, first.report.size) == (6, 6)
    assert first.note.startswith(f"chatledger/{database.name}\n6\n")

    expected = {
        ("main", 1): ["main q0", "main a0"],
        ("main", 4): ["main q3", "main a3"],
        (b, 3): ["edit and retry"],
        (b, 4): [f"{b} q0", f"{b} a0"],
    }
    for (thread, seq), texts in expected.items():
        verdict = holds(await prove_event(ledger, thread, seq), first.note)
        assert (verdict.leaf["thread"], verdict.leaf["seq"]) == (thread, seq)
        assert [m["text"] for _, m in sorted(verdict.messages.items())] == texts

    # One message of a two-message event: the other is shown only by its digest.
    proof = await prove_event(ledger, "main", 2, message=1)
    verdict = holds(proof, first.note)
    assert verdict.messages == {1: {"role": "assistant", "text": "main a1"}}
    assert "main q1" not in json.dumps(proof)

    await talk(ledger, "main", 3)
    second = await checkpoint(ledger, SIGNING)
    assert (second.report.size_before, second.report.added, second.report.size) == (6, 3, 9)
    # An old proof still holds against its own checkpoint; a new one against the new.
    holds(await prove_event(ledger, "main", 7, checkpoint_note=second.note), second.note)
    with pytest.raises(InvalidInputError, match="newer checkpoint"):
        await prove_event(ledger, "main", 7, checkpoint_note=first.note)
    consistency = await prove_consistency(ledger, first.note, second.note)
    assert holds(consistency, first.note, second.note).position == 6
    # Nothing pending: a re-run adds nothing, and a checkpoint of the same tree signs the same root.
    again = await checkpoint(ledger, SIGNING)
    assert (again.report.added, again.report.size, again.report.root) == (0, 9, second.report.root)


async def test_events_appended_after_a_checkpoint_are_covered_by_the_next_one(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 1)
    await checkpoint(ledger, SIGNING)
    await talk(ledger, "t", 1)
    with pytest.raises(InvalidInputError, match="not sequenced yet"):
        await prove_event(ledger, "t", 2)
    await checkpoint(ledger, SIGNING)
    assert (await prove_event(ledger, "t", 2))["tree_size"] == 2


async def test_each_tenant_has_its_own_log(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "a", 2, tenant_id="acme")
    await talk(ledger, "b", 3, tenant_id="bank")
    await talk(ledger, "c", 1)
    acme = await checkpoint(ledger, SIGNING, tenant="acme")
    bank = await checkpoint(ledger, SIGNING, tenant="bank")
    default = await checkpoint(ledger, SIGNING)
    assert [r.report.size for r in (acme, bank, default)] == [2, 3, 1]
    assert acme.origin == f"chatledger/{database.name}/tenant/acme"
    holds(await prove_event(ledger, "b", 3, tenant="bank"), bank.note)
    # Another tenant's event is not in this log, and another log's checkpoint is refused.
    with pytest.raises(InvalidInputError, match="another tenant"):
        await prove_event(ledger, "b", 3, tenant="acme")
    with pytest.raises(proofs.ProofError, match="is for log"):
        holds(await prove_event(ledger, "a", 1, tenant="acme"), bank.note)


async def test_a_removed_event_keeps_its_leaf_and_still_proves_without_content(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "gone", 2, user_id="alice")
    await talk(ledger, "kept", 1, user_id="bob")
    cp = await checkpoint(ledger, SIGNING)
    await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request")
    proof = await prove_event(ledger, "gone", 2)
    verdict = holds(proof, cp.note)
    assert verdict.messages == {}
    assert len(verdict.leaf["messages"]) == 2
    assert "gone q1" not in json.dumps(proof)
    with pytest.raises(InvalidInputError, match="was removed"):
        await prove_event(ledger, "gone", 2, message=0)
    # The log goes on growing past the removal, consistently.
    await talk(ledger, "kept", 1, user_id="bob")
    later = await checkpoint(ledger, SIGNING)
    holds(await prove_consistency(ledger, cp.note, later.note), cp.note, later.note)


async def test_sequencing_in_small_batches_and_resuming_after_a_kill(database: Any) -> None:
    ledger = Ledger(database)
    for name in ("a", "b", "c"):
        await talk(ledger, name, 4)
    first = await sequence(ledger, batch=5)
    assert (first.added, first.size) == (12, 12)
    # A run killed after writing its leaves but before their tree nodes and head.
    await talk(ledger, "d", 5)
    await sequence(ledger, batch=3)
    # What a kill leaves: the leaves past the last head (12), none of their nodes, no head.
    late = [f"default#n{level}.{i}" for level in range(1, 6) for i in range(32) if (i + 1) << level > 12]
    await database["log_tree"].delete_many({"_id": {"$in": [*late, "default#h17"]}})
    resumed = await checkpoint(ledger, SIGNING, batch=4)
    assert (resumed.report.added, resumed.report.size) == (0, 17)
    for name, seq in [("a", 1), ("c", 4), ("d", 5)]:
        holds(await prove_event(ledger, name, seq), resumed.note)
    keys = [e["event"] for e in await entries(database)]
    assert len(keys) == len(set(keys)) == 17
    assert [e["index"] for e in await entries(database)] == list(range(17))


async def test_two_sequencers_racing_do_not_corrupt_the_log(database: Any) -> None:
    ledger = Ledger(database)
    for name in ("a", "b", "c", "d"):
        await talk(ledger, name, 5)
    reports = await asyncio.gather(*(sequence(Ledger(database), batch=3) for _ in range(3)))
    # Every event once, indexes contiguous, whoever appended it.
    assert sum(r.added for r in reports) == 20
    docs = await entries(database)
    assert [d["index"] for d in docs] == list(range(20))
    assert len({d["event"] for d in docs}) == 20
    cp = await checkpoint(ledger, SIGNING)
    assert cp.report.size == 20
    for name in ("a", "d"):
        holds(await prove_event(ledger, name, 5), cp.note)


async def test_a_tampered_event_is_not_sequenced_and_a_tampered_log_is_caught(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 3)
    # An insider edits a message's text before the sequencer runs: refused, nothing logged.
    events = database["events"]
    doc = await events.find_one({"_id": "t#2"})
    messages = doc["messages"]
    messages[0]["text"] = "forged"
    await events.update_one({"_id": "t#2"}, {"$set": {"messages": messages}})
    with pytest.raises(IntegrityError, match="does not match its own hash"):
        await sequence(ledger)
    assert await entries(database) == []
    # Put back: sequenced and checkpointed; then the same edit after the fact.
    messages[0]["text"] = "t q1"
    await events.update_one({"_id": "t#2"}, {"$set": {"messages": messages}})
    cp = await checkpoint(ledger, SIGNING)
    messages[0]["text"] = "forged"
    await events.update_one({"_id": "t#2"}, {"$set": {"messages": messages}})
    with pytest.raises(IntegrityError, match="altered after it was sequenced"):
        await prove_event(ledger, "t", 2)
    # A hostile server rewrites a leaf to claim other content: it serves a proof, and the
    # reviewer's check against the signed root refuses it.
    real = json.loads((await entries(database))[0]["data"])
    forged = proofs.leaf_data(
        tenant=None,
        thread="t",
        seq=1,
        event_hash="0" * 64,  # another event, backdated, with the same messages
        prev_hash=real["prev_hash"],
        created_at=0,
        message_digests=real["messages"],
    )
    await database["log_entries"].update_one(
        {"_id": "default#0"}, {"$set": {"data": forged.decode(), "hash": proofs.leaf_hash(forged).hex()}}
    )
    with pytest.raises(proofs.ProofError, match="does not lead to the checkpoint's root"):
        holds(await prove_event(ledger, "t", 1, checkpoint_note=cp.note), cp.note)


async def test_an_insider_who_rebuilds_the_log_is_caught_by_consistency(database: Any) -> None:
    # Attack: delete the log and an event's thread tail, then re-sequence and sign again
    # (the insider has the signing key too). A reviewer holding the old checkpoint asks
    # for a consistency proof to the new one: there is none that verifies.
    ledger = Ledger(database)
    await talk(ledger, "t", 4)
    old = await checkpoint(ledger, SIGNING)
    await database["events"].delete_many({"_id": {"$in": ["t#3", "t#4"]}})
    await talk(ledger, "u", 3)
    await database["log_entries"].delete_many({})
    await database["log_tree"].delete_many({})
    new = await checkpoint(ledger, SIGNING)
    assert new.report.size == 5
    with pytest.raises(IntegrityError):
        await prove_consistency(ledger, old.note, new.note)
    # Nor does a proof the insider computes from the rebuilt tree: it starts from another root.
    hashes = [bytes.fromhex(e["hash"]) for e in await entries(database)]
    forged = await prove_consistency(ledger, new.note, new.note)
    forged.update(old_size=4, path=[base64.b64encode(h).decode() for h in proofs.consistency_path(4, hashes)])
    with pytest.raises(proofs.ProofError, match=r"does not lead to the (old|new) checkpoint's root"):
        holds(forged, old.note, new.note)


async def test_bad_arguments_write_nothing(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 1)
    with pytest.raises(InvalidInputError, match="not an unencrypted PEM"):
        await checkpoint(ledger, b"-----BEGIN PRIVATE KEY-----\ntruncated")
    with pytest.raises(InvalidInputError, match="origin"):
        await checkpoint(ledger, SIGNING, origin="has space")
    assert await entries(database) == []
    with pytest.raises(InvalidInputError, match="no checkpoint yet"):
        await prove_event(ledger, "t", 1)
    for kwargs in ({"seq": 0}, {"seq": True}, {"message": -1}):
        with pytest.raises(InvalidInputError):
            await prove_event(ledger, "t", **{"seq": 1, **kwargs})
    with pytest.raises(InvalidInputError):
        await prove_event(ledger, {"$ne": None}, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await sequence(ledger, tenant={"$ne": None})  # type: ignore[arg-type]


async def test_two_ledgers_in_one_database_keep_separate_logs(database: Any) -> None:
    main, other = (
        Ledger(database),
        Ledger(database, events_collection="events_b", threads_collection="threads_b"),
    )
    await talk(main, "t", 2)
    await talk(other, "t", 5)
    assert (await checkpoint(main, SIGNING)).report.size == 2
    cp = await checkpoint(other, SIGNING)
    assert cp.report.size == 5
    holds(await prove_event(other, "t", 5), cp.note)


async def test_a_sealed_event_proves_by_its_ciphertext_without_any_key(database: Any) -> None:
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer

    sealer = Sealer(KeyStore(database), LocalKeyProvider(bytes(range(32))))
    ledger = Ledger(database, sealer=sealer)
    await talk(ledger, "s", 2, user_id="alice")
    cp = await checkpoint(Ledger(database), SIGNING)  # the sequencer needs no key
    proof = await prove_event(Ledger(database), "s", 2)
    verdict = holds(proof, cp.note)
    assert len(verdict.messages) == 2
    assert "s q1" not in json.dumps(proof)
    assert "s a1" not in json.dumps(proof)
    # The ciphertext is committed to by its digest (as the hash chain does).
    assert any("sha256" in json.dumps(m) for m in verdict.messages.values())
