"""The offline verifier against RFC 9162's algorithms, and against a hostile server's proofs.

The lesson of immudb's 2022 advisory (a malicious server's proofs passed because the
client skipped part of the check) is why every field a proof carries is tampered with
here, one at a time: each forgery must be refused, with a reason, and none may pass.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import proofs
from tests.proofs import vectors

REPO = Path(__file__).resolve().parents[2]
V = vectors.build()
PUBLIC = V["public.pem"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _leaves(n: int) -> list[bytes]:
    return [proofs.leaf_hash(f"leaf {i}".encode()) for i in range(n)]


def test_inclusion_and_consistency_hold_for_every_position_of_small_trees() -> None:
    # Every leaf of every tree up to 33 leaves, every pair of sizes: the edges where the
    # RFC's bit tricks go wrong (powers of two, one past them) are all in here.
    hashes = _leaves(33)
    for n in range(1, 34):
        root = proofs.tree_root(hashes[:n])
        for i in range(n):
            proofs.verify_inclusion(i, n, hashes[i], proofs.inclusion_path(i, hashes[:n]), root)
        for m in range(n + 1):
            proofs.verify_consistency(
                m, n, proofs.tree_root(hashes[:m]), root, proofs.consistency_path(m, hashes[:n])
            )


def test_known_roots_from_rfc6962_reference_shape() -> None:
    # The empty tree's root is SHA-256 of nothing; one leaf is its own root; and two
    # leaves hash as 0x01 || left || right (domain separation from leaves' 0x00).
    assert proofs.tree_root([]).hex() == hashlib.sha256(b"").hexdigest()
    leaf = proofs.leaf_hash(b"")
    assert leaf.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert proofs.tree_root([leaf]) == leaf
    assert proofs.tree_root([leaf, leaf]) == hashlib.sha256(b"\x01" + leaf + leaf).digest()


@pytest.mark.parametrize(
    ("index", "size", "path_change"),
    [
        (3, 7, lambda p: p[:-1]),  # too short
        (3, 7, lambda p: [*p, p[0]]),  # too long
        (3, 7, lambda p: p[::-1]),  # reordered
        (3, 7, lambda p: [bytes(32), *p[1:]]),  # one node replaced
        (0, 1, lambda p: [bytes(32)]),  # a path where none is due
    ],
)
def test_inclusion_refuses_altered_paths(
    index: int, size: int, path_change: Callable[[list[bytes]], list[bytes]]
) -> None:
    hashes = _leaves(size)
    path = path_change(proofs.inclusion_path(index, hashes))
    with pytest.raises(proofs.ProofError):
        proofs.verify_inclusion(index, size, hashes[index], path, proofs.tree_root(hashes))


def test_inclusion_refuses_another_index_or_leaf() -> None:
    hashes = _leaves(8)
    path, root = proofs.inclusion_path(5, hashes), proofs.tree_root(hashes)
    for index, leaf in ((4, hashes[5]), (5, hashes[4]), (8, hashes[5]), (-1, hashes[5])):
        with pytest.raises(proofs.ProofError):
            proofs.verify_inclusion(index, 8, leaf, path, root)


def test_consistency_checks_both_roots_and_refuses_a_fork() -> None:
    # A hostile log shows the reviewer's old tree as a prefix of a *different* new tree:
    # the path is internally consistent for the fork, so only checking the new root
    # against the signed one catches it (the part immudb's client skipped).
    honest, fork = _leaves(9), [*_leaves(6), *(proofs.leaf_hash(b"forged") for _ in range(3))]
    old_root = proofs.tree_root(honest[:6])
    fork_path = proofs.consistency_path(6, fork)
    proofs.verify_consistency(6, 9, old_root, proofs.tree_root(fork), fork_path)  # holds for the fork
    with pytest.raises(proofs.ProofError, match="new checkpoint's root"):
        proofs.verify_consistency(6, 9, old_root, proofs.tree_root(honest), fork_path)
    # The old tree rewritten (a leaf the reviewer saw was replaced): the old root fails.
    rewritten = [proofs.leaf_hash(b"rewritten"), *honest[1:]]
    with pytest.raises(proofs.ProofError, match="old checkpoint's root"):
        proofs.verify_consistency(
            6, 9, old_root, proofs.tree_root(rewritten), proofs.consistency_path(6, rewritten)
        )
    with pytest.raises(proofs.ProofError, match="forked"):
        proofs.verify_consistency(6, 6, old_root, proofs.tree_root(fork[:6][::-1]), [])
    with pytest.raises(proofs.ProofError, match="larger"):
        proofs.verify_consistency(9, 6, proofs.tree_root(honest), old_root, [])
    with pytest.raises(proofs.ProofError, match="empty"):
        proofs.verify_consistency(6, 9, old_root, proofs.tree_root(honest), [])


# --------------------------------------------------------------------------- proof files


def _inclusion() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(V["inclusion.json"])
    return doc


def _verify(
    doc: dict[str, Any] | str, checkpoints: tuple[str, ...] = ("checkpoint-7.txt",)
) -> proofs.Verdict:
    raw = doc if isinstance(doc, str) else json.dumps(doc)
    return proofs.verify_proof(raw, [V[c] for c in checkpoints], PUBLIC)


def test_a_valid_proof_shows_the_proven_message_and_the_event() -> None:
    verdict = _verify(_inclusion())
    assert (verdict.kind, verdict.position, verdict.tree_size) == ("inclusion", 5, 7)
    assert verdict.leaf["thread"] == "vector-thread"
    assert verdict.leaf["seq"] == 6
    assert verdict.messages == {1: {"role": "assistant", "text": "answer 6"}}
    assert "messages 1 of 2 proven" in verdict.summary()


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _leaf_change(
    edit: Callable[[dict[str, Any]], None], *, canonical: bool = True
) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        fields = json.loads(doc["leaf"])
        edit(fields)
        if canonical:
            doc["leaf"] = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        else:
            doc["leaf"] = json.dumps(fields)

    return change


FORGED_HASH = _b64(hashlib.sha256(b"forged").digest())
OTHER_MESSAGE = json.dumps({"role": "assistant", "text": "answer 1"}, sort_keys=True, separators=(",", ":"))

#: A hostile server's inclusion proofs: (name, change to the honest proof, reason expected).
FORGERIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("other origin", _set(("origin",), "example.com/other-log"), "is for log"),
    ("bigger tree", _set(("tree_size",), 8), "the checkpoint has 7"),
    ("smaller tree", _set(("tree_size",), 6), "the checkpoint has 7"),
    ("other index", _set(("leaf_index",), 4), "does not lead"),
    ("index past the tree", _set(("leaf_index",), 7), "outside"),
    ("negative index", _set(("leaf_index",), -1), "not a tree size"),
    ("boolean index", _set(("leaf_index",), True), "not a tree size"),
    ("float index", _set(("leaf_index",), 5.0), "not a tree size"),
    ("path node", _set(("path", 0), FORGED_HASH), "does not lead"),
    ("path short", lambda d: d["path"].pop(), "shorter"),
    ("path long", lambda d: d["path"].append(FORGED_HASH), "longer"),
    ("path reordered", lambda d: d["path"].reverse(), "does not lead"),
    ("path hash too short", _set(("path", 0), _b64(bytes(31))), "not 32"),
    ("path not base64", _set(("path", 0), "%%%"), "base64"),
    ("path non-canonical base64", _set(("path", 0), FORGED_HASH[:-2] + "B="), "base64"),
    ("message text", _set(("messages", 0, "canonical"), OTHER_MESSAGE), "does not match its digest"),
    ("message moved", _set(("messages", 0, "index"), 0), "does not match its digest"),
    ("message past the event", _set(("messages", 0, "index"), 2), "not one of the event's 2"),
    ("message twice", lambda d: d["messages"].append(dict(d["messages"][0])), "given twice"),
    ("message extra field", _set(("messages", 0, "role"), "assistant"), "exactly 'index' and 'canonical'"),
    ("leaf other thread", _leaf_change(lambda f: f.update(thread="other", event="other#6")), "does not lead"),
    ("leaf other seq", _leaf_change(lambda f: f.update(seq=5, event="vector-thread#5")), "does not lead"),
    (
        "leaf event mismatch",
        _leaf_change(lambda f: f.update(event="vector-thread#5")),
        "not its thread and seq",
    ),
    ("leaf digest swapped", _leaf_change(lambda f: f["messages"].reverse()), "does not match its digest"),
    ("leaf extra field", _leaf_change(lambda f: f.update(note="x")), "fields of a ChatLedger leaf"),
    ("leaf spacing", _leaf_change(lambda f: None, canonical=False), "not in canonical form"),
    ("leaf version", _leaf_change(lambda f: f.update(v=2)), "version"),
    ("leaf tenant", _leaf_change(lambda f: f.update(tenant="acme")), "does not lead"),
    ("unknown field", _set(("trust_me",), True), "exactly the fields"),
    ("other format", _set(("chatledger_proof",), 2), "format"),
    ("other type", _set(("type",), "exclusion"), "unknown proof type"),
]


@pytest.mark.parametrize(("name", "change", "reason"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_a_forged_inclusion_proof_is_refused(
    name: str, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    doc = _inclusion()
    change(doc)
    with pytest.raises(proofs.ProofError, match=reason) as caught:
        _verify(doc)
    assert "\n" not in str(caught.value)


def test_a_leaf_with_a_duplicate_key_is_refused() -> None:
    # json would keep the last value; the signed tree holds the first bytes: refuse both.
    doc = _inclusion()
    doc["leaf"] = doc["leaf"][:-1] + ',"seq":7}'
    with pytest.raises(proofs.ProofError, match="duplicate key"):
        _verify(doc)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "[]",
        '{"chatledger_proof": NaN}',
        V["inclusion.json"][: len(V["inclusion.json"]) // 2],  # truncated
        V["inclusion.json"].replace('"type"', '"type": "inclusion", "type"', 1),
        "\ufeff" + V["inclusion.json"],
    ],
    ids=["empty", "open brace", "array", "nan", "truncated", "duplicate key", "bom"],
)
def test_malformed_proof_files_are_refused(raw: str) -> None:
    with pytest.raises(proofs.ProofError):
        _verify(raw)


def test_a_proof_of_bytes_that_are_not_utf8_or_too_large_is_refused() -> None:
    with pytest.raises(proofs.ProofError, match="UTF-8"):
        proofs.verify_proof(b"\xff\xfe", [V["checkpoint-7.txt"]], PUBLIC)
    with pytest.raises(proofs.ProofError, match="larger"):
        proofs.verify_proof(b" " * (proofs.MAX_INPUT + 1), [V["checkpoint-7.txt"]], PUBLIC)


# --------------------------------------------------------------------------- checkpoints


CHECKPOINT_FORGERIES: list[tuple[str, Callable[[str], str], str]] = [
    ("other key", lambda c: V["checkpoint-7-other-key.txt"], "not signed by this public key"),
    ("root changed", lambda c: c.replace("7CijyeJG", "7CijyeJH"), "does not verify"),
    ("size changed", lambda c: c.replace("\n7\n", "\n8\n", 1), "does not verify"),
    (
        "origin changed",
        lambda c: c.replace("chatledger-vectors\n", "chatledger-vector5\n", 1),
        "does not verify",
    ),
    ("truncated", lambda c: c[: c.index("\u2014")], "truncated|no signature"),
    ("no signature block", lambda c: c.split("\n\n")[0] + "\n", "no signature block"),
    ("signature truncated", lambda c: c[:-10] + "\n", "base64|not signed"),
    ("ascii dash", lambda c: c.replace("\u2014", "-"), "em dash"),
    ("crlf", lambda c: c.replace("\n", "\r\n"), "carriage returns"),
    ("leading zero size", lambda c: c.replace("\n7\n", "\n07\n", 1), "not a decimal"),
    ("negative size", lambda c: c.replace("\n7\n", "\n-7\n", 1), "not a decimal"),
    (
        "root too short",
        lambda c: c.replace("7CijyeJG+VLaNzf27ckHNaw55RxierMVmIHU0KskCAo=", _b64(bytes(16))),
        "not 32",
    ),
    ("blank origin", lambda c: "\n" + c, "no signature block|body"),
    (
        "extra line in body, same signature",
        lambda c: c.replace("=\n\n", "=\nextension\n\n", 1),
        "does not verify",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "reason"), CHECKPOINT_FORGERIES, ids=[f[0] for f in CHECKPOINT_FORGERIES]
)
def test_a_forged_checkpoint_is_refused(name: str, change: Callable[[str], str], reason: str) -> None:
    note = change(V["checkpoint-7.txt"])
    with pytest.raises(proofs.ProofError, match=reason):
        proofs.verify_proof(V["inclusion.json"], [note], PUBLIC)


def test_a_witness_signature_beside_ours_is_ignored_not_trusted() -> None:
    # A note may carry other keys' signatures (witnesses): they neither help nor hurt.
    other = vectors.key("a witness")
    witness_line = proofs.sign_checkpoint(vectors.ORIGIN, 7, b"\x00" * 32, other).splitlines()[-1]
    note = V["checkpoint-7.txt"].replace("\n\n", "\n\n" + witness_line + "\n", 1)
    assert proofs.verify_proof(V["inclusion.json"], [note], PUBLIC).position == 5
    # Only the witness: not enough.
    only = V["checkpoint-7.txt"].split("\n\n")[0] + "\n\n" + witness_line + "\n"
    with pytest.raises(proofs.ProofError, match="not signed by this public key"):
        proofs.verify_proof(V["inclusion.json"], [only], PUBLIC)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "not a PEM public key"),
        (PUBLIC[:40], "not a PEM public key"),
        (vectors.public_pem(vectors.key("another")), "not signed by this public key"),
    ],
    ids=["empty", "truncated", "other key"],
)
def test_a_wrong_public_key_is_refused(key: str, reason: str) -> None:
    with pytest.raises(proofs.ProofError, match=reason):
        proofs.verify_proof(V["inclusion.json"], [V["checkpoint-7.txt"]], key)


def test_a_key_of_another_algorithm_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(proofs.ProofError, match="not Ed25519"):
        proofs.verify_proof(V["inclusion.json"], [V["checkpoint-7.txt"]], pem)


def test_consistency_proof_files() -> None:
    ok = proofs.verify_proof(V["consistency.json"], [V["checkpoint-4.txt"], V["checkpoint-7.txt"]], PUBLIC)
    assert (ok.kind, ok.position, ok.tree_size) == ("consistency", 4, 7)
    doc = json.loads(V["consistency.json"])
    doc["path"][0] = FORGED_HASH
    for bad, checkpoints, reason in [
        (V["consistency.json"], [V["checkpoint-7.txt"], V["checkpoint-4.txt"]], "wrong order"),
        (V["consistency.json"], [V["checkpoint-7.txt"]], "two checkpoints"),
        (json.dumps(doc), [V["checkpoint-4.txt"], V["checkpoint-7.txt"]], "does not lead"),
        (V["inclusion.json"], [V["checkpoint-4.txt"], V["checkpoint-7.txt"]], "exactly one checkpoint"),
    ]:
        with pytest.raises(proofs.ProofError, match=reason):
            proofs.verify_proof(bad, checkpoints, PUBLIC)


def test_the_verifier_imports_nothing_but_the_standard_library_and_cryptography() -> None:
    # A reviewer vendors this one file: it must not reach for the driver or ChatLedger.
    tree = ast.parse((REPO / "src" / "chatledger" / "proofs.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names) | {"cryptography"}, imported


def test_the_verifier_file_works_alone_with_the_driver_and_chatledger_unimportable(tmp_path: Path) -> None:
    # What a reviewer does: copy the one file, and verify the published vectors with it,
    # in an interpreter where pymongo and the rest of ChatLedger cannot be imported.
    for name, text in V.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "vendored_proofs.py").write_bytes((REPO / "src" / "chatledger" / "proofs.py").read_bytes())
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pymongo", "bson", "motor", "chatledger", "pydantic", "orjson"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, ".")
import vendored_proofs as p
read = lambda n: open(n, "rb").read()
print(p.verify_proof(read("inclusion.json"), [read("checkpoint-7.txt")], read("public.pem")).summary())
try:
    p.verify_proof(read("inclusion-forged-path.json"), [read("checkpoint-7.txt")], read("public.pem"))
except p.ProofError as e:
    print("refused:", e)
"""
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "is leaf 5" in done.stdout
    assert "refused: the inclusion path does not lead" in done.stdout
