"""Where a framework store's ledger comes from: the ``MongoHistoryProvider`` construction keywords.

The session store and the checkpoint storage accept exactly the provider's sources (a
database handle or a :class:`~chatledger.ledger.Ledger`, a borrowed client, a
connection string or ``MONGODB_*`` settings), the same scope and the same ledger
options: each constructor takes them as ``**options: Unpack[StoreOptions]``, declared
once here, and opens them with :meth:`LedgerOwner._open`, so the three are configured
alike and share one ``.env``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, cast

from chatledger.adapters.connection import (
    CONNECTION_KEYWORDS,
    EXCLUDED_BY_DATABASE,
    ConnectionKeywords,
    MongoConnection,
    connect,
    refuse_combined,
)
from chatledger.codec import decode_message
from chatledger.errors import ChatLedgerError, IntegrityError, KeyUnavailableError
from chatledger.ledger import Binding, Ledger, LedgerOptions
from chatledger.models import Scope

__all__ = ["LedgerOwner", "StoreOptions", "open_ledger", "record_text"]


class StoreOptions(ConnectionKeywords, LedgerOptions, total=False):
    """The keywords every framework store is constructed with, beyond its own: one declaration for all.

    Where the database is (:class:`~chatledger.adapters.connection.ConnectionKeywords`),
    the scope the store is bound to (``tenant_id``, ``user_id``), and the options of the
    :class:`~chatledger.ledger.Ledger` it creates (:class:`~chatledger.ledger.LedgerOptions`).
    Each is documented once, in :class:`~chatledger.adapters.history.MongoHistoryProvider`'s
    docstring (``**options``), the page users read.
    """

    tenant_id: str | None
    user_id: str | None


#: The scope keywords of :class:`StoreOptions`: the rest are the connection's and the ledger's.
_SCOPE: Final = ("tenant_id", "user_id")


def open_ledger(options: StoreOptions) -> tuple[Ledger, MongoConnection | None]:
    """Return the ledger a store works on, and the connection to close if the store created a client.

    Args:
        options: The store's :class:`StoreOptions` as given (the scope keywords are
            ignored here): the :data:`CONNECTION_KEYWORDS` name the database, every
            other keyword is passed to :class:`~chatledger.ledger.Ledger`, which
            refuses one it does not take. The rules of combining them live only here
            and in ``connect``.

    Raises:
        InvalidInputError: arguments of the wrong kind, or that exclude each other, or no
            database at all (see :func:`~chatledger.adapters.connection.connect`).
        TypeError: a keyword neither the store nor ``Ledger`` takes (as any call).
    """
    keywords = cast(ConnectionKeywords, {name: options.get(name) for name in CONNECTION_KEYWORDS})
    ledger_options: dict[str, Any] = {
        name: value
        for name, value in options.items()
        if name not in CONNECTION_KEYWORDS and name not in _SCOPE
    }
    database = keywords.get("database")
    if isinstance(database, Ledger):
        refuse_combined("a Ledger", keywords, EXCLUDED_BY_DATABASE)
        return Ledger.of(database, **ledger_options), None
    connection = connect(**keywords)
    # An AsyncMongoClient connects on first use: one dropped on a bad option holds no socket.
    return Ledger(connection.database, **ledger_options), connection


class LedgerOwner:
    """Closing what a store owns: the client it created from a connection string, exactly once.

    A borrowed client or database (``client=``, ``database=``) is never closed.
    """

    source_id: str
    ledger: Ledger
    binding: Binding
    _connection: MongoConnection | None = None

    def _open(self, options: StoreOptions) -> None:
        """Open the ledger the constructor's ``options`` name, bound to their scope.

        ``self.source_id`` is set first; ``tenant_id`` and ``user_id`` complete the scope. Scope
        is part of a thread's identity: two stores with different source ids (or tenants, or
        users) on one session write two separate threads.
        """
        self.ledger, self._connection = open_ledger(options)
        self.binding = self.ledger.bind(
            tenant_id=options.get("tenant_id"), user_id=options.get("user_id"), source_id=self.source_id
        )

    async def aclose(self) -> None:
        """Close the client this store created from a connection string; a borrowed one stays open."""
        if self._connection is not None:
            await self._connection.aclose()

    async def __aenter__(self) -> Self:
        """Return the store; leaving the block calls :meth:`aclose`."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close what the store owns; a failure to close never hides the block's own error."""
        try:
            await self.aclose()
        except Exception as close_error:
            if exc is None:
                raise
            exc.add_note(f"closing the {type(self).__name__} also failed: {close_error!r}")


async def record_text(ledger: Ledger, doc: Mapping[str, Any], roles: Sequence[str], scope: Scope) -> str:
    """Return the text of a store's record (an event holding one message of one of ``roles``), opened.

    Sealed content opens only under a key of ``scope``'s own data subject (the store's), as
    a history read's does: a record a database writer moved into this scope stays shut.

    Raises:
        IntegrityError: the event is not such a record, its message is malformed, or it is
            sealed under another data subject's key.
        KeyUnavailableError: it is sealed and the ledger has no sealer (or key) to open it.
        ContentErasedError: it is sealed under a key that erasure destroyed.
    """
    sealer = ledger.sealer
    if sealer is None:
        messages = doc.get("messages")
    else:
        # The tree's root names a per-lineage key; the thread record is cached by the ledger.
        thread = await ledger.thread(str(doc.get("thread_id")), None)
        root = thread.root_id if thread is not None else str(doc.get("thread_id"))
        messages = await sealer.open_messages(doc, sealer.reader(scope, root, ledger.ledger_id))
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], Mapping):
        raise IntegrityError(f"event {doc.get('_id')!r} is not a record of {', '.join(roles)}")
    if "sealed" in messages[0]:
        raise KeyUnavailableError(
            f"event {doc.get('_id')!r} is sealed, and this ledger has no sealer configured to open it"
        )
    try:
        message = decode_message(messages[0])
    except ChatLedgerError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise IntegrityError(f"event {doc.get('_id')!r} holds a malformed message: {e}") from e
    if str(message.role) not in roles:
        raise IntegrityError(f"event {doc.get('_id')!r} is not a record of {', '.join(roles)}")
    return message.text
