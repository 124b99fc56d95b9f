"""The hash chain: ``hash = sha256(prev_hash + canonical bytes of the event)``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from chatledger.codec import canonical_json_bytes

__all__ = [
    "BINARY_FIELD",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "HASHED_FIELDS_BY_VERSION",
    "epoch_ms",
    "event_hash",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The one message field that may hold ``bytes`` (a sealed event's or summary's
#: ciphertext); every other stored value is a string, and a ``bytes`` value anywhere
#: else is not hashable.
BINARY_FIELD: Final = "ciphertext"

#: ``prev_hash`` of the first event of a conversation.
GENESIS_HASH = "0" * 64

#: The event fields covered by the hash, by schema version (``v``, itself hashed). An
#: event is hashed by the rules of the version it was written with, forever: re-hashing
#: an old event under new rules would break the chain an auditor already anchored.
#: Version 2 adds the scope fields, so moving an event to another tenant, user or
#: lineage is tampering that ``verify`` reports.
HASHED_FIELDS_BY_VERSION: dict[object, tuple[str, ...]] = {
    1: ("v", "thread_id", "seq", "first_message", "count", "messages", "event_id", "created_at"),
    2: (
        "v",
        "thread_id",
        "seq",
        "first_message",
        "count",
        "messages",
        "event_id",
        "created_at",
        "root_id",
        "tenant_id",
        "user_id",
        "source_id",
        "thread_digest",
    ),
}
# Version 3 (written only on compaction summary events) adds ``compaction``: the summary
# and the range it replaces (first/last seq and their hashes, the strategy). A sealed
# summary's ciphertext (in ``compaction.messages``) is hashed by its digest, as a batch's.
HASHED_FIELDS_BY_VERSION[3] = (*HASHED_FIELDS_BY_VERSION[2], "compaction")
#: The fields of the version ordinary events are written with.
HASHED_FIELDS = HASHED_FIELDS_BY_VERSION[2]

_SCALAR_TYPES = (str, int, type(None))
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


#: The scalar fields of each version: all but ``messages``.
_SCALAR_FIELDS = {
    fields: tuple(f for f in fields if f != "messages") for fields in HASHED_FIELDS_BY_VERSION.values()
}


def epoch_ms(value: datetime) -> int:
    """Return ``value`` as integer milliseconds since the epoch (naive means UTC, as PyMongo reads)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can round 123 ms down to 122.999.
    delta = value - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _digested(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as hashed: its :data:`BINARY_FIELD` ``bytes`` (a ciphertext) by their digest.

    ``{"sha256": <hex digest>, "size": <bytes>}`` stands for the bytes: no string can
    pose as it, and hashing the digest costs less than hashing a text encoding of the
    bytes, which would be twice as long. A stored document of that shape would hash
    alike, but no stored form holds one: ``verify`` and reads refuse it by its shape
    (:func:`chatledger.sealing.sealed_problem`).
    """
    out = dict(message)
    value = out.get(BINARY_FIELD)
    if type(value) is bytes:
        out[BINARY_FIELD] = {"sha256": hashlib.sha256(value).hexdigest(), "size": len(value)}
    return out


def _fast_canonical(body: dict[str, Any], fields: tuple[str, ...]) -> bytes | None:
    """The canonical bytes of ``body`` via orjson, when its shape makes them provably json's.

    That shape is every event ChatLedger writes: str / 64-bit int / null scalars and
    messages that are flat ``{str: str}`` documents (a sealed event's first message also
    holds ``bytes`` in :data:`BINARY_FIELD`, hashed by :func:`_digested`); for it orjson
    (keys sorted, at every level) and json write the same bytes, so one ``orjson.dumps``
    of the whole body does.
    Anything else answers None and takes the general path.
    """
    for name in _SCALAR_FIELDS[fields]:
        value = body[name]
        kind = type(value)
        if kind not in _SCALAR_TYPES or (kind is int and not _INT64_MIN <= value <= _INT64_MAX):
            return None
    messages = body["messages"]
    if type(messages) is not list:
        return None
    binary = False
    for message in messages:
        if type(message) is not dict:
            return None
        for name, value in message.items():  # pyright: ignore[reportUnknownVariableType]
            if type(value) is not str:
                if type(value) is not bytes or name != BINARY_FIELD:
                    return None
                binary = True
    if binary:
        body["messages"] = [_digested(m) for m in messages]
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a lone surrogate, a key that is not a str: the general path refuses it clearly
        return None


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """Return the chained hash of an event document (as stored) after ``prev_hash``."""
    # An unknown version is hashed with the current rules; verify reports the version itself.
    fields = HASHED_FIELDS_BY_VERSION.get(event.get("v"), HASHED_FIELDS)
    body: dict[str, Any] = {}
    for name in fields:
        value = event.get(name)
        if isinstance(value, datetime):
            value = epoch_ms(value)
        body[name] = value
    raw = _fast_canonical(body, fields)
    if raw is None:
        # Messages as plain dicts (a read returns them as the driver's mapping type).
        body["messages"] = [_digested(m) for m in event.get("messages") or ()]
        summary = body.get("compaction")
        if isinstance(summary, Mapping) and type(summary.get("messages")) is list:
            # A sealed summary (version 3) holds a ciphertext like a sealed batch: hashed alike.
            # A clear summary's messages are unchanged by this, and so are their hashes.
            digested = [_digested(m) if isinstance(m, Mapping) else m for m in summary["messages"]]
            body["compaction"] = {**summary, "messages": digested}
        raw = canonical_json_bytes(body)
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(raw)
    return digest.hexdigest()
