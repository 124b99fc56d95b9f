"""ChatLedger: an event-sourced, branchable, hash-chained conversation store on MongoDB.

The public surface: :class:`MongoHistoryProvider` (Agent Framework 1.x),
:class:`MongoChatMessageStore` (the seed's message-store protocol), the
:class:`Ledger` they share, :class:`Cursor`, and the exception hierarchy.
"""

from __future__ import annotations

from chatledger.adapters.store import MongoChatMessageStore
from chatledger.errors import (
    BatchTooLargeError,
    ChatLedgerError,
    ConcurrencyError,
    EventIdReusedError,
    IntegrityError,
    InvalidCursorError,
    InvalidInputError,
    InvalidMessageError,
    InvalidThreadIdError,
    LegalHoldError,
    StorageError,
    StorageUnavailableError,
    ThreadRemovedError,
    UnknownThreadError,
)
from chatledger.ledger import AppendResult, Ledger, Position
from chatledger.models import Cursor, Scope

#: The package version: the single source (the build reads it from here; see CHANGELOG.md).
__version__ = "0.1.0"

__all__ = [
    "AppendResult",
    "BatchTooLargeError",
    "ChatLedgerError",
    "ConcurrencyError",
    "Cursor",
    "EventIdReusedError",
    "IntegrityError",
    "InvalidCursorError",
    "InvalidInputError",
    "InvalidMessageError",
    "InvalidThreadIdError",
    "Ledger",
    "LegalHoldError",
    "MongoChatMessageStore",
    "MongoHistoryProvider",
    "Position",
    "Scope",
    "StorageError",
    "StorageUnavailableError",
    "ThreadRemovedError",
    "UnknownThreadError",
    "__version__",
]

try:
    from chatledger.adapters.history import MongoHistoryProvider
except ImportError:  # agent-framework-core <= 1.0.0b260130 has no HistoryProvider
    # Keep `from chatledger import *` working there: export only what exists.
    __all__.remove("MongoHistoryProvider")
