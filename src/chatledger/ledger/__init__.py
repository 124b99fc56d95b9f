"""The ledger: append, read, branch and lineage over the storage gate."""

from chatledger.ledger.core import (
    DEFAULT_AUDIT_COLLECTION,
    DEFAULT_EVENTS_COLLECTION,
    DEFAULT_THREADS_COLLECTION,
    MAX_EVENT_BYTES,
    AppendResult,
    Ledger,
    Position,
    Segment,
    event_key,
    new_thread_id,
)

__all__ = [
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "MAX_EVENT_BYTES",
    "AppendResult",
    "Ledger",
    "Position",
    "Segment",
    "event_key",
    "new_thread_id",
]
