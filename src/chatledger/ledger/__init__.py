"""The ledger: append, read, branch and lineage over the storage gate, through scoped bindings."""

from chatledger.ledger.core import (
    DEFAULT_AUDIT_COLLECTION,
    DEFAULT_EVENTS_COLLECTION,
    DEFAULT_THREADS_COLLECTION,
    MAX_EVENT_BYTES,
    AppendResult,
    Binding,
    Ledger,
    Position,
    Segment,
    event_key,
    new_thread_id,
    storage_of,
)
from chatledger.ledger.pending import PendingAppend
from chatledger.ledger.signing import CursorSigner

__all__ = [
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "MAX_EVENT_BYTES",
    "AppendResult",
    "Binding",
    "CursorSigner",
    "Ledger",
    "PendingAppend",
    "Position",
    "Segment",
    "event_key",
    "new_thread_id",
    "storage_of",
]
