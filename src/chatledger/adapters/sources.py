"""Where a framework store's ledger comes from: the ``MongoHistoryProvider`` construction keywords.

The session store and the checkpoint storage accept exactly the provider's sources (a
database handle or a :class:`~chatledger.ledger.Ledger`, a borrowed client, a
connection string or ``MONGODB_*`` settings) and the same ledger options, through
:func:`open_ledger`, so the three are configured alike and share one ``.env``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from agent_framework import SecretString

from chatledger.adapters.connection import MongoConnection, connect
from chatledger.errors import InvalidInputError
from chatledger.ledger import Ledger

__all__ = ["LedgerOwner", "open_ledger"]


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
