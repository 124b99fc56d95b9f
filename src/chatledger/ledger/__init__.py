"""The ledger: append, read, branch and lineage over the storage gate, through scoped bindings."""

from chatledger.ledger.binding import Binding
from chatledger.ledger.core import Ledger, LedgerOptions, storage_of
from chatledger.ledger.documents import MAX_EVENT_BYTES, new_thread_id
from chatledger.ledger.lineage import Segment
from chatledger.ledger.pending import PendingAppend
from chatledger.ledger.positions import AppendResult, Position
from chatledger.ledger.reading import STREAM_BATCH_BYTES, STREAM_BATCH_MESSAGES, check_batch
from chatledger.ledger.signing import CursorSigner
from chatledger.storage import (
    DEFAULT_AUDIT_COLLECTION,
    DEFAULT_EVENTS_COLLECTION,
    DEFAULT_THREADS_COLLECTION,
    event_key,
)

__all__ = [
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "MAX_EVENT_BYTES",
    "STREAM_BATCH_BYTES",
    "STREAM_BATCH_MESSAGES",
    "AppendResult",
    "Binding",
    "CursorSigner",
    "Ledger",
    "LedgerOptions",
    "PendingAppend",
    "Position",
    "Segment",
    "check_batch",
    "event_key",
    "new_thread_id",
    "storage_of",
]
