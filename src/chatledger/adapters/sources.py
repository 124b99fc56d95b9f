"""Where a framework store's ledger comes from: the ``MongoHistoryProvider`` construction keywords.

The session store and the checkpoint storage accept exactly the provider's sources (a
database handle or a :class:`~chatledger.ledger.Ledger`, a borrowed client, a
connection string or ``MONGODB_*`` settings) and the same ledger options, through
:func:`open_ledger`, so the three are configured alike and share one ``.env``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from agent_framework import SecretString

from chatledger.adapters.connection import MongoConnection, connect
from chatledger.codec import decode_message
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError, KeyUnavailableError
from chatledger.ledger import Ledger

__all__ = ["LedgerOwner", "open_ledger", "record_text"]


def open_ledger(
    *,
    database: Any = None,
    client: Any = None,
    connection_string: str | SecretString | None = None,
    database_name: str | None = None,
    app_name: str | None = None,
    env_file_path: str | None = None,
    env_file_encoding: str | None = None,
    ledger_options: dict[str, Any],
) -> tuple[Ledger, MongoConnection | None]:
    """Return the ledger a store works on, and the connection to close if the store created a client.

    Raises:
        InvalidInputError: arguments of the wrong kind, or that exclude each other, or no
            database at all (see :func:`~chatledger.adapters.connection.connect`).
    """
    if isinstance(database, Ledger):
        given = {
            "client": client,
            "connection_string": connection_string,
            "database_name": database_name,
            "app_name": app_name,
            "env_file_path": env_file_path,
        }
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise InvalidInputError(f"a Ledger cannot be combined with {', '.join(named)}")
        return Ledger.of(database, **ledger_options), None
    connection = connect(
        database=database,
        client=client,
        connection_string=connection_string,
        database_name=database_name,
        app_name=app_name,
        env_file_path=env_file_path,
        env_file_encoding=env_file_encoding,
    )
    # An AsyncMongoClient connects on first use: one dropped on a bad option holds no socket.
    return Ledger(connection.database, **ledger_options), connection


class LedgerOwner:
    """Closing what a store owns: the client it created from a connection string, exactly once.

    A borrowed client or database (``client=``, ``database=``) is never closed.
    """

    _connection: MongoConnection | None = None

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


async def record_text(ledger: Ledger, doc: Mapping[str, Any], roles: Sequence[str]) -> str:
    """Return the text of a store's record (an event holding one message of one of ``roles``), opened.

    Raises:
        IntegrityError: the event is not such a record, or its message is malformed.
        KeyUnavailableError: it is sealed and the ledger has no sealer (or key) to open it.
        ContentErasedError: it is sealed under a key that erasure destroyed.
    """
    sealer = ledger.sealer
    messages = doc.get("messages") if sealer is None else await sealer.open_messages(doc)
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
