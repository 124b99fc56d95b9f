"""The ``chatledger`` command line: the demo and the operators' commands.

Needs the ``cli`` extra (``pip install 'chatledger[cli]'``). This module imports
nothing from it, so the console script can say so instead of failing with a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

#: Exit status of a usage error, here: the command line is not installed.
_USAGE = 2


def main() -> None:
    """Entry point of the ``chatledger`` console script and ``python -m chatledger``."""
    try:
        from chatledger.cli.app import app
    except ImportError as e:
        # Only the missing extra is our business; any other import error is a bug to show.
        if (e.name or "").split(".")[0] not in {"typer", "rich", "click"}:
            raise
        print(
            f"chatledger: the command line needs the 'cli' extra ({e.name} is not installed).\n"
            "Install it with: pip install 'chatledger[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(_USAGE) from None
    from chatledger.cli.run import PIPE_CLOSED, stdout_gone

    try:
        # One program name however it was started (the console script, ``python -m``): shell
        # completion answers to it (_CHATLEDGER_COMPLETE) and --help's usage line shows it.
        app(prog_name="chatledger")
    except BrokenPipeError:
        # Outside a command's body (help text, a last flush): the reader went away; no traceback.
        stdout_gone()
        raise SystemExit(PIPE_CLOSED) from None
