"""The options every command shares, declared once, and the one object they make.

A command declares only its own options, plus one :class:`Connection` parameter (its
first). :func:`shared` adds the shared options to the command's signature, after the
command's own, so they are accepted after the subcommand's name as ever
(``chatledger verify -d db --json``), and hands the command the :class:`Connection`
they make: where the ledger is (``--mongodb-uri``/``--mongodb-uri-file``, ``--database``,
the collection names, ``--ledger-id``), the key store (``--keys-*``, ``--no-keys``), the
KEK (``--kek-file``/``--kek-env``) and the output format (``--json``). Spellings,
variables and help texts are those of docs/cli.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from chatledger.cli.connection import (
    DEFAULT_DATABASE,
    DatabaseOption,
    KekEnvOption,
    KekFileOption,
    KeysCollectionOption,
    KeysDatabaseOption,
    KeyStoreLocation,
    KeysUriFileOption,
    KeysUriOption,
    MongoUriFileOption,
    MongoUriOption,
    kek_provider,
    open_database,
    resolve_uri,
    uri_database,
)
from chatledger.cli.options import AllowEmptyOption, JsonOption, TenantOption
from chatledger.cli.render import Renderer
from chatledger.cli.run import Body, fail, run_body
from chatledger.errors import InvalidInputError

__all__ = ["Connection", "NoKeysOption", "add_ledger_wide", "shared"]

NoKeysOption = Annotated[
    bool,
    typer.Option(
        "--no-keys",
        help="Leave sealed content's data keys alone (destroy them in a later step): "
        "only then may erase run without finding the subject's keys.",
    ),
]

#: The collection-name options: (parameter and ``Ledger`` keyword, option, default). The
#: same spellings as ``roles create``'s own.
_COLLECTIONS: Final = (
    ("threads_collection", "--threads-collection", "threads"),
    ("events_collection", "--events-collection", "events"),
    ("audit_collection", "--audit-collection", "audit"),
)
TsvOption = Annotated[
    bool,
    typer.Option(
        "--tsv",
        help="Print the table as tab-separated values: a header line, then one line per row "
        "(for cut, awk, sort; not with --json).",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Leave out counts, notes and confirmations; results, warnings and errors stay."
    ),
]
LedgerIdOption = Annotated[
    str | None,
    typer.Option(
        "--ledger-id",
        envvar="CHATLEDGER_LEDGER_ID",
        help="The ledger id the application gives Ledger(db, ledger_id=...), which sealing "
        "key ids derive from (default: <database>/<threads collection>/<events collection>).",
        show_default=False,
    ),
]
#: The key store's options, by parameter name, as ``--no-keys`` names them when it refuses them.
_KEY_STORE: Final = (
    ("keys_database", "--keys-database"),
    ("keys_collection", "--keys-collection"),
    ("keys_mongodb_uri", "--keys-mongodb-uri"),
    ("keys_mongodb_uri_file", "--keys-mongodb-uri-file"),
)
#: The parameter through which Typer hands the wrapper the click context.
_CONTEXT: Final = "cl_context"


@dataclass(frozen=True, slots=True)
class Connection:
    """What a command was given beyond its own options.

    Attributes:
        ui: The renderer (``--json`` or tables), the one way the command prints.
        uri: ``--mongodb-uri`` / ``CHATLEDGER_MONGODB_URI``.
        uri_file: ``--mongodb-uri-file`` / ``CHATLEDGER_MONGODB_URI_FILE``.
        database: ``--database`` / ``CHATLEDGER_DATABASE`` (or its default).
        database_given: Whether ``--database`` was given; if not, the URI's database is used.
        names: The ``Ledger`` keywords given (collection names that are not the defaults,
            ``ledger_id``); empty: a plain database handle serves.
        keys: Where the key store is (``--keys-*``).
        no_keys: ``--no-keys``: open no key store.
        kek_file: ``--kek-file``.
        kek_env: ``--kek-env``.
    """

    ui: Renderer
    uri: str | None = None
    uri_file: Path | None = None
    database: str = DEFAULT_DATABASE
    database_given: bool = True
    names: Mapping[str, str] = field(default_factory=dict)
    keys: KeyStoreLocation = KeyStoreLocation()  # noqa: RUF009 - frozen, never mutated
    no_keys: bool = False
    kek_file: Path | None = None
    kek_env: str | None = None

    def kek(self) -> Any:
        """Return the KEK provider of ``--kek-file``/``--kek-env`` (``None``: none given).

        Raises:
            InvalidInputError: both were given, or the KEK cannot be read.
        """
        return kek_provider(self.kek_file, self.kek_env)

    def server_uri(self) -> str | None:
        """Return the ledger's connection string, from the option, the variable or the file.

        Raises:
            InvalidInputError: both the option and the file were given, or the file is unusable.
        """
        return resolve_uri(self.uri, self.uri_file)

    def database_of(self, uri: str) -> tuple[str, str]:
        """Return the database these options name on ``uri``, and what named it (for errors).

        ``--database`` when given; else the connection string's own (``mongodb://host/name``),
        as mongosh and mongodump do; else the default.
        """
        if not self.database_given and self.database == DEFAULT_DATABASE:
            named = uri_database(uri)
            if named:
                return named, "the connection string's database"
        return self.database, "--database"

    def run(self, body: Body) -> None:
        """Run an admin ``body`` against the ledger these options name, and exit with its status.

        The database is ``--database``, unless it was not given and the connection string
        names one (``mongodb://host/name``), as mongosh and mongodump do. The body gets the
        database handle, or a :class:`~chatledger.Ledger` on it when the collection names
        or the ledger id are not the defaults (every admin function takes either).
        """

        async def go() -> int:
            if "ledger_id" in self.names:  # before connecting: a bad value is usage, whatever the server
                from chatledger.ledger.core import check_ledger_id

                check_ledger_id(self.names["ledger_id"], "--ledger-id (CHATLEDGER_LEDGER_ID)")
            resolved = self.server_uri()
            if not resolved:
                raise InvalidInputError(
                    "this command needs a MongoDB server: pass --mongodb-uri, or set CHATLEDGER_MONGODB_URI "
                    "or CHATLEDGER_MONGODB_URI_FILE (only 'chatledger demo' has an embedded database)"
                )
            name, option = self.database_of(resolved)
            async with open_database(resolved, name, option=option) as db:
                if not self.names:
                    return await body(db, self.ui)
                from chatledger import Ledger

                return await body(
                    Ledger(
                        db,
                        threads_collection=self.names.get("threads_collection", "threads"),
                        events_collection=self.names.get("events_collection", "events"),
                        audit_collection=self.names.get("audit_collection", "audit"),
                        ledger_id=self.names.get("ledger_id"),
                    ),
                    self.ui,
                )

        self.work(go)

    def work(self, go: Callable[[], int | Awaitable[int]]) -> None:
        """Run ``go`` and exit with the status it returns, or with the status of its error."""

        async def coroutine() -> int:
            result = go()
            return await result if inspect.isawaitable(result) else result

        run_body(self.ui, coroutine())


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _parameters(
    *,
    uri: Any,
    server: bool,
    names: bool,
    keys: bool,
    no_keys: bool,
    kek: bool,
    json: bool,
    tsv: bool,
    quiet: bool,
) -> list[inspect.Parameter]:
    """The shared parameters a command takes, in the order ``--help`` lists them."""
    out: list[inspect.Parameter] = []
    if kek:
        out += [_option("kek_file", KekFileOption, None), _option("kek_env", KekEnvOption, None)]
    if keys:
        out += [
            _option("keys_database", KeysDatabaseOption, None),
            _option("keys_collection", KeysCollectionOption, "keys"),
            _option("keys_mongodb_uri", KeysUriOption, None),
            _option("keys_mongodb_uri_file", KeysUriFileOption, None),
        ]
    if no_keys:
        out.append(_option("no_keys", NoKeysOption, False))
    if json:
        out.append(_option("as_json", JsonOption, False))
    if tsv:
        out.append(_option("as_tsv", TsvOption, False))
    if quiet:
        out.append(_option("quiet", QuietOption, False))
    if server:
        out += [
            _option("mongodb_uri", uri, None),
            _option("mongodb_uri_file", MongoUriFileOption, None),
            _option("database", DatabaseOption, DEFAULT_DATABASE),
        ]
    if names:
        out += [
            _option(
                name,
                Annotated[
                    str,
                    typer.Option(
                        option, envvar=f"CHATLEDGER_{name.upper()}", help=f"Name of the {default} collection."
                    ),
                ],
                default,
            )
            for name, option, default in _COLLECTIONS
        ]
        out.append(_option("ledger_id", LedgerIdOption, None))
    out.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    return out


def _given_on_command_line(context: typer.Context, name: str) -> bool:
    # By name: the ParameterSource enum lives in click, which typer may vendor.
    return getattr(context.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _connection(context: typer.Context, given: dict[str, Any]) -> Connection:
    """Return the :class:`Connection` the shared options make; refuse key-store options --no-keys ignores."""
    as_json, as_tsv = bool(given.get("as_json", False)), bool(given.get("as_tsv", False))
    ui = Renderer(as_json=as_json, tsv=as_tsv and not as_json, quiet=bool(given.get("quiet", False)))
    if as_json and as_tsv:
        raise fail(ui, InvalidInputError("--json and --tsv are two output formats: choose one"))
    no_keys = bool(given.get("no_keys", False))
    if no_keys:
        # --no-keys opens no key store: a key-store option given with it would be silently
        # ignored. CHATLEDGER_KEYS_* are deployment defaults, not a request for this run.
        refused = [option for name, option in _KEY_STORE if _given_on_command_line(context, name)]
        if refused:
            raise fail(
                ui,
                InvalidInputError(
                    f"--no-keys touches no key store: drop {' and '.join(refused)}, or drop --no-keys "
                    "to destroy the keys there"
                ),
            )
    names = {name: given[name] for name, _, default in _COLLECTIONS if given.get(name, default) != default}
    if given.get("ledger_id") is not None:
        names["ledger_id"] = given["ledger_id"]
    source = context.get_parameter_source("database") if "database" in given else None
    return Connection(
        ui=ui,
        uri=given.get("mongodb_uri"),
        uri_file=given.get("mongodb_uri_file"),
        database=given.get("database", DEFAULT_DATABASE),
        database_given=getattr(source, "name", None) not in ("DEFAULT", None),
        names=names,
        keys=KeyStoreLocation(
            given.get("keys_database"),
            given.get("keys_collection", "keys"),
            given.get("keys_mongodb_uri"),
            given.get("keys_mongodb_uri_file"),
        ),
        no_keys=no_keys,
        kek_file=given.get("kek_file"),
        kek_env=given.get("kek_env"),
    )


def shared(
    *,
    uri: Any = MongoUriOption,
    server: bool = True,
    names: bool = True,
    keys: bool = False,
    no_keys: bool = False,
    kek: bool = False,
    json: bool = True,
    tsv: bool = False,
    quiet: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Return a decorator giving a command the shared options, and its :class:`Connection`.

    The decorated function's first parameter is the :class:`Connection`; the others are
    the command's own options, listed first in ``--help``.

    Args:
        uri: The ``--mongodb-uri`` option (a command may word its help differently).
        server: ``--mongodb-uri``, ``--mongodb-uri-file``, ``--database``.
        names: The collection names and ``--ledger-id`` (``roles create`` has its own names).
        keys: The key store's location (``--keys-*``).
        no_keys: ``--no-keys`` (refused together with a ``--keys-*`` option on the command line).
        kek: ``--kek-file`` and ``--kek-env``.
        json: ``--json``.
        tsv: ``--tsv`` (the command prints a table; refused together with ``--json``).
        quiet: ``--quiet``/``-q`` (the command has notes on stderr, or a confirmation, to leave out).
    """
    extra = _parameters(
        uri=uri,
        server=server,
        names=names,
        keys=keys,
        no_keys=no_keys,
        kek=kek,
        json=json,
        tsv=tsv,
        quiet=quiet,
    )
    shared_names = {p.name for p in extra} - {_CONTEXT}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        # Evaluated: the commands' modules use postponed annotations, and Typer reads a
        # __signature__ as it is.
        first, *own = inspect.signature(command, eval_str=True).parameters.values()
        if first.annotation is not Connection:
            raise TypeError(f"{command.__name__}: the first parameter of a @shared command is its Connection")

        def wrapper(**kwargs: Any) -> None:
            context = kwargs.pop(_CONTEXT)
            given = {name: kwargs.pop(name) for name in shared_names}
            command(_connection(context, given), **kwargs)

        parameters = [*own, *extra]
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(wrapper, attribute, getattr(command, attribute))
        return wrapper

    return decorate


def add_ledger_wide(app: typer.Typer, name: str, body: Callable[..., Awaitable[int]], summary: str) -> None:
    """Add the command ``name``, which runs ``body`` over the whole ledger or one ``--tenant``'s part.

    Such a command refuses a database holding no ChatLedger data unless ``--allow-empty``
    (``heads``, ``stats``): ``body(db, ui, tenant=..., allow_empty=...)``. Both print
    records or a table, so both take ``--tsv``.
    """

    @app.command(name, help=summary)
    @shared(tsv=True)
    def command(
        connection: Connection, tenant: TenantOption = None, allow_empty: AllowEmptyOption = False
    ) -> None:
        connection.run(lambda db, ui: body(db, ui, tenant=tenant, allow_empty=allow_empty))
