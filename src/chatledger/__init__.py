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
    VersionConflictError,
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
    "MongoCheckpointStorage",
    "MongoHistoryProvider",
    "MongoSessionStore",
    "Position",
    "Scope",
    "StorageError",
    "StorageUnavailableError",
    "ThreadRemovedError",
    "UnknownThreadError",
    "VersionConflictError",
    "__version__",
]

try:
    from chatledger.adapters.history import MongoHistoryProvider
except ImportError:  # agent-framework-core <= 1.0.0b260130 has no HistoryProvider
    # Keep `from chatledger import *` working there: export only what exists.
    __all__.remove("MongoHistoryProvider")

try:  # the framework's session store and workflow checkpoints (agent-framework-core 1.x)
    from chatledger.adapters.checkpoints import MongoCheckpointStorage
    from chatledger.adapters.sessions import MongoSessionStore
except ImportError:  # an older framework: export only what exists
    __all__.remove("MongoCheckpointStorage")
    __all__.remove("MongoSessionStore")
