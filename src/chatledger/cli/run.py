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
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import typer

from chatledger.admin import ThreadFilter, count_threads
from chatledger.admin.cli_support import holds_ledger_data, is_driver_error, ledger_place
from chatledger.cli.connection import ServerUnreachableError
from chatledger.cli.render import Renderer, visible
from chatledger.errors import ChatLedgerError, InvalidInputError

__all__ = [
    "INTERRUPTED",
    "OK",
    "PIPE_CLOSED",
    "PROBLEMS",
    "TERMINATED",
    "USAGE",
    "Body",
    "exit_code",
    "fail",
    "require_ledger_data",
    "run_body",
    "stdout_gone",
]

OK: Final = 0
PROBLEMS: Final = 1
USAGE: Final = 2
#: Stopped by Ctrl-C (SIGINT), as shells report it (128 + 2).
INTERRUPTED: Final = 130
#: Stopped by SIGTERM (``timeout``, ``kill``, a service stopping), as shells report it (128 + 15).
TERMINATED: Final = 143
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


async def _stopped_by_sigterm(work: Coroutine[Any, Any, int], terminated: list[bool]) -> int:
    """Await ``work``; a SIGTERM cancels it as Ctrl-C does, so it cleans up the same way.

    Without this, SIGTERM (``timeout 1h chatledger export``, ``kill``, a service stopping)
    ends the process at once: an export leaves its temporary file behind, and an applied
    removal neither says what it did nor gives up the removal it holds.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def stop() -> None:
        terminated.append(True)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (ValueError, RuntimeError, NotImplementedError):
        return await work  # not the main thread (a test's runner), or no signals here
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_body(ui: Renderer, work: Coroutine[Any, Any, int]) -> None:
    """Run ``work`` to completion and exit with its status, or with the status of its error."""
    terminated: list[bool] = []
    try:
        code = asyncio.run(_stopped_by_sigterm(work, terminated))
    except typer.Exit as e:
        # A command that reports its own interruption (erase, retention) exits 130: SIGTERM's is 143.
        raise typer.Exit(TERMINATED if terminated and e.exit_code == INTERRUPTED else e.exit_code) from None
    except asyncio.CancelledError:
        if not terminated:
            raise
        ui.error("terminated (SIGTERM)")
        raise typer.Exit(TERMINATED) from None
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
        if not is_driver_error(e):
            raise
        raise fail(ui, ChatLedgerError(f"database error: {e}")) from e
    raise typer.Exit(code)


async def require_ledger_data(
    target: Any, allow_empty: bool, *, tenant: str | None = None, user: str | None = None
) -> None:
    """Refuse (exit 1) a database whose ledger collections hold nothing, unless ``allow_empty``.

    A misspelled ``--database`` (or collection name) reads as an empty ledger: ``verify``
    would print OK for it and a nightly ``verify || alert`` stay green forever. A
    misspelled ``--tenant`` or ``--user`` is the same mistake one level down: the
    subject's threads read as none, so it is refused the same way.

    Raises:
        ChatLedgerError: neither the threads nor the events collection holds a document,
            or no thread belongs to the ``tenant`` / ``user`` given.
    """
    if allow_empty:
        return
    place = ledger_place(target)
    if not await holds_ledger_data(target):
        raise ChatLedgerError(
            f"database {place.database!r} holds no ChatLedger data (collections {place.threads_collection!r} "
            f"and {place.events_collection!r} are empty or missing): check --database / the URI's database "
            "and the collection names, or pass --allow-empty if an empty ledger is expected"
        )
    if (tenant is None and user is None) or await count_threads(
        target, ThreadFilter(tenant_id=tenant, user_id=user)
    ):
        return
    subject = " and ".join(
        f"{what} {visible(value)!r}"
        for what, value in (("tenant", tenant), ("user", user))
        if value is not None
    )
    raise ChatLedgerError(
        f"no thread of {subject} in database {place.database!r} (a typo, or all removed?): "
        "check the name, or pass --allow-empty if none is expected"
    )
