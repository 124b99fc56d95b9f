"""``chatledger hold set | release | list``: legal holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chatledger.admin import release_hold
from chatledger.admin.holds import list_holds, place_hold
from chatledger.admin.records import missing_thread
from chatledger.cli.options import AllowEmptyOption, ByOption, TenantOption
from chatledger.cli.render import Renderer, iso
from chatledger.cli.run import require_ledger_data
from chatledger.cli.shared import Connection, shared
from chatledger.errors import UnknownThreadError

__all__ = ["hold_body", "list_body", "register"]

#: ``hold list``'s columns, in the order the table, ``--tsv`` and ``--json`` give them.
_HOLD_FIELDS = ("thread_id", "tenant_id", "user_id", "case", "reason", "set_at", "set_by")


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
    try:
        return await _hold(db, ui, action, thread, reason, case, by, if_absent)
    except UnknownThreadError as e:
        # "no thread" for a thread retention or erasure removed sent the operator hunting a typo.
        raise await missing_thread(db, thread) from e


async def _hold(
    db: Any,
    ui: Renderer,
    action: str,
    thread: str,
    reason: str,
    case: str | None,
    by: str | None,
    if_absent: bool,
) -> int:
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
    elif not ui.quiet:
        ui.line(text)
    return code


async def list_body(
    db: Any, ui: Renderer, *, case: str | None = None, tenant: str | None = None, allow_empty: bool = False
) -> int:
    """List every legal hold (thread, case, reason, when, by whom); exit 0, holds or none.

    None found is said in so many words (``no legal holds``); a database holding no
    ChatLedger data is an error (exit 1) unless ``allow_empty``, as for the other reads.
    """
    await require_ledger_data(db, allow_empty)
    holds = await list_holds(db, case=case, tenant=tenant)
    if ui.as_json:
        ui.json("hold list", {"holds": holds, "count": len(holds)})
        return 0
    scope = "".join(
        f" {label} {value!r}"
        for label, value in (("for case", case), ("in tenant", tenant))
        if value is not None
    )
    rows = ([h[f] if f != "set_at" else iso(h[f]) for f in _HOLD_FIELDS] for h in holds)
    if not holds and not ui.tsv:
        ui.line(f"no legal holds{scope}")
        return 0
    ui.table("legal holds", ("thread", "tenant", "user", "case", "reason", "set at", "set by"), rows)
    threads = len({h["thread_id"] for h in holds})
    ui.note(
        f"{len(holds)} hold{'s' if len(holds) != 1 else ''} on {threads} thread{'s' if threads != 1 else ''}"
    )
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

    @holds.command("set")
    @shared(quiet=True)
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
    @shared(quiet=True)
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

    @holds.command("list")
    @shared(tsv=True, quiet=True)
    def list_(
        connection: Connection,
        case: Annotated[str | None, typer.Option("--case", help="Only this case's holds.")] = None,
        tenant: TenantOption = None,
        allow_empty: AllowEmptyOption = False,
    ) -> None:
        """List legal holds: thread, case, reason, when and by whom.

        Exit 0 whether or not there are holds ("no legal holds" says there are none); a
        database holding no ChatLedger data is an error (exit 1) unless --allow-empty.
        """
        connection.run(lambda db, ui: list_body(db, ui, case=case, tenant=tenant, allow_empty=allow_empty))
