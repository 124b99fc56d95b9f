"""The storage gate: the only code that builds queries and translates driver errors.

:class:`Storage` owns the three collections (private to this package) and offers
named operations on them: the event at a position, the head, a page, a stream,
thread get / insert-once / select, holds, receipts and deletes. Scope is applied here,
malformed documents become :class:`~chatledger.errors.IntegrityError`, and every driver
error becomes a :class:`~chatledger.errors.ChatLedgerError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from chatledger.errors import InvalidInputError
from chatledger.storage.events import BATCH_SIZE, EventStore, PositionTakenError, event_key
from chatledger.storage.gate import Consistency, Gate, collection_name
from chatledger.storage.keys import DEFAULT_KEYS_COLLECTION, KeyStore
from chatledger.storage.receipts import ReceiptStore
from chatledger.storage.threads import ThreadStore

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_KEYS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "Consistency",
    "KeyStore",
    "PositionTakenError",
    "Storage",
    "event_key",
]

DEFAULT_THREADS_COLLECTION: Final = "threads"
DEFAULT_EVENTS_COLLECTION: Final = "events"
DEFAULT_AUDIT_COLLECTION: Final = "audit"


class Storage:
    """The three collections of one ledger, behind named operations.

    Args:
        database: A PyMongo ``AsyncDatabase``, a Motor database or a mongomock-motor one.
        threads_collection: Name of the collection of thread documents.
        events_collection: Name of the collection of event documents.
        audit_collection: Name of the collection of admin receipts.
        operation_timeout: Seconds one operation may take; ``None`` leaves it to the client.
        consistency: ``"majority"`` (default: majority journaled writes, primary
            majority reads) or ``"client"`` (the client's or URI's own settings).

    Raises:
        InvalidInputError: a name, the timeout or the database handle is not usable.
    """

    def __init__(
        self,
        database: Any,
        *,
        threads_collection: str = DEFAULT_THREADS_COLLECTION,
        events_collection: str = DEFAULT_EVENTS_COLLECTION,
        audit_collection: str = DEFAULT_AUDIT_COLLECTION,
        operation_timeout: float | None = None,
        consistency: Consistency = "majority",
    ) -> None:
        names = [collection_name(n) for n in (threads_collection, events_collection, audit_collection)]
        if len(set(names)) != 3:
            raise InvalidInputError("the threads, events and audit collections need three different names")
        self.gate = Gate(database, operation_timeout=operation_timeout, consistency=consistency)
        self.threads = ThreadStore(self.gate, names[0])
        self.events = EventStore(self.gate, names[1])
        self.receipts = ReceiptStore(self.gate, names[2])
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()

    @property
    def database(self) -> Any:
        """The database handle the storage was opened on."""
        return self.gate.database

    async def ensure_indexes(self) -> None:
        """Create the ledger's indexes if they are missing (idempotent, once per storage)."""
        if self._indexes_ready:
            return
        async with self._index_lock:
            if self._indexes_ready:
                return
            await self.events.ensure_indexes()
            await self.threads.ensure_indexes()
            await self.receipts.ensure_indexes()
            self._indexes_ready = True
