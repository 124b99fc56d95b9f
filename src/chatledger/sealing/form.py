"""The sealed stored form (``cl3``): what a sealed event looks like, checked without a key.

Only ``role`` and ``message_id`` stay in clear; a message's ``text``, ``author_name``
and ``rest``/``payload`` are sealed. A whole event is sealed at once::

    [{"role": "user", "message_id": "m1", "text": "[sealed]",
      "sealed": "cl3:<key id>:<key fingerprint>", "ciphertext": <binary>},
     {"role": "assistant", "text": "[sealed]", "sealed": "cl3:@0"}]

The ``ciphertext`` is ``nonce || AES-256-GCM(data key, plaintext)``; the plaintext is
the JSON list of the batch's stored messages, or above 4 KiB a frame of the stored
strings' own bytes when smaller (:func:`framed`), so JSON content is not escaped twice;
optionally padded with trailing spaces to a size bucket (:func:`padded_size`). It is
stored as BSON binary (the driver's ``bytes``); every other message of the event refers
to it (``cl3:@0``). The associated data binds it to the key id and the event ``_id``
(:func:`ad_key_part`, :func:`ad_event_part`), and opening compares each message's clear
``role`` and ``message_id`` with its sealed copy (:func:`check_clear`).

The placeholder ``text`` keeps the sealed form a valid stored message for code that
decodes without keys (``verify`` checks every message decodes, and each sealed one's
shape and place with :func:`sealed_problem`). Nothing here needs a key or ``cryptography``:
sealing and opening with a key is :class:`~chatledger.sealing.DataKey`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from chatledger.errors import IntegrityError
from chatledger.hashing import BINARY_FIELD
from chatledger.sealing._aead import NONCE_BYTES

__all__ = [
    "CIPHERTEXT_FIELD",
    "FORM",
    "REF",
    "SEALED_FIELD",
    "SEALED_TEXT",
    "ad_event_part",
    "ad_key_part",
    "check_clear",
    "framed",
    "is_head",
    "is_sealed",
    "padded_size",
    "placeholders",
    "sealed_problem",
    "unframed",
]

#: The field of a stored message that holds its sealed content (its marker).
SEALED_FIELD: Final = "sealed"
#: The form written (and read): one binary ciphertext per event, in its first message's ``ciphertext``.
FORM: Final = "cl3"
#: The marker of a sealed event's other messages: sealed in message 0's ciphertext.
REF: Final = "cl3:@0"
#: The field of a sealed event's first message that holds the event's ciphertext (the one
#: binary value the hash chain accepts).
CIPHERTEXT_FIELD: Final = BINARY_FIELD
#: What a sealed message shows in place of its text.
SEALED_TEXT: Final = "[sealed]"
#: Associated-data label of the form (the bytes sealed events are bound to).
_AD_LABEL: Final = "chatledger-seal-v3"
_SEALED_FORM: Final = frozenset({"role", "message_id", "text", SEALED_FIELD})
_SEALED_HEAD: Final = _SEALED_FORM | {CIPHERTEXT_FIELD}
TAG_BYTES: Final = 16
#: Padding buckets are powers of two up to this size, then multiples of it: past 64 KiB a
#: doubling would waste up to the batch's own size (and could push it past the event limit).
PAD_STEP: Final = 65_536
PAD_MIN: Final = 16
#: First byte of a framed plaintext (a JSON one starts with ``[``): see :func:`framed`.
FRAMED: Final = b"\x00"
#: Batches whose JSON is larger than this are framed when that is smaller: below it, the
#: JSON escaping costs a few hundred bytes at most, and parsing JSON is the faster open.
FRAME_FROM: Final = 4096
_FRAME_HEAD: Final = struct.Struct(">I")


def is_sealed(message: Mapping[str, Any]) -> bool:
    """Return whether a stored message holds sealed content."""
    return SEALED_FIELD in message


def is_head(first: object) -> bool:
    """Return whether ``first`` (an event's message 0) holds a sealed event's marker (not a reference)."""
    # type() first: every read asks this of every event, and the driver's documents are dicts.
    head = first.get(SEALED_FIELD) if type(first) is dict or isinstance(first, Mapping) else None
    return type(head) is str and head[:4] == "cl3:" and head != REF


def sealed_problem(
    message: Mapping[str, Any], index: int | None = None, first: Mapping[str, Any] | None = None
) -> str | None:
    """Return why a sealed stored message is malformed, or ``None`` (no key needed).

    Checks the shape of one message. Given its place (``index`` in its event, and
    ``first``, the event's message 0, when ``index > 0``), it also checks the layout a
    reader opens: the ciphertext in message 0, every other message ``cl3:@0`` (a clear
    message there is a problem too), no such marker in an event whose message 0 holds no
    ciphertext. Without ``index`` a reference is judged alone (it may be well placed).
    The content is covered by the chain's hash; only a reader with the key can open it
    (which also checks the clear fields against the sealed copy).
    """
    marker = message.get(SEALED_FIELD)
    if index:
        in_sealed_event = is_head(first)
        if in_sealed_event and marker != REF:
            return f"a {FORM} event's messages after the first must be {REF} (its ciphertext is in message 0)"
        if not in_sealed_event and type(marker) is str and marker[:4] == "cl3:":
            return f"a {FORM} marker in an event whose first message holds no {FORM} ciphertext"
        if SEALED_FIELD not in message:
            return None  # clear, in a clear event
    role = message.get("role")
    if type(role) is not str or type(marker) is not str:
        return "a sealed message needs a str role and a str sealed field"
    head = marker.startswith(f"{FORM}:") and marker != REF
    extra = set(message) - (_SEALED_HEAD if head else _SEALED_FORM)
    if extra:
        return f"a sealed message holds fields its form does not have: {sorted(extra)}"
    if message.get("text") != SEALED_TEXT:
        return "a sealed message's text is not the placeholder"
    if "message_id" in message and type(message["message_id"]) is not str:
        return "message_id is not a str"
    if marker == REF:
        return f"{marker} in an event's first message: no ciphertext to refer to" if index == 0 else None
    parts = marker.split(":")
    if not head or len(parts) != 3 or not parts[1] or not parts[2]:
        return f"the sealed field is not a {FORM} marker"
    blob = message.get(CIPHERTEXT_FIELD)
    if type(blob) is not bytes:
        return f"a {FORM} message's ciphertext is missing or not binary"
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        return "the sealed ciphertext is too short"
    return None


# The associated data: ad_key_part(key id) + ad_event_part(event id), "<label>|<len>:<key
# id>|<len>:<event id>". Length-prefixed, so no (key id, event id) pair can pose as
# another; the form's own label, so a ciphertext opens only in the form it was sealed
# for. The messages' clear fields are not in it: the sealed copy of each is compared on
# open. A DataKey makes its key part once.
def ad_key_part(key_id: str) -> bytes:
    """Return the key's part of the associated data."""
    return f"{_AD_LABEL}|{len(key_id)}:{key_id}|".encode()


def ad_event_part(event_id: str) -> bytes:
    """Return the event's part of the associated data."""
    return f"{len(event_id)}:{event_id}".encode()


def padded_size(size: int, pad_to: int) -> int:
    """Return the bucket a plaintext of ``size`` bytes is padded to (at least ``pad_to``)."""
    if size <= pad_to:
        return pad_to
    if size <= PAD_STEP:
        return 1 << (size - 1).bit_length()
    return -(-size // PAD_STEP) * PAD_STEP


def placeholders(stored: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return the stored form of a batch's messages before the ciphertext is set: every one a reference."""
    out: list[dict[str, Any]] = []
    for message in stored:
        sealed: dict[str, Any] = {"role": message["role"]}
        if "message_id" in message:
            sealed["message_id"] = message["message_id"]
        sealed["text"] = SEALED_TEXT
        sealed[SEALED_FIELD] = REF
        out.append(sealed)
    return out


def framed(stored: Sequence[Mapping[str, Any]]) -> bytes | None:
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
    return b"".join([FRAMED, _FRAME_HEAD.pack(len(head)), head, *parts])


def unframed(plain: bytes, event_id: str) -> list[dict[str, Any]]:
    """Return the batch in a frame (see :func:`framed`), trailing padding spaces ignored.

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


def check_clear(messages: Sequence[Any], opened: list[Any], event_id: str) -> None:
    """Check a sealed event's stored messages against its opened (sealed) copy.

    The clear fields must be the sealed ones, and every message after the first a
    reference to the first's ciphertext: this catches messages swapped, dropped, added
    or relabelled without a key (their hash recomputed). Each stored message must also
    hold exactly its form's fields (what :func:`sealed_problem` asks without a key), so
    a reader with the key refuses what ``verify`` reports.

    Raises:
        IntegrityError: they differ.
    """
    if len(opened) != len(messages):
        raise IntegrityError(f"event {event_id!r}: its sealed content does not match its messages")
    # The fields a stored message has (sealed_problem's sets): all but message_id, which
    # may be absent; the first message also holds the ciphertext.
    rest = len(_SEALED_FORM) - 1
    head = len(_SEALED_HEAD) - 1
    for index, item in enumerate(messages):
        message = opened[index]
        if (
            type(message) is not dict
            or not (type(item) is dict or isinstance(item, Mapping))  # the driver's dict: no ABC check
            or (index and item.get(SEALED_FIELD) != REF)
            or item.get("role") != message.get("role")
            or item.get("message_id") != message.get("message_id")
            or item.get("text") != SEALED_TEXT
            or len(item) != (rest if index else head) + ("message_id" in item)
        ):
            raise IntegrityError(
                f"event {event_id!r}: message {index} does not match the event's sealed content "
                "(messages swapped, dropped, added or relabelled, or fields added to its stored form)"
            )
