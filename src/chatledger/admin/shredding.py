"""Shredding: key destruction as the last step of a removal (erasure by subject, or whole conversation trees).

It sits on top of sealing/ (which destroys keys and knows nothing of removals): the
removal's report says which keys may go, and the ``keys.destroyed`` receipt records it.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from chatledger.admin.catalog import ThreadFilter, count_threads
from chatledger.admin.receipts import operator_identity, record
from chatledger.admin.removal import RemovalReport
from chatledger.ledger import Ledger, storage_of
from chatledger.sealing.keys import KEYS_DESTROYED, ShredReport, destroy_subject_keys, destroy_tree_keys
from chatledger.storage.keys import KeyStore

__all__ = ["shred_after_erasure", "shred_removed_trees"]


class _Why(NamedTuple):
    """What the ``keys.destroyed`` receipt says of the removal: who, why, in what scope."""

    by: str | None
    reason: str
    scope: dict[str, Any]


async def shred_after_erasure(
    ledger: Ledger,
    key_store: KeyStore,
    report: RemovalReport,
    *,
    user_id: str | None,
    tenant_id: str | None,
    by: str | None,
    reason: str,
) -> ShredReport:
    """Destroy the subject's keys after its erasure removed every lineage; return what happened.

    A dry run lists the keys. A lineage the erasure skipped (a legal hold, another run
    removing it, a damaged thread) keeps the subject's keys: its content must stay readable, and the next
    erasure of the subject destroys them; only the keys of conversation trees removed
    whole (per-lineage keys) go then. Destroyed keys are recorded in a
    ``keys.destroyed`` receipt (key ids, the removal receipts, who, why: never key material).
    """
    scope: dict[str, Any] = {
        name: value for name, value in (("user_id", user_id), ("tenant_id", tenant_id)) if value is not None
    }
    if report.skipped or report.damaged:
        listed = await destroy_subject_keys(
            key_store, user_id=user_id, tenant_id=tenant_id, apply=False, ledger_id=ledger.ledger_id
        )
        shred = await shred_removed_trees(ledger, key_store, report, by=by, reason=reason, scope=scope)
        shred.kept = sorted(set(listed.key_ids) - set(shred.key_ids))
        left = [*report.skipped, *report.damaged]
        shred.kept_because = "; ".join(f"{s.thread_id}: {s.reason}" for s in left)
        return shred
    receipt_id = uuid.uuid4().hex
    shred = await destroy_subject_keys(
        key_store,
        user_id=user_id,
        tenant_id=tenant_id,
        apply=not report.dry_run,
        receipt_id=receipt_id,
        ledger_id=ledger.ledger_id,
    )
    await _recorded(ledger, shred, report, _Why(by, reason, scope))
    return shred


async def shred_removed_trees(
    ledger: Ledger,
    key_store: KeyStore,
    report: RemovalReport,
    *,
    by: str | None,
    reason: str,
    scope: dict[str, Any],
) -> ShredReport:
    """Destroy the keys of conversation trees that a removal left without any live thread.

    Dry, the trees are those whose root lineage is planned (they would go whole).
    Applied, a tree the removal touched counts only when no live thread of it is left:
    a branch removed from a tree that lives on keeps the tree's key. Only keys that
    cover one tree go (per-lineage keys, and the key of a tree without user or tenant).
    """
    roots: set[str] = set()
    for removal in report.planned:  # after execute: the lineages removed
        doc = await storage_of(ledger).threads.get_raw(removal.thread_id)
        root = None if doc is None else doc.get("root_id")
        if type(root) is str and (not report.dry_run or root == removal.thread_id):
            roots.add(root)
    trees = sorted(roots)
    if not report.dry_run:
        trees = [r for r in trees if await count_threads(ledger, ThreadFilter(root_id=r)) == 0]
    shred = await destroy_tree_keys(
        key_store, trees, apply=not report.dry_run, receipt_id=uuid.uuid4().hex, ledger_id=ledger.ledger_id
    )
    await _recorded(ledger, shred, report, _Why(by, reason, scope))
    return shred


async def _recorded(ledger: Ledger, shred: ShredReport, report: RemovalReport, why: _Why) -> None:
    """Forget destroyed keys in this process and write their ``keys.destroyed`` receipt."""
    if not shred.destroyed or not shred.key_ids:
        return
    if ledger.sealer is not None:
        ledger.sealer.forget(shred.key_ids)  # this process stops reading them at once
    await record(
        ledger,
        KEYS_DESTROYED,
        why.by or operator_identity(),
        _id=shred.receipt_id,
        reason=why.reason,
        scope=why.scope,
        key_ids=shred.key_ids,
        removal_receipts=list(report.removed),
    )
