"""The Typer application behind ``chatledger`` and ``python -m chatledger``.

Commands live in :mod:`chatledger.cli.commands` (one module per group); this module
only builds the application and adds them, so nothing imports back into it.
"""

from __future__ import annotations

import inspect
from typing import Annotated

import typer
from typer.models import DefaultPlaceholder

from chatledger import __version__
from chatledger.cli.commands import GROUPS

__all__ = ["app"]

app = typer.Typer(
    name="chatledger",
    help="ChatLedger: an event-sourced conversation store on MongoDB for Agent Framework.\n\n"
    "Exit status: 0 ok, 1 problems found or blocked, 2 usage or bad input "
    "(including a server that cannot be reached at start).",
    no_args_is_help=True,
    add_completion=True,
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


def _summary(text: str | None) -> str | None:
    """Return the first paragraph of a help text on one line (``None``: no text)."""
    if not text:
        return None
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def _whole_summaries(typer_app: typer.Typer) -> None:
    """Give every command and group its summary as ``short_help``, which ``--help`` never cuts.

    Left to itself, click shortens a summary to fit the terminal (``Replay the seed
    notebook's Joker story offline: save,...``); an explicit one is wrapped instead.
    """
    for command in typer_app.registered_commands:
        if command.short_help is None:
            command.short_help = _summary(command.help or (command.callback and command.callback.__doc__))
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        if group.short_help is None or isinstance(group.short_help, DefaultPlaceholder):
            group.short_help = _summary(sub.info.help if isinstance(sub.info.help, str) else None)
        _whole_summaries(sub)


_whole_summaries(app)
