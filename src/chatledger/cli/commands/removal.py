"""``chatledger retention | erase``: removals with receipts (dry runs unless ``--apply``).

``retention --policy FILE --receipts FILE --apply`` is the cron job: the receipts file
is opened (created if needed) before anything is planned or deleted, so a bad path
stops the run with exit status 2 while the data is still there.

Both destroy data keys of sealed content as their last step (docs/sealing.md): ``erase``
the subject's keys, ``retention`` the keys of conversation trees removed whole. That
needs no KEK, only the key store (``--keys-database`` / ``--keys-collection``). When the
subject's content is sealed but the key store holds no key of it, ``erase`` changes
nothing and exits 2 (the key store is elsewhere: removing the events anyway would leave
every backup decryptable, with nothing left pointing at the keys); ``--no-keys`` is the
explicit way to remove the events and leave the keys to a later step.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
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
from chatledger.admin.cli_support import erased_mark
from chatledger.admin.erasure import NoSuchSubjectError, keys_not_found
from chatledger.admin.receipts import receipts_for
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.options import (
    AllowEmptyOption,
    ApplyOption,
    ByOption,
    TenantOption,
    UserOption,
    duration,
    open_for_writing,
)
from chatledger.cli.render import Renderer, Ticker, counted, iso, to_jsonable
from chatledger.cli.run import INTERRUPTED, require_ledger_data
from chatledger.cli.shared import Connection, shared
from chatledger.errors import ChatLedgerError, InvalidInputError
from chatledger.models import utc_now_ms

__all__ = ["erase_body", "register", "retention_body"]

ReceiptsOption = Annotated[
    str | None,
    typer.Option(help="Append this run's receipts to this JSON Lines file (checked first)."),
]


def _require_bool(value: object, name: str) -> bool:
    # "false" is truthy: a flag must be a real bool before it can delete anything.
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be true or false, not {value!r}")
    return value


@contextmanager
def _part_way(command: str, apply: bool, keys: bool) -> Iterator[None]:
    """Say what an applied removal that failed part-way left behind, and how to finish it.

    A removal is re-runnable: the same command finishes the job. Without this, an
    operator sees only the database error, not that conversations may already be gone
    while their data keys are still live (every copy of their content still readable).
    """
    try:
        yield
    except ChatLedgerError as e:
        if not apply or isinstance(e, InvalidInputError | NoSuchSubjectError):
            raise  # a dry run changed nothing; bad input is refused before any change
        left = (
            ", and data keys it had not destroyed yet are still live in the key store (copies "
            "of their content stay readable)"
            if keys
            else ""
        )
        raise ChatLedgerError(
            f"{e}. {command} stopped part-way: what it removed stays removed{left}. "
            f"Run the same {command} command again to finish."
        ) from e


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
    if report.covers is not None:
        ui.line(f"erasure of {report.covers}")
    ui.table(
        f"{report.action}: {verb} {counted(len(report.planned), 'lineage')} "
        f"({counted(report.threads, 'thread')})",
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
    for damaged in report.damaged:
        ui.line(("FAIL", "red"), f" {damaged.thread_id}: {damaged.reason}")
    if report.resumed:
        what = "would finish" if report.dry_run else "finished"
        ui.line(f"{what} {counted(len(report.resumed), 'interrupted removal')}: {_some(report.resumed)}")
    tombstone = extra.get("tombstone")
    if tombstone and tombstone.get("new"):
        verb = "would write" if report.dry_run else "wrote"
        ui.line(
            f"{verb} key tombstone {tombstone['key_id']}: the application can never again create a data "
            f"key for this {tombstone['kind']}"
        )
    if report.dry_run:
        ui.out.print(Text.assemble(("dry run", "bold"), ": nothing was changed; pass --apply to remove."))
    else:
        ui.line(f"{counted(len(extra.get('receipt_ids') or ()), 'receipt')} written to the audit collection.")
    if extra.get("receipts_file"):
        ui.line(f"{counted(extra['receipts_written'], 'receipt')} appended to {extra['receipts_file']}")


def _print_keys(ui: Renderer, shred: Any, dry_run: bool) -> None:
    """Say which data keys were (or, dry, would be) destroyed and which were kept; never key material."""
    if shred is None or ui.as_json:
        return
    if shred.key_ids:
        verb = "would destroy" if dry_run else "destroyed"
        ui.line(f"{verb} {counted(len(shred.key_ids), 'data key')}: {', '.join(shred.key_ids)}")
    if shred.kept:
        ui.line(
            ("kept", "yellow"),
            f" {counted(len(shred.kept), 'data key')} of the subject: {shred.kept_because}",
        )


def _removing(tick: Ticker, plan: RemovalReport, seen: list[RemovalReport]) -> None:
    """Turn the planning bar into the removal bar, whose total the plan now gives; keep the plan.

    The plan is the report the removal fills in as it goes: after a Ctrl-C it says what was done.
    """
    seen.append(plan)
    if not plan.dry_run:
        tick.stage("removing", len(plan.planned))


def _options(tick: Ticker, plans: list[RemovalReport], shreds: list[Any], store: Any) -> dict[str, Any]:
    """Return the options run_retention and run_erasure share: progress, the plan kept, the keys."""
    return {
        "on_removal": tick,
        "on_thread": tick,
        "on_plan": lambda plan: _removing(tick, plan, plans),
        "shred_keys": store is not None,
        "key_store": store,
        "on_keys": shreds.append,
    }


async def _run_receipts(db: Any, report: RemovalReport, shred: Any, since: datetime) -> list[dict[str, Any]]:
    """Return the receipts this run wrote: removals, completions, kept lineages, keys destroyed.

    Finishing an interrupted removal writes its completion, not its first receipt: only
    receipts dated from this run's start count (the clock of this process wrote them).
    """
    if report.dry_run:
        return []
    ids = [*report.removed, *report.resumed, *report.kept, *report.interrupted]
    if shred is not None and shred.receipt_id:
        ids.append(shred.receipt_id)
    return [
        r
        for r in await receipts_for(as_ledger(db), ids)
        if isinstance(r.get("at"), datetime) and iso(r["at"]) >= iso(since)  # type: ignore[operator]
    ]


def _write_receipts(receipts: list[dict[str, Any]], stream: IO[str]) -> int:
    for receipt in receipts:
        stream.write(json.dumps(to_jsonable(receipt), ensure_ascii=False) + "\n")
    stream.flush()
    os.fsync(stream.fileno())
    return len(receipts)


#: Receipt ids a one-line message names before it says how many more (``--json`` lists all).
_IDS_NAMED = 5


def _some(ids: list[str]) -> str:
    """Name the first few ids, then how many more: a batch can hold hundreds of lineages."""
    more = len(ids) - _IDS_NAMED
    return ", ".join(ids[:_IDS_NAMED]) + (f" and {more} more" if more > 0 else "")


def _interrupted(ui: Renderer, command: str, plan: RemovalReport | None, keys: bool) -> typer.Exit:
    """Say what an applied run stopped by Ctrl-C did and left half-done; return the exit (130)."""
    if plan is None or plan.dry_run:
        ui.error(f"{command} interrupted before removing anything: nothing was changed.")
        return typer.Exit(INTERRUPTED)
    done = len(plan.removed)
    # A run removes lineages in batches: a Ctrl-C can stop several removals half-way.
    half = (
        f"; removal {plan.interrupted[0]} was stopped half-way (released: the next run takes it over)"
        if len(plan.interrupted) == 1
        else f"; removals {_some(plan.interrupted)} were stopped half-way"
        " (released: the next run takes them over)"
        if plan.interrupted
        else ""
    )
    left = ", and the data keys are not destroyed yet" if keys else ""
    ui.error(
        f"{command} interrupted: {done} of {counted(len(plan.planned), 'lineage')} removed "
        f"(receipts {_some(plan.removed) or 'none'}){half}{left}. "
        f"Run the same {command} command again to finish it (it can start at once)."
    )
    if ui.as_json:
        ui.json(command, {**plan.to_dict(), "interrupted": True})
    return typer.Exit(INTERRUPTED)


@dataclass(frozen=True, slots=True)
class Removal:
    """One run of ``retention`` or ``erase``: what the shared part of the two needs to know."""

    command: str
    store: Any
    apply: bool
    receipts: str | None
    since: datetime
    extra: dict[str, Any] = field(default_factory=dict)


async def _remove(
    db: Any,
    ui: Renderer,
    run: Removal,
    count: Callable[[], Awaitable[int]],
    remove: Callable[[dict[str, Any]], Awaitable[RemovalReport]],
) -> RemovalReport:
    """Plan and carry out one removal with progress, then its receipts (appended to ``--receipts``), printed.

    ``count`` gives the planning total; ``remove`` runs the admin function with the shared
    options (progress, the plan kept for a Ctrl-C report, the key store). The receipts
    file is opened before anything is planned, so a bad path changes nothing.
    """
    keys = run.store is not None
    stream = open_for_writing(run.receipts, "--receipts", append=True) if run.receipts else None
    shreds: list[Any] = []
    plans: list[RemovalReport] = []
    try:
        with _part_way(run.command, run.apply, keys), ui.progress("planning") as tick:
            tick.stage("planning", await count())
            report = await remove(_options(tick, plans, shreds, run.store))
        shred = shreds[0] if shreds else None
        written = await _run_receipts(db, report, shred, run.since)
        if stream is not None:
            _write_receipts(written, stream)
    except asyncio.CancelledError:
        raise _interrupted(ui, run.command, plans[0] if plans else None, keys) from None
    finally:
        if stream is not None:
            stream.close()
    extra: dict[str, Any] = (
        {"receipts_file": run.receipts, "receipts_written": len(written)} if run.receipts else {}
    )
    extra["receipt_ids"] = [str(r["_id"]) for r in written]
    _print_report(ui, report, run.command, {**extra, "keys": shred.to_dict() if shred else None, **run.extra})
    _print_keys(ui, shred, report.dry_run)
    return report


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
    keys: KeyStoreLocation = KeyStoreLocation(),  # noqa: B008 - frozen, never mutated
    no_keys: bool = False,
    allow_empty: bool = False,
) -> int:
    """Plan (or, with ``apply``, carry out) a retention policy; append its receipts to a file.

    A database without ChatLedger data is an error (exit 1) unless ``allow_empty``: a
    nightly ``retention --apply`` on a misspelled name would remove nothing, and say so
    with exit 0, for ever.

    The keys of conversation trees removed whole (per-lineage keys) are destroyed too,
    unless ``no_keys``.
    """
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
    no_keys = _require_bool(no_keys, "no_keys")
    await require_ledger_data(db, allow_empty)
    since = utc_now_ms()
    async with keys.opened(db, needed=not no_keys) as store:
        report = await _remove(
            db,
            ui,
            Removal("retention", store, apply, receipts, since),
            lambda: count_retention_candidates(db, policy),
            lambda options: run_retention(db, policy, apply=apply, by=by, reason=reason, **options),
        )
        return _damaged_status(ui, report)


async def erase_body(
    db: Any,
    ui: Renderer,
    *,
    user: str | None = None,
    tenant: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "erasure request",
    keys: KeyStoreLocation = KeyStoreLocation(),  # noqa: B008 - frozen, never mutated
    no_keys: bool = False,
    receipts: str | None = None,
) -> int:
    """Plan (or, with ``apply``, carry out) a user's or tenant's erasure: threads, then data keys.

    Exit 2 with nothing changed when the subject's content is sealed but the key store
    holds no key of it (unless ``no_keys``); exit 1 when a legal hold kept lineages, or
    when the subject has nothing to erase (no thread, no key: nothing is written).
    ``receipts``: append this run's receipts to this JSON Lines file (opened first).
    """
    apply = _require_bool(apply, "apply")
    no_keys = _require_bool(no_keys, "no_keys")
    since = utc_now_ms()
    async with keys.opened(db, needed=not no_keys) as store:
        if store is not None:
            with ui.working("finding the subject's data keys"):
                missing = await keys_not_found(db, store, user_id=user, tenant_id=tenant)
            if missing is not None:
                raise InvalidInputError(
                    f"{missing}. Nothing was changed. Point erase at the key store, or pass --no-keys "
                    "to remove the events and destroy the keys in a later step."
                )
        tombstone = await erased_mark(
            store, user_id=user, tenant_id=tenant, ledger_id=as_ledger(db).ledger_id
        )
        report = await _remove(
            db,
            ui,
            Removal("erase", store, apply, receipts, since, {"tombstone": tombstone}),
            lambda: count_erasure_candidates(db, user_id=user, tenant_id=tenant),
            lambda options: run_erasure(
                db, user_id=user, tenant_id=tenant, apply=apply, by=by, reason=reason, **options
            ),
        )
        if no_keys:
            ui.warn(
                "--no-keys: data keys were not touched; sealed copies (backups) stay readable until "
                "the subject's keys are destroyed"
            )
        if report.skipped:
            reasons = sorted({s.reason for s in report.skipped})
            ui.warn(
                f"not everything could be erased: {counted(len(report.skipped), 'lineage')} kept "
                f"({'; '.join(reasons)})" + ("" if report.dry_run else "; each has a removal.kept receipt")
            )
            return max(1, _damaged_status(ui, report))
        return _damaged_status(ui, report)


def _damaged_status(ui: Renderer, report: RemovalReport) -> int:
    """Exit status 1 (after the work on every other thread) when damaged lineages were left."""
    if not report.damaged:
        return 0
    ui.warn(
        f"{counted(len(report.damaged), 'lineage')} left alone: a thread of each is damaged (a malformed "
        "stored event); the others were handled. Run chatledger verify."
    )
    return 1


def register(app: typer.Typer) -> None:
    """Add ``retention`` and ``erase`` to ``app``."""

    @app.command()
    @shared(keys=True, no_keys=True)
    def retention(
        connection: Connection,
        older_than: Annotated[
            str | None, typer.Option(help="Remove lineages idle for longer than AGE (e.g. 365d).")
        ] = None,
        tenant: Annotated[
            str | None, typer.Option("--tenant", help="Apply --older-than to this tenant only.")
        ] = None,
        policy: Annotated[
            str | None, typer.Option(help="TOML/JSON policy file instead of --older-than (cron).")
        ] = None,
        receipts: ReceiptsOption = None,
        apply: ApplyOption = False,
        by: ByOption = None,
        reason: Annotated[str, typer.Option(help="Recorded in the receipts.")] = "retention policy",
        allow_empty: AllowEmptyOption = False,
    ) -> None:
        """Remove lineages idle longer than a policy allows (dry run unless --apply)."""
        connection.run(
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
                keys=connection.keys,
                no_keys=connection.no_keys,
                allow_empty=allow_empty,
            )
        )

    @app.command()
    @shared(keys=True, no_keys=True)
    def erase(
        connection: Connection,
        user: UserOption = None,
        tenant: TenantOption = None,
        apply: ApplyOption = False,
        by: ByOption = None,
        reason: Annotated[str, typer.Option(help="E.g. the request's ticket; recorded in the receipts.")] = (
            "erasure request"
        ),
        receipts: ReceiptsOption = None,
    ) -> None:
        """Remove a user's or a tenant's conversations, then its data keys (dry run unless --apply)."""
        connection.run(
            lambda db, ui: erase_body(
                db,
                ui,
                user=user,
                tenant=tenant,
                apply=apply,
                by=by,
                reason=reason,
                keys=connection.keys,
                no_keys=connection.no_keys,
                receipts=receipts,
            )
        )
