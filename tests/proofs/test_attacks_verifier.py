"""Hostile inputs to the offline verifier: each must be refused with ProofError, never a raw exception."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatledger import proofs
from tests.proofs import vectors

V = vectors.build()
PUBLIC = V["public.pem"]


def _inclusion() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(V["inclusion.json"])
    return doc


def _refused(proof: str, checkpoints: list[str] | None = None, key: str | bytes = PUBLIC) -> str:
    with pytest.raises(proofs.ProofError) as e:
        proofs.verify_proof(proof, checkpoints or [V["checkpoint-7.txt"]], key)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_checkpoint_with_a_size_of_thousands_of_digits_is_refused_not_a_crash() -> None:
    # int() refuses strings over 4300 digits with a bare ValueError.
    body, _, sigs = V["checkpoint-7.txt"].partition("\n\n")
    lines = body.split("\n")
    lines[1] = "9" * 5000
    note = "\n".join(lines) + "\n\n" + sigs
    assert "tree size" in _refused(V["inclusion.json"], [note])
    with pytest.raises(proofs.ProofError):
        proofs.unverified_checkpoint(note)


@pytest.mark.parametrize("where", ["leaf", "message", "origin"])
def test_a_lone_surrogate_escaped_in_the_proof_is_refused_not_a_crash(where: str) -> None:
    # JSON may spell a lone surrogate ("\ud800"); it is a str Python cannot encode as UTF-8.
    doc = _inclusion()
    if where == "leaf":
        doc["leaf"] = doc["leaf"].replace("vector-thread", "vector-thread\ud800")
    elif where == "message":
        doc["messages"][0]["canonical"] = "\ud800"
    else:
        doc["origin"] = "\ud800"
    _refused(json.dumps(doc))


def test_a_lone_surrogate_in_a_receipt_proof_is_refused_not_a_crash() -> None:
    doc = _inclusion()
    del doc["messages"]
    doc["leaf"] = proofs.receipt_leaf_data(receipt_id="r", kind="removal", at=None, digest="0" * 64).decode()
    doc["receipt"] = "\udfff"
    _refused(json.dumps(doc))


def test_a_removal_beside_a_receipt_proof_or_of_the_wrong_shape_is_refused() -> None:
    doc = _inclusion()
    doc["messages"] = []
    for removal in (
        None,
        [],
        "x",
        {"leaf_index": 0},
        {"leaf_index": True, "leaf": "", "path": [], "receipt": ""},
    ):
        doc["removal"] = removal
        _refused(json.dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"chatledger_proof": 1, "type": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"chatledger_proof": ' + "9" * 5000 + "}",
        '{"chatledger_proof": 1e999999}',
        '{"chatledger_proof": 1.0, "type": "inclusion"}',
        '{"chatledger_proof": true, "type": "inclusion"}',
        '{"chatledger_proof": 1, "type": {"a": 1}}',
        "\ud800",
        "null",
        "",
    ],
)
def test_hostile_json_is_refused_not_a_crash(text: str) -> None:
    _refused(text)


def test_a_public_key_with_a_lone_surrogate_or_garbage_is_refused() -> None:
    for key in ("\ud800", "", "-----BEGIN PUBLIC KEY-----\n\n-----END PUBLIC KEY-----\n", b"\x00" * 10):
        _refused(V["inclusion.json"], key=key)


def test_a_checkpoint_with_a_lone_surrogate_is_refused_not_a_crash() -> None:
    note = V["checkpoint-7.txt"].replace(vectors.ORIGIN, vectors.ORIGIN + "\ud800")
    _refused(V["inclusion.json"], [note])


def _spki_of_unknown_type() -> bytes:
    # A SubjectPublicKeyInfo whose algorithm is OID 1.2.3.4: well-formed PEM, no such key type.
    import base64

    der = bytes.fromhex("3017300506032a030403") + bytes([0x0E, 0x00]) + b"\x00" * 13
    return b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der) + b"\n-----END PUBLIC KEY-----\n"


def test_a_public_key_of_an_unknown_type_is_refused_not_a_crash() -> None:
    # cryptography raises UnsupportedAlgorithm (not a ValueError) for unknown key types and curves.
    assert "not a PEM public key" in _refused(V["inclusion.json"], key=_spki_of_unknown_type())
    with pytest.raises(proofs.ProofError):
        proofs.load_private_key(_spki_of_unknown_type().replace(b"PUBLIC KEY", b"PRIVATE KEY"))


def _signed_receipt_proof(kind: str, receipt: dict[str, Any]) -> tuple[str, str]:
    """A one-leaf log holding one receipt, signed by the vectors' log key (the log is the attacker)."""
    import hashlib

    text = json.dumps(receipt, sort_keys=True, separators=(",", ":"))
    data = proofs.receipt_leaf_data(
        receipt_id=receipt["_id"], kind=kind, at=None, digest=hashlib.sha256(text.encode()).hexdigest()
    )
    note = proofs.sign_checkpoint(
        vectors.ORIGIN, 1, proofs.leaf_hash(data), vectors.key("chatledger test vector: log key")
    )
    proof = {
        "chatledger_proof": 1,
        "type": "inclusion",
        "origin": vectors.ORIGIN,
        "tree_size": 1,
        "leaf_index": 0,
        "leaf": data.decode(),
        "path": [],
        "receipt": text,
    }
    return json.dumps(proof), note


def test_a_summary_stays_one_line_whatever_the_signed_log_holds() -> None:
    # The verifier distrusts the log's operator: a receipt kind with a newline and terminal
    # escapes must not forge a second "OK" line (or recolour) in the reviewer's terminal.
    kind = "legal_hold\n\x1b[32mOK\x1b[0m: event 'x' seq 1 is proven"
    proof, note = _signed_receipt_proof(kind, {"_id": "r1", "kind": kind})
    summary = proofs.verify_proof(proof, [note], PUBLIC).summary()
    assert "\n" not in summary
    assert "\x1b" not in summary


def test_an_origin_with_a_terminal_escape_is_quoted_in_the_summary() -> None:
    origin = "log\x1b[2K"
    key = vectors.key("chatledger test vector: log key")
    data = V["inclusion.json"]
    doc = json.loads(data)
    root = proofs.unverified_checkpoint(V["checkpoint-7.txt"]).root
    # sign_checkpoint refuses such an origin; the hostile log signs the note by hand.
    import base64

    body = f"{origin}\n7\n{base64.b64encode(root).decode()}\n"
    public = proofs.load_public_key(PUBLIC.encode())
    sig = base64.b64encode(proofs.key_id(origin, public) + key.sign(body.encode())).decode()
    note = f"{body}\n\u2014 {origin} {sig}\n"
    doc["origin"] = origin
    assert "\x1b" not in proofs.verify_proof(json.dumps(doc), [note], PUBLIC).summary()


def _event_and_removal(receipt: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A two-leaf log (an event of vector-thread, then a receipt), signed by the vectors' log key."""
    import base64
    import hashlib

    event = vectors.leaves()[0]
    text = json.dumps(receipt, sort_keys=True, separators=(",", ":"))
    kind = str(receipt.get("kind"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    data = proofs.receipt_leaf_data(receipt_id=str(receipt["_id"]), kind=kind, at=None, digest=digest)
    hashes = [proofs.leaf_hash(event), proofs.leaf_hash(data)]
    note = proofs.sign_checkpoint(
        vectors.ORIGIN, 2, proofs.tree_root(hashes), vectors.key("chatledger test vector: log key")
    )
    proof = {
        "chatledger_proof": 1,
        "type": "inclusion",
        "origin": vectors.ORIGIN,
        "tree_size": 2,
        "leaf_index": 0,
        "leaf": event.decode(),
        "path": [base64.b64encode(hashes[1]).decode()],
        "messages": [],
        "removal": {
            "leaf_index": 1,
            "leaf": data.decode(),
            "path": [base64.b64encode(hashes[0]).decode()],
            "receipt": text,
        },
    }
    return proof, note


def test_a_removal_receipt_must_be_a_removal_of_the_events_thread() -> None:
    ok, note = _event_and_removal({"_id": "r1", "kind": "removal", "thread_ids": ["vector-thread"]})
    assert proofs.verify_proof(json.dumps(ok), [note], PUBLIC).removal is not None
    for receipt, reason in [
        (
            {"_id": "r1", "kind": "removal", "thread_ids": ["another-thread"]},
            "does not name the event's thread",
        ),
        ({"_id": "r1", "kind": "removal", "thread_id": "another-thread"}, "does not name the event's thread"),
        ({"_id": "r1", "kind": "removal", "thread_ids": "vector-thread"}, "does not name the event's thread"),
        ({"_id": "r1", "kind": "removal.kept", "thread_ids": ["vector-thread"]}, "not a removal"),
    ]:
        proof, signed = _event_and_removal(receipt)
        assert reason in _refused(json.dumps(proof), [signed])
    # The removal beside an event that still shows messages, or moved to the event's own index.
    proof, signed = _event_and_removal({"_id": "r1", "kind": "removal", "thread_ids": ["vector-thread"]})
    proof["removal"]["leaf_index"] = 0
    _refused(json.dumps(proof), [signed])


def test_a_receipt_proof_relabelled_as_an_event_proof_and_back_is_refused() -> None:
    proof, note = _signed_receipt_proof("removal", {"_id": "r1", "kind": "removal"})
    doc = json.loads(proof)
    doc["messages"] = []
    del doc["receipt"]
    _refused(json.dumps(doc), [note])
    event = _inclusion()
    event["receipt"] = "{}"
    del event["messages"]
    _refused(json.dumps(event))
