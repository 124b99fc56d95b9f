"""``chatledger hold set | release``: legal holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chatledger.admin import release_hold, set_hold
from chatledger.cli.connection import DEFAULT_DATABASE, DatabaseOption, MongoUriFileOption, MongoUriOption
from chatledger.cli.options import ByOption, JsonOption
from chatledger.cli.render import Renderer
from chatledger.cli.run import run_admin

__all__ = ["hold_body", "register"]


async def hold_body(
    db: Any, ui: Renderer, *, action: str, thread: str, reason: str, by: str | None = None
) -> int:
    """Set or release a legal hold; exit status 0 when the hold is in the state asked for."""
    if action == "set":
        hold = await set_hold(db, thread, reason=reason, by=by)
        result: dict[str, Any] = {"action": "set", "thread_id": thread, "held": True, "hold": hold}
        text = f"thread {thread} is under legal hold: {hold.get('reason', reason)}"
    else:
        was_held = await release_hold(db, thread, reason=reason, by=by)
        result = {"action": "release", "thread_id": thread, "held": False, "was_held": was_held}
        text = f"thread {thread}: hold released" if was_held else f"thread {thread} was not held"
    if ui.as_json:
        ui.json("hold", result)
    else:
        ui.line(text)
    return 0


ThreadArgument = Annotated[str, typer.Argument(help="Thread id.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (case or ticket number); required.")]


def register(app: typer.Typer) -> None:
    """Add the ``hold`` group to ``app``."""
    holds = typer.Typer(
        help="Legal holds: held lineages cannot be removed by retention or erasure.", no_args_is_help=True
    )
    app.add_typer(holds, name="hold")

    @holds.command("set")
    def hold_set(
        thread: ThreadArgument,
        reason: ReasonOption,
        by: ByOption = None,
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        """Put a thread (and so its whole lineage) under legal hold."""
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: hold_body(db, ui, action="set", thread=thread, reason=reason, by=by),
        )

    @holds.command("release")
    def hold_release(
        thread: ThreadArgument,
        reason: ReasonOption,
        by: ByOption = None,
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        """Release a thread's legal hold."""
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: hold_body(db, ui, action="release", thread=thread, reason=reason, by=by),
        )
