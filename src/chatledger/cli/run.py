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
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import typer

from chatledger.cli.connection import ServerUnreachableError, open_database, resolve_uri
from chatledger.cli.render import Renderer
from chatledger.errors import ChatLedgerError, InvalidInputError

__all__ = ["OK", "PROBLEMS", "USAGE", "Body", "exit_code", "fail", "run_admin", "run_body"]

OK: Final = 0
PROBLEMS: Final = 1
USAGE: Final = 2

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


def run_body(ui: Renderer, work: Coroutine[Any, Any, int]) -> None:
    """Run ``work`` to completion and exit with its status, or with the status of its error."""
    try:
        code = asyncio.run(work)
    except (ChatLedgerError, OSError) as e:
        raise fail(ui, e) from e
    except Exception as e:
        # A driver error the library did not translate: still no traceback, still no secrets.
        from pymongo.errors import PyMongoError

        if not isinstance(e, PyMongoError):
            raise
        raise fail(ui, ChatLedgerError(f"database error: {e}")) from e
    raise typer.Exit(code)


def run_admin(uri: str | None, uri_file: Path | None, database: str, as_json: bool, body: Body) -> None:
    """Run an admin ``body`` against the server named by the connection options."""
    ui = Renderer(as_json=as_json)

    async def go() -> int:
        resolved = resolve_uri(uri, uri_file)
        if not resolved:
            raise InvalidInputError(
                "this command needs a MongoDB server: pass --mongodb-uri, or set CHATLEDGER_MONGODB_URI "
                "or CHATLEDGER_MONGODB_URI_FILE (only 'chatledger demo' has an embedded database)"
            )
        async with open_database(resolved, database) as db:
            return await body(db, ui)

    run_body(ui, go())
