"""A receipt (a removal, a legal hold) proven on its own to a reviewer, offline; hostile receipt proofs."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import IntegrityError, InvalidInputError, Ledger, proofs
from chatledger.admin import run_erasure, set_hold
from chatledger.admin.merkle import checkpoint, prove_event, prove_receipt
from chatledger.cli.commands import ledgerproofs
from tests.admin.conftest import talk
from tests.proofs.test_cli import ui
from tests.proofs.test_log import PUBLIC, SIGNING, holds


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chatledger.admin.merkle.HOLD_SETTLE_SECONDS", 0.0)


async def receipts(database: Any, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await database["audit"].find({"kind": kind}).to_list(None)
    return found


async def logged(database: Any) -> tuple[Ledger, str, str, str]:
    """A ledger with a hold and an erasure, checkpointed: (ledger, note, hold id, removal id)."""
    ledger = Ledger(database)
    await talk(ledger, "gone", 2, user_id="alice")
    await talk(ledger, "kept", 1, user_id="bob")
    await checkpoint(ledger, SIGNING)  # the erased events were sequenced before their removal
    await set_hold(ledger, "kept", reason="litigation", case="C-1", by="legal@corp")
    await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request")
    cp = await checkpoint(ledger, SIGNING)
    (hold,) = await receipts(database, "hold.set")
    (removal,) = await receipts(database, "removal")
    return ledger, cp.note, str(hold["_id"]), str(removal["_id"])


async def test_a_removal_receipt_and_a_hold_receipt_prove_on_their_own(database: Any) -> None:
    ledger, note, hold_id, removal_id = await logged(database)
    verdict = holds(await prove_receipt(ledger, removal_id), note)
    assert verdict.receipt is not None
    assert (verdict.receipt["_id"], verdict.receipt["kind"]) == (removal_id, "removal")
    assert verdict.receipt["reason"] == "GDPR request"
    assert verdict.leaf["type"] == "removal"
    assert f"receipt {removal_id!r} (removal)" in verdict.summary()
    assert "content is proven" in verdict.summary()

    hold = holds(await prove_receipt(ledger, hold_id, checkpoint_note=note), note)
    assert hold.receipt is not None
    assert (hold.receipt["thread_id"], hold.receipt["case"]) == ("kept", "C-1")
    assert isinstance(hold.receipt["at"]["$date"], int)
    # The removed event still proves without content, and carries its removal receipt.
    removed = holds(await prove_event(ledger, "gone", 1), note)
    assert removed.messages == {}
    assert removed.removal is not None
    assert (removed.removal["_id"], removed.removal["reason"]) == (removal_id, "GDPR request")
    assert f"removed by receipt {removal_id!r}" in removed.summary()


async def test_a_removed_event_proven_before_its_removal_was_checkpointed_carries_no_receipt(
    database: Any,
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "gone", 1, user_id="alice")
    cp = await checkpoint(ledger, SIGNING)
    await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request")
    proof = await prove_event(ledger, "gone", 1, checkpoint_note=cp.note)
    assert "removal" not in proof
    assert holds(proof, cp.note).removal is None
    later = await checkpoint(ledger, SIGNING)
    assert holds(await prove_event(ledger, "gone", 1), later.note).removal is not None


async def test_hostile_removal_receipts_beside_a_removed_event_are_refused(database: Any) -> None:
    ledger, note, hold_id, _ = await logged(database)
    honest = await prove_event(ledger, "gone", 2)
    holds(honest, note)
    hold = await prove_receipt(ledger, hold_id)
    kept = await prove_event(ledger, "kept", 1)
    removal = honest["removal"]
    forgeries: list[tuple[dict[str, Any], str]] = [
        ({**honest, "removal": {k: hold[k] for k in removal}}, "not a removal"),
        (
            {**honest, "removal": {**removal, "path": removal["path"][:-1]}},
            "the removal receipt: the inclusion",
        ),
        ({**honest, "removal": {**removal, "leaf_index": 0}}, "the removal receipt: the inclusion"),
        ({**honest, "removal": {**removal, "extra": 1}}, "exactly the fields"),
        ({**honest, "removal": "trust me"}, "exactly the fields"),
        ({**kept, "messages": [], "removal": removal}, "does not name the event's thread"),
        ({**kept, "removal": removal}, "shows no messages"),
        ({**hold, "removal": removal}, "exactly the fields"),
    ]
    for doc, reason in forgeries:
        with pytest.raises(proofs.ProofError, match=reason):
            holds(doc, note)


async def test_prove_receipt_refuses_what_the_checkpoint_does_not_cover(database: Any) -> None:
    ledger, note, hold_id, _ = await logged(database)
    with pytest.raises(InvalidInputError, match="not sequenced yet"):
        await prove_receipt(ledger, "no-such-receipt")
    await set_hold(ledger, "kept", reason="audit", case="C-2", by="legal@corp")
    (later,) = [r for r in await receipts(database, "hold.set") if r["case"] == "C-2"]
    with pytest.raises(InvalidInputError, match="not sequenced yet"):
        await prove_receipt(ledger, str(later["_id"]))
    await checkpoint(ledger, SIGNING)
    with pytest.raises(InvalidInputError, match="after the checkpoint's"):
        await prove_receipt(ledger, str(later["_id"]), checkpoint_note=note)
    with pytest.raises(InvalidInputError, match="receipt id"):
        await prove_receipt(ledger, "")
    # An insider who edits or deletes a logged receipt cannot prove it any more.
    await database["audit"].update_one({"_id": hold_id}, {"$set": {"by": "someone@else"}})
    with pytest.raises(IntegrityError, match="altered after it was logged"):
        await prove_receipt(ledger, hold_id)
    await database["audit"].delete_one({"_id": hold_id})
    with pytest.raises(IntegrityError, match="deleted from the audit collection"):
        await prove_receipt(ledger, hold_id)


def _edit(part: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    """Change fields of the proof's receipt or leaf (a JSON text), keeping it canonical."""

    def change(doc: dict[str, Any]) -> None:
        fields = json.loads(doc[part])
        fields.update(changes)
        doc[part] = json.dumps(fields, sort_keys=True, separators=(",", ":"))

    return change


def _receipt_field(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return _edit("receipt", **changes)


def _leaf_field(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return _edit("leaf", **changes)


def _forged_consistently(**changes: Any) -> Callable[[dict[str, Any]], None]:
    """A hostile server rewrites the receipt AND its leaf's digest: the path then fails."""

    def change(doc: dict[str, Any]) -> None:
        _receipt_field(**changes)(doc)
        _leaf_field(digest=hashlib.sha256(doc["receipt"].encode("utf-8")).hexdigest())(doc)

    return change


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(key, value)


#: A hostile server's receipt proofs: (name, change to the honest proof, reason expected).
RECEIPT_FORGERIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("receipt reason edited", _receipt_field(reason="routine clean-up"), "does not match its digest"),
    ("receipt and digest rewritten", _forged_consistently(reason="routine"), "does not lead"),
    ("receipt not canonical", lambda d: d.update(receipt=d["receipt"] + " "), "does not match its digest"),
    ("receipt missing", lambda d: d.pop("receipt"), "exactly the fields"),
    ("receipt not text", _set("receipt", {"kind": "removal"}), "not a string"),
    ("leaf other receipt", _leaf_field(receipt="another"), "id or kind"),
    ("leaf other kind", _leaf_field(type="hold.released"), "id or kind"),
    ("leaf other time", _leaf_field(at=1), "time"),
    ("leaf extra field", _leaf_field(note="x"), "fields of a ChatLedger receipt leaf"),
    ("leaf of an event", lambda d: d.update(leaf=json.dumps({"v": 1})), "receipt leaf"),
    ("messages added", _set("messages", []), "exactly the fields"),
    ("other index", lambda d: d.update(leaf_index=d["leaf_index"] - 1), "the inclusion path"),
    ("other tree size", lambda d: d.update(tree_size=d["tree_size"] + 1), "the checkpoint has"),
]


async def test_hostile_receipt_proofs_are_refused(database: Any) -> None:
    ledger, note, _, removal_id = await logged(database)
    honest = await prove_receipt(ledger, removal_id)
    holds(honest, note)
    for name, change, reason in RECEIPT_FORGERIES:
        doc = copy.deepcopy(honest)
        change(doc)
        with pytest.raises(proofs.ProofError, match=reason) as caught:
            holds(doc, note)
        assert "\n" not in str(caught.value), name
    # An event proof is not accepted as a receipt proof, nor the other way round.
    event = await prove_event(ledger, "kept", 1)
    as_receipt = {k: v for k, v in event.items() if k != "messages"} | {"receipt": honest["receipt"]}
    with pytest.raises(proofs.ProofError, match="receipt leaf"):
        holds(as_receipt, note)
    mixed = {k: v for k, v in honest.items() if k != "receipt"} | {"messages": []}
    with pytest.raises(proofs.ProofError, match="fields of a ChatLedger leaf"):
        holds(mixed, note)


async def test_prove_receipt_from_the_command_line_and_verify_it_offline(
    database: Any, tmp_path: Path
) -> None:
    _, note, _, removal_id = await logged(database)
    (tmp_path / "cp.txt").write_text(note, encoding="utf-8")
    (tmp_path / "log.pem").write_bytes(PUBLIC)
    common: dict[str, Any] = {"thread": None, "seq": None, "message": None, "old": None, "new": None}
    r, out, _ = ui()
    proof = str(tmp_path / "receipt.json")
    done = await ledgerproofs.prove_body(
        database,
        r,
        **common,
        checkpoint_file=str(tmp_path / "cp.txt"),
        tenant=None,
        output=proof,
        receipt=removal_id,
    )
    assert done == 0
    r, out, _ = ui(as_json=True)
    assert (
        ledgerproofs.verify_proof_body(r, proof, [str(tmp_path / "cp.txt")], str(tmp_path / "log.pem")) == 0
    )
    doc = json.loads(out.getvalue())
    assert (doc["ok"], doc["receipt"]["_id"], doc["receipt"]["kind"]) == (True, removal_id, "removal")
    for bad in ({"thread": "kept", "seq": 1}, {"tenant": "acme"}):
        args = {
            **common,
            "checkpoint_file": None,
            "tenant": None,
            "output": None,
            "receipt": removal_id,
            **bad,
        }
        with pytest.raises(InvalidInputError, match="--receipt"):
            await ledgerproofs.prove_body(database, ui()[0], **args)
