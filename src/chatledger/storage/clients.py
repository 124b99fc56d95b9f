"""Opening clients: the driver's connection-string parsing, client construction and ping.

The CLI and the adapters open connections through these functions, so only storage/
imports the driver. Errors come back as ChatLedger's, carrying the driver's reason
unredacted: callers redact it before showing it (they know whose URI it was).
"""

from __future__ import annotations

from typing import Any

from chatledger.errors import InvalidInputError, StorageError, StorageUnavailableError

__all__ = [
    "ServerRefusedError",
    "command",
    "default_database_name",
    "driver_info",
    "is_driver_error",
    "mongomock_client",
    "new_client",
    "option_names",
    "ping",
]


class ServerRefusedError(InvalidInputError):
    """A server answered and refused (credentials, most often): not an unreachable server."""


def option_names(uri: str) -> set[str]:
    """Return the (lower-case) names of the options a ``mongodb://`` connection string sets.

    Raises:
        InvalidInputError: the URI is not a valid connection string (the driver's reason).
    """
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(uri, connect_timeout=None)
    except (InvalidURI, ConfigurationError, ValueError) as e:
        raise InvalidInputError(str(e)) from None
    return {str(k).lower() for k in parsed.get("options", {})}


def driver_info(version: str) -> Any:
    """Return the ``pymongo.DriverInfo`` that identifies ChatLedger in the server's logs."""
    from pymongo.driver_info import DriverInfo

    return DriverInfo(name="chatledger", version=version)


def new_client(uri: str, **options: Any) -> Any:
    """Return a PyMongo ``AsyncMongoClient`` (it connects on first use).

    Raises:
        InvalidInputError: the driver refused the URI or an option (its reason).
    """
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError, InvalidName, InvalidURI

    try:
        return AsyncMongoClient(uri, **options)
    except (ConfigurationError, InvalidURI, InvalidName, ValueError, TypeError) as e:
        raise InvalidInputError(str(e)) from None


def default_database_name(client: Any) -> str | None:
    """Return the database the client's connection string names, or ``None``."""
    from pymongo.errors import ConfigurationError

    try:
        return str(client.get_default_database().name)
    except ConfigurationError:  # the URI names no database
        return None


async def ping(client: Any) -> None:
    """Ping the server.

    Raises:
        ServerRefusedError: it answered and refused (the server's one-line reason).
        StorageUnavailableError: no server answered (the driver's reason, without the
            topology description it appends).
    """
    from pymongo.errors import OperationFailure, PyMongoError

    try:
        await client.admin.command("ping")
    except OperationFailure as e:
        # One line: a server's reason may span several.
        raise ServerRefusedError(" ".join(str(e.details.get("errmsg") if e.details else e).split())) from None
    except PyMongoError as e:
        raise StorageUnavailableError(str(e).split(", Timeout:")[0]) from e


def mongomock_client() -> Any:
    """Return an in-process mongomock-motor client (the ``demo`` extra).

    Raises:
        ImportError: the extra is not installed.
    """
    from mongomock_motor import AsyncMongoMockClient

    return AsyncMongoMockClient(tz_aware=True)


def is_driver_error(error: BaseException) -> bool:
    """Whether ``error`` is a driver error the library did not translate."""
    from pymongo.errors import PyMongoError

    return isinstance(error, PyMongoError)


async def command(database: Any, document: dict[str, Any]) -> dict[str, Any]:
    """Run one administrative command; return the server's reply.

    Raises:
        StorageError: the server refused it (its reason).
    """
    from pymongo.errors import OperationFailure

    try:
        reply: dict[str, Any] = await database.command(document)
    except OperationFailure as e:
        raise StorageError(str(e)) from e
    return reply
