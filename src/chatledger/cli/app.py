"""The Typer application behind ``chatledger`` and ``python -m chatledger``."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from chatledger.cli.connection import DEFAULT_DATABASE, DatabaseOption, MongoUriOption, open_database
from chatledger.errors import ChatLedgerError

__all__ = ["app", "main"]

app = typer.Typer(
    name="chatledger",
    help="ChatLedger: an event-sourced conversation store on MongoDB for Agent Framework.",
    no_args_is_help=True,
    add_completion=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """ChatLedger: an event-sourced conversation store on MongoDB for Agent Framework."""


@app.command()
def demo(
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Replay the seed notebook's Joker story offline: save, resume, and branch a conversation."""
    from chatledger.demo.story import run_demo

    async def go() -> None:
        where = (
            f"MongoDB at {mongodb_uri}, database {database!r} (collections threads, events)"
            if mongodb_uri
            else "an embedded in-process database (mongomock-motor; nothing is written to disk). "
            "Pass --mongodb-uri or set CHATLEDGER_MONGODB_URI to use a real server."
        )
        async with open_database(mongodb_uri, database) as db:
            await run_demo(db, where=where)

    _run(go())


def _run(coro: object) -> None:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except ChatLedgerError as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e


def main() -> None:
    """Entry point of the ``chatledger`` console script."""
    app()


from chatledger.cli import admin as _admin  # noqa: E402,F401  (registers the admin commands)
