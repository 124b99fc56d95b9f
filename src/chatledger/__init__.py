"""ChatLedger: an event-sourced, branchable, hash-chained conversation store on MongoDB.

The public surface: :class:`MongoHistoryProvider` (Agent Framework 1.x) and its
:class:`LedgerCompactionProvider`, :class:`MongoSessionStore`,
:class:`MongoCheckpointStorage`, :class:`MongoChatMessageStore` (the seed's
message-store protocol), the :class:`Ledger` they share, :class:`Cursor`, and the
exception hierarchy.
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
    "LedgerCompactionProvider",
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

# The framework adapters need the framework's 1.x public names: MongoHistoryProvider its
# HistoryProvider (agent-framework-core >= 1.0.0; the seed's previews <= 1.0.0b260130 have
# only the message-store protocol), the session store and workflow checkpoints AgentSession
# and WorkflowCheckpoint. Decided by looking for the public names, never by catching an
# ImportError: a failing import of our own module must surface, not silently drop a class.
_HAS_HISTORY = hasattr(_agent_framework, "HistoryProvider")
_STORE_NAMES = ("AgentSession", "WorkflowCheckpoint", "WorkflowCheckpointException")
_HAS_STORES = _HAS_HISTORY and all(hasattr(_agent_framework, name) for name in _STORE_NAMES)
# LedgerCompactionProvider subclasses the framework's CompactionProvider (the releases with
# compaction strategies).
_HAS_COMPACTION = _HAS_HISTORY and hasattr(_agent_framework, "CompactionProvider")
if _HAS_HISTORY:
    from chatledger.adapters.history import MongoHistoryProvider
if _HAS_COMPACTION:
    from chatledger.adapters.compaction import LedgerCompactionProvider
if _HAS_STORES:
    from chatledger.adapters.checkpoints import MongoCheckpointStorage
    from chatledger.adapters.sessions import MongoSessionStore

# `from chatledger import *` keeps working on an older framework; naming a missing class
# explains why it is not there.
_MISSING = (
    (() if _HAS_HISTORY else ("MongoHistoryProvider",))
    + (() if _HAS_STORES else ("MongoCheckpointStorage", "MongoSessionStore"))
    + (() if _HAS_COMPACTION else ("LedgerCompactionProvider",))
)
for _name in _MISSING:
    __all__.remove(_name)

if _MISSING:

    def __getattr__(name: str) -> object:
        if name in _MISSING:
            needs = "CompactionProvider" if name == "LedgerCompactionProvider" else "HistoryProvider"
            raise ImportError(unsupported_framework_message(name, needs))
        raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
