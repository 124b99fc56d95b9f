"""Erasure: remove a data subject's (a user's or a tenant's) conversations on request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatledger.admin.catalog import ThreadFilter, activity, as_ledger, load_forest
from chatledger.admin.receipts import operator_identity
from chatledger.admin.removal import Removal, RemovalReport, execute, lineage_removal, select_lineages
from chatledger.errors import InvalidInputError

__all__ = ["plan_erasure", "run_erasure"]


def _subject(user_id: str | None, tenant_id: str | None) -> ThreadFilter:
    if (user_id is None) == (tenant_id is None):
        raise InvalidInputError("erase exactly one data subject: a user id or a tenant id")
    return ThreadFilter(user_id=user_id, tenant_id=tenant_id)


async def plan_erasure(
    target: Any, *, user_id: str | None = None, tenant_id: str | None = None
) -> RemovalReport:
    """Return what erasing a user's or a tenant's threads would remove (a dry-run report).

    Every matching thread goes, with every branch of it; lineages under a legal hold
    are listed as skipped.

    Raises:
        InvalidInputError: not exactly one of ``user_id`` and ``tenant_id`` was given.
    """
    ledger = as_ledger(target)
    subject = _subject(user_id, tenant_id)
    forest = await load_forest(ledger, subject)
    matching = {
        t for t, d in forest.docs.items() if all(d.get(k) == v for k, v in subject.describe().items())
    }
    act = await activity(ledger, forest)
    report = RemovalReport("erasure", dry_run=True)
    select_lineages(report, forest, matching, {t: lineage_removal(forest, act, t) for t in matching})
    return report


async def run_erasure(
    target: Any,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "erasure request",
    on_removal: Callable[[Removal], None] | None = None,
) -> RemovalReport:
    """Plan an erasure and, only when ``apply`` is true, carry it out with receipts.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        user_id: Erase this user's threads.
        tenant_id: Erase this tenant's threads.
        apply: Remove; without it this is a dry run that changes nothing.
        by: Who acts, for the receipts; ``user@host`` by default.
        reason: Why (e.g. the ticket of the request), for the receipts.
        on_removal: Called after each lineage is handled (progress reporting).

    Raises:
        InvalidInputError: not exactly one of ``user_id`` and ``tenant_id`` was given.
    """
    ledger = as_ledger(target)
    report = await plan_erasure(ledger, user_id=user_id, tenant_id=tenant_id)
    report.dry_run = not apply
    return await execute(
        ledger,
        report,
        by=by or operator_identity(),
        reason=reason,
        scope=_subject(user_id, tenant_id).describe(),
        on_removal=on_removal,
    )
