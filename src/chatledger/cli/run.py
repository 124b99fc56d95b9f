"""Running a command: one exit-code convention, one error printer, for every command.

Exit status:

- ``0`` done (a dry run included);
- ``1`` problems found or the work was blocked (verify failed, a hold kept data, the
  database failed part-way);
- ``2`` usage or bad input, nothing changed (bad arguments, unreadable files, an
  invalid URI, a server that cannot be reached when the command starts).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from chatledger.cli.connection import (
    DEFAULT_DATABASE,
    ServerUnreachableError,
    open_database,
    resolve_uri,
    uri_database,
)
from chatledger.cli.render import Renderer
from chatledger.errors import ChatLedgerError, InvalidInputError
from chatledger.ledger import storage_of

__all__ = [
    "INTERRUPTED",
    "OK",
    "PIPE_CLOSED",
    "PROBLEMS",
    "USAGE",
    "AllowEmptyOption",
    "Body",
    "exit_code",
    "fail",
    "require_ledger_data",
    "run_admin",
    "run_body",
    "stdout_gone",
    "with_collection_options",
]

OK: Final = 0
PROBLEMS: Final = 1
USAGE: Final = 2
#: Stopped by Ctrl-C (SIGINT), as shells report it (128 + 2).
INTERRUPTED: Final = 130
#: Whoever read stdout closed it (``chatledger export | head``), as shells report SIGPIPE (128 + 13).
PIPE_CLOSED: Final = 141

#: A command's body: given a database handle and the renderer, do the work, return the status.
Body = Callable[[Any, Renderer], Awaitable[int]]


def exit_code(error: BaseException) -> int:
    """Return the exit status for an error that ended a command (the one map, written once)."""
    if isinstance(error, InvalidInputError | ServerUnreachableError | OSError):
        return USAGE
    return PROBLEMS


def message(error: BaseException) -> str:
    """Return what went wrong, including the underlying cause when the message alone is empty-ish."""
    text = str(error).strip()
    cause = error.__cause__ or error.__context__
    if cause is not None and (not text or text.endswith(":")):
        detail = str(cause).strip() or "no detail given"
        text = f"{text} {type(cause).__name__}: {detail}".strip()
    return text or type(error).__name__


def fail(ui: Renderer, error: BaseException) -> typer.Exit:
    """Print ``error`` (redacted, escaped) and return the ``typer.Exit`` carrying its status."""
    ui.error(message(error))
    return typer.Exit(exit_code(error))


def stdout_gone() -> None:
    """Point stdout at /dev/null: its reader closed the pipe, and flushing at exit must not fail."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # no file descriptor (a test's stream): nothing will be flushed to a pipe


def run_body(ui: Renderer, work: Coroutine[Any, Any, int]) -> None:
    """Run ``work`` to completion and exit with its status, or with the status of its error."""
    try:
        code = asyncio.run(work)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        stdout_gone()
        raise typer.Exit(PIPE_CLOSED) from None
    except KeyboardInterrupt:
        # A command with something to say about it (erase, retention) said it already.
        ui.error("interrupted")
        raise typer.Exit(INTERRUPTED) from None
    except (ChatLedgerError, OSError) as e:
        raise fail(ui, e) from e
    except Exception as e:
        # A driver error the library did not translate: still no traceback, still no secrets.
        from pymongo.errors import PyMongoError

        if not isinstance(e, PyMongoError):
            raise
        raise fail(ui, ChatLedgerError(f"database error: {e}")) from e
    raise typer.Exit(code)


#: The ledger's collection names (``--threads-collection``…) and id (``--ledger-id``), when given.
_COLLECTIONS: ContextVar[dict[str, str] | None] = ContextVar("chatledger_collections", default=None)
#: Whether ``--database`` (or ``CHATLEDGER_DATABASE``) was given for this command.
_DATABASE_GIVEN: ContextVar[bool] = ContextVar("chatledger_database_given", default=True)

#: The collection-name options every admin command takes: (parameter and ``Ledger`` keyword,
#: option, default). The same spellings as ``roles create``.
_COLLECTION_OPTIONS: Final = (
    ("threads_collection", "--threads-collection", "threads"),
    ("events_collection", "--events-collection", "events"),
    ("audit_collection", "--audit-collection", "audit"),
)

AllowEmptyOption = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Accept a database (or collection set) holding no ChatLedger data; "
        "without it that is an error (exit 1): a misspelled name is not a clean result.",
    ),
]


def with_collection_options(command: Callable[..., None]) -> Callable[..., None]:
    """Return ``command`` taking the collection-name options and ``--ledger-id``.

    The names (the ``Ledger``'s ``*_collection`` arguments, for deployments that renamed
    them) and the ledger id (its ``ledger_id``, which sealing key ids derive from) reach
    :func:`run_admin` through a context variable: one definition for every command, no
    command body changes. Whether ``--database`` was given is noted the same way, so the
    URI's database can be used when it was not.
    """
    # Evaluated: the commands' modules use postponed annotations, and Typer reads a
    # __signature__ as it is.
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[
                str,
                typer.Option(
                    option, envvar=f"CHATLEDGER_{name.upper()}", help=f"Name of the {default} collection."
                ),
            ],
        )
        for name, option, default in _COLLECTION_OPTIONS
    ]
    extra.append(
        inspect.Parameter(
            "ledger_id",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option(
                    "--ledger-id",
                    envvar="CHATLEDGER_LEDGER_ID",
                    help="The ledger id the application gives Ledger(db, ledger_id=...), which sealing "
                    "key ids derive from (default: <database>/<threads collection>/<events collection>).",
                    show_default=False,
                ),
            ],
        )
    )
    # Typer hands the click context to the one parameter annotated typer.Context.
    context_name = next(
        (p.name for p in signature.parameters.values() if p.annotation is typer.Context), None
    )
    if context_name is None:
        context_name = "cl_context"
        extra.append(
            inspect.Parameter(context_name, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        )
    takes_context = context_name in signature.parameters

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        names = {name: kwargs.pop(name) for name, _, _ in _COLLECTION_OPTIONS}
        given = {name: value for name, _, default in _COLLECTION_OPTIONS if (value := names[name]) != default}
        if (ledger_id := kwargs.pop("ledger_id")) is not None:
            given["ledger_id"] = ledger_id
        _COLLECTIONS.set(given)
        context = kwargs[context_name] if takes_context else kwargs.pop(context_name)
        source = context.get_parameter_source("database")
        # By name: the ParameterSource enum lives in click, which typer may vendor.
        _DATABASE_GIVEN.set(getattr(source, "name", None) not in ("DEFAULT", None))
        command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    return wrapper


def ledger_names() -> dict[str, str]:
    """Return the ``Ledger`` keyword arguments naming this command's collections and id (empty: defaults)."""
    return dict(_COLLECTIONS.get() or {})


async def require_ledger_data(target: Any, allow_empty: bool) -> None:
    """Refuse (exit 1) a database whose ledger collections hold nothing, unless ``allow_empty``.

    A misspelled ``--database`` (or collection name) reads as an empty ledger: ``verify``
    would print OK for it and a nightly ``verify || alert`` stay green forever.

    Raises:
        ChatLedgerError: neither the threads nor the events collection holds a document.
    """
    from chatledger.admin.catalog import as_ledger

    if allow_empty:
        return
    storage = storage_of(as_ledger(target))
    threads, events = storage.threads.collection, storage.events.collection
    for collection in (threads, events):
        if await collection.find_one({}, {"_id": 1}) is not None:
            return
    raise ChatLedgerError(
        f"database {threads.database.name!r} holds no ChatLedger data (collections {threads.name!r} and "
        f"{events.name!r} are empty or missing): check --database / the URI's database and the "
        "collection names, or pass --allow-empty if an empty ledger is expected"
    )


def run_admin(uri: str | None, uri_file: Path | None, database: str, as_json: bool, body: Body) -> None:
    """Run an admin ``body`` against the server named by the connection options.

    The database is ``database``, unless ``--database`` was not given and the connection
    string names one (``mongodb://host/name``), as mongosh and mongodump do. The body gets
    the database handle, or a :class:`~chatledger.Ledger` on it when the collection names
    or the ledger id are not the defaults (every admin function takes either).
    """
    ui = Renderer(as_json=as_json)

    async def go() -> int:
        names = ledger_names()
        if "ledger_id" in names:  # before connecting: a bad value is usage, whatever the server
            from chatledger.ledger.core import check_ledger_id

            check_ledger_id(names["ledger_id"], "--ledger-id (CHATLEDGER_LEDGER_ID)")
        resolved = resolve_uri(uri, uri_file)
        if not resolved:
            raise InvalidInputError(
                "this command needs a MongoDB server: pass --mongodb-uri, or set CHATLEDGER_MONGODB_URI "
                "or CHATLEDGER_MONGODB_URI_FILE (only 'chatledger demo' has an embedded database)"
            )
        name, option = database, "--database"
        if not _DATABASE_GIVEN.get() and database == DEFAULT_DATABASE and uri_database(resolved):
            name, option = uri_database(resolved) or database, "the connection string's database"
        async with open_database(resolved, name, option=option) as db:
            if not names:
                return await body(db, ui)
            from chatledger import Ledger

            return await body(
                Ledger(
                    db,
                    threads_collection=names.get("threads_collection", "threads"),
                    events_collection=names.get("events_collection", "events"),
                    audit_collection=names.get("audit_collection", "audit"),
                    ledger_id=names.get("ledger_id"),
                ),
                ui,
            )

    run_body(ui, go())
