"""Offline verification of ChatLedger's Merkle log: checkpoints, inclusion and consistency proofs.

This module is the whole verifier a reviewer needs. It imports the standard library and
(for Ed25519) ``cryptography``, nothing else: no driver, no ChatLedger module, so it can be
copied into another code base and audited on its own.

What it implements:

- RFC 6962 / RFC 9162 hashing: ``leaf = SHA-256(0x00 || data)``,
  ``node = SHA-256(0x01 || left || right)``, the empty tree's root ``SHA-256("")``;
- inclusion and consistency verification exactly as RFC 9162 §2.1.3.2 and §2.1.4.2
  state them (no shortcut: the path must be exactly as long as the sizes demand);
- C2SP checkpoints (https://c2sp.org/tlog-checkpoint) in C2SP signed notes
  (https://c2sp.org/signed-note) with Ed25519 keys given as PEM files;
- ChatLedger's leaf and proof formats, for events and for audit receipts
  (``docs/admin.md``, "Proving the record to a third party").

Every check fails closed with :class:`ProofError` and a one-line reason. The lesson of
immudb's 2022 advisory (a client that skipped part of a check accepted a malicious
server's proof) is applied throughout: every field of a proof is either checked against
the signed checkpoint or refused, unknown fields included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "EMPTY_ROOT",
    "PROOF_FORMAT",
    "Checkpoint",
    "ProofError",
    "Verdict",
    "consistency_path",
    "inclusion_path",
    "key_id",
    "leaf_data",
    "leaf_hash",
    "load_private_key",
    "load_public_key",
    "message_digest",
    "node_hash",
    "parse_checkpoint",
    "receipt_leaf_data",
    "sign_checkpoint",
    "tree_root",
    "unverified_checkpoint",
    "valid_origin",
    "verify_consistency",
    "verify_inclusion",
    "verify_proof",
]

#: The ``chatledger_proof`` version this module reads and writes.
PROOF_FORMAT: Final = 1
#: Version of the leaf data written by the sequencer.
LEAF_VERSION: Final = 1
HASH_SIZE: Final = 32
#: MTH of the empty list (RFC 9162 §2.1.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
#: Largest tree size accepted (a signed 64-bit count, as every log uses).
MAX_SIZE: Final = 2**63 - 1
#: A path longer than this cannot belong to a tree of at most MAX_SIZE leaves.
_MAX_PATH: Final = 64
#: Largest proof, checkpoint or key accepted, in bytes (a proof is a few KB; an event's
#: message texts can make it larger, never this large: MongoDB documents stop at 16 MiB).
MAX_INPUT: Final = 64 * 1024 * 1024
_ED25519: Final = 0x01
_DASH: Final = "\u2014 "

_INCLUSION_KEYS: Final = frozenset(
    {"chatledger_proof", "type", "origin", "tree_size", "leaf_index", "leaf", "path", "messages"}
)
_CONSISTENCY_KEYS: Final = frozenset({"chatledger_proof", "type", "origin", "old_size", "new_size", "path"})
_LEAF_KEYS: Final = frozenset(
    {"v", "tenant", "thread", "seq", "event", "hash", "prev_hash", "created_at", "messages"}
)
#: An inclusion proof of a receipt leaf carries the receipt instead of messages.
_RECEIPT_PROOF_KEYS: Final = frozenset(_INCLUSION_KEYS - {"messages"} | {"receipt"})
_RECEIPT_LEAF_KEYS: Final = frozenset({"v", "kind", "receipt", "type", "at", "digest"})
#: A removed event's proof may carry the proof of the receipt that removed it (same tree).
_REMOVAL_KEYS: Final = frozenset({"leaf_index", "leaf", "path", "receipt"})


class ProofError(ValueError):
    """A proof, checkpoint or key does not hold: the message says why, in one line."""


# --------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 hash of one leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """Return MTH of a list of leaf hashes (a reference for small trees: tests and vectors)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return PATH(index, leaves) of RFC 9162 §2.1.3.1, from leaf hashes held in memory."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_path(index, leaves[:k]), tree_root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), tree_root(leaves[:k])]


def consistency_path(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return PROOF(old_size, leaves) of RFC 9162 §2.1.4.1, from leaf hashes held in memory."""

    def sub(m: int, part: Sequence[bytes], complete: bool) -> list[bytes]:
        if m == len(part):
            return [] if complete else [tree_root(part)]
        k = _split(len(part))
        if m <= k:
            return [*sub(m, part[:k], complete), tree_root(part[k:])]
        return [*sub(m - k, part[k:], False), tree_root(part[:k])]

    if not 0 < old_size < len(leaves):
        return []
    return sub(old_size, leaves, True)


def _climb(fn: int, sn: int, path: Sequence[bytes], name: str, trees: str) -> Iterator[tuple[bytes, bool]]:
    """Walk RFC 9162's verification loop up the tree: yield each node of ``path`` and if it is a left one.

    ``fn`` and ``sn`` are the step's starting node numbers (§2.1.3.2 step 3, §2.1.4.2 step 5);
    ``name`` and ``trees`` word the errors ("the inclusion path", "tree is").

    Raises:
        ProofError: the path is longer or shorter than the tree is deep.
    """
    for node in path:
        if sn == 0:
            raise ProofError(f"{name} is longer than the {trees} deep")
        left = bool(fn & 1) or fn == sn
        yield node, left
        if left:
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{name} is shorter than the {trees} deep")


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves whose root is ``root``.

    RFC 9162 §2.1.3.2, step by step.

    Raises:
        ProofError: the proof does not hold.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    r = leaf
    for p, left in _climb(index, size - 1, path, "the inclusion path", "tree is"):
        r = node_hash(p, r) if left else node_hash(r, p)
    if r != root:
        raise ProofError("the inclusion path does not lead to the checkpoint's root hash")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` leaves extends the tree of ``old_size`` leaves.

    RFC 9162 §2.1.4.2, step by step; equal sizes need an empty path and equal roots, and
    an empty old tree is a prefix of every tree (its proof is empty).

    Raises:
        ProofError: the proof does not hold.
    """
    if old_size > new_size:
        raise ProofError(f"the old checkpoint ({old_size} leaves) is larger than the new one ({new_size})")
    if old_size == new_size or old_size == 0:
        if path:
            raise ProofError("a consistency proof between these sizes must be empty")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two different root hashes for the same tree size {old_size}: the log forked")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the old checkpoint has no leaves but a root that is not the empty tree's")
        return
    if not path:
        raise ProofError("the consistency proof is empty")
    nodes = list(path)
    if old_size & (old_size - 1) == 0:
        nodes.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c, left in _climb(fn, sn, nodes[1:], "the consistency path", "trees are"):
        if left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != old_root:
        raise ProofError("the consistency path does not lead to the old checkpoint's root hash")
    if sr != new_root:
        raise ProofError("the consistency path does not lead to the new checkpoint's root hash")


# --------------------------------------------------------------------------- leaves


def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def message_digest(canonical_message: bytes) -> str:
    """Return the hex SHA-256 of one message's canonical JSON bytes, as a leaf lists it."""
    return hashlib.sha256(canonical_message).hexdigest()


def leaf_data(
    *,
    tenant: str | None,
    thread: str,
    seq: int,
    event_hash: str,
    prev_hash: str,
    created_at: int,
    message_digests: Sequence[str],
) -> bytes:
    """Return the bytes of one event's leaf: canonical ASCII JSON (sorted keys, no spaces).

    The leaf commits to the event's place (tenant, thread, seq), its chained hash, and
    one digest per message, so one message can be proven while the others are shown only
    by their digests.
    """
    return _canonical(
        {
            "v": LEAF_VERSION,
            "tenant": tenant,
            "thread": thread,
            "seq": seq,
            "event": f"{thread}#{seq}",
            "hash": event_hash,
            "prev_hash": prev_hash,
            "created_at": created_at,
            "messages": list(message_digests),
        }
    )


def receipt_leaf_data(*, receipt_id: str, kind: str, at: int | None, digest: str) -> bytes:
    """Return the bytes of one receipt's leaf: canonical ASCII JSON (sorted keys, no spaces).

    The leaf commits to the receipt's id, kind and time, and to the SHA-256 (``digest``,
    hex) of the receipt's canonical JSON (times as ``{"$date": <ms>}``), which a proof
    shows whole.
    """
    return _canonical(
        {
            "v": LEAF_VERSION,
            "kind": "receipt",
            "receipt": receipt_id,
            "type": kind,
            "at": at,
            "digest": digest,
        }
    )


# --------------------------------------------------------------------------- keys and notes


def _b64(value: object, what: str, size: int | None = None) -> bytes:
    """Decode strict standard base64 (canonical: it must re-encode to the same text)."""
    if type(value) is not str:
        raise ProofError(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise ProofError(f"{what} is not valid base64") from e
    if base64.b64encode(raw).decode("ascii") != value:
        raise ProofError(f"{what} is not canonical base64")
    if size is not None and len(raw) != size:
        raise ProofError(f"{what} is {len(raw)} bytes, not {size}")
    return raw


def _crypto() -> Any:
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - an install without the extra
        raise ProofError("Ed25519 needs the 'cryptography' package (pip install 'chatledger[seal]')") from e
    return serialization, ed25519, InvalidSignature, UnsupportedAlgorithm


def load_public_key(pem: bytes) -> bytes:
    """Return the 32 raw bytes of an Ed25519 public key given as PEM (``openssl pkey -pubout``).

    Raises:
        ProofError: not a PEM Ed25519 public key.
    """
    serialization, ed25519, _, unsupported = _crypto()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, unsupported) as e:  # unsupported: an unknown curve or key type
        raise ProofError("the public key is not a PEM public key") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ProofError(f"the public key is {type(key).__name__}, not Ed25519")
    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def load_private_key(pem: bytes) -> Any:
    """Return an Ed25519 private key given as unencrypted PEM (``openssl genpkey -algorithm ed25519``).

    Raises:
        ProofError: not an unencrypted PEM Ed25519 private key.
    """
    serialization, ed25519, _, unsupported = _crypto()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, unsupported) as e:
        raise ProofError("the signing key is not an unencrypted PEM private key") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ProofError(f"the signing key is {type(key).__name__}, not Ed25519")
    return key


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the signed-note key hash: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([_ED25519]) + public_key).digest()[:4]


def valid_origin(origin: object) -> str:
    """Return ``origin`` if it can be a checkpoint's origin and its signing key's name.

    A key name is non-empty, has no whitespace and no ``+`` (signed-note), and ChatLedger
    keeps it printable ASCII so that it reads the same everywhere.

    Raises:
        ProofError: it cannot.
    """
    if (
        type(origin) is not str
        or not origin
        or len(origin) > 512
        or "+" in origin
        or not all(33 <= ord(c) < 127 for c in origin)
    ):
        raise ProofError(f"origin {origin!r} is not a usable log name (printable ASCII, no spaces or '+')")
    return origin


def _size(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SIZE:
        raise ProofError(f"{what} is not a tree size")
    return value


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """Return the text of a checkpoint: origin, size and base64 root lines, each ending in a newline."""
    return f"{valid_origin(origin)}\n{_size(size, 'tree size')}\n{base64.b64encode(root).decode('ascii')}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, private_key: Any) -> str:
    """Return a signed checkpoint note; the key's name is the origin.

    Args:
        origin: The log's name (its origin line and the key name).
        size: Tree size.
        root: Root hash (32 bytes).
        private_key: An Ed25519 private key from :func:`load_private_key`.
    """
    serialization, _, _, _ = _crypto()
    body = checkpoint_body(origin, size, root)
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = private_key.sign(body.encode("utf-8"))
    line = base64.b64encode(key_id(origin, public) + signature).decode("ascii")
    return f"{body}\n{_DASH}{origin} {line}\n"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint whose signature by the given key was verified."""

    origin: str
    size: int
    root: bytes
    #: Lines after the root hash (C2SP extension lines), as signed.
    extensions: tuple[str, ...] = ()


def _utf8(text: str, what: str) -> bytes:
    """Return ``text`` as UTF-8: a JSON escape of a lone surrogate has no UTF-8 form."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProofError(f"{what} holds a lone surrogate, which is not UTF-8 text") from e


def _text(raw: bytes | str, what: str) -> str:
    if isinstance(raw, str):
        _utf8(raw, what)
        return raw
    if len(raw) > MAX_INPUT:
        raise ProofError(f"{what} is larger than {MAX_INPUT} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProofError(f"{what} is not UTF-8 text") from e


def _split_note(note: bytes | str) -> tuple[str, Checkpoint, str]:
    """Return a note's signed body, the checkpoint it states (not yet trusted), and its signature lines."""
    text = _text(note, "the checkpoint")
    if "\r" in text:
        raise ProofError("the checkpoint has carriage returns (a signed note uses \\n only)")
    body, sep, signatures = text.partition("\n\n")
    if not sep or not body:
        raise ProofError("the checkpoint has no signature block (truncated?)")
    lines = body.split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise ProofError("the checkpoint body must be origin, tree size and root hash lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    # A size has at most 19 digits (MAX_SIZE); int() of thousands of digits raises a bare ValueError.
    if (
        len(size_text) > len(str(MAX_SIZE))
        or not size_text.isascii()
        or not size_text.isdigit()
        or (size_text != "0" and size_text.startswith("0"))
    ):
        raise ProofError(f"the checkpoint's tree size {size_text!r} is not a decimal number")
    size = _size(int(size_text), "the checkpoint's tree size")
    root = _b64(root_text, "the checkpoint's root hash", HASH_SIZE)
    if not signatures.endswith("\n"):
        raise ProofError("the checkpoint's signature block is truncated")
    return body + "\n", Checkpoint(origin, size, root, tuple(lines[3:])), signatures[:-1]


def unverified_checkpoint(note: bytes | str) -> Checkpoint:
    """Return what a checkpoint note states, WITHOUT checking its signature.

    For the log's operator, who needs only the tree size to prove against; a reviewer
    uses :func:`parse_checkpoint`.

    Raises:
        ProofError: the note is malformed.
    """
    return _split_note(note)[1]


def parse_checkpoint(note: bytes | str, public_key: bytes) -> Checkpoint:
    """Return the checkpoint in a signed note, after checking its signature by ``public_key``.

    Signatures by other keys are ignored (a note may carry witnesses' too); one valid
    signature by this key, under a name whose key hash matches, is required.

    Raises:
        ProofError: malformed, truncated, or not signed by this key.
    """
    _, ed25519, invalid_signature, _ = _crypto()
    body, checkpoint, signatures = _split_note(note)
    verifier = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
    for line in signatures.split("\n"):
        if not line.startswith(_DASH):
            raise ProofError("the checkpoint has a signature line that does not start with an em dash")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2 or not parts[0]:
            raise ProofError("the checkpoint has a malformed signature line")
        name, blob = parts
        raw = _b64(blob, "a checkpoint signature")
        if len(raw) != 4 + 64 or raw[:4] != key_id(name, public_key):
            continue  # another key's signature (a witness): not ours to judge
        try:
            verifier.verify(raw[4:], body.encode("utf-8"))
        except invalid_signature as e:
            raise ProofError(
                f"the checkpoint's signature by {name!r} does not verify with this public key"
            ) from e
        return checkpoint
    raise ProofError("the checkpoint is not signed by this public key")


# --------------------------------------------------------------------------- proof files


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a verified proof established."""

    kind: str
    origin: str
    tree_size: int
    #: Inclusion: the leaf index; consistency: the old tree size.
    position: int
    #: Inclusion: the leaf, parsed.
    leaf: dict[str, Any] = field(default_factory=dict)
    #: Inclusion: the proven messages (index within the event → message as stored, parsed).
    messages: dict[int, Any] = field(default_factory=dict)
    #: Inclusion of a receipt leaf: the receipt, parsed (times as ``{"$date": <ms>}``).
    receipt: dict[str, Any] | None = None
    #: Inclusion of a removed event: the removal receipt proven beside it, parsed.
    removal: dict[str, Any] | None = None

    def summary(self) -> str:
        """Return one line saying what was proven."""
        log = _plain(self.origin)
        if self.kind == "consistency":
            return (
                f"log {log}: the tree of {self.tree_size} leaves extends the tree of "
                f"{self.position} leaves (it only grew)"
            )
        if self.receipt is not None:
            kind = _plain(self.leaf["type"])
            return (
                f"receipt {self.leaf['receipt']!r} ({kind}) is leaf {self.position} of log "
                f"{log} at tree size {self.tree_size}; its content is proven"
            )
        event = f"event {self.leaf['thread']!r} seq {self.leaf['seq']}"
        count = len(self.leaf["messages"])
        shown = ", ".join(str(i) for i in sorted(self.messages))
        what = (
            f"messages {shown} of {count} proven by content" if self.messages else "no message content shown"
        )
        if self.removal is not None:
            action = _plain(self.removal.get("action"))
            what = (
                f"its content was removed by receipt {self.removal.get('_id')!r} "
                f"({action}: {self.removal.get('reason')!r}), proven in the same tree"
            )
        return f"{event} is leaf {self.position} of log {log} at tree size {self.tree_size}; {what}"


def _plain(value: object) -> str:
    """A value from the signed log as a summary shows it: as is if printable ASCII, else quoted.

    The log's operator chooses these strings; a newline or a terminal escape in one must
    not forge a second line (another verdict) in the reviewer's terminal.
    """
    if type(value) is str and value.isascii() and value.isprintable():
        return value
    return ascii(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProofError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ProofError(f"{name} is not JSON")


def _json(raw: bytes | str, what: str) -> Any:
    text = _text(raw, what)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except ProofError as e:
        raise ProofError(f"{what}: {e}") from e
    except (ValueError, RecursionError) as e:
        raise ProofError(f"{what} is not valid JSON") from e


def _path(value: object) -> list[bytes]:
    if type(value) is not list or len(value) > _MAX_PATH:
        raise ProofError(f"the proof's path is not a list of at most {_MAX_PATH} hashes")
    return [_b64(v, f"path entry {i}", HASH_SIZE) for i, v in enumerate(value)]


def _hex(value: object, what: str) -> str:
    if type(value) is not str or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ProofError(f"{what} is not a lowercase hex SHA-256")
    return value


def _leaf(text: object) -> tuple[bytes, dict[str, Any]]:
    """Return the leaf's bytes and fields, refusing anything but the canonical form."""
    if type(text) is not str:
        raise ProofError("the proof's leaf is not a string")
    data = _utf8(text, "the proof's leaf")
    fields = _json(data, "the proof's leaf")
    if type(fields) is not dict or set(fields) != _LEAF_KEYS:
        raise ProofError("the proof's leaf does not have the fields of a ChatLedger leaf")
    if fields["v"] != LEAF_VERSION or type(fields["v"]) is not int:
        raise ProofError(f"the proof's leaf has version {fields['v']!r}, which this verifier does not know")
    if fields["tenant"] is not None and type(fields["tenant"]) is not str:
        raise ProofError("the proof's leaf has a tenant that is not a string")
    if type(fields["thread"]) is not str or not fields["thread"]:
        raise ProofError("the proof's leaf has no thread id")
    _size(fields["seq"], "the leaf's seq")
    if type(fields["created_at"]) is not int:
        raise ProofError("the proof's leaf has a creation time that is not an integer")
    if fields["event"] != f"{fields['thread']}#{fields['seq']}":
        raise ProofError("the proof's leaf names an event that is not its thread and seq")
    _hex(fields["hash"], "the leaf's event hash")
    _hex(fields["prev_hash"], "the leaf's previous hash")
    digests = fields["messages"]
    if type(digests) is not list:
        raise ProofError("the proof's leaf has no list of message digests")
    for i, digest in enumerate(digests):
        _hex(digest, f"the leaf's message digest {i}")
    if _canonical(fields) != data:
        raise ProofError("the proof's leaf is not in canonical form (the signed tree holds other bytes)")
    return data, fields


def _receipt_leaf(text: object) -> tuple[bytes, dict[str, Any]]:
    """Return a receipt leaf's bytes and fields, refusing anything but the canonical form."""
    if type(text) is not str:
        raise ProofError("the proof's leaf is not a string")
    data = _utf8(text, "the proof's leaf")
    fields = _json(data, "the proof's leaf")
    if type(fields) is not dict or set(fields) != _RECEIPT_LEAF_KEYS or fields["kind"] != "receipt":
        raise ProofError("the proof's leaf does not have the fields of a ChatLedger receipt leaf")
    if fields["v"] != LEAF_VERSION or type(fields["v"]) is not int:
        raise ProofError(f"the proof's leaf has version {fields['v']!r}, which this verifier does not know")
    if type(fields["receipt"]) is not str or not fields["receipt"] or type(fields["type"]) is not str:
        raise ProofError("the proof's leaf has no receipt id or kind")
    if fields["at"] is not None and type(fields["at"]) is not int:
        raise ProofError("the proof's leaf has a receipt time that is not an integer")
    _hex(fields["digest"], "the leaf's receipt digest")
    if _canonical(fields) != data:
        raise ProofError("the proof's leaf is not in canonical form (the signed tree holds other bytes)")
    return data, fields


def _receipt(value: object, leaf: dict[str, Any]) -> dict[str, Any]:
    """Return the receipt a proof shows, after checking it is the one the leaf commits to."""
    if type(value) is not str:
        raise ProofError("the proof's receipt is not a string of canonical JSON")
    if hashlib.sha256(_utf8(value, "the receipt")).hexdigest() != leaf["digest"]:
        raise ProofError("the receipt's content does not match its digest in the leaf")
    parsed = _json(value, "the receipt")
    if type(parsed) is not dict:
        raise ProofError("the receipt is not a JSON object")
    # The digest binds the text; these bind the leaf's own fields to what the text says.
    if parsed.get("_id") != leaf["receipt"] or parsed.get("kind") != leaf["type"]:
        raise ProofError("the receipt's id or kind is not the one its leaf names")
    at = parsed.get("at")
    if leaf["at"] is not None and at != {"$date": leaf["at"]}:
        raise ProofError("the receipt's time is not the one its leaf names")
    return parsed


def _removal(value: object, event: dict[str, Any], size: int, root: bytes) -> dict[str, Any]:
    """Return the removal receipt a removed event's proof carries, proven in the same tree."""
    if type(value) is not dict or set(value) != _REMOVAL_KEYS:
        raise ProofError(f"the proof's removal has exactly the fields {sorted(_REMOVAL_KEYS)}")
    index = _size(value["leaf_index"], "the removal receipt's leaf index")
    data, leaf = _receipt_leaf(value["leaf"])
    receipt = _receipt(value["receipt"], leaf)
    if leaf["type"] != "removal":
        raise ProofError(f"the removal receipt is a {leaf['type']!r} receipt, not a removal")
    threads = receipt.get("thread_ids")
    named = threads if type(threads) is list else [receipt.get("thread_id")]
    if event["thread"] not in named:
        raise ProofError("the removal receipt does not name the event's thread")
    try:
        verify_inclusion(index, size, leaf_hash(data), _path(value["path"]), root)
    except ProofError as e:
        raise ProofError(f"the removal receipt: {e}") from e
    return receipt


def _messages(value: object, digests: list[str]) -> dict[int, Any]:
    if type(value) is not list:
        raise ProofError("the proof's messages are not a list")
    out: dict[int, Any] = {}
    for entry in value:
        if type(entry) is not dict or set(entry) != {"index", "canonical"}:
            raise ProofError("a proven message must have exactly 'index' and 'canonical'")
        index, canonical = entry["index"], entry["canonical"]
        if type(index) is not int or not 0 <= index < len(digests):
            raise ProofError(f"message index {index!r} is not one of the event's {len(digests)} messages")
        if index in out:
            raise ProofError(f"message {index} is given twice")
        if type(canonical) is not str:
            raise ProofError(f"message {index} is not a string of canonical JSON")
        if message_digest(_utf8(canonical, f"message {index}")) != digests[index]:
            raise ProofError(f"message {index}'s content does not match its digest in the leaf")
        parsed = _json(canonical, f"message {index}")
        if type(parsed) is not dict:
            raise ProofError(f"message {index} is not a JSON object")
        out[index] = parsed
    return out


def verify_proof(proof: bytes | str, checkpoints: Sequence[bytes | str], public_key: bytes | str) -> Verdict:
    """Verify a ChatLedger proof file against signed checkpoints and the log's public key.

    Args:
        proof: The proof file's bytes (``chatledger prove``'s output).
        checkpoints: One checkpoint for an inclusion proof; the older then the newer for a
            consistency proof.
        public_key: The log's Ed25519 public key, PEM.

    Returns:
        What the proof established.

    Raises:
        ProofError: anything does not hold; the message is one line.
    """
    key = load_public_key(_utf8(public_key, "the public key") if isinstance(public_key, str) else public_key)
    doc = _json(proof, "the proof")
    if type(doc) is not dict:
        raise ProofError("the proof is not a JSON object")
    if doc.get("chatledger_proof") != PROOF_FORMAT or type(doc.get("chatledger_proof")) is not int:
        raise ProofError(f"not a ChatLedger proof of format {PROOF_FORMAT}")
    kind = doc.get("type")
    if kind == "inclusion":
        # A receipt's proof shows the receipt; an event's, its messages (or, removed, its removal).
        fields_wanted = _RECEIPT_PROOF_KEYS if "receipt" in doc else _INCLUSION_KEYS
        if "removal" in doc and "receipt" not in doc:
            fields_wanted = fields_wanted | {"removal"}
        if set(doc) != fields_wanted:
            what = "an inclusion proof of a receipt" if "receipt" in doc else "an inclusion proof"
            raise ProofError(f"{what} has exactly the fields {sorted(fields_wanted)}")
        if len(checkpoints) != 1:
            raise ProofError("an inclusion proof is checked against exactly one checkpoint")
        cp = parse_checkpoint(checkpoints[0], key)
        _same_log(doc, cp)
        size = _size(doc["tree_size"], "the proof's tree size")
        index = _size(doc["leaf_index"], "the proof's leaf index")
        if size != cp.size:
            raise ProofError(f"the proof is for a tree of {size} leaves, the checkpoint has {cp.size}")
        if "receipt" in doc:
            data, fields = _receipt_leaf(doc["leaf"])
            shown: dict[str, Any] = {"receipt": _receipt(doc["receipt"], fields)}
        else:
            data, fields = _leaf(doc["leaf"])
            shown = {"messages": _messages(doc["messages"], fields["messages"])}
            if "removal" in doc:
                if shown["messages"]:
                    raise ProofError("a removed event's proof shows no messages")
                shown["removal"] = _removal(doc["removal"], fields, size, cp.root)
        verify_inclusion(index, size, leaf_hash(data), _path(doc["path"]), cp.root)
        return Verdict("inclusion", cp.origin, size, index, fields, **shown)
    if kind == "consistency":
        if set(doc) != _CONSISTENCY_KEYS:
            raise ProofError(f"a consistency proof has exactly the fields {sorted(_CONSISTENCY_KEYS)}")
        if len(checkpoints) != 2:
            raise ProofError(
                "a consistency proof is checked against two checkpoints: the older, then the newer"
            )
        old, new = (parse_checkpoint(c, key) for c in checkpoints)
        if old.origin != new.origin:
            raise ProofError(f"the checkpoints are of two logs ({old.origin!r}, {new.origin!r})")
        _same_log(doc, new)
        old_size = _size(doc["old_size"], "the proof's old size")
        new_size = _size(doc["new_size"], "the proof's new size")
        if (old_size, new_size) != (old.size, new.size):
            raise ProofError(
                f"the proof is between sizes {old_size} and {new_size}, the checkpoints have "
                f"{old.size} and {new.size} (given in the wrong order?)"
            )
        verify_consistency(old_size, new_size, old.root, new.root, _path(doc["path"]))
        return Verdict("consistency", new.origin, new_size, old_size)
    raise ProofError(f"unknown proof type {kind!r}")


def _same_log(doc: dict[str, Any], cp: Checkpoint) -> None:
    if doc["origin"] != cp.origin:
        raise ProofError(f"the proof is for log {doc['origin']!r}, the checkpoint for {cp.origin!r}")
