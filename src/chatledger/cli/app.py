"""The Typer application behind ``chatledger`` and ``python -m chatledger``.

Commands live in :mod:`chatledger.cli.commands` (one module per group); this module
only builds the application and adds them, so nothing imports back into it.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import IO, Annotated, Any

import typer
from typer.core import TyperGroup
from typer.models import DefaultPlaceholder

from chatledger import __version__
from chatledger.cli.commands import GROUPS

__all__ = ["app"]


def _one_line(error: Any, file: IO[str] | None = None) -> None:
    """Show a usage error in the tool's one style: ``error: ...`` on one line, and where help is."""
    ctx = getattr(error, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(str(error.format_message()).split())
    print(f"error: {message}{where}", file=file or sys.stderr)


def _restyled(error: Exception) -> Exception:
    """Give a parser's usage error (bad option, bad value) the one-line ``error:`` style.

    Click shows them as four lines (usage, a hint, a blank, ``Error: ...``): a second error
    style beside the tool's own. The exit status (2) is left as it is. Recognised by
    class name, since typer releases differ in where click's classes live; a group called
    without a command still shows its help.
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    if "UsageError" in names and "NoArgsIsHelpError" not in names:
        error.show = types.MethodType(_one_line, error)  # type: ignore[attr-defined]
    return error


class _Group(TyperGroup):
    """The root group: every usage error below it is shown in one line (see :func:`_restyled`)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except Exception as e:
            raise _restyled(e) from e.__cause__

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as e:
            raise _restyled(e) from e.__cause__


app = typer.Typer(
    name="chatledger",
    cls=_Group,
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
