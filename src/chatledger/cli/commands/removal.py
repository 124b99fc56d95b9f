"""``chatledger retention | erase``: removals with receipts (dry runs unless ``--apply``).

``retention --policy FILE --receipts FILE --apply`` is the cron job: the receipts file
is opened (created if needed) before anything is planned or deleted, so a bad path
stops the run with exit status 2 while the data is still there.
"""

from __future__ import annotations

import json
import os
from typing import IO, Annotated, Any

import typer
from rich.text import Text

from chatledger.admin import (
    RemovalReport,
    RetentionPolicy,
    count_erasure_candidates,
    count_retention_candidates,
    run_erasure,
    run_retention,
)
from chatledger.admin.catalog import as_ledger
from chatledger.admin.receipts import receipts_for
from chatledger.cli.connection import DEFAULT_DATABASE, DatabaseOption, MongoUriFileOption, MongoUriOption
from chatledger.cli.options import (
    ApplyOption,
    ByOption,
    JsonOption,
    TenantOption,
    UserOption,
    duration,
    open_for_writing,
)
from chatledger.cli.render import Renderer, Ticker, iso, to_jsonable
from chatledger.cli.run import run_admin
from chatledger.errors import InvalidInputError

__all__ = ["erase_body", "register", "retention_body"]


def _require_bool(value: object, name: str) -> bool:
    # "false" is truthy: a flag must be a real bool before it can delete anything.
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be true or false, not {value!r}")
    return value


def _print_report(ui: Renderer, report: RemovalReport, command: str, extra: dict[str, Any]) -> None:
    if ui.as_json:
        document = report.to_dict()
        # The library writes dates with isoformat(); every JSON date of the CLI is ISO "Z" UTC.
        document["planned"] = [
            {**entry, "last_activity": iso(r.last_activity)}
            for entry, r in zip(document["planned"], report.planned, strict=True)
        ]
        ui.json(command, {**document, **extra})
        return
    verb = "would remove" if report.dry_run else "removed"
    ui.table(
        f"{report.action}: {verb} {len(report.planned)} lineages ({report.threads} threads)",
        ("thread", "threads", "events", "messages", "tenant", "user", "last activity"),
        (
            (
                r.thread_id,
                len(r.thread_ids),
                r.events,
                r.messages,
                r.tenant_id,
                r.user_id,
                iso(r.last_activity),
            )
            for r in report.planned
        ),
        numeric=("threads", "events", "messages"),
    )
    for skipped in report.skipped:
        ui.line(("kept", "yellow"), f" {skipped.thread_id}: {skipped.reason}")
    if report.resumed:
        what = "would finish" if report.dry_run else "finished"
        ui.line(f"{what} {len(report.resumed)} interrupted removal(s): {', '.join(report.resumed)}")
    if report.dry_run:
        ui.out.print(Text.assemble(("dry run", "bold"), ": nothing was changed; pass --apply to remove."))
    else:
        ui.line(f"{len(report.removed)} receipt(s) written to the audit collection.")
    if extra.get("receipts_file"):
        ui.line(f"{extra['receipts_written']} receipt(s) appended to {extra['receipts_file']}")


def _removing(tick: Ticker, plan: RemovalReport) -> None:
    """Turn the planning bar into the removal bar, whose total the plan now gives."""
    if not plan.dry_run:
        tick.stage("removing", len(plan.planned))


async def _write_receipts(db: Any, report: RemovalReport, stream: IO[str]) -> int:
    ids = [*report.removed, *report.resumed]
    receipts = await receipts_for(as_ledger(db), ids)
    for receipt in receipts:
        stream.write(json.dumps(to_jsonable(receipt), ensure_ascii=False) + "\n")
    stream.flush()
    os.fsync(stream.fileno())
    return len(receipts)


async def retention_body(
    db: Any,
    ui: Renderer,
    *,
    older_than: str | None = None,
    tenant: str | None = None,
    policy_file: str | None = None,
    receipts: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "retention policy",
) -> int:
    """Plan (or, with ``apply``, carry out) a retention policy; append its receipts to a file."""
    apply = _require_bool(apply, "apply")
    if (older_than is None) == (policy_file is None):
        raise InvalidInputError("give either --older-than AGE (with an optional --tenant) or --policy FILE")
    if policy_file is not None:
        if tenant is not None:
            raise InvalidInputError("--tenant goes with --older-than; a policy file names its tenants")
        policy = RetentionPolicy.load(policy_file)
        ages = [policy.default, *policy.tenants.values()]
    else:
        age = duration(older_than, "--older-than")
        policy = (
            RetentionPolicy(tenants={tenant: age}) if tenant is not None else RetentionPolicy(default=age)
        )
        ages = [age]
    for age in ages:
        if age is not None and age.total_seconds() <= 0:
            raise InvalidInputError(f"a retention age must be positive, not {age}")
    stream = open_for_writing(receipts, "--receipts", append=True) if receipts else None
    try:
        with ui.progress("planning") as tick:
            tick.stage("planning", await count_retention_candidates(db, policy))
            report = await run_retention(
                db,
                policy,
                apply=apply,
                by=by,
                reason=reason,
                on_removal=tick,
                on_thread=tick,
                on_plan=lambda plan: _removing(tick, plan),
            )
        written = await _write_receipts(db, report, stream) if stream is not None else 0
    finally:
        if stream is not None:
            stream.close()
    _print_report(
        ui, report, "retention", {"receipts_file": receipts, "receipts_written": written} if receipts else {}
    )
    return 0


async def erase_body(
    db: Any,
    ui: Renderer,
    *,
    user: str | None = None,
    tenant: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "erasure request",
) -> int:
    """Plan (or, with ``apply``, carry out) the erasure of a user's or tenant's threads."""
    apply = _require_bool(apply, "apply")
    with ui.progress("planning") as tick:
        tick.stage("planning", await count_erasure_candidates(db, user_id=user, tenant_id=tenant))
        report = await run_erasure(
            db,
            user_id=user,
            tenant_id=tenant,
            apply=apply,
            by=by,
            reason=reason,
            on_removal=tick,
            on_thread=tick,
            on_plan=lambda plan: _removing(tick, plan),
        )
    _print_report(ui, report, "erase", {})
    if report.skipped:
        ui.warn("not everything could be erased: lineages under legal hold were kept")
        return 1
    return 0


def register(app: typer.Typer) -> None:
    """Add ``retention`` and ``erase`` to ``app``."""

    @app.command()
    def retention(
        older_than: Annotated[
            str | None, typer.Option(help="Remove lineages idle for longer than AGE (e.g. 365d).")
        ] = None,
        tenant: Annotated[
            str | None, typer.Option("--tenant", help="Apply --older-than to this tenant only.")
        ] = None,
        policy: Annotated[
            str | None, typer.Option(help="TOML/JSON policy file instead of --older-than (cron).")
        ] = None,
        receipts: Annotated[
            str | None,
            typer.Option(help="Append this run's receipts to this JSON Lines file (checked first)."),
        ] = None,
        apply: ApplyOption = False,
        by: ByOption = None,
        reason: Annotated[str, typer.Option(help="Recorded in the receipts.")] = "retention policy",
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        """Remove lineages idle longer than a policy allows (dry run unless --apply)."""
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: retention_body(
                db,
                ui,
                older_than=older_than,
                tenant=tenant,
                policy_file=policy,
                receipts=receipts,
                apply=apply,
                by=by,
                reason=reason,
            ),
        )

    @app.command()
    def erase(
        user: UserOption = None,
        tenant: TenantOption = None,
        apply: ApplyOption = False,
        by: ByOption = None,
        reason: Annotated[str, typer.Option(help="E.g. the request's ticket; recorded in the receipts.")] = (
            "erasure request"
        ),
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        """Remove a data subject's (a user's or a tenant's) conversations (dry run unless --apply)."""
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: erase_body(db, ui, user=user, tenant=tenant, apply=apply, by=by, reason=reason),
        )
