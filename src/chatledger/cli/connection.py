"""How commands find their database, and how credentials stay out of every output.

The connection string comes from ``--mongodb-uri``, ``CHATLEDGER_MONGODB_URI``,
``--mongodb-uri-file`` or ``CHATLEDGER_MONGODB_URI_FILE`` (a file keeps it out of ``ps``
and shell history). Options written in the URI win: the built-in defaults below apply
only to keys the URI does not set. Before a command runs, the server is pinged, so an
unreachable server is reported at start (exit status 2) with what timed out and why.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from chatledger.admin.cli_support import (
    ServerRefusedError,
    close_client,
    mongomock_client,
    new_client,
    open_key_store,
    option_names,
    ping,
)
from chatledger.errors import InvalidInputError, StorageUnavailableError

__all__ = [
    "CONNECTION_DEFAULTS",
    "DEFAULT_DATABASE",
    "DatabaseOption",
    "KekEnvOption",
    "KekFileOption",
    "KeyStoreLocation",
    "KeysCollectionOption",
    "KeysDatabaseOption",
    "KeysUriFileOption",
    "KeysUriOption",
    "MongoUriFileOption",
    "MongoUriOption",
    "ServerUnreachableError",
    "client_options",
    "describe_uri",
    "kek_provider",
    "open_database",
    "redact",
    "resolve_uri",
    "uri_database",
]

#: The longest database name MongoDB takes (bytes).
_MAX_DATABASE_NAME: Final = 63
#: Database used when ``--database`` / ``CHATLEDGER_DATABASE`` is not given.
DEFAULT_DATABASE: Final = "chatledger"

#: Client options applied only when the URI does not set them (milliseconds). An
#: operator's command should fail in seconds, not after PyMongo's 30 s default.
CONNECTION_DEFAULTS: Final[Mapping[str, int]] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
}

MongoUriOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-uri",
        envvar="CHATLEDGER_MONGODB_URI",
        help="MongoDB connection string of the server (required). Prefer the environment variable "
        "or --mongodb-uri-file, which keep credentials out of `ps`; they are never printed.",
        show_default=False,
    ),
]
MongoUriFileOption = Annotated[
    Path | None,
    typer.Option(
        "--mongodb-uri-file",
        envvar="CHATLEDGER_MONGODB_URI_FILE",
        help="Read the connection string from this file (first line) instead.",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        "-d",
        envvar="CHATLEDGER_DATABASE",
        help="Database name; when not given, the connection string's (mongodb://host/NAME), else chatledger.",
    ),
]


# Where sealed content's data keys live, and the KEK that opens them: one option block
# for every command that touches keys (keys, erase, retention, show), one builder.
KeysDatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--keys-database",
        envvar="CHATLEDGER_KEYS_DATABASE",
        help="Database of the key store (sealed content's data keys); default: the ledger's "
        "--database name, on the key store's server.",
        show_default=False,
    ),
]
KeysCollectionOption = Annotated[
    str,
    typer.Option(
        "--keys-collection", envvar="CHATLEDGER_KEYS_COLLECTION", help="The key store's collection."
    ),
]
KeysUriOption = Annotated[
    str | None,
    typer.Option(
        "--keys-mongodb-uri",
        envvar="CHATLEDGER_KEYS_MONGODB_URI",
        help="Connection string of the key store's server, when the keys live on another cluster; "
        "default: the ledger's server. Never printed.",
        show_default=False,
    ),
]
KeysUriFileOption = Annotated[
    Path | None,
    typer.Option(
        "--keys-mongodb-uri-file",
        envvar="CHATLEDGER_KEYS_MONGODB_URI_FILE",
        help="Read the key store's connection string from this file (first line) instead.",
        show_default=False,
    ),
]
KekFileOption = Annotated[
    Path | None,
    typer.Option(
        "--kek-file",
        help="The KEK to open sealed content with: a file of 32 bytes, hex or base64 (never printed).",
        show_default=False,
        dir_okay=False,
    ),
]
KekEnvOption = Annotated[
    str | None,
    typer.Option(
        "--kek-env",
        help="The KEK to open sealed content with, from this environment variable (e.g. CHATLEDGER_KEK).",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class KeyStoreLocation:
    """Where the key store is: a server, a database and a collection.

    Attributes:
        database: The key store's database (``None``: the ledger's database name).
        collection: The key store's collection.
        uri: The key store's server (``--keys-mongodb-uri``); ``None``: the ledger's.
        uri_file: A file holding that connection string (``--keys-mongodb-uri-file``).
    """

    database: str | None = None
    collection: str = "keys"
    uri: str | None = None
    uri_file: Path | None = None

    @asynccontextmanager
    async def opened(self, db: Any, *, needed: bool = True) -> AsyncIterator[Any]:
        """Yield the :class:`~chatledger.sealing.KeyStore` here (``None`` unless ``needed``).

        ``db`` is the ledger's database. A key store on another server gets its own
        client, pinged first; either way the key store is read once before the command
        does anything, so an unreachable or unreadable key store (a name its server
        refuses, a role without read access) stops the command before it changes
        anything. The client is closed on exit.

        Raises:
            InvalidInputError: a name or the connection string is not usable, or both the
                connection string and its file were given.
            ServerUnreachableError: the key store's server did not answer.
        """
        from chatledger.ledger import Ledger

        if isinstance(db, Ledger):  # renamed ledger collections: the key store is apart from them
            db = db.database
        if not needed:
            yield None  # --no-keys: CHATLEDGER_KEYS_* (deployment defaults) are not even read
            return
        uri = resolve_uri(self.uri, self.uri_file, _KEYS_URI_OPTIONS)
        async with AsyncExitStack() as stack:
            handle = db
            if uri is not None:
                name = self.database if self.database is not None else str(db.name)
                handle = await stack.enter_async_context(
                    open_database(uri, name, option="--keys-database", whose=_KEYS_SERVER)
                )
            elif self.database is not None and self.database != getattr(db, "name", None):
                check_database_name(self.database, "--keys-database")
                handle = db.client[self.database]
            yield await open_key_store(handle, self.collection)


def kek_provider(kek_file: Path | None, kek_env: str | None) -> Any:
    """Return a :class:`~chatledger.sealing.LocalKeyProvider` for ``--kek-file``/``--kek-env``, or ``None``.

    Raises:
        InvalidInputError: both were given, or the KEK cannot be read (the message never holds it).
    """
    if kek_file is not None and kek_env is not None:
        raise InvalidInputError("give --kek-file or --kek-env, not both")
    if kek_file is None and kek_env is None:
        return None
    from chatledger.sealing import LocalKeyProvider

    if kek_file is not None:
        return LocalKeyProvider.from_file(kek_file)
    # Never echo a value given here: an operator may have pasted the KEK itself.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", kek_env or "") or _is_kek(kek_env or ""):
        raise InvalidInputError(
            "--kek-env takes the NAME of an environment variable holding the KEK (letters, digits, _), "
            "not the KEK itself (the value given is not shown)"
        )
    return LocalKeyProvider.from_env(kek_env or "")


def _is_kek(text: str) -> bool:
    from chatledger.sealing import LocalKeyProvider

    try:
        LocalKeyProvider.from_text(text)
    except InvalidInputError:
        return False
    return True


class ServerUnreachableError(StorageUnavailableError):
    """The server could not be reached when the command started (exit status 2)."""


# --------------------------------------------------------------------------- credentials

#: Every secret seen in a URI this process resolved; redacted wherever they show up.
_SECRETS: set[str] = set()
#: A MongoDB connection string's scheme, up to its colon.
_SCHEME: Final = r"mongodb(?:\+srv)?:"
#: ``scheme://user:password@`` (or ``user@``) at the start of any connection string.
_USERINFO: Final = re.compile(rf"(?P<scheme>{_SCHEME}//)(?P<userinfo>[^@/\s]*)@", re.IGNORECASE)
#: The userinfo of a connection string we were given: up to the last ``@`` before its
#: first ``/`` (PyMongo takes spaces there unescaped, which the pattern above, made for
#: URIs inside free text, stops at; ``/`` and ``@`` must be escaped in a userinfo).
_GIVEN_USERINFO: Final = re.compile(rf"\s*{_SCHEME}//(?P<userinfo>[^/]*)@", re.IGNORECASE)


def redact(text: str) -> str:
    """Return ``text`` with the userinfo of any MongoDB URI, and every known password, replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def _remember_secrets(uri: str) -> None:
    match = _GIVEN_USERINFO.match(uri)
    if match is None:
        return
    userinfo = match.group("userinfo")
    _SECRETS.add(userinfo)
    _, _, password = userinfo.partition(":")
    if password:
        from urllib.parse import unquote

        _SECRETS.update(s for s in (password, unquote(password)) if len(s) >= 3)


def describe_uri(uri: str) -> str:
    """Return the URI as it may be shown: hosts and options, no credentials."""
    return redact(uri)


# --------------------------------------------------------------------------- resolving


#: The options (and variables) naming the ledger's server, and the key store's.
_URI_OPTIONS: Final = ("--mongodb-uri (CHATLEDGER_MONGODB_URI)", "--mongodb-uri-file")
_KEYS_URI_OPTIONS: Final = ("--keys-mongodb-uri (CHATLEDGER_KEYS_MONGODB_URI)", "--keys-mongodb-uri-file")
#: How messages name the key store's server.
_KEYS_SERVER: Final = "the key store's, --keys-mongodb-uri"


def _of(whose: str) -> str:
    return f" ({whose})" if whose else ""


def resolve_uri(
    uri: str | None, uri_file: Path | None, options: tuple[str, str] = _URI_OPTIONS
) -> str | None:
    """Return the connection string from the option/variable or the file (not both).

    ``options`` names the two options in messages (the ledger's server by default).

    Raises:
        InvalidInputError: both were given, or the file cannot be read or is empty.
    """
    if uri and uri_file is not None:
        raise InvalidInputError(f"give {options[0]} or {options[1]}, not both")
    if uri_file is not None:
        if re.match(rf"\s*{_SCHEME}", str(uri_file), re.IGNORECASE):
            # A connection string where a path goes: never echo it (it may hold a password).
            raise InvalidInputError(
                f"{options[1]} takes the path of a file holding the connection string, not the "
                f"connection string itself (the value given is not shown); or use {options[0]}"
            )
        try:
            # utf-8-sig: a byte-order mark (some editors write one) is not part of the URI.
            lines = uri_file.read_text(encoding="utf-8-sig").strip().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"cannot read the connection string file {str(uri_file)!r}: {e}") from e
        uri = lines[0].strip() if lines else ""
        if not uri:
            raise InvalidInputError(f"the connection string file {str(uri_file)!r} is empty")
    if uri:
        _remember_secrets(uri)
    return uri or None


def uri_database(uri: str) -> str | None:
    """Return the database a connection string names (``mongodb://host/NAME``), or ``None``.

    Read without DNS lookups or validation: :func:`open_database` checks the URI and the name.
    """
    from urllib.parse import unquote, urlsplit

    try:
        path = urlsplit(uri.strip()).path
    except ValueError:
        return None
    name = unquote(path.lstrip("/"))
    return name or None


def client_options(uri: str, *, whose: str = "") -> dict[str, Any]:
    """Return the client options to pass alongside ``uri``: defaults for keys the URI does not set.

    ``whose``: whose connection string it is, for messages (see :func:`open_database`).

    Raises:
        InvalidInputError: the URI is not a valid MongoDB connection string.
    """
    if uri.lower().startswith("mongodb+srv"):
        # No DNS lookup for mongodb+srv here: only which options the URI sets matters.
        from urllib.parse import parse_qs, urlsplit

        given = {k.lower() for k in parse_qs(urlsplit(uri).query)}
    else:
        try:
            given = option_names(uri)
        except InvalidInputError as e:
            raise InvalidInputError(
                f"not a valid MongoDB connection string{_of(whose)}: {redact(str(e))}"
            ) from None
    options: dict[str, Any] = {k: v for k, v in CONNECTION_DEFAULTS.items() if k.lower() not in given}
    options["tz_aware"] = True
    return options


def check_database_name(name: str, option: str) -> None:
    """Raise :class:`InvalidInputError` unless ``name`` can name a MongoDB database."""
    if not name or any(c in name for c in '/\\. "$\x00'):
        raise InvalidInputError(f"{option}: invalid database name {name!r}")
    if len(name.encode("utf-8")) > _MAX_DATABASE_NAME:
        raise InvalidInputError(f"{option}: a database name is at most {_MAX_DATABASE_NAME} bytes")


@asynccontextmanager
async def open_database(
    uri: str, name: str, *, option: str = "--database", whose: str = ""
) -> AsyncIterator[Any]:
    """Yield a PyMongo async database on a server that answered a ping.

    Args:
        uri: MongoDB connection string (its options win over :data:`CONNECTION_DEFAULTS`).
        name: Database name.
        option: The option that named the database (for messages).
        whose: Whose server it is, for messages (e.g. ``"the key store's, --keys-mongodb-uri"``);
            ``""``: the ledger's.

    Raises:
        InvalidInputError: the URI or the database name is invalid.
        ServerUnreachableError: no server answered within the server selection timeout.
    """
    check_database_name(name, option)
    options = client_options(uri, whose=whose)
    try:
        client: Any = new_client(uri, **options)
    except InvalidInputError as e:
        raise InvalidInputError(f"cannot use this connection string{_of(whose)}: {redact(str(e))}") from None
    try:
        try:
            await ping(client)
        except ServerRefusedError as e:
            # It answered, and refused (credentials, most often): not an unreachable server.
            raise InvalidInputError(
                f"the MongoDB server{_of(whose)} at {describe_uri(uri)} refused the connection: "
                f"{redact(str(e))}"
            ) from None
        except StorageUnavailableError as e:
            timeout = client.options.server_selection_timeout
            # PyMongo appends the whole topology description; storage keeps the first part.
            why = str(e)
            raise ServerUnreachableError(
                f"no MongoDB server{_of(whose)} answered at "
                f"{describe_uri(uri)} within {timeout:g} s "
                f"(serverSelectionTimeoutMS; set it in the URI to wait longer): {redact(why)}"
            ) from e
        yield client[name]
    finally:
        await close_client(client)


@asynccontextmanager
async def open_embedded(name: str) -> AsyncIterator[Any]:
    """Yield an in-process mongomock-motor database (the ``demo`` extra), nothing written to disk.

    Raises:
        InvalidInputError: the ``demo`` extra is not installed.
    """
    try:
        client: Any = mongomock_client()
    except ImportError as e:
        raise InvalidInputError(
            f"the embedded demo database needs the 'demo' extra ({e.name} is not installed): "
            "pip install 'chatledger[demo]', or pass --mongodb-uri"
        ) from None
    try:
        yield client[name]
    finally:
        await close_client(client)
