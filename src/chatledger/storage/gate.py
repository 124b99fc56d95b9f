"""The choke point every database operation goes through: error translation, timeouts, concerns.

Driver errors become ChatLedger's own exceptions here and nowhere else (``raise … from``),
and the durability every collection handle uses is decided here: by default writes
wait for a majority of the replica set with journaling, and reads go to the primary
with majority read concern, so a URI asking for ``w=1`` or secondary reads cannot make a
valid cursor look unknown or let a failover roll back an acknowledged event. A caller
weakens this only explicitly (``consistency="client"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar

from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from chatledger.errors import BatchTooLargeError, InvalidInputError, StorageError, StorageUnavailableError
from chatledger.storage.driver import is_mongomock

#: Tries of one index creation that clashes with a concurrent creator (see Gate.create_index).
_INDEX_ATTEMPTS: Final = 5

__all__ = ["CONSISTENCY_LEVELS", "CollectionStore", "Consistency", "Gate"]

_T = TypeVar("_T")

#: ``"majority"``: majority + journaled writes, primary majority reads (the default).
#: ``"client"``: whatever the client or URI says (explicitly weaker, or stronger).
Consistency = Literal["majority", "client"]
CONSISTENCY_LEVELS: Final = ("majority", "client")


def _is_database(database: Any) -> bool:
    """Return whether ``database`` looks like an async database handle of a supported driver."""
    module = type(database).__module__
    if module.startswith(("pymongo.synchronous", "pymongo.database")):
        return False  # a synchronous PyMongo Database: every call would return a plain value
    return callable(getattr(database, "get_collection", None)) and isinstance(
        getattr(database, "name", None), str
    )


def collection_name(name: object) -> str:
    """Return ``name`` if every engine accepts it as a collection name of the ledger.

    Raises:
        InvalidInputError: it is not a non-empty ``str``, starts with ``system.``, holds
            ``$`` or NUL, or has an empty part between dots (``.``, ``a.``, ``a..b``).
    """
    if (
        type(name) is not str
        or not name
        or name.startswith("system.")
        or "$" in name
        or "\x00" in name
        or "" in name.split(".")
    ):
        raise InvalidInputError(f"invalid collection name {name!r}")
    return name


#: The concerns of ``consistency="majority"`` (immutable: shared by every handle).
_MAJORITY_WRITES: Final = WriteConcern("majority", j=True)
_MAJORITY_READS: Final = ReadConcern("majority")
_PRIMARY: Final = ReadPreference.PRIMARY


class Gate:
    """Collection handles with the configured concerns, and the one error translator.

    Args:
        database: A PyMongo ``AsyncDatabase``, a Motor database or a mongomock-motor one.
        operation_timeout: Seconds one operation may take; ``None`` leaves it to the client.
        consistency: ``"majority"`` (default) or ``"client"``.

    Raises:
        InvalidInputError: ``database`` is not an async database handle.
    """

    def __init__(
        self, database: Any, *, operation_timeout: float | None = None, consistency: Consistency = "majority"
    ) -> None:
        if not _is_database(database):
            kind = type(database).__module__ + "." + type(database).__name__
            hint = (
                "pass client[database_name], not the client"
                if callable(getattr(database, "get_database", None))
                else "use pymongo.AsyncMongoClient (or Motor), not the synchronous MongoClient"
            )
            raise InvalidInputError(f"expected an async MongoDB database handle, got {kind}: {hint}")
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidInputError(f"consistency must be one of {CONSISTENCY_LEVELS}, got {consistency!r}")
        if operation_timeout is not None and (
            type(operation_timeout) not in (int, float) or not 0 < operation_timeout < 86_400
        ):
            raise InvalidInputError("operation_timeout must be a number of seconds in (0, 86400) or None")
        self.database = database
        self.operation_timeout = operation_timeout
        self.consistency = consistency
        # mongomock-motor's with_options() returns an unwrapped synchronous collection,
        # and it has no replication to be consistent about anyway.
        self._concerns = consistency == "majority" and not is_mongomock(database)

    def collection(self, name: str) -> Any:
        """Return the collection ``name`` with the gate's read/write concerns applied.

        Raises:
            InvalidInputError: ``name`` is not a usable collection name.
        """
        name = collection_name(name)
        if not self._concerns:
            return self.database[name]
        # One handle with the concerns, not ``database[name].with_options(...)`` (two): a
        # ledger opens three, and a new ledger per request pays for them on every read.
        return self.database.get_collection(
            name, write_concern=_MAJORITY_WRITES, read_concern=_MAJORITY_READS, read_preference=_PRIMARY
        )

    def _translate(self, what: str, error: Exception) -> Exception | None:
        """Return the ChatLedger error a driver error becomes, or ``None`` if it passes unchanged.

        ``DuplicateKeyError`` passes through: the storage operations that can clash
        decide what a clash means and never let it leave the storage layer.
        """
        if isinstance(error, DuplicateKeyError):
            return None
        if isinstance(error, ExecutionTimeout | WTimeoutError):
            return StorageUnavailableError(
                f"{what}: the server did not finish in time ({type(error).__name__}: {error})"
            )
        if isinstance(error, TimeoutError):
            return StorageUnavailableError(
                f"{what}: no reply within operation_timeout={self.operation_timeout}s"
            )
        if isinstance(error, ConnectionFailure):
            return StorageUnavailableError(f"{what}: database unavailable ({type(error).__name__}: {error})")
        if isinstance(error, DocumentTooLarge):
            return BatchTooLargeError(f"{what}: {error}")
        if isinstance(error, InvalidOperation):
            return StorageUnavailableError(f"{what}: the client cannot be used ({error})")
        if isinstance(error, PyMongoError):
            return StorageError(f"{what}: {type(error).__name__}: {error}")
        return None

    @asynccontextmanager
    async def translated(self, what: str) -> AsyncIterator[None]:
        """Turn driver errors raised inside the block into ChatLedger errors.

        ``DuplicateKeyError`` passes through: the storage operations that can clash
        decide what a clash means and never let it leave the storage layer.
        """
        try:
            yield
        except (PyMongoError, TimeoutError) as e:
            translated = self._translate(what, e)
            if translated is None:
                raise
            raise translated from e

    async def create_index(self, what: str, collection: Any, keys: Any, **options: Any) -> None:
        """Create an index (idempotent), retrying a transient clash with another creator.

        Two processes creating the same index at once make a PostgreSQL-backed engine
        (DocumentDB behind FerretDB v2) answer "deadlock detected" to one of them; the
        index is there (or about to be) for both, so the loser tries again.
        """
        for attempt in range(_INDEX_ATTEMPTS):
            try:
                await self.call(what, collection.create_index(keys, **options))
                return
            except StorageError as e:
                cause = e.__cause__
                transient = isinstance(cause, OperationFailure) and "deadlock detected" in str(cause)
                if not transient or attempt == _INDEX_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    async def call(self, what: str, awaitable: Awaitable[_T]) -> _T:
        """Return the result of one database operation, driver errors translated, timeout applied."""
        # The same translation as ``translated``, without building a context manager per
        # call: on an append that cost as much as the rest of the gate's work.
        try:
            if self.operation_timeout is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, self.operation_timeout)
        except (PyMongoError, TimeoutError) as e:
            translated = self._translate(what, e)
            if translated is None:
                raise
            raise translated from e


class CollectionStore:
    """The base of a store: one collection of the ledger, reached through the gate.

    Args:
        gate: The gate every operation goes through.
        name: The collection's name.
    """

    def __init__(self, gate: Gate, name: str) -> None:
        self.gate = gate
        self.collection = gate.collection(name)
