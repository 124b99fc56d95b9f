"""The hash chain: ``hash = sha256(prev_hash + canonical bytes of the event)``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chatledger.codec import canonical_json

__all__ = ["GENESIS_HASH", "HASHED_FIELDS", "HASHED_FIELDS_BY_VERSION", "epoch_ms", "event_hash"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
    ),
}
#: The fields of the current version.
HASHED_FIELDS = HASHED_FIELDS_BY_VERSION[2]


def epoch_ms(value: datetime) -> int:
    """Return ``value`` as integer milliseconds since the epoch (naive means UTC, as PyMongo reads)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can round 123 ms down to 122.999.
    delta = value - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """Return the chained hash of an event document (as stored) after ``prev_hash``."""
    body: dict[str, Any] = {}
    # An unknown version is hashed with the current rules; verify reports the version itself.
    for name in HASHED_FIELDS_BY_VERSION.get(event.get("v"), HASHED_FIELDS):
        value = event.get(name)
        if isinstance(value, datetime):
            value = epoch_ms(value)
        elif name == "messages":
            value = [dict(m) for m in value or ()]
        body[name] = value
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(canonical_json(body).encode("utf-8"))
    return digest.hexdigest()
