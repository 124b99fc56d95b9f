"""The Typer application behind ``chatledger`` and ``python -m chatledger``.

Commands live in :mod:`chatledger.cli.commands` (one module per group); this module
only builds the application and adds them, so nothing imports back into it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from chatledger import __version__
from chatledger.cli.commands import GROUPS

__all__ = ["app"]

app = typer.Typer(
    name="chatledger",
    help="ChatLedger: an event-sourced conversation store on MongoDB for Agent Framework.\n\n"
    "Exit status: 0 ok, 1 problems found or blocked, 2 usage or bad input "
    "(including a server that cannot be reached at start).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chatledger {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """ChatLedger: an event-sourced conversation store on MongoDB for Agent Framework."""


for _group in GROUPS:
    _group.register(app)
