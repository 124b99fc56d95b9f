"""How an adapter gets its database: Agent Framework's construction conventions, with clear errors.

The conventions followed are those of the framework's official MongoDB package
(``agent_framework_mongodb``, ``_create_client`` and ``MongoDBSettings`` in
``_vector_store.py``) and of its Cosmos history provider:

- a borrowed client (``client=``) is never closed by us; a client we create from a
  connection string is ours and is closed by :meth:`MongoConnection.aclose`;
- the connection string, database name and application name come from explicit
  arguments first, then an optional ``.env`` file, then the environment, through the
  framework's own ``agent_framework.load_settings`` with the same variables as the
  official package: ``MONGODB_URI``, ``MONGODB_DATABASE_NAME``, ``MONGODB_APP_NAME``
  (so one ``.env`` configures both);
- a borrowed client cannot be combined with a connection string, an application name
  or an env file (it is already configured).

Beyond the official package: a database handle may be passed directly (PyMongo
``AsyncDatabase``, Motor, or mongomock-motor); the database name falls back to the
URI's own (``mongodb://host/name``) and then to :data:`DEFAULT_DATABASE_NAME`, as the CLI
does; and a client we create identifies ChatLedger to the server through PyMongo's
``DriverInfo`` (shown in server logs and ``$currentOp`` next to the application name).

Every wrong argument fails here, before any I/O, with an
:class:`~chatledger.errors.InvalidInputError` naming what was passed and what to pass
instead (today's obscure failures: "object NoneType can't be used in 'await'
expression" for a synchronous database, "'AsyncCollection' object is not callable" for
a client, "string indices must be integers" for ``MongoHistoryProvider("chatledger")``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, Unpack

from agent_framework import SecretString, load_settings

from chatledger.errors import InvalidInputError
from chatledger.storage.clients import default_database_name, new_client
from chatledger.storage.clients import driver_info as storage_driver_info
from chatledger.storage.driver import close_client

__all__ = [
    "APP_NAME",
    "CONNECTION_KEYWORDS",
    "DEFAULT_DATABASE_NAME",
    "ENV_PREFIX",
    "EXCLUDED_BY_DATABASE",
    "ConnectionKeywords",
    "MongoConnection",
    "MongoSettings",
    "check_database",
    "check_source_id",
    "connect",
    "driver_info",
    "refuse_combined",
]

#: Prefix of the environment variables read (the official MongoDB package's).
ENV_PREFIX: Final = "MONGODB_"
#: Database used when neither an argument, ``MONGODB_DATABASE_NAME`` nor the URI names one.
DEFAULT_DATABASE_NAME: Final = "chatledger"
#: Application name sent to the server when ``app_name`` / ``MONGODB_APP_NAME`` is not set.
APP_NAME: Final = "chatledger"

_CLIENTS: Final = frozenset(
    {"AsyncMongoClient", "AsyncIOMotorClient", "AgnosticClient", "AsyncMongoMockClient"}
)
_DATABASES: Final = frozenset(
    {"AsyncDatabase", "AsyncIOMotorDatabase", "AgnosticDatabase", "AsyncMongoMockDatabase"}
)
_COLLECTIONS: Final = frozenset(
    {
        "AsyncCollection",
        "AsyncIOMotorCollection",
        "AgnosticCollection",
        "AsyncMongoMockCollection",
        "Collection",
    }
)
_USERINFO: Final = re.compile(r"(mongodb(?:\+srv)?://)[^@/\s]*@", re.IGNORECASE)


class MongoSettings(TypedDict, total=False):
    """Settings resolved from arguments, an optional ``.env`` file, and ``MONGODB_*`` variables."""

    uri: SecretString | None
    database_name: str | None
    app_name: str | None


def _kind(value: object) -> str | None:
    """Classify a driver handle by its class hierarchy, without importing optional drivers."""
    klasses = type(value).__mro__
    names = {k.__name__ for k in klasses}
    modules = " ".join(k.__module__ for k in klasses)
    synchronous = "pymongo.synchronous" in modules or (
        "mongomock" in modules and "mongomock_motor" not in modules and "motor" not in modules
    )
    if names & {"MongoClient"} and synchronous:
        return "sync client"
    if names & {"Database"} and synchronous:
        return "sync database"
    if names & _COLLECTIONS:
        return "collection"
    if names & _CLIENTS:
        return "client"
    if names & _DATABASES:
        return "database"
    return None


def _redact(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def check_source_id(source_id: object) -> str:
    """Return ``source_id`` if it is a usable ``source_id``, else explain the mistake.

    Raises:
        InvalidInputError: ``source_id`` is not a non-empty string, for instance a
            database passed first, as the old ``MongoHistoryProvider(database)`` did.
    """
    if isinstance(source_id, str) and source_id and "\x00" not in source_id:
        return source_id
    kind = _kind(source_id)
    if kind is not None:
        raise InvalidInputError(
            f"source_id must be a string, got a MongoDB {kind} ({type(source_id).__name__}): the first "
            "argument is the source_id, as in every Agent Framework provider; pass the database by "
            "keyword, e.g. MongoHistoryProvider(database=client['app'])"
        )
    raise InvalidInputError(f"source_id must be a non-empty string, got {source_id!r}")


def check_database(database: object) -> Any:
    """Return ``database`` if it is an asynchronous database handle, else explain the mistake.

    Accepted: PyMongo ``AsyncDatabase`` (``AsyncMongoClient(...)[name]``), Motor's and
    mongomock-motor's databases, and any object with ``get_collection`` that is not a
    known wrong kind (a wrapper).

    Raises:
        InvalidInputError: a synchronous PyMongo database or client, a client, a
            collection, a string (``MongoHistoryProvider("chatledger")``: a
            ``source_id`` where the database was expected), or anything else.
    """
    kind = _kind(database)
    if kind == "database":
        return database
    name = type(database).__name__
    if isinstance(database, str):
        raise InvalidInputError(
            f"expected a database, got the string {database!r}: if that is the provider's source_id, pass "
            f"it as source_id={database!r} and the database as database=..."
        )
    if kind in ("sync database", "sync client"):
        raise InvalidInputError(
            f"a synchronous PyMongo {kind.removeprefix('sync ')} ({name}) cannot be used: ChatLedger is "
            "asynchronous; use pymongo.AsyncMongoClient(uri)[name] (or pass connection_string=...)"
        )
    if kind == "client":
        raise InvalidInputError(
            f"expected a database, got a client ({name}): pass client[name], or client=... with "
            "database_name=... (a borrowed client is never closed by ChatLedger)"
        )
    if kind == "collection":
        raise InvalidInputError(
            f"expected a database, got a collection ({name}): ChatLedger manages its own collections; "
            "pass the database that should hold them (collection.database)"
        )
    if database is not None and callable(getattr(database, "get_collection", None)):
        return database
    raise InvalidInputError(f"expected an asynchronous MongoDB database, got {name}")


def _check_client(client: object) -> Any:
    kind = _kind(client)
    if kind == "client":
        return client
    name = type(client).__name__
    if kind == "sync client":
        raise InvalidInputError(
            f"a synchronous PyMongo client ({name}) cannot be used: ChatLedger is asynchronous; "
            "pass a pymongo.AsyncMongoClient"
        )
    if kind == "database":
        raise InvalidInputError(f"client= expects a client, got a database ({name}): pass it as database=...")
    raise InvalidInputError(f"client= expects an asynchronous MongoDB client, got {name}")


def driver_info() -> Any:
    """Return the ``pymongo.DriverInfo`` that identifies ChatLedger in the server's logs."""
    from chatledger import __version__  # the package imports the adapters; import late

    return storage_driver_info(__version__)


@dataclass
class MongoConnection:
    """A database handle, and the client behind it if ChatLedger created it (and must close it)."""

    database: Any
    owned_client: Any = field(default=None, repr=False)

    @property
    def owns_client(self) -> bool:
        """Whether :meth:`aclose` closes a client (one created from a connection string)."""
        return self.owned_client is not None

    async def aclose(self) -> None:
        """Close the client ChatLedger created; a borrowed client or database is left open."""
        client, self.owned_client = self.owned_client, None
        if client is not None:
            await close_client(client)


class ConnectionKeywords(TypedDict, total=False):
    """The construction keywords every framework adapter takes for its database (see :func:`connect`)."""

    database: Any
    client: Any
    connection_string: str | SecretString | None
    database_name: str | None
    app_name: str | None
    env_file_path: str | None
    env_file_encoding: str | None


#: The names of :class:`ConnectionKeywords`, in the order the constructors declare them.
CONNECTION_KEYWORDS: Final = tuple(ConnectionKeywords.__annotations__)
#: What a database handle (or a ledger) excludes: it is already connected and named.
EXCLUDED_BY_DATABASE: Final = ("client", "connection_string", "database_name", "app_name", "env_file_path")
#: What a borrowed client excludes: it is already configured.
_EXCLUDED_BY_CLIENT: Final = ("connection_string", "app_name", "env_file_path")


def refuse_combined(source: str, keywords: Mapping[str, object], names: Sequence[str], why: str = "") -> None:
    """Refuse the keywords among ``names`` given (not ``None``) alongside ``source``, which excludes them.

    Raises:
        InvalidInputError: naming each one given, in the order of ``names``.
    """
    given = [name for name in names if keywords.get(name) is not None]
    if given:
        raise InvalidInputError(f"{source} cannot be combined with {', '.join(given)}{why}")


def connect(**keywords: Unpack[ConnectionKeywords]) -> MongoConnection:
    """Return the database an adapter should use, from exactly one source. No I/O happens here.

    Sources, in order: ``database`` (used as is); ``client`` (borrowed, with
    ``database_name``); else a connection string (``connection_string`` or
    ``MONGODB_URI``), for which a ``pymongo.AsyncMongoClient`` is created with
    ``tz_aware=True``, the application name and ChatLedger's driver info.

    Args:
        **keywords: The :class:`ConnectionKeywords`, each ``None`` when not given:
            ``database``, an asynchronous database handle, excludes every other one;
            ``client``, a borrowed asynchronous client (never closed by ChatLedger);
            ``connection_string``, a MongoDB URI (``MONGODB_URI`` when omitted);
            ``database_name``, the database (``MONGODB_DATABASE_NAME``, then the URI's
            own, then :data:`DEFAULT_DATABASE_NAME`); ``app_name``, the application name
            for the server's logs (``MONGODB_APP_NAME``, then :data:`APP_NAME`), only for
            a client ChatLedger creates; ``env_file_path``, a ``.env`` file read before
            the environment; ``env_file_encoding``, its encoding (UTF-8 by default).

    Returns:
        The database, and the client to close if ChatLedger created one.

    Raises:
        InvalidInputError: a handle of the wrong kind, arguments that exclude each
            other, no source at all, or an invalid connection string or name.
    """
    database = keywords.get("database")
    if database is not None:
        refuse_combined("database=", keywords, EXCLUDED_BY_DATABASE)
        return MongoConnection(check_database(database))

    client = keywords.get("client")
    database_name = keywords.get("database_name")
    if client is not None:
        refuse_combined("client=", keywords, _EXCLUDED_BY_CLIENT, " (it is already configured)")
        borrowed = _check_client(client)
        name = database_name if database_name is not None else _settings({})[1]
        return MongoConnection(borrowed[_check_database_name(name or DEFAULT_DATABASE_NAME)])

    uri, name, application = _settings(keywords)
    if uri is None:
        raise InvalidInputError(
            "no database given: pass database=..., client=... with database_name=..., or "
            f"connection_string=..., or set {ENV_PREFIX}URI"
        )
    return _open(uri, name, application or APP_NAME)


def _settings(keywords: ConnectionKeywords) -> tuple[str | None, str | None, str | None]:
    """Return the connection string, database name and application name: arguments, ``.env``, environment."""
    for label in ("database_name", "app_name"):
        value = keywords.get(label)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{label} must be a string, got {type(value).__name__}")
    connection_string = keywords.get("connection_string")
    if connection_string is not None and not isinstance(connection_string, str | SecretString):
        raise InvalidInputError(
            f"connection_string must be a str or SecretString, got {type(connection_string).__name__}"
        )
    try:
        settings = load_settings(
            MongoSettings,
            env_prefix=ENV_PREFIX,
            uri=connection_string,
            database_name=keywords.get("database_name"),
            app_name=keywords.get("app_name"),
            env_file_path=keywords.get("env_file_path"),
            env_file_encoding=keywords.get("env_file_encoding"),
        )
    except (FileNotFoundError, ValueError) as e:
        raise InvalidInputError(f"cannot read the MongoDB settings: {_redact(str(e))}") from None
    uri = settings.get("uri")
    text = uri.get_secret_value() if isinstance(uri, SecretString) else uri
    if text is not None and not text.strip():
        raise InvalidInputError("the MongoDB connection string is empty")
    return text, settings.get("database_name"), settings.get("app_name")


def _check_database_name(name: object) -> str:
    # MongoDB's rules for database names; checked here so the mistake is named at construction.
    if not isinstance(name, str):
        raise InvalidInputError(f"database_name must be a string, got {type(name).__name__}")
    if not name or len(name) > 63 or any(c in name for c in '/\\. "$\x00*<>:|?'):
        raise InvalidInputError(f"invalid database name {name!r}")
    return name


def _open(uri: str, database_name: str | None, app_name: str) -> MongoConnection:
    try:
        client: Any = new_client(uri, tz_aware=True, appname=app_name, driver=driver_info())
    except InvalidInputError as e:
        raise InvalidInputError(f"cannot use this MongoDB connection string: {_redact(str(e))}") from None
    # An AsyncMongoClient opens nothing before its first operation, so one dropped on a
    # bad database name below holds no socket and needs no close.
    if database_name is None:
        database_name = default_database_name(client) or DEFAULT_DATABASE_NAME
    database = client[_check_database_name(database_name)]
    return MongoConnection(database, owned_client=client)
