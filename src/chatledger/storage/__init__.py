"""The storage gate: the only code that builds queries and translates driver errors.

:class:`Storage` owns the three collections (private to this package) and offers
named operations on them, one store per concern: the ledger's events (the event at a
position, the head, a page, a stream), the totals over many threads' events
(:class:`EventTallies`), the removal protocol's marks (:class:`RemovalMarks`), threads
(get, insert-once, selection by :class:`ThreadFilter`, holds) and receipts. Scope is applied here,
malformed documents become :class:`~chatledger.errors.IntegrityError`, and every driver
error becomes a :class:`~chatledger.errors.ChatLedgerError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from chatledger.errors import InvalidInputError
from chatledger.storage.events import BATCH_SIZE, EventStore, PositionTakenError, event_key
from chatledger.storage.filters import ThreadFilter
from chatledger.storage.gate import Consistency, Gate, collection_name
from chatledger.storage.keys import DEFAULT_KEYS_COLLECTION, KeyStore
from chatledger.storage.receipts import ReceiptStore
from chatledger.storage.removals import RemovalMarks
from chatledger.storage.tallies import EventTallies
from chatledger.storage.threads import ThreadStore

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_AUDIT_COLLECTION",
    "DEFAULT_EVENTS_COLLECTION",
    "DEFAULT_KEYS_COLLECTION",
    "DEFAULT_THREADS_COLLECTION",
    "Consistency",
    "EventTallies",
    "KeyStore",
    "PositionTakenError",
    "RemovalMarks",
    "Storage",
    "ThreadFilter",
    "event_key",
]

DEFAULT_THREADS_COLLECTION: Final = "threads"
DEFAULT_EVENTS_COLLECTION: Final = "events"
DEFAULT_AUDIT_COLLECTION: Final = "audit"


class Storage:
    """The three collections of one ledger, behind named operations.

    Args:
        database: A PyMongo ``AsyncDatabase``, a Motor database or a mongomock-motor one.
        collections: The names of its threads, events and audit (admin receipts)
            collections, in that order (the ``Ledger``'s keywords, checked here).
        operation_timeout: Seconds one operation may take; ``None`` leaves it to the client.
        consistency: ``"majority"`` (default: majority journaled writes, primary
            majority reads) or ``"client"`` (the client's or URI's own settings).

    Raises:
        InvalidInputError: a name, the timeout or the database handle is not usable.
    """

    def __init__(
        self,
        database: Any,
        collections: tuple[str, str, str],
        *,
        operation_timeout: float | None = None,
        consistency: Consistency = "majority",
    ) -> None:
        names = [collection_name(n) for n in collections]
        if len(set(names)) != 3:
            raise InvalidInputError("the threads, events and audit collections need three different names")
        self.gate = Gate(database, operation_timeout=operation_timeout, consistency=consistency)
        self.threads = ThreadStore(self.gate, names[0])
        self.events = EventStore(self.gate, names[1])
        self.receipts = ReceiptStore(self.gate, names[2])
        #: Totals and bulk reads over many threads' events (the admin tools').
        self.tallies: EventTallies = self.events.tallies
        #: The removal protocol's claims, closing marks and hollowed events.
        self.removals = RemovalMarks(self.events)
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()

    @property
    def database(self) -> Any:
        """The database handle the storage was opened on."""
        return self.gate.database

    @property
    def names(self) -> tuple[str, str, str, str]:
        """The names of its database and of its threads, events and audit collections."""
        return (
            str(self.gate.database.name),
            str(self.threads.collection.name),
            str(self.events.collection.name),
            str(self.receipts.collection.name),
        )

    async def holds_any_document(self) -> bool:
        """Return whether the threads or events collection holds any document (tombstones count).

        One read of any ``_id`` each, however large the collections.
        """
        for collection in (self.threads.collection, self.events.collection):
            found = await self.gate.call("read documents", collection.find_one({}, {"_id": 1}))
            if found is not None:
                return True
        return False

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
