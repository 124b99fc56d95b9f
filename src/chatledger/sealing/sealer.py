"""Sealing: each event's message content encrypted under its data subject's key, bound to its place.

Only ``role`` and ``message_id`` stay in clear; a message's ``text``, ``author_name``
and ``rest``/``payload`` are sealed. A whole event is sealed at once (form ``cl3``)::

    [{"role": "user", "message_id": "m1", "text": "[sealed]",
      "sealed": "cl3:<key id>:<key fingerprint>", "ciphertext": <binary>},
     {"role": "assistant", "text": "[sealed]", "sealed": "cl3:@0"}]

The ``ciphertext`` is ``nonce || AES-256-GCM(data key, JSON list of the batch's stored
messages)`` (above 4 KiB, a frame of the stored strings' own bytes when smaller, so JSON
content is not escaped twice: :func:`_framed`), optionally padded with trailing spaces to a size bucket
(``Sealer(pad_to=...)``), stored as BSON binary (the driver's ``bytes``); every other
message of the event refers to it (``cl3:@0``). The associated data binds it to the key
id and the event ``_id``, and opening compares each message's clear ``role`` and
``message_id`` with its sealed copy, so a ciphertext moved into another event (its hash
recomputed), an altered bit, or messages swapped, dropped, added or relabelled are an
:class:`~chatledger.errors.IntegrityError`. Binary, not text: a text encoding makes the
event up to twice as large, and encoding and decoding it was a third of what sealing
cost. The hash chain covers the ciphertext through its SHA-256
(:func:`chatledger.hashing.event_hash`), ``verify`` needs no key, and the JSON Lines
export carries it as Extended JSON binary.

Earlier forms are read and verified as they always were: ``cl2`` (the same, with the
ciphertext as hex in the marker, ``cl2:<key id>:<fingerprint>:<hex>``, and ``cl2:@0``
references), and ``cl1`` (one ``cl1:<key id>:<fingerprint>:<base64>`` marker per message,
each sealed alone; associated data: key id, event ``_id``, index).

The placeholder ``text`` keeps the sealed form a valid stored message for code that
decodes without keys (``verify`` checks every message decodes, and each sealed one's
shape and place with :func:`sealed_problem`); the ledger itself
never hands it out: it opens the message, or raises.

The data subject is the user when the scope has one, else the tenant, else the root
thread; its key id is a digest of the subject (deterministic: two writers creating
a subject's first key at once agree on one key, and a destroyed key's id stays taken).
With ``Sealer(..., per_lineage=True)`` each conversation tree of a user or tenant has
its own key (subject and root thread), so retention can shred one conversation; the
subject's own key id then stays the subject's "erased" mark (see :meth:`Sealer._create`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import orjson

from chatledger.errors import (
    ChatLedgerError,
    ContentErasedError,
    IntegrityError,
    InvalidInputError,
    KeyUnavailableError,
)
from chatledger.hashing import BINARY_FIELD
from chatledger.models import Scope, utc_now_ms
from chatledger.sealing._aead import KEY_BYTES, NONCE_BYTES, aead, invalid_tag, nonce
from chatledger.sealing.providers import KeyProvider
from chatledger.storage.keys import KeyStore, is_tombstone, key_kind

__all__ = [
    "CIPHERTEXT_FIELD",
    "DEFAULT_CACHE_TTL",
    "SEALED_FIELD",
    "SEALED_TEXT",
    "DataKey",
    "Sealer",
    "SubjectErasedError",
    "blocking_marks",
    "is_sealed",
    "sealed_problem",
    "subject_key",
    "subject_mark",
]

#: The field of a stored message that holds its sealed content.
SEALED_FIELD: Final = "sealed"
#: Seconds an unwrapped data key stays cached in a process: the longest any process can
#: still read (or write) a subject's content after its key was destroyed.
DEFAULT_CACHE_TTL: Final = 60.0
#: The form written before whole-event sealing: one base64 ciphertext per message. Read only.
_CL1: Final = "cl1"
#: The form written before ``cl3``: one hex ciphertext per event, in its first message's marker. Read only.
_CL2: Final = "cl2"
#: The form written now: one binary ciphertext per event, in its first message's ``ciphertext``.
_CL3: Final = "cl3"
#: The marker of a whole-event form's other messages: sealed in message 0's ciphertext.
_CL2_REF: Final = "cl2:@0"
_CL3_REF: Final = "cl3:@0"
_REFS: Final = {_CL2: _CL2_REF, _CL3: _CL3_REF}
#: The field of a ``cl3`` event's first message that holds the event's ciphertext (the one
#: binary value the hash chain accepts).
CIPHERTEXT_FIELD: Final = BINARY_FIELD
#: Associated-data labels of the whole-event forms (the bytes sealed events were bound to).
_EVENT_AD: Final = {_CL2: "chatledger-seal-v2", _CL3: "chatledger-seal-v3"}
#: What a sealed message shows in place of its text.
SEALED_TEXT: Final = "[sealed]"
_SEALED_FORM: Final = frozenset({"role", "message_id", "text", SEALED_FIELD})
_SEALED_HEAD: Final = _SEALED_FORM | {CIPHERTEXT_FIELD}
_KEY_DOC_VERSION: Final = 1
_MAX_CACHED: Final = 10_000
#: Opened events a sealer keeps by default (``Sealer(opened_events=...)``).
DEFAULT_OPENED_EVENTS: Final = 1024
_TAG_BYTES: Final = 16
#: Padding buckets are powers of two up to this size, then multiples of it: past 64 KiB a
#: doubling would waste up to the batch's own size (and could push it past the event limit).
_PAD_STEP: Final = 65_536
_PAD_MIN: Final = 16
_HEX: Final = re.compile(r"(?:[0-9a-f]{2})+")
#: First byte of a framed plaintext (a JSON one starts with ``[``): see :func:`_framed`.
_FRAMED: Final = b"\x00"
#: Batches whose JSON is larger than this are framed when that is smaller: below it, the
#: JSON escaping costs a few hundred bytes at most, and parsing JSON is the faster open.
_FRAME_FROM: Final = 4096
_FRAME_HEAD: Final = struct.Struct(">I")


class SubjectErasedError(ContentErasedError):
    """Nothing can be written for this data subject: its key was destroyed by erasure."""


def is_sealed(message: Mapping[str, Any]) -> bool:
    """Return whether a stored message holds sealed content."""
    return SEALED_FIELD in message


def sealed_problem(
    message: Mapping[str, Any], index: int | None = None, first: Mapping[str, Any] | None = None
) -> str | None:
    """Return why a sealed stored message is malformed, or ``None`` (no key needed).

    Checks the shape of one message of any form (``cl1``, ``cl2``, ``cl3``). Given its
    place (``index`` in its event, and ``first``, the event's message 0, when
    ``index > 0``), it also checks the whole-event layout a reader opens: the ciphertext
    in message 0, every other message ``cl3:@0`` (``cl2:@0``; a clear message there is a
    problem too), no such marker in an event whose message 0 holds no ciphertext of its
    form. Without ``index`` a reference is judged alone (it may be well placed). The
    content is covered by the chain's hash; only a reader with the key can open it
    (which also checks the clear fields against the sealed copy).
    """
    if index:
        form = _event_form(first)
        marker = message.get(SEALED_FIELD)
        if form is not None and marker != _REFS[form]:
            return (
                f"a {form} event's messages after the first must be {_REFS[form]} "
                "(its ciphertext is in message 0)"
            )
        if form is None and type(marker) is str and marker[:4] in ("cl2:", "cl3:"):
            return f"a {marker[:3]} marker in an event whose first message holds no {marker[:3]} ciphertext"
        if SEALED_FIELD not in message:
            return None  # clear, in a clear or cl1 event
    role, marker = message.get("role"), message.get(SEALED_FIELD)
    if type(role) is not str or type(marker) is not str:
        return "a sealed message needs a str role and a str sealed field"
    head = marker.startswith(f"{_CL3}:") and marker != _CL3_REF
    extra = set(message) - (_SEALED_HEAD if head else _SEALED_FORM)
    if extra:
        return f"a sealed message holds fields its form does not have: {sorted(extra)}"
    if message.get("text") != SEALED_TEXT:
        return "a sealed message's text is not the placeholder"
    if "message_id" in message and type(message["message_id"]) is not str:
        return "message_id is not a str"
    if marker in (_CL2_REF, _CL3_REF):
        return f"{marker} in an event's first message: no ciphertext to refer to" if index == 0 else None
    parts = marker.split(":")
    if head:
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return "the sealed field is not a cl3 marker"
        blob = message.get(CIPHERTEXT_FIELD)
        if type(blob) is not bytes:
            return "a cl3 message's ciphertext is missing or not binary"
        size = len(blob)
    elif len(parts) != 4 or parts[0] not in (_CL1, _CL2) or not parts[1] or not parts[2]:
        return "the sealed field is not a cl1, cl2 or cl3 marker"
    elif parts[0] == _CL2:
        if _HEX.fullmatch(parts[3]) is None:
            return "the sealed ciphertext is not lowercase hex"
        size = len(parts[3]) // 2
    else:
        try:
            size = len(base64.b64decode(parts[3], validate=True))
        except (ValueError, binascii.Error):
            return "the sealed ciphertext is not base64"
    if size < NONCE_BYTES + _TAG_BYTES:
        return "the sealed ciphertext is too short"
    return None


def _event_form(first: object) -> str | None:
    """The whole-event form (``cl3``, ``cl2``) whose ciphertext ``first`` (message 0) holds, or ``None``."""
    # type() first: every read asks this of every event, and the driver's documents are dicts.
    head = first.get(SEALED_FIELD) if type(first) is dict or isinstance(first, Mapping) else None
    if type(head) is str and head[3:4] == ":":
        form = head[:3]
        ref = _REFS.get(form)
        if ref is not None and head != ref:
            return form
    return None


@lru_cache(maxsize=4096)
def subject_key(
    tenant_id: str | None,
    user_id: str | None,
    root_id: str,
    per_lineage: bool = False,
    ledger_id: str | None = None,
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Return (key id, subject fields) of the data subject of content written in a scope.

    The subject is the user (within its tenant, if any), else the tenant, else the root
    thread. The key id is a digest: it names the subject's key without spelling out the
    user or tenant id in every ciphertext. With ``per_lineage``, a user's or tenant's
    key is also per conversation tree (``root_id`` joins the subject fields); a
    thread-subject key is per tree anyway.

    With ``ledger_id`` (what every ledger passes: :attr:`Ledger.ledger_id
    <chatledger.ledger.Ledger.ledger_id>`) the subject is *in that ledger*: the id is
    ``k2-…`` and the key document records the ledger, so ledgers sharing one key store
    never share a key (their "support" threads or "alice" users are different subjects).
    Without it, the ``k1-…`` ids written before key ids named their ledger.
    """
    version = "k1" if ledger_id is None else "k2"
    scoped: tuple[tuple[str, str], ...] = () if ledger_id is None else (("ledger_id", ledger_id),)
    # A k2 digest covers the ledger id too: a 4- or 5-item list, never a k1 one.
    tail: list[str | None] = [] if ledger_id is None else [ledger_id]
    if user_id is not None:
        kind, fields = (
            "user",
            (("user_id", user_id),) + ((("tenant_id", tenant_id),) if tenant_id is not None else ()),
        )
        ident: list[str | None] = [kind, tenant_id, user_id]
    elif tenant_id is not None:
        kind, fields, ident = "tenant", (("tenant_id", tenant_id),), ["tenant", tenant_id, None]
    else:
        # k1 wrote root-thread keys as "t" like tenant keys (distinct digests); k2 says "r".
        prefix = "t" if ledger_id is None else "r"
        return _digest_id(version, prefix, ["thread", None, root_id, *tail]), (
            ("root_id", root_id),
            *scoped,
        )
    if per_lineage:
        # Its own id space ("l" and a longer digest): never a subject key's id.
        return _digest_id(version, f"l{kind[0]}", [*ident, root_id, *tail]), (
            *fields,
            ("root_id", root_id),
            *scoped,
        )
    return _digest_id(version, kind[0], [*ident, *tail]), (*fields, *scoped)


def subject_mark(tenant_id: str | None, user_id: str | None, ledger_id: str | None = None) -> str | None:
    """Return the id of a user's or tenant's own key: its tombstone marks the subject erased.

    ``None`` for content of neither (its subject is a root thread). Erasure tombstones
    this id even when the subject only ever had per-lineage keys, and a writer checks
    the marks that cover its scope (:func:`blocking_marks`) before and after creating a
    key, so no key is created for an erased subject.
    """
    if user_id is None and tenant_id is None:
        return None
    return subject_key(tenant_id, user_id, "", False, ledger_id)[0]


def blocking_marks(tenant_id: str | None, user_id: str | None, ledger_id: str | None) -> list[str]:
    """Return the erased marks that forbid a new key in this scope, any of them tombstoned.

    A user's erasure covers the user in every tenant (its mark has no tenant) unless the
    operator scoped it to one tenant (the mark of that user in that tenant); a tenant's
    erasure covers every user of the tenant. The ``k1`` marks, written before key ids
    named their ledger (and by :func:`~chatledger.sealing.destroy_subject_keys` without
    a ledger: every ledger of the key store), count in every ledger.
    """
    subjects = [(tenant_id, user_id)]
    if user_id is not None and tenant_id is not None:
        subjects += [(None, user_id), (tenant_id, None)]
    return [
        mark
        for lid in dict.fromkeys((ledger_id, None))
        for tenant, user in subjects
        if (mark := subject_mark(tenant, user, lid)) is not None
    ]


def _digest_id(version: str, prefix: str, ident: list[str | None]) -> str:
    digest = hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode("utf-8")).hexdigest()[:40]
    return f"{version}-{prefix}{digest}"


def _fingerprint(key: bytes) -> str:
    # Tells a key store holding another key for the same id (misconfiguration) apart
    # from tampering; 64 bits of a keyed digest reveal nothing usable about the key.
    return hashlib.blake2b(b"chatledger-key-fingerprint", key=key, digest_size=8).hexdigest()


def _ad(key_id: str, event_id: str, index: int) -> bytes:
    # cl1. Length-prefixed, so no (key id, event id, index) triple can pose as another.
    return f"chatledger-seal-v1|{len(key_id)}:{key_id}|{len(event_id)}:{event_id}|{index}".encode()


# The associated data of cl2 and cl3: _ad_key_part(form, key id) + _ad_event_part(event id),
# "<form's label>|<len>:<key id>|<len>:<event id>". Length-prefixed, so no (key id, event
# id) pair can pose as another; the form's own label, so a ciphertext opens only in the
# form it was sealed for. The messages' clear fields are not in it: the sealed copy of
# each is compared on open. A DataKey makes its key part once.
def _ad_key_part(form: str, key_id: str) -> bytes:
    return f"{_EVENT_AD[form]}|{len(key_id)}:{key_id}|".encode()


def _ad_event_part(event_id: str) -> bytes:
    return f"{len(event_id)}:{event_id}".encode()


def _padded_size(size: int, pad_to: int) -> int:
    """The bucket a plaintext of ``size`` bytes is padded to (at least ``pad_to``)."""
    if size <= pad_to:
        return pad_to
    if size <= _PAD_STEP:
        return 1 << (size - 1).bit_length()
    return -(-size // _PAD_STEP) * _PAD_STEP


class DataKey:
    """One subject's unwrapped data key: seals and opens that subject's events.

    Args:
        key_id: The key's id (bound into every ciphertext).
        key: The 32-byte data key.
        pad_to: Pad each sealed plaintext to a size bucket of at least this many bytes
            (see :class:`Sealer`); ``None``: no padding.
    """

    __slots__ = ("_ad", "_aead", "_marker", "_pad_to", "fingerprint", "key_id")

    def __init__(self, key_id: str, key: bytes, pad_to: int | None = None) -> None:
        self.key_id = key_id
        self.fingerprint = _fingerprint(key)
        self._aead = aead(key)  # one cipher object per key, made once: reads reuse it
        self._pad_to = pad_to
        self._marker = f"{_CL3}:{key_id}:{self.fingerprint}"
        # The key's part of each form's associated data, made once (see _ad_key_part).
        self._ad = {form: _ad_key_part(form, key_id) for form in _EVENT_AD}

    def __repr__(self) -> str:
        return f"DataKey({self.key_id!r})"  # never the key

    def seal(self, stored: Sequence[Mapping[str, Any]], event_id: str) -> list[dict[str, Any]]:
        """Return the sealed (``cl3``) form of an encoded batch, for the event ``event_id``.

        The whole batch, as encoded, is one ciphertext in the first message; the others
        refer to it. ``role`` and ``message_id`` stay in clear too (and are checked against
        the sealed copy on open).
        """
        out: list[dict[str, Any]] = []
        for message in stored:
            sealed: dict[str, Any] = {"role": message["role"]}
            if "message_id" in message:
                sealed["message_id"] = message["message_id"]
            sealed["text"] = SEALED_TEXT
            sealed[SEALED_FIELD] = _CL3_REF
            out.append(sealed)
        if not out:
            return out
        plain = orjson.dumps(list(stored))
        if len(plain) > _FRAME_FROM:
            # Content that is itself JSON (tool results: the stored "rest"/"payload", and
            # quotes or newlines in text) is escaped again inside a JSON list, up to ~1.4x
            # its size; a framed plaintext holds the stored strings' bytes as they are.
            framed = _framed(stored)
            if framed is not None and len(framed) < len(plain):
                plain = framed
        if self._pad_to is not None:
            # Spaces after the JSON (or the frame): JSON ignores them and a frame knows
            # its lengths, so opening needs no length field.
            plain += b" " * (_padded_size(len(plain), self._pad_to) - len(plain))
        iv = nonce()
        out[0][SEALED_FIELD] = self._marker
        out[0][CIPHERTEXT_FIELD] = iv + self._aead.encrypt(
            iv, plain, self._ad[_CL3] + _ad_event_part(event_id)
        )
        return out

    def open_event(
        self, messages: Sequence[Any], event_id: str, ciphertext: bytes | str, form: str = _CL3
    ) -> list[dict[str, Any]]:
        """Return the stored (clear) form of a whole-event (``cl3``, ``cl2``) sealed event's messages.

        Args:
            messages: The event's messages as stored (the first holds the ciphertext).
            event_id: The ``_id`` of the event they were read from.
            ciphertext: The first message's ciphertext: its ``ciphertext`` field (``cl3``),
                or the hex at the end of its marker (``cl2``).
            form: ``"cl3"`` or ``"cl2"``.

        Raises:
            IntegrityError: the ciphertext was altered or moved from another event, or
                the event's messages were swapped, dropped, added or relabelled.
        """
        blob = ciphertext
        if form == _CL2:
            # Lowercase hex only, as verify asks (a2b_hex would take uppercase too).
            hexed = type(blob) is str and _HEX.fullmatch(blob) is not None
            blob = binascii.a2b_hex(blob) if hexed else b""
        if type(blob) is not bytes or len(blob) < NONCE_BYTES + _TAG_BYTES:
            raise IntegrityError(f"event {event_id!r}: its sealed ciphertext is not {form} or is truncated")
        opened = self._open_json(blob, self._ad[form] + _ad_event_part(event_id), event_id)
        if type(opened) is not list:
            raise IntegrityError(f"event {event_id!r}: its sealed content holds no list of messages")
        _check_clear(messages, opened, event_id, _REFS[form])
        return opened

    def _open_json(self, blob: bytes, ad: bytes, event_id: str, index: int | None = None) -> Any:
        """Decrypt ``blob`` (nonce, then ciphertext and tag) bound to ``ad``; return its JSON.

        ``index``: the message's, for a ``cl1`` ciphertext (one per message).

        Raises:
            IntegrityError: it does not open (altered, or moved from elsewhere) or holds no JSON.
        """
        view = memoryview(blob)  # slices without copying the ciphertext
        try:
            plain = self._aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], ad)
            return _unframed(plain, event_id) if plain[:1] == _FRAMED else orjson.loads(plain)
        except (invalid_tag(), ValueError) as e:
            what, where = (
                ("its sealed content", "") if index is None else (f"sealed message {index}", " or position")
            )
            raise IntegrityError(
                f"event {event_id!r}: {what} does not open (the ciphertext was altered, "
                f"or moved here from another event{where})"
            ) from e

    def open(
        self, item: Mapping[str, Any], event_id: str, index: int, blob: bytes | None = None
    ) -> dict[str, Any]:
        """Return the stored (clear) form of one ``cl1`` sealed message of the event ``event_id``.

        Args:
            item: The sealed message as stored.
            event_id: The ``_id`` of the event it was read from.
            index: Its index in that event.
            blob: Its ciphertext, when the caller has already parsed the marker.

        Raises:
            IntegrityError: the ciphertext was altered, or moved from another event or index.
        """
        if blob is None:
            blob = _blob(_parse(item, event_id, index)[2], event_id, index)
        body = self._open_json(blob, _ad(self.key_id, event_id, index), event_id, index)
        if not isinstance(body, dict):
            raise IntegrityError(f"event {event_id!r}: sealed message {index} holds no document")
        out: dict[str, Any] = {"role": item["role"], **body}
        if "message_id" in item:
            out["message_id"] = item["message_id"]
        return out


def _framed(stored: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Return a batch as a frame, or ``None`` if a value is not a str (then JSON it is).

    ``0x00``, a 4-byte big-endian header length, the header (JSON: per message a list
    of field name, byte length, ...), then every field's UTF-8 bytes, unescaped, in order.
    """
    rows: list[list[str | int]] = []
    parts: list[bytes] = []
    for message in stored:
        row: list[str | int] = []
        for name, value in message.items():
            if type(value) is not str:
                return None
            data = value.encode("utf-8")
            row += [name, len(data)]
            parts.append(data)
        rows.append(row)
    head = orjson.dumps(rows)
    return b"".join([_FRAMED, _FRAME_HEAD.pack(len(head)), head, *parts])


def _unframed(plain: bytes, event_id: str) -> list[dict[str, Any]]:
    """Return the batch in a frame (see :func:`_framed`), trailing padding spaces ignored.

    Raises:
        IntegrityError: the frame is malformed (it was authenticated, so only a bug or a
            wrong writer can make one).
    """
    broken = IntegrityError(f"event {event_id!r}: its sealed content is a malformed frame")
    if len(plain) < 1 + _FRAME_HEAD.size:
        raise broken
    (size,) = _FRAME_HEAD.unpack_from(plain, 1)
    start = 1 + _FRAME_HEAD.size
    try:
        rows = orjson.loads(plain[start : start + size])
    except ValueError as e:
        raise broken from e
    view, at = memoryview(plain), start + size
    out: list[dict[str, Any]] = []
    if type(rows) is not list:
        raise broken
    for row in rows:
        if type(row) is not list or len(row) % 2:
            raise broken
        message: dict[str, Any] = {}
        for name, length in zip(row[::2], row[1::2], strict=True):
            if type(name) is not str or type(length) is not int or length < 0 or at + length > len(plain):
                raise broken
            try:
                message[name] = str(view[at : at + length], "utf-8")
            except UnicodeDecodeError as e:
                raise broken from e
            at += length
        out.append(message)
    if plain[at:].strip(b" "):
        raise broken
    return out


def _check_clear(messages: Sequence[Any], opened: list[Any], event_id: str, ref: str) -> None:
    """Check a whole-event sealed event's stored messages against its opened (sealed) copy.

    The clear fields must be the sealed ones, and every message after the first a
    reference (``ref``) to the first's ciphertext: this catches messages swapped,
    dropped, added or relabelled without a key (their hash recomputed). Each stored
    message must also hold exactly its form's fields (what :func:`sealed_problem` asks
    without a key), so a reader with the key refuses what ``verify`` reports.

    Raises:
        IntegrityError: they differ.
    """
    if len(opened) != len(messages):
        raise IntegrityError(f"event {event_id!r}: its sealed content does not match its messages")
    # The fields a stored message has (sealed_problem's sets): all but message_id, which
    # may be absent; a cl3 event's first message also holds its ciphertext.
    rest = len(_SEALED_FORM) - 1
    head = len(_SEALED_HEAD) - 1 if ref == _CL3_REF else rest
    for index, item in enumerate(messages):
        message = opened[index]
        if (
            type(message) is not dict
            or not (type(item) is dict or isinstance(item, Mapping))  # the driver's dict: no ABC check
            or (index and item.get(SEALED_FIELD) != ref)
            or item.get("role") != message.get("role")
            or item.get("message_id") != message.get("message_id")
            or item.get("text") != SEALED_TEXT
            or len(item) != (rest if index else head) + ("message_id" in item)
        ):
            raise IntegrityError(
                f"event {event_id!r}: message {index} does not match the event's sealed content "
                "(messages swapped, dropped, added or relabelled, or fields added to its stored form)"
            )


def _parse(item: Mapping[str, Any], event_id: str, index: int) -> tuple[str, str, str]:
    marker = item.get(SEALED_FIELD)
    parts = marker.split(":") if type(marker) is str else []
    if len(parts) != 4 or parts[0] != _CL1 or type(item.get("role")) is not str:
        raise IntegrityError(f"event {event_id!r}: sealed message {index} is malformed")
    return parts[1], parts[2], parts[3]


def _blob(text: str, event_id: str, index: int) -> bytes:
    try:
        # Not validate=True (a third of the read cost): a non-base64 character is dropped,
        # and the AEAD tag then fails, so altered text is still an IntegrityError.
        blob = binascii.a2b_base64(text)
    except (ValueError, binascii.Error) as e:
        raise IntegrityError(f"event {event_id!r}: sealed message {index} is not base64") from e
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise IntegrityError(f"event {event_id!r}: sealed message {index} is truncated")
    return blob


class Sealer:
    """Seals messages on append and opens them on read, with one data key per data subject.

    Give it to :class:`~chatledger.ledger.Ledger` (``Ledger(db, sealer=Sealer(...))``).
    Data keys are created on a subject's first write, stored wrapped by the provider's
    KEK in ``key_store``, and cached unwrapped in this process for ``cache_ttl``
    seconds: with a cached key, sealing and opening cost no database round trip.

    Args:
        key_store: Where the wrapped data keys live (may be another database).
        provider: Wraps and unwraps data keys (the KEK).
        cache_ttl: Seconds an unwrapped key (or an "erased" verdict) stays cached; the
            erasure delay: a process may read a destroyed key's content this long.
        per_lineage: Seal each conversation tree of a user or tenant under its own key,
            so retention destroys the key of a tree it removes (readers need not know).
        pad_to: Pad what each event seals to a size bucket, hiding its exact length: the
            next power of two of at least ``pad_to`` bytes (a power of two from 16 to
            65536), multiples of 64 KiB beyond 64 KiB. ``None`` (default): no padding.
            Readers need not know.
        opened_events: How many opened events this process keeps (least recently read
            dropped first), so reading a page again does not decrypt it again (an agent
            reads the last page every turn); the events this process seals are kept
            too, so reading back its own appends decrypts nothing. An entry is used
            only while its key is cached and its stored ciphertext and clear fields
            are unchanged, so it adds no delay to erasure; ``forget`` drops it.
            ``0``: keep none.

    Raises:
        InvalidInputError: an argument is not usable.
    """

    def __init__(
        self,
        key_store: KeyStore,
        provider: KeyProvider,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        per_lineage: bool = False,
        pad_to: int | None = None,
        opened_events: int = DEFAULT_OPENED_EVENTS,
    ) -> None:
        if not isinstance(key_store, KeyStore):
            raise InvalidInputError("key_store must be a chatledger.storage.KeyStore")
        if not callable(getattr(provider, "wrap", None)) or not callable(getattr(provider, "unwrap", None)):
            raise InvalidInputError("provider must have wrap(data_key, key_id) and unwrap(wrapped, key_id)")
        if type(cache_ttl) not in (int, float) or not 0 <= cache_ttl <= 3600:
            raise InvalidInputError("cache_ttl must be a number of seconds from 0 to 3600")
        if type(per_lineage) is not bool:
            raise InvalidInputError("per_lineage must be a bool")
        if pad_to is not None and (
            type(pad_to) is not int or not _PAD_MIN <= pad_to <= _PAD_STEP or pad_to & (pad_to - 1)
        ):
            raise InvalidInputError(f"pad_to must be None or a power of two from {_PAD_MIN} to {_PAD_STEP}")
        if type(opened_events) is not int or not 0 <= opened_events <= 1_000_000:
            raise InvalidInputError("opened_events must be an int from 0 to 1000000")
        self.per_lineage = per_lineage
        self.pad_to = pad_to
        self.opened_events = opened_events
        # event _id -> (its stored marker and ciphertext, the key that opened it, its opened messages)
        self._opened: OrderedDict[str, tuple[str, bytes | str, DataKey, list[dict[str, Any]]]] = OrderedDict()
        self.key_store = key_store
        self.provider = provider
        self.cache_ttl = float(cache_ttl)
        # key id -> (monotonic expiry, the key, or None once the key is known destroyed)
        self._cache: OrderedDict[str, tuple[float, DataKey | None]] = OrderedDict()

    def forget(self, key_ids: Sequence[str] | None = None) -> None:
        """Drop cached keys (all, or these) and what they opened: the next use reads the key store again."""
        if key_ids is None:
            self._cache.clear()
            self._opened.clear()
            return
        for key_id in key_ids:
            self._cache.pop(key_id, None)
        gone = set(key_ids)
        for event_id in [e for e, seen in self._opened.items() if seen[2].key_id in gone]:
            del self._opened[event_id]

    def _cached(self, key_id: str) -> tuple[bool, DataKey | None]:
        hit = self._cache.get(key_id)
        if hit is None or hit[0] <= time.monotonic():
            return False, None
        return True, hit[1]

    def _remember(self, key_id: str, key: DataKey | None) -> None:
        self._cache[key_id] = (time.monotonic() + self.cache_ttl, key)
        self._cache.move_to_end(key_id)
        if len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

    def keep_sealed(self, doc: Mapping[str, Any], stored: Sequence[Mapping[str, Any]], key: DataKey) -> None:
        """Keep an event this process just sealed and stored as if it had been opened.

        Reading it back (an agent reads its last page every turn) then decrypts nothing.
        The entry obeys the rules of every opened event: used only while ``key`` is the
        cached key and the stored marker and ciphertext are these; ``forget`` drops it.

        Args:
            doc: The event document as stored (its messages sealed by ``key``).
            stored: The clear (encoded) messages that were sealed: what opening gives back.
            key: The key that sealed them.
        """
        if self._keeps():
            first = doc["messages"][0]
            # Copies: the caller's list and dicts stay the caller's (values are str, immutable).
            self._keep(
                str(doc["_id"]), first[SEALED_FIELD], first[CIPHERTEXT_FIELD], key, [dict(m) for m in stored]
            )

    def _keeps(self) -> bool:
        """Whether opened (and sealed) events are kept: not with ``opened_events=0`` or ``cache_ttl=0``."""
        return self.opened_events > 0 and self.cache_ttl > 0

    def _keep(
        self, event_id: str, marker: str, ciphertext: bytes | str, key: DataKey, opened: list[dict[str, Any]]
    ) -> None:
        """Keep an event's opened messages, dropping the least recently read beyond ``opened_events``."""
        self._opened[event_id] = (marker, ciphertext, key, opened)
        if len(self._opened) > self.opened_events:
            self._opened.popitem(last=False)

    def cached_key(self, scope: Scope, root_id: str, ledger_id: str | None = None) -> DataKey | None:
        """Return the cached key to seal a write to an existing conversation in ``scope``, or ``None``.

        The append path's shortcut (no coroutine, no round trip); ``None`` (not cached,
        expired, or the subject known erased) means: ask :meth:`key_for`, which decides.
        ``ledger_id`` is the writing ledger's (see :func:`subject_key`).
        """
        key_id = subject_key(scope.tenant_id, scope.user_id, root_id, self.per_lineage, ledger_id)[0]
        hit = self._cache.get(key_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def key_for(
        self, scope: Scope, root_id: str, *, fresh: bool = False, ledger_id: str | None = None
    ) -> DataKey:
        """Return the key to seal a write in ``scope`` (on the tree ``root_id``), creating it once.

        With ``fresh`` (the write starts a new conversation), a cached key is checked
        against the key store first, so a subject erased by another process gets no new
        conversation even within the cache TTL. Writes to existing conversations need no
        such check: the removal sealed their next positions. ``ledger_id`` is the
        writing ledger's: its keys are its own (see :func:`subject_key`).

        Raises:
            SubjectErasedError: the subject's key was destroyed by erasure (nothing is written).
            KeyUnavailableError: the key exists but cannot be unwrapped with this provider.
            StorageUnavailableError: the key store could not be reached.
        """
        key_id, subject = subject_key(scope.tenant_id, scope.user_id, root_id, self.per_lineage, ledger_id)
        hit, key = self._cached(key_id)
        if hit and key is not None and fresh:
            stored = await self.key_store.get(key_id)
            if stored is None or is_tombstone(stored):
                self.forget([key_id])
                hit = False  # decided below from the store: erased, or (missing) created once
        if not hit:
            doc = await self.key_store.get(key_id)
            if doc is None:
                marks = [m for m in blocking_marks(scope.tenant_id, scope.user_id, ledger_id) if m != key_id]
                doc = await self._create(key_id, subject, marks)
            key = self._load(key_id, doc)
        if key is None:
            raise SubjectErasedError(
                f"the data subject of this scope was erased (key {key_id!r} destroyed): "
                "nothing can be written for it"
            )
        return key

    async def _create(
        self, key_id: str, subject: tuple[tuple[str, str], ...], marks: list[str]
    ) -> dict[str, Any]:
        """Create a subject's key once; return the key document that counts (maybe a tombstone).

        ``marks`` are the erased marks that cover the scope (:func:`blocking_marks`: the
        subject's own key id when ``key_id`` is a per-lineage key, the user's in every
        tenant, the tenant's, the ``k1`` ones): no key may appear for an erased subject.
        They are checked before the insert and again after it (one query each), because
        erasure tombstones the mark *before* it lists the subject's keys: a key inserted
        before the mark was set is listed and destroyed by that erasure; one inserted
        after is seen here and destroyed at once.
        """
        if marks and (erased := await self.key_store.tombstone_among(marks)) is not None:
            return erased
        raw = secrets.token_bytes(KEY_BYTES)
        doc: dict[str, Any] = {
            "_id": key_id,
            "v": _KEY_DOC_VERSION,
            **dict(subject),
            "wrapped": base64.b64encode(self._wrap(raw, key_id)).decode("ascii"),
            "kek_id": getattr(self.provider, "kek_id", None),
            "fp": _fingerprint(raw),
            "created_at": utc_now_ms(),
        }
        await self.key_store.ensure_indexes()
        # Insert-once on the deterministic id: a concurrent creator's key wins for both,
        # and a destroyed key's tombstone comes back instead of a new key.
        stored = await self.key_store.insert_once(doc)
        if marks and not is_tombstone(stored):
            erased = await self.key_store.tombstone_among(marks)
            if erased is not None:
                await self.key_store.destroy(
                    key_id, at=utc_now_ms(), receipt_id=str(erased.get("receipt_id")), kind=key_kind(stored)
                )
                return erased
        return stored

    def _wrap(self, raw: bytes, key_id: str) -> bytes:
        try:
            return bytes(self.provider.wrap(raw, key_id))
        except ChatLedgerError:
            raise
        # A provider is a plug-in (a KMS client): whatever it raises must reach the
        # caller as ours, naming the key, never as a raw provider exception.
        except Exception as e:
            raise KeyUnavailableError(
                f"the key provider cannot wrap key {key_id!r}: {type(e).__name__}"
            ) from e

    def _load(self, key_id: str, doc: Mapping[str, Any]) -> DataKey | None:
        """Return the unwrapped key of a key document (``None``: destroyed), and cache the verdict."""
        if is_tombstone(doc):
            self._remember(key_id, None)
            return None
        wrapped = doc.get("wrapped")
        try:
            blob = base64.b64decode(wrapped, validate=True) if type(wrapped) is str else b""
        except (ValueError, binascii.Error):
            blob = b""
        if not blob:
            raise KeyUnavailableError(f"key document {key_id!r} holds no wrapped key (damaged key store)")
        try:
            raw = bytes(self.provider.unwrap(blob, key_id))
        except ChatLedgerError:
            raise
        except Exception as e:  # a plug-in provider: see _wrap
            raise KeyUnavailableError(
                f"the key provider cannot unwrap key {key_id!r}: {type(e).__name__}"
            ) from e
        key = DataKey(key_id, raw, self.pad_to)
        if doc.get("fp") not in (None, key.fingerprint):
            raise KeyUnavailableError(
                f"key {key_id!r} does not match its stored fingerprint (damaged key store)"
            )
        self._remember(key_id, key)
        return key

    async def _key_to_open(self, key_id: str, event_id: str) -> DataKey:
        hit, key = self._cached(key_id)
        if not hit:
            doc = await self.key_store.get(key_id)
            if doc is None:
                raise KeyUnavailableError(
                    f"event {event_id!r} is sealed under key {key_id!r}, which the key store does not hold "
                    "(wrong key database or collection?); it was not erased: erasure leaves a tombstone"
                )
            key = self._load(key_id, doc)
        if key is None:
            raise ContentErasedError(
                f"event {event_id!r}: its content was erased (key {key_id!r} destroyed) and can never be read"
            )
        return key

    async def _opening_key(self, key_id: str, fingerprint: str, event_id: str) -> DataKey:
        """The key to open content sealed under ``key_id``; the caller has tried the cache."""
        key = await self._key_to_open(key_id, event_id)
        if fingerprint != key.fingerprint:
            raise KeyUnavailableError(
                f"event {event_id!r} was sealed under another key than the key store's {key_id!r} "
                "(a key re-created in a wrong key store, or the marker was altered: run verify)"
            )
        return key

    async def open_messages(self, doc: Mapping[str, Any]) -> Any:
        """Return an event's messages with every sealed one opened (the stored list itself if none is).

        Raises:
            ContentErasedError: the content's key was destroyed by erasure.
            KeyUnavailableError: the key is missing (no tombstone) or cannot be unwrapped.
            IntegrityError: a sealed message is malformed, altered or moved.
        """
        messages = doc.get("messages")
        if type(messages) is not list or not messages:
            return messages  # the caller reports a malformed event as it always did
        event_id = str(doc.get("_id"))
        first = messages[0]
        form = _event_form(first)
        if form is not None:
            marker: str = first[SEALED_FIELD]
            if form == _CL3:
                parts = marker.split(":")
                ciphertext: bytes | str = first.get(CIPHERTEXT_FIELD)
                malformed = len(parts) != 3 or type(ciphertext) is not bytes
            else:
                parts = marker.split(":", 3)  # stops at the hex: a full split scans and copies it
                ciphertext = parts[-1]
                malformed = len(parts) != 4
            if malformed or type(first.get("role")) is not str:
                raise IntegrityError(f"event {event_id!r}: its sealed first message is malformed")
            seen = self._opened.get(event_id)
            if seen is not None:
                hit = self._cache.get(seen[2].key_id)
                if (
                    seen[0] == marker
                    and seen[1] == ciphertext
                    and hit is not None
                    and hit[1] is seen[2]
                    and hit[0] > time.monotonic()
                ):
                    # Opened before, same ciphertext, key still cached: no decryption.
                    self._opened.move_to_end(event_id)
                    _check_clear(messages, seen[3], event_id, _REFS[form])
                    return [dict(m) for m in seen[3]]  # copies: the kept ones stay as opened
                del self._opened[event_id]  # stale: its key expired or was destroyed, or it changed
            hit = self._cache.get(parts[1])
            # The cache checked inline (no await, no call): the hot path of every sealed read.
            key = hit[1] if hit is not None and hit[0] > time.monotonic() else None
            if key is None or key.fingerprint != parts[2]:
                key = await self._opening_key(parts[1], parts[2], event_id)
            opened = key.open_event(messages, event_id, ciphertext, form)
            if not self._keeps():
                return opened
            self._keep(event_id, marker, ciphertext, key, opened)
            return [dict(m) for m in opened]
        # Clear events, and cl1 events (each message sealed alone). A cl2 or cl3 message
        # met here has no ciphertext in the event's first message: _parse refuses it.
        out: list[Any] | None = None
        for index, item in enumerate(messages):
            if isinstance(item, Mapping) and SEALED_FIELD in item:
                if out is None:
                    out = list(messages[:index])
                key_id, fingerprint, text = _parse(item, event_id, index)
                key = await self._opening_key(key_id, fingerprint, event_id)
                out.append(key.open(item, event_id, index, _blob(text, event_id, index)))
            elif out is not None:
                out.append(item)
        return messages if out is None else out
