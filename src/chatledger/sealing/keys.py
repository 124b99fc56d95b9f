"""Operator actions on data keys: destroy a subject's keys (crypto-shredding) and rotate the KEK."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from chatledger.errors import InvalidInputError, KeyUnavailableError
from chatledger.models import utc_now_ms
from chatledger.sealing.providers import KeyProvider, provider_call, wrapped_of
from chatledger.sealing.subjects import subject_mark
from chatledger.storage.keys import KeyStore, key_kind

__all__ = [
    "KEYS_DESTROYED",
    "RewrapReport",
    "ShredReport",
    "destroy_subject_keys",
    "destroy_tree_keys",
    "rewrap",
]

#: Receipt kind of a key destruction (key ids and removal receipts: never key material).
KEYS_DESTROYED: Final = "keys.destroyed"


@dataclass(slots=True)
class ShredReport:
    """Which keys of a subject were (or, dry, would be) destroyed, or why they were kept."""

    key_ids: list[str] = field(default_factory=list)
    destroyed: bool = False
    #: Why the keys were kept (e.g. a legal hold blocked part of the erasure), or ``None``.
    kept_because: str | None = None
    receipt_id: str | None = None
    #: Keys of the subject left live (what a legal hold keeps readable).
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form."""
        return {
            "key_ids": list(self.key_ids),
            "destroyed": self.destroyed,
            "kept_because": self.kept_because,
            "kept": list(self.kept),
            "receipt_id": self.receipt_id,
        }


async def destroy_subject_keys(
    key_store: KeyStore,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    apply: bool = False,
    receipt_id: str | None = None,
    ledger_id: str | None = None,
) -> ShredReport:
    """Destroy (tombstone) every live key of a user (any tenant), a tenant (all its users), or both.

    No KEK is needed: destroying a key is replacing its document by a tombstone. Content
    sealed under it can then never be opened, wherever copies of it survive (journals,
    WAL, backups), once the KEK that wrapped older copies of the key is destroyed too
    (see ``docs/sealing.md``). Repeating it is harmless.

    Args:
        key_store: Where the keys live.
        user_id: The user whose keys go (in every tenant, unless ``tenant_id`` is given too).
        tenant_id: The tenant whose keys go (with ``user_id``: only that user's in this tenant).
        apply: Destroy; without it, only list the keys that would go.
        receipt_id: Recorded on each tombstone (the ``keys.destroyed`` receipt's id).
        ledger_id: Only the keys of this ledger (:attr:`~chatledger.ledger.Ledger.ledger_id`;
            what erasure passes), and the ``k1`` keys written before key ids named their
            ledger; the erased marks set are this ledger's. ``None``: the subject's keys in
            every ledger sharing the key store, and a mark every ledger honours.

    Raises:
        InvalidInputError: no subject was given, or ``apply`` is not a bool.
    """
    if type(apply) is not bool:
        raise InvalidInputError("apply must be a bool")
    docs = await key_store.of_subject(user_id=user_id, tenant_id=tenant_id, ledger_id=ledger_id)
    report = ShredReport(key_ids=sorted(str(d["_id"]) for d in docs))
    if not apply:
        return report
    report.receipt_id = receipt_id or uuid.uuid4().hex
    at = utc_now_ms()
    # First the subject's marks (its own key ids, created or not), then its keys listed
    # again: a per-lineage writer creating a key meanwhile either sees a mark or has its
    # key in the second listing (see KeyRing._create). Subject-level keys among the marks
    # are destroyed here, with their kind.
    # A k1 key found here is this ledger's too (it may be shared): destroyed below, but the
    # marks set are this ledger's, so no other ledger's subject is marked erased.
    pairs = {(d.get("tenant_id"), d.get("user_id")) for d in docs} | {(tenant_id, user_id)}
    for tenant, user in sorted(pairs, key=repr):
        mark = subject_mark(tenant, user, ledger_id)
        if mark is not None:
            kind = "user" if user is not None else "tenant"
            await key_store.destroy(mark, at=at, receipt_id=report.receipt_id, kind=kind)
    docs = await key_store.of_subject(user_id=user_id, tenant_id=tenant_id, ledger_id=ledger_id)
    report.key_ids = sorted({*report.key_ids, *(str(d["_id"]) for d in docs)})
    for doc in docs:
        await key_store.destroy(str(doc["_id"]), at=at, receipt_id=report.receipt_id, kind=key_kind(doc))
    report.destroyed = True
    return report


async def destroy_tree_keys(
    key_store: KeyStore,
    root_ids: list[str],
    *,
    apply: bool = False,
    receipt_id: str | None = None,
    ledger_id: str | None = None,
) -> ShredReport:
    """Destroy the keys that cover only these conversation trees (per-lineage and thread-subject keys).

    The caller says which trees are gone for good (every thread of them removed);
    a user's or tenant's own key is never among these keys. With ``ledger_id`` (what
    retention passes), only keys that ledger created go: a ``k1`` key, written before
    key ids named their ledger, may cover another ledger's tree of the same id.

    Raises:
        InvalidInputError: ``apply`` is not a bool, or a root id is malformed.
    """
    if type(apply) is not bool:
        raise InvalidInputError("apply must be a bool")
    docs = await key_store.of_roots(root_ids, ledger_id=ledger_id)
    report = ShredReport(key_ids=sorted(str(d["_id"]) for d in docs))
    if not apply or not docs:
        return report
    report.receipt_id = receipt_id or uuid.uuid4().hex
    at = utc_now_ms()
    for doc in docs:
        await key_store.destroy(str(doc["_id"]), at=at, receipt_id=report.receipt_id, kind=key_kind(doc))
    report.destroyed = True
    return report


@dataclass(slots=True)
class RewrapReport:
    """What a KEK rotation did."""

    rewrapped: int = 0
    #: Keys already wrapped by the new KEK (a repeated or resumed rotation).
    already: int = 0
    #: Keys neither KEK can unwrap (left untouched): ``(key id, why)``.
    failed: list[tuple[str, str]] = field(default_factory=list)


async def rewrap(key_store: KeyStore, old_provider: KeyProvider, new_provider: KeyProvider) -> RewrapReport:
    """Re-wrap every live data key under a new KEK, without touching any event.

    Each key is unwrapped with ``old_provider`` and written back wrapped by
    ``new_provider`` with a compare-and-set on its old wrapped form, so a concurrent
    rotation or destruction is never overwritten. Tombstones are skipped. Safe to
    repeat or resume: keys the new KEK already wraps are counted, not touched. Once it
    reports no failure, the old KEK can be destroyed after the backup window.

    Raises:
        StorageUnavailableError: the key store could not be reached.
    """
    report = RewrapReport()
    async for doc in key_store.live():
        key_id = str(doc["_id"])
        blob = wrapped_of(doc)
        if not blob:
            report.failed.append((key_id, "no wrapped key"))
            continue
        try:
            raw = provider_call(old_provider, "unwrap", blob, key_id)
        except KeyUnavailableError as e:
            try:
                provider_call(new_provider, "unwrap", blob, key_id)
            except KeyUnavailableError:
                report.failed.append((key_id, str(e)))
            else:
                report.already += 1
            continue
        fresh = base64.b64encode(provider_call(new_provider, "wrap", raw, key_id)).decode("ascii")
        if await key_store.rewrap(key_id, doc["wrapped"], fresh, getattr(new_provider, "kek_id", None)):
            report.rewrapped += 1
        else:
            report.failed.append(
                (key_id, "changed during the rotation (destroyed or rotated by another run)")
            )
    return report
