"""The published test vectors (docs/admin.md), built from fixed keys and a fixed seven-leaf log.

Ed25519 signatures are deterministic, so building them again gives the same bytes: the
documentation's copies are checked against this and against the verifier.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from chatledger import proofs

ORIGIN = "example.com/chatledger-vectors"


def key(label: str) -> ed25519.Ed25519PrivateKey:
    """A fixed test key (its seed is public: never use it for anything real)."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def public_pem(private: ed25519.Ed25519PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def message(i: int, part: int) -> bytes:
    """A stored message's canonical bytes, as the sequencer digests them."""
    role, text = ("user", f"question {i}") if part == 0 else ("assistant", f"answer {i}")
    return json.dumps({"role": role, "text": text}, sort_keys=True, separators=(",", ":")).encode()


def leaves() -> list[bytes]:
    """Leaf data of events seq 1..7 of thread ``vector-thread`` (two messages each)."""
    out = []
    prev = "0" * 64
    for seq in range(1, 8):
        event_hash = hashlib.sha256(f"{prev}{seq}".encode()).hexdigest()
        out.append(
            proofs.leaf_data(
                tenant=None,
                thread="vector-thread",
                seq=seq,
                event_hash=event_hash,
                prev_hash=prev,
                created_at=1767225600000 + seq * 1000,
                message_digests=[proofs.message_digest(message(seq, p)) for p in (0, 1)],
            )
        )
        prev = event_hash
    return out


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")


def build() -> dict[str, str]:
    """Every vector, by file name."""
    honest, other = key("chatledger test vector: log key"), key("chatledger test vector: another key")
    data = leaves()
    hashes = [proofs.leaf_hash(d) for d in data]
    cp4 = proofs.sign_checkpoint(ORIGIN, 4, proofs.tree_root(hashes[:4]), honest)
    cp7 = proofs.sign_checkpoint(ORIGIN, 7, proofs.tree_root(hashes), honest)
    inclusion: dict[str, Any] = {
        "chatledger_proof": 1,
        "type": "inclusion",
        "origin": ORIGIN,
        "tree_size": 7,
        "leaf_index": 5,
        "leaf": data[5].decode("ascii"),
        "path": [_b64(h) for h in proofs.inclusion_path(5, hashes)],
        "messages": [{"index": 1, "canonical": message(6, 1).decode()}],
    }
    consistency = {
        "chatledger_proof": 1,
        "type": "consistency",
        "origin": ORIGIN,
        "old_size": 4,
        "new_size": 7,
        "path": [_b64(h) for h in proofs.consistency_path(4, hashes)],
    }
    forged_path = json.loads(json.dumps(inclusion))
    forged_path["path"][0] = _b64(hashlib.sha256(b"forged").digest())
    forged_text = json.loads(json.dumps(inclusion))
    forged_text["messages"][0]["canonical"] = message(6, 1).decode().replace("answer 6", "answer 66")

    def dump(doc: dict[str, Any]) -> str:
        return json.dumps(doc, indent=1) + "\n"

    return {
        "public.pem": public_pem(honest),
        "checkpoint-4.txt": cp4,
        "checkpoint-7.txt": cp7,
        "checkpoint-7-other-key.txt": proofs.sign_checkpoint(ORIGIN, 7, proofs.tree_root(hashes), other),
        "inclusion.json": dump(inclusion),
        "consistency.json": dump(consistency),
        "inclusion-forged-path.json": dump(forged_path),
        "inclusion-forged-text.json": dump(forged_text),
    }


#: How each vector is checked: (proof, checkpoints, expected reason or None for "holds").
CASES: list[tuple[str, list[str], str | None]] = [
    ("inclusion.json", ["checkpoint-7.txt"], None),
    ("consistency.json", ["checkpoint-4.txt", "checkpoint-7.txt"], None),
    ("inclusion-forged-path.json", ["checkpoint-7.txt"], "does not lead to the checkpoint's root hash"),
    ("inclusion-forged-text.json", ["checkpoint-7.txt"], "does not match its digest in the leaf"),
    ("inclusion.json", ["checkpoint-7-other-key.txt"], "not signed by this public key"),
    ("inclusion.json", ["checkpoint-4.txt"], "the checkpoint has 4"),
    ("consistency.json", ["checkpoint-7.txt", "checkpoint-4.txt"], "wrong order"),
]

if __name__ == "__main__":
    for name, text in build().items():
        print(f"```text vector={name}\n{text}```\n")
