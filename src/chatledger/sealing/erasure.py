"""Key destruction as the last step of an erasure by subject (called by ``run_erasure``)."""

from __future__ import annotations

import uuid
from typing import Any

from chatledger.admin.receipts import operator_identity, record
from chatledger.admin.removal import RemovalReport
from chatledger.ledger import Ledger
from chatledger.sealing.keys import KEYS_DESTROYED, ShredReport, destroy_subject_keys
from chatledger.storage.keys import KeyStore

__all__ = ["shred_after_erasure"]


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
    removing it) keeps the keys: its content must stay readable, and the next erasure
    of the subject destroys them. Destroyed keys are recorded in a ``keys.destroyed``
    receipt (key ids, the removal receipts, who, why: never key material).
    """
    dry = report.dry_run
    if report.skipped and not dry:
        kept = await destroy_subject_keys(key_store, user_id=user_id, tenant_id=tenant_id, apply=False)
        kept.kept_because = "; ".join(f"{s.thread_id}: {s.reason}" for s in report.skipped)
        return kept
    receipt_id = uuid.uuid4().hex
    shred = await destroy_subject_keys(
        key_store, user_id=user_id, tenant_id=tenant_id, apply=not dry, receipt_id=receipt_id
    )
    if dry or not shred.key_ids:
        return shred
    if ledger.sealer is not None:
        ledger.sealer.forget(shred.key_ids)  # this process stops reading them at once
    scope: dict[str, Any] = {"user_id": user_id} if user_id is not None else {"tenant_id": tenant_id}
    await record(
        ledger,
        KEYS_DESTROYED,
        by or operator_identity(),
        _id=receipt_id,
        reason=reason,
        scope=scope,
        key_ids=shred.key_ids,
        removal_receipts=list(report.removed),
    )
    return shred
