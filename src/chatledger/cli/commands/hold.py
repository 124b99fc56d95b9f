"""``chatledger hold set | release``: legal holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chatledger.admin import release_hold
from chatledger.admin.holds import place_hold
from chatledger.cli.options import ByOption
from chatledger.cli.render import Renderer, iso
from chatledger.cli.shared import Connection, shared

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
    if_absent: bool = False,
) -> int:
    """Set or release one case's legal hold; exit status 0 only when this run did it.

    Setting a case's hold that already exists changes nothing and shows the stored hold
    (its reason, time and author), exit 1 (0 with ``if_absent``); releasing a hold that
    does not exist exits 1.
    """
    code = 0
    if action == "set":
        hold, created = await place_hold(db, thread, reason=reason, case=case, by=by)
        result: dict[str, Any] = {
            "action": "set",
            "thread_id": thread,
            "case": hold.get("case"),
            "hold": hold,
            "created": created,
        }
        if created:
            text = f"thread {thread} is under legal hold for case {hold.get('case')}: {hold.get('reason')}"
        else:
            code = 0 if if_absent else 1
            text = (
                f"thread {thread} already has a hold for case {hold.get('case')} (nothing changed): "
                f"{hold.get('reason')}, set {iso(hold.get('set_at'))} by {hold.get('set_by')}"
            )
    else:
        released = await release_hold(db, thread, reason=reason, case=case, by=by)
        result = {"action": "release", "thread_id": thread, "case": case, "released": released}
        which = f"case {case}'s hold" if case else "hold"
        text = f"thread {thread}: {which} released" if released else f"thread {thread}: no such hold"
        code = 0 if released else 1
    if ui.as_json:
        ui.json("hold", result)
    elif code:
        ui.line(text, file="err")
    else:
        ui.line(text)
    return code


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

    @holds.command("set")
    @shared()
    def set_(
        connection: Connection,
        thread: ThreadArgument,
        reason: ReasonOption,
        case: CaseOption = None,
        by: ByOption = None,
        if_absent: Annotated[
            bool,
            typer.Option(
                "--if-absent", help="Exit 0 when the case already holds the thread (default: exit 1)."
            ),
        ] = False,
    ) -> None:
        """Put a thread (and so its whole lineage) under legal hold."""
        connection.run(
            lambda db, ui: hold_body(
                db, ui, action="set", thread=thread, reason=reason, case=case, by=by, if_absent=if_absent
            )
        )

    @holds.command("release")
    @shared()
    def release(
        connection: Connection,
        thread: ThreadArgument,
        reason: ReasonOption,
        case: CaseOption = None,
        by: ByOption = None,
    ) -> None:
        """Release a thread's legal hold (one case's; the others stay); exit 1 if there is none."""
        connection.run(
            lambda db, ui: hold_body(db, ui, action="release", thread=thread, reason=reason, case=case, by=by)
        )
