"""The hash chain: ``hash = sha256(prev_hash + canonical bytes of the event)``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chatledger.codec import canonical_json

__all__ = ["GENESIS_HASH", "HASHED_FIELDS", "epoch_ms", "event_hash"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: ``prev_hash`` of the first event of a conversation.
GENESIS_HASH = "0" * 64

#: The event fields covered by the hash. ``_id`` is the server's, and ``hash`` itself.
HASHED_FIELDS = ("v", "thread_id", "seq", "first_message", "count", "messages", "event_id", "created_at")


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
    for name in HASHED_FIELDS:
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
