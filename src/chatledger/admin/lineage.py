"""Removing one lineage on an application's request (a deleted session), through the removal protocol.

Retention and erasure select lineages by policy; a framework store deletes one named
thread. Both go through :func:`~chatledger.admin.removal.execute`: claims, receipts,
hollowed events, tombstones, and refusal under legal hold.
"""

from __future__ import annotations

from functools import partial

from chatledger.admin.catalog import ThreadFilter, activity, load_forest
from chatledger.admin.removal import RemovalReport, execute, lineage_removal, select_lineages
from chatledger.errors import LegalHoldError
from chatledger.ledger import Ledger

__all__ = ["remove_lineage"]


async def remove_lineage(ledger: Ledger, thread_id: str, root_id: str, *, by: str, reason: str) -> list[str]:
    """Remove ``thread_id`` and every branch of it, with receipts; return the receipt ids.

    Args:
        ledger: Where to remove.
        thread_id: The top thread of the lineage.
        root_id: Its root (the whole tree is read, so holds anywhere in it count).
        by: Who acts (recorded in the receipts).
        reason: Why (recorded in the receipts).

    Returns:
        The ids of the removal receipts written (empty if the thread was already gone).

    Raises:
        LegalHoldError: a legal hold protects the lineage; nothing was removed.
    """
    forest = await load_forest(ledger, ThreadFilter(root_id=root_id))
    if thread_id not in forest.docs:
        return []
    report = RemovalReport("delete", dry_run=False)
    act = await activity(ledger, forest, forest.descendants(thread_id))
    select_lineages(report, forest, {thread_id}, partial(lineage_removal, forest, act))
    report = await execute(ledger, report, by=by, reason=reason, scope={"thread_id": thread_id})
    if report.skipped:
        raise LegalHoldError(f"thread {thread_id!r} cannot be removed: {report.skipped[0].reason}")
    return report.removed
