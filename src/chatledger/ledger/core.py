"""The ledger: one database's conversation events, the caches they share, and the door to its storage.

Applications never use a :class:`Ledger` directly for conversation data: they get a
:class:`~chatledger.ledger.Binding` (``ledger.bind(scope)``), and every position a
binding resolves, reads or appends at lies inside its scope. The binding's parts live in
their own modules (resolving, verdicts, appending, reading, lineage, documents).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TypedDict

from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.ledger.binding import Binding
from chatledger.ledger.lineage import ancestry
from chatledger.ledger.signing import CursorSigner
from chatledger.models import DEFAULT_SOURCE_ID, Scope, ThreadRecord, validate_thread_id
from chatledger.storage import (
    DEFAULT_AUDIT_COLLECTION,
    DEFAULT_EVENTS_COLLECTION,
    DEFAULT_THREADS_COLLECTION,
    Consistency,
    Storage,
)
from chatledger.storage.documents import record_problem

if TYPE_CHECKING:
    from chatledger.sealing import Sealer

__all__ = ["Ledger", "LedgerOptions", "check_ledger_id", "storage_of"]

#: How many thread records / event heads each ledger keeps in memory.
_CACHE_SIZE: Final = 10_000


def check_ledger_id(ledger_id: object, name: str = "ledger_id") -> str:
    """Return ``ledger_id`` if it can name a ledger (a non-empty str of at most 200 characters).

    Raises:
        InvalidInputError: it cannot; the message names it ``name`` (an argument or an option).
    """
    if type(ledger_id) is not str or not 0 < len(ledger_id) <= 200:
        raise InvalidInputError(f"{name} must be a non-empty str of at most 200 characters")
    return ledger_id


class LedgerOptions(TypedDict, total=False):
    """The keyword options of :class:`Ledger` (for whatever creates a ledger and hands them on).

    Kept equal to ``Ledger.__init__``'s keywords by ``tests/test_architecture.py``.
    """

    threads_collection: str
    events_collection: str
    audit_collection: str
    operation_timeout: float | None
    write_attempts: int
    consistency: Consistency
    signing_keys: Sequence[str | bytes] | None
    sealer: Sealer | None
    ledger_id: str | None


class Ledger:
    """Appends and replays conversation events in one MongoDB database.

    Args:
        database: A PyMongo ``AsyncDatabase`` (primary), a Motor database, or a
            mongomock-motor database.
        threads_collection: Name of the collection of thread documents.
        events_collection: Name of the collection of event documents.
        audit_collection: Name of the collection of admin receipts.
        operation_timeout: Seconds one database operation may take before it fails
            with :class:`~chatledger.errors.StorageUnavailableError`; ``None`` leaves
            it to the client's own timeouts.
        write_attempts: How many times an append is tried when the connection fails
            before its outcome is known. Retries reuse the event id, so they can never
            duplicate an event.
        consistency: ``"majority"`` (default): writes wait for a journaled majority and
            the reads that resolve cursors go to the primary with majority read concern.
            ``"client"``: use the client's or URI's settings (explicitly weaker).
        signing_keys: Keys (newest first) to sign every cursor handed out with; cursors
            without a valid MAC are then refused. ``None``: cursors are not signed.
        sealer: Seal every message's content under its data subject's key
            (:class:`~chatledger.sealing.Sealer`); ``None`` (default): stored in clear.
            Reads open sealed events only with a sealer.
        ledger_id: What makes this ledger's data keys its own in a key store that
            other ledgers share (key ids and erasure marks derive from it). By default
            ``"<database>/<threads collection>/<events collection>"``: give one when
            ledgers on different clusters use the same database and collection names
            and share a key store, and give the admin tools the same
            (``Ledger(db, ledger_id=...)``).

    Raises:
        InvalidInputError: an option or the database handle is not usable.
    """

    def __init__(
        self,
        database: Any,
        *,
        threads_collection: str = DEFAULT_THREADS_COLLECTION,
        events_collection: str = DEFAULT_EVENTS_COLLECTION,
        audit_collection: str = DEFAULT_AUDIT_COLLECTION,
        operation_timeout: float | None = None,
        write_attempts: int = 3,
        consistency: Consistency = "majority",
        signing_keys: Sequence[str | bytes] | None = None,
        sealer: Sealer | None = None,
        ledger_id: str | None = None,
    ) -> None:
        if type(write_attempts) is not int or not 1 <= write_attempts <= 20:
            raise InvalidInputError("write_attempts must be an int from 1 to 20")
        if ledger_id is not None:
            check_ledger_id(ledger_id)
        self._storage = Storage(
            database,
            (threads_collection, events_collection, audit_collection),
            operation_timeout=operation_timeout,
            consistency=consistency,
        )
        self.write_attempts = write_attempts
        self.signer = CursorSigner(signing_keys) if signing_keys is not None else None
        self.sealer = sealer
        #: Whose data keys this ledger's are (see the ``ledger_id`` argument).
        self.ledger_id: str = (
            ledger_id
            if ledger_id is not None
            else f"{self._storage.database.name}/{threads_collection}/{events_collection}"
        )
        self._thread_cache: OrderedDict[str, ThreadRecord] = OrderedDict()
        # (thread_id, seq) -> (messages visible after that event, its hash)
        self._head_cache: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()
        self._marker_key: bytes | None = None

    @classmethod
    def of(cls, database: Any, **options: Any) -> Ledger:
        """Return ``database`` if it is a ledger (then no options may be given), else a new ledger on it.

        Raises:
            InvalidInputError: options were passed beside an existing ledger (they would be ignored).
        """
        if isinstance(database, Ledger):
            if options:
                raise InvalidInputError(
                    f"options {sorted(options)} cannot be applied to an existing Ledger; "
                    "pass them to Ledger(...) instead"
                )
            return database
        return cls(database, **options)

    @property
    def database(self) -> Any:
        """The database handle the ledger was opened on."""
        return self._storage.database

    def bind(
        self,
        scope: Scope | None = None,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        source_id: str = DEFAULT_SOURCE_ID,
    ) -> Binding:
        """Return a view of the ledger that sees only the threads of one scope.

        Raises:
            InvalidInputError: a scope field is not a usable name.
        """
        if scope is None:
            scope = Scope(tenant_id=tenant_id, user_id=user_id, source_id=source_id)
        return Binding(self, scope)

    async def ensure_indexes(self) -> None:
        """Create the ledger's indexes if they are missing (idempotent, once per ledger)."""
        await self._storage.ensure_indexes()

    # ------------------------------------------------------------------ caches

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    def forget(self, thread_ids: Sequence[str] | None = None) -> None:
        """Drop cached thread records and heads (admin operations that remove threads call this)."""
        if thread_ids is None:
            self._thread_cache.clear()
            self._head_cache.clear()
            return
        gone = set(thread_ids)
        for tid in gone:
            self._thread_cache.pop(tid, None)
        for key in [k for k in self._head_cache if k[0] in gone]:
            del self._head_cache[key]

    async def thread(self, thread_id: str, scope: Scope | None) -> ThreadRecord | None:
        """Return a thread record (cached: the part the ledger uses never changes), or ``None``.

        Args:
            thread_id: The thread.
            scope: Only a thread of this scope is returned; ``None`` (admin) for any.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
            IntegrityError: the stored document is malformed.
        """
        validate_thread_id(thread_id)
        record = self._thread_cache.get(thread_id)
        if record is None:
            record = await self._storage.threads.get(thread_id, scope=None)
            if record is None:
                return None
            why = record_problem(record)
            if why is not None:
                # Reads and appends follow the lineage it describes: never one that contradicts itself.
                raise IntegrityError(f"thread document {thread_id!r} contradicts itself: {why}")
            self._remember(self._thread_cache, thread_id, record)
        if scope is not None and not scope.admits(record):
            return None
        return record

    async def _marker_secret(self) -> bytes:
        if self.signer is not None:
            return self.signer.current
        if self._marker_key is None:
            self._marker_key = await self._storage.receipts.marker_secret()
        return self._marker_key

    async def lineage(self, thread_id: str) -> list[ThreadRecord]:
        """Return the thread records from the root down to ``thread_id`` (admin: any scope).

        Raises:
            UnknownThreadError: the thread (or one of its ancestors) does not exist.
        """
        return await ancestry(self, thread_id)


def storage_of(ledger: Ledger) -> Storage:
    """Return the storage ports of ``ledger``, for the floors above it (admin, sealing, adapters).

    The ledger's storage is private: this is the one door to it, so every use is
    greppable and the architecture test can keep the CLI (and anything else that
    should go through an admin function) away from it.
    """
    return ledger._storage
