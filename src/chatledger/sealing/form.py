"""The sealed stored forms (``cl4``; ``cl3`` before it): what a sealed event looks like, checked keyless.

Only ``role`` and ``message_id`` stay in clear; a message's ``text``, ``author_name``
and ``rest``/``payload`` are sealed. A whole event is sealed at once. ``cl4`` (written)::

    [{"role": "user", "message_id": "m1",
      "sealed": "cl4:<key id>:<key fingerprint>", "ciphertext": <binary>},
     {"role": "assistant", "sealed": "cl4:@0"}]

The ``ciphertext`` is ``nonce || AES-256-GCM(data key, plaintext)``, stored as BSON binary
(the driver's ``bytes``); every other message of the event refers to it (``cl4:@0``).
The plaintext holds each message's sealed fields only (:func:`packed`): a frame of the
stored strings' own bytes, deflated first when the sealer compresses and that is smaller,
optionally padded with trailing spaces to a size bucket (:func:`padded_size`). The
associated data binds it to the key id, the event ``_id`` and every message's clear
``role`` and ``message_id`` (:func:`ad_key_part`, :func:`ad_event_part`,
:func:`ad_clear_part`), so messages swapped, dropped, added or relabelled do not open.

``cl3`` (written before; read and verified as ever) has a ``"text": "[sealed]"``
placeholder in every message, ``cl3:`` markers, and a plaintext that is the JSON list of
the stored messages (their clear fields included, compared on open by
:func:`check_clear`), or above 4 KiB a frame (:func:`framed`) when smaller.

A reader without a key refuses every message holding ``sealed`` (it never decodes one),
and ``verify`` checks each sealed one's shape and place with :func:`sealed_problem`.
Nothing here needs a key or ``cryptography``: sealing and opening with a key is
:class:`~chatledger.sealing.DataKey`'s.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Final

import orjson

from chatledger.errors import IntegrityError
from chatledger.hashing import BINARY_FIELD
from chatledger.sealing._aead import NONCE_BYTES

__all__ = [
    "CIPHERTEXT_FIELD",
    "FORM",
    "FORMS",
    "REF",
    "SEALED_FIELD",
    "SEALED_TEXT",
    "ad_clear_part",
    "ad_event_part",
    "ad_key_part",
    "check_clear",
    "form_of",
    "framed",
    "is_head",
    "is_sealed",
    "packed",
    "padded_size",
    "placeholders",
    "sealed_problem",
    "unframed",
    "unpacked",
]

#: The field of a stored message that holds its sealed content (its marker).
SEALED_FIELD: Final = "sealed"
#: The form written: one binary ciphertext per event, in its first message's ``ciphertext``.
FORM: Final = "cl4"
#: The forms read (and verified): ``cl3``, written before ``cl4``, keeps opening.
FORMS: Final = ("cl3", "cl4")
#: The marker of a sealed event's other messages: sealed in message 0's ciphertext.
REF: Final = "cl4:@0"
#: That marker in each form.
_REFS: Final = {"cl3": "cl3:@0", "cl4": REF}
#: The field of a sealed event's first message that holds the event's ciphertext (the one
#: binary value the hash chain accepts).
CIPHERTEXT_FIELD: Final = BINARY_FIELD
#: What a ``cl3`` sealed message shows in place of its text (``cl4`` has no placeholder).
SEALED_TEXT: Final = "[sealed]"
#: Associated-data label of each form: a ciphertext opens only in the form it was sealed for.
_AD_LABELS: Final = {"cl3": "chatledger-seal-v3", "cl4": "chatledger-seal-v4"}
#: The fields a sealed message of each form holds (``message_id`` only if the message has one).
_FIELDS: Final = {
    "cl3": frozenset({"role", "message_id", "text", SEALED_FIELD}),
    "cl4": frozenset({"role", "message_id", SEALED_FIELD}),
}
#: The fields kept in clear: not in a ``cl4`` plaintext (the associated data binds them).
_CLEAR: Final = ("role", "message_id")
#: Names a plaintext never holds: the clear fields, and the stored form's own.
_NOT_SEALED: Final = frozenset({*_CLEAR, SEALED_FIELD, CIPHERTEXT_FIELD})
TAG_BYTES: Final = 16
#: Padding buckets are powers of two up to this size, then multiples of it: past 64 KiB a
#: doubling would waste up to the batch's own size (and could push it past the event limit).
PAD_STEP: Final = 65_536
PAD_MIN: Final = 16
#: First byte of a framed plaintext (a JSON one starts with ``[``): see :func:`framed`.
FRAMED: Final = b"\x00"
#: First byte of a ``cl4`` plaintext deflated before sealing (see :func:`packed`).
DEFLATED: Final = b"\x01"
#: ``cl3`` batches whose JSON is larger than this are framed when that is smaller.
FRAME_FROM: Final = 4096
#: A ``cl4`` frame shorter than this is never deflated: it would not shrink (a short turn
#: has no repetition to remove) and the attempt costs a compressor's setup.
COMPRESS_FROM: Final = 256
#: zlib level: 1 is the fastest, and on chat batches within 3% of the default level's size.
_LEVEL: Final = 1
#: The most a deflated plaintext may inflate to (an event is at most 16 MiB stored; the
#: plaintext was authenticated, so only a bug or a wrong writer could exceed it).
_INFLATE_MAX: Final = 64 << 20
_FRAME_HEAD: Final = struct.Struct(">I")


def is_sealed(message: Mapping[str, Any]) -> bool:
    """Return whether a stored message holds sealed content."""
    return SEALED_FIELD in message


def form_of(marker: object) -> str | None:
    """Return the form a ``sealed`` marker names (``"cl3"``, ``"cl4"``), or ``None``."""
    if type(marker) is str and marker[3:4] == ":" and marker[:3] in _AD_LABELS:
        return marker[:3]
    return None


def is_head(first: object) -> bool:
    """Return whether ``first`` (an event's message 0) holds a sealed event's marker (not a reference)."""
    # type() first: every read asks this of every event, and the driver's documents are dicts.
    head = first.get(SEALED_FIELD) if type(first) is dict or isinstance(first, Mapping) else None
    return type(head) is str and head[:4] in ("cl4:", "cl3:") and head[4:] != "@0"


def sealed_problem(
    message: Mapping[str, Any], index: int | None = None, first: Mapping[str, Any] | None = None
) -> str | None:
    """Return why a sealed stored message is malformed, or ``None`` (no key needed).

    Checks the shape of one message. Given its place (``index`` in its event, and
    ``first``, the event's message 0, when ``index > 0``), it also checks the layout a
    reader opens: the ciphertext in message 0, every other message a reference of the
    same form (``cl4:@0``; a clear message there is a problem too), no such marker in an
    event whose message 0 holds no ciphertext. Without ``index`` a reference is judged
    alone (it may be well placed). The content is covered by the chain's hash; only a
    reader with the key can open it (which also checks the clear fields).
    """
    marker = message.get(SEALED_FIELD)
    if index:
        head_form = form_of(first.get(SEALED_FIELD)) if first is not None and is_head(first) else None
        in_sealed_event = head_form is not None
        if head_form is not None:
            ref = _REFS[head_form]
            if marker != ref:
                return (
                    f"a sealed event's messages after the first must be {ref} "
                    "(its ciphertext is in message 0)"
                )
        if not in_sealed_event and form_of(marker) is not None:
            return "a sealed marker in an event whose first message holds no ciphertext"
        if SEALED_FIELD not in message:
            return None  # clear, in a clear event
    role = message.get("role")
    if type(role) is not str or type(marker) is not str:
        return "a sealed message needs a str role and a str sealed field"
    form = form_of(marker)
    head = form is not None and marker[4:] != "@0"
    fields = _FIELDS[form or "cl3"]  # no form: judged by the widest, the ciphertext named if misplaced
    extra = set(message) - (fields | {CIPHERTEXT_FIELD} if head else fields)
    if extra:
        return f"a sealed message holds fields its form does not have: {sorted(extra)}"
    if form is None:
        return f"the sealed field is not a {' or '.join(FORMS)} marker"
    if form == "cl3" and message.get("text") != SEALED_TEXT:
        return "a sealed message's text is not the placeholder"
    if "message_id" in message and type(message["message_id"]) is not str:
        return "message_id is not a str"
    if not head:
        return f"{marker} in an event's first message: no ciphertext to refer to" if index == 0 else None
    parts = marker.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return f"the sealed field is not a {form} marker"
    blob = message.get(CIPHERTEXT_FIELD)
    if type(blob) is not bytes:
        return f"a {form} message's ciphertext is missing or not binary"
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        return "the sealed ciphertext is too short"
    return None


# The associated data: ad_key_part(key id) + ad_event_part(event id) [+ ad_clear_part(the
# stored messages), cl4], "<label>|<len>:<key id>|<len>:<event id>[|<JSON of the clear
# fields>]". Length-prefixed, so no (key id, event id) pair can pose as another, and the
# JSON comes last (it needs no length); the form's own label, so a ciphertext opens only
# in the form it was sealed for. A DataKey makes its key parts once.
def ad_key_part(key_id: str, form: str = FORM) -> bytes:
    """Return the key's part of the associated data (of ``form``)."""
    return f"{_AD_LABELS[form]}|{len(key_id)}:{key_id}|".encode()


def ad_event_part(event_id: str) -> bytes:
    """Return the event's part of the associated data."""
    return f"{len(event_id)}:{event_id}".encode()


def ad_clear_part(messages: Sequence[Any], event_id: str) -> bytes:
    """Return the clear fields' part of a ``cl4`` associated data: each message's role and id, in order.

    Raises:
        IntegrityError: a stored message is not a document, or its clear fields are not JSON.
    """
    try:
        clear = [[m.get("role"), m.get("message_id")] for m in messages]
        return b"|" + orjson.dumps(clear)
    except (AttributeError, TypeError) as e:
        raise IntegrityError(f"event {event_id!r}: a sealed message is malformed") from e


def padded_size(size: int, pad_to: int) -> int:
    """Return the bucket a plaintext of ``size`` bytes is padded to (at least ``pad_to``)."""
    if size <= pad_to:
        return pad_to
    if size <= PAD_STEP:
        return 1 << (size - 1).bit_length()
    return -(-size // PAD_STEP) * PAD_STEP


def placeholders(stored: Sequence[Mapping[str, Any]], form: str = FORM) -> list[dict[str, Any]]:
    """Return the stored form of a batch's messages before the ciphertext is set: every one a reference."""
    out: list[dict[str, Any]] = []
    ref = _REFS[form]
    for message in stored:
        sealed: dict[str, Any] = {"role": message["role"]}
        if "message_id" in message:
            sealed["message_id"] = message["message_id"]
        if form == "cl3":
            sealed["text"] = SEALED_TEXT
        sealed[SEALED_FIELD] = ref
        out.append(sealed)
    return out


def packed(stored: Sequence[Mapping[str, Any]], compress: bool = False) -> bytes:
    """Return the ``cl4`` plaintext of a batch: its messages' sealed fields (not ``role``, ``message_id``).

    A frame: ``0x00``, a 4-byte big-endian header length, the header (JSON: the field
    names of each message, then every field's length in characters), then all the
    fields' text as one UTF-8 string: nothing is escaped, and opening decodes the text
    once. With ``compress``, a frame of at least :data:`COMPRESS_FROM` bytes (and no
    larger than opening inflates, 64 MiB) is deflated (``0x01`` then raw deflate) when
    that is smaller. A value that is not a str (no
    stored message holds one) makes it a JSON list instead.
    """
    names: list[list[str]] = []
    lengths: list[int] = []
    values: list[str] = []
    for message in stored:
        row: list[str] = []
        for name, value in message.items():
            if name in _CLEAR:
                continue
            if type(value) is not str:
                return orjson.dumps([{k: v for k, v in m.items() if k not in _CLEAR} for m in stored])
            row.append(name)
            lengths.append(len(value))
            values.append(value)
        names.append(row)
    head = orjson.dumps([names, lengths])
    frame = b"".join([FRAMED, _FRAME_HEAD.pack(len(head)), head, "".join(values).encode("utf-8")])
    # Never deflate a frame larger than opening inflates: that write would never read
    # again. Stored as is, such a frame exceeds the event limit and the append is refused.
    if compress and COMPRESS_FROM <= len(frame) <= _INFLATE_MAX:
        deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        small = DEFLATED + deflate.compress(frame) + deflate.flush()
        if len(small) < len(frame):
            return small
    return frame


def unpacked(plain: bytes, messages: Sequence[Any], event_id: str) -> list[dict[str, Any]]:
    """Return a ``cl4`` event's messages whole: each stored message's clear fields and its opened ones.

    ``plain`` is the opened plaintext (see :func:`packed`; trailing padding ignored),
    ``messages`` the event's messages as stored. Each of them must hold exactly the form's
    fields, every one after the first a ``cl4:@0`` reference (what :func:`sealed_problem`
    asks without a key), so a reader with the key refuses what ``verify`` reports. Their
    clear fields need no comparison: the associated data bound them.

    Raises:
        IntegrityError: the plaintext is malformed (it was authenticated, so only a bug or
            a wrong writer can make one), or a stored message is not of the form.
    """
    broken = IntegrityError(f"event {event_id!r}: its sealed content is malformed")
    kind = plain[:1]
    if kind == DEFLATED:
        inflate = zlib.decompressobj(-15)
        try:
            frame = inflate.decompress(memoryview(plain)[1:], _INFLATE_MAX)
        except zlib.error as e:
            raise broken from e
        if (
            not inflate.eof
            or inflate.unconsumed_tail
            or inflate.unused_data.strip(b" ")
            or frame[:1] != FRAMED
        ):
            raise broken
        plain = frame
    elif kind != FRAMED:
        return _unpacked_json(plain, messages, event_id)
    if len(plain) < 1 + _FRAME_HEAD.size:
        raise broken
    (size,) = _FRAME_HEAD.unpack_from(plain, 1)
    start = 1 + _FRAME_HEAD.size
    try:
        names, lengths = orjson.loads(plain[start : start + size])
        text = str(memoryview(plain)[start + size :], "utf-8")
        total = sum(lengths)  # a length not a number: TypeError
        negative = min(lengths, default=0) < 0
    except (ValueError, TypeError) as e:  # not JSON, not two lists, not UTF-8
        raise broken from e
    if type(names) is not list or type(lengths) is not list or len(names) != len(messages) or negative:
        raise broken
    if type(total) is not int or total > len(text) or text[total:].strip(" "):
        raise broken  # a float length; past the end; more than padding after the last field
    out: list[dict[str, Any]] = []
    at = i = 0
    ref, marker = REF, SEALED_FIELD
    try:
        for index, row in enumerate(names):
            item = messages[index]
            if type(row) is not list:
                raise broken
            if not (type(item) is dict or isinstance(item, Mapping)):  # the driver's dict: no ABC check
                raise _not_of_form(event_id, index)
            has_id = "message_id" in item
            # role and sealed (and the ciphertext in the first), message_id if there: cl4's fields.
            # A null message_id binds the associated data as an absent one does: refused here.
            if (
                len(item) != (2 if index else 3) + has_id
                or (index and item.get(marker) != ref)
                or (has_id and type(item["message_id"]) is not str)
            ):
                raise _not_of_form(event_id, index)
            message: dict[str, Any] = {}
            for name in row:
                n = lengths[i]  # IndexError: fewer lengths than names
                message[name] = text[at : at + n]
                at += n
                i += 1
            # The clear fields are the stored ones (the associated data bound them); set last,
            # they stand whatever the frame holds.
            message["role"] = item.get("role")
            if has_id:
                message["message_id"] = item["message_id"]
            out.append(message)
    except (IndexError, TypeError) as e:  # too few lengths, a float length, a name not hashable
        raise broken from e
    if i != len(lengths):
        raise broken
    try:
        "".join(chain.from_iterable(names))  # every field name a str (checked in C)
    except TypeError as e:
        raise broken from e
    if not _NOT_SEALED.isdisjoint(chain.from_iterable(names)):
        raise broken  # a clear field (the stored one stands) or a field of the stored form
    return out


def _unpacked_json(plain: bytes, messages: Sequence[Any], event_id: str) -> list[dict[str, Any]]:
    """:func:`unpacked` for a plaintext that is a JSON list (a batch holding a value that is not a str)."""
    broken = IntegrityError(f"event {event_id!r}: its sealed content is malformed")
    try:
        sealed = orjson.loads(plain)
    except ValueError as e:
        raise broken from e
    if type(sealed) is not list or len(sealed) != len(messages):
        raise broken
    out: list[dict[str, Any]] = []
    for index, fields in enumerate(sealed):
        item = messages[index]
        if type(fields) is not dict or not _NOT_SEALED.isdisjoint(fields):
            raise broken
        if not (type(item) is dict or isinstance(item, Mapping)):
            raise _not_of_form(event_id, index)
        message: dict[str, Any] = {"role": item.get("role"), **fields}
        if "message_id" in item:
            message["message_id"] = item["message_id"]
        out.append(message)
    check_clear(messages, out, event_id)
    return out


def _not_of_form(event_id: str, index: int) -> IntegrityError:
    return IntegrityError(
        f"event {event_id!r}: message {index} does not match the event's sealed content "
        "(messages swapped, dropped, added or relabelled, or fields added to its stored form)"
    )


def framed(stored: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Return a ``cl3`` batch as a frame, or ``None`` if a value is not a str (then JSON it is).

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


def check_clear(messages: Sequence[Any], opened: list[Any], event_id: str, form: str = FORM) -> None:
    """Check a sealed event's stored messages against its opened copy (each with its clear fields).

    The clear fields must be the opened ones, and every message after the first a
    reference to the first's ciphertext: in ``cl3`` (whose plaintext holds a copy of the
    clear fields) this catches messages swapped, dropped, added or relabelled without a
    key (their hash recomputed); in ``cl4`` the associated data already did, and this
    checks what a kept copy was opened from. Each stored message must also hold exactly
    its form's fields (what :func:`sealed_problem` asks without a key), so a reader with
    the key refuses what ``verify`` reports.

    Raises:
        IntegrityError: they differ.
    """
    if len(opened) != len(messages):
        raise IntegrityError(f"event {event_id!r}: its sealed content does not match its messages")
    # The fields a stored message has (sealed_problem's sets): all but message_id, which
    # may be absent; the first message also holds the ciphertext.
    rest = len(_FIELDS[form]) - 1
    head = rest + 1
    ref = _REFS[form]
    placeholder = SEALED_TEXT if form == "cl3" else None
    for index, item in enumerate(messages):
        message = opened[index]
        if (
            type(message) is not dict
            or not (type(item) is dict or isinstance(item, Mapping))  # the driver's dict: no ABC check
            or (index and item.get(SEALED_FIELD) != ref)
            or item.get("role") != message.get("role")
            or item.get("message_id") != message.get("message_id")
            # A null message_id compares equal to an absent one: not of the form either.
            or type(item.get("message_id", "")) is not str
            or item.get("text") != placeholder
            or len(item) != (rest if index else head) + ("message_id" in item)
        ):
            raise _not_of_form(event_id, index)
