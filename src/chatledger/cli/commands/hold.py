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
    db: Any,
    ui: Renderer,
    *,
    action: str,
    thread: str,
    reason: str,
    case: str | None = None,
    by: str | None = None,
) -> int:
    """Set or release one case's legal hold; exit status 0 when it is in the state asked for."""
    if action == "set":
        hold = await set_hold(db, thread, reason=reason, case=case, by=by)
        result: dict[str, Any] = {
            "action": "set",
            "thread_id": thread,
            "case": hold.get("case"),
            "hold": hold,
        }
        text = (
            f"thread {thread} is under legal hold for case {hold.get('case')}: {hold.get('reason', reason)}"
        )
    else:
        released = await release_hold(db, thread, reason=reason, case=case, by=by)
        result = {"action": "release", "thread_id": thread, "case": case, "released": released}
        which = f"case {case}'s hold" if case else "hold"
        text = f"thread {thread}: {which} released" if released else f"thread {thread}: no such hold"
    if ui.as_json:
        ui.json("hold", result)
    else:
        ui.line(text)
    return 0


ThreadArgument = Annotated[str, typer.Argument(help="Thread id.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; required, recorded in the receipt.")]
CaseOption = Annotated[
    str | None,
    typer.Option(
        "--case",
        help="The case or ticket the hold belongs to (default: the reason). "
        "A thread can carry several holds; releasing one case keeps the others.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``hold`` group to ``app``."""
    holds = typer.Typer(
        help="Legal holds: held lineages cannot be removed by retention or erasure.", no_args_is_help=True
    )
    app.add_typer(holds, name="hold")

    # The two commands differ only in what they do; one definition serves both.
    for action, summary in (
        ("set", "Put a thread (and so its whole lineage) under legal hold."),
        ("release", "Release a thread's legal hold (one case's; the others stay)."),
    ):
        holds.command(action, help=summary)(_command(action))


def _command(action: str) -> Any:
    def command(
        thread: ThreadArgument,
        reason: ReasonOption,
        case: CaseOption = None,
        by: ByOption = None,
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: hold_body(db, ui, action=action, thread=thread, reason=reason, case=case, by=by),
        )

    return command
