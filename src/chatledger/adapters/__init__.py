"""Framework adapters on top of the ledger: they hold no storage logic.

One module per framework contract: :mod:`~chatledger.adapters.history`
(``HistoryProvider``), :mod:`~chatledger.adapters.compaction` (``CompactionProvider``),
:mod:`~chatledger.adapters.sessions` (``SessionStore``),
:mod:`~chatledger.adapters.checkpoints` (``CheckpointStorage``) and
:mod:`~chatledger.adapters.store` (the seed's message-store protocol); their parts sit
beside them (``session_line``, ``history_view``, ``line_cache``, ``summaries``, ``turns``,
``checkpoint_records``, ``checkpoint_encoding``), and every store is constructed through
:mod:`~chatledger.adapters.connection` and :mod:`~chatledger.adapters.sources`. The
classes themselves are exported from :mod:`chatledger`.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker sees; at run time each is imported on first use
    from chatledger.adapters.checkpoints import MongoCheckpointStorage
    from chatledger.adapters.compaction import LedgerCompactionProvider
    from chatledger.adapters.history import MongoHistoryProvider
    from chatledger.adapters.sessions import MongoSessionStore
    from chatledger.adapters.store import MongoChatMessageStore

#: Each adapter class, by the module that defines it: imported on first use, so a release
#: of the framework without one of the contracts still imports the others.
_CLASSES = {
    "LedgerCompactionProvider": "compaction",
    "MongoChatMessageStore": "store",
    "MongoCheckpointStorage": "checkpoints",
    "MongoHistoryProvider": "history",
    "MongoSessionStore": "sessions",
}

__all__ = [
    "LedgerCompactionProvider",
    "MongoChatMessageStore",
    "MongoCheckpointStorage",
    "MongoHistoryProvider",
    "MongoSessionStore",
]


def __getattr__(name: str) -> object:
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'chatledger.adapters' has no attribute {name!r}")
    return getattr(import_module(f"chatledger.adapters.{module}"), name)
