"""ChatLedger: an event-sourced, branchable, hash-chained conversation store on MongoDB.

The public surface: :class:`MongoHistoryProvider` (Agent Framework 1.x),
:class:`MongoChatMessageStore` (the seed's message-store protocol), the
:class:`Ledger` they share, :class:`Cursor`, and the exception hierarchy.
"""

from __future__ import annotations

import agent_framework as _agent_framework

from chatledger.adapters.compat import unsupported_framework_message
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

# MongoHistoryProvider needs the framework's HistoryProvider (agent-framework-core >=
# 1.0.0); the seed's previews (<= 1.0.0b260130) have only the message-store protocol.
# Decided by looking for the public name, never by catching an ImportError: a failing
# import of our own module must surface, not silently drop the class.
if hasattr(_agent_framework, "HistoryProvider"):
    from chatledger.adapters.history import MongoHistoryProvider
else:
    # `from chatledger import *` keeps working there; naming the class explains why not.
    __all__.remove("MongoHistoryProvider")

    def __getattr__(name: str) -> object:
        if name == "MongoHistoryProvider":
            raise ImportError(unsupported_framework_message("MongoHistoryProvider"))
        raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
