"""Erasure: remove a data subject's (a user's or a tenant's) conversations on request."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

from chatledger.admin._checks import require_callback, require_removal_run
from chatledger.admin.catalog import ThreadFilter, as_ledger, count_threads
from chatledger.admin.receipts import Receipts, operator_identity
from chatledger.admin.removal import Removal, RemovalReport, execute, key_store_of, plan_tree, trees_to_plan
from chatledger.errors import ChatLedgerError, InvalidInputError
from chatledger.ledger import storage_of
from chatledger.storage.keys import KeyStore, is_tombstone

__all__ = [
    "NoSuchSubjectError",
    "count_erasure_candidates",
    "covers",
    "keys_not_found",
    "plan_erasure",
    "run_erasure",
    "subject_tombstone",
]


class NoSuchSubjectError(ChatLedgerError):
    """An erasure found nothing of its subject (no thread, no key): nothing was written.

    A typo in a user id must not leave a permanent tombstone (which would stop the
    application from ever writing for that id) and a green exit status.
    """


#: Thread ids per query when looking for sealed content of a subject.
_SEALED_PROBE_CHUNK: Final = 500


def _subject(user_id: str | None, tenant_id: str | None) -> ThreadFilter:
    if user_id is None and tenant_id is None:
        raise InvalidInputError("erase a data subject: a user id, a tenant id, or both (a user in a tenant)")
    return ThreadFilter(user_id=user_id, tenant_id=tenant_id)


def covers(user_id: str | None, tenant_id: str | None) -> str:
    """Return what an erasure of this subject covers, in words (dry runs and reports say it)."""
    if user_id is None:
        return f"tenant {tenant_id!r}: every user of it"
    if tenant_id is None:
        return f"user {user_id!r} in every tenant"
    return f"user {user_id!r} in tenant {tenant_id!r} only (the user in other tenants is kept)"


async def count_erasure_candidates(
    target: Any, *, user_id: str | None = None, tenant_id: str | None = None
) -> int:
    """Return how many threads the subject has (one ``count`` command; a progress total).

    Raises:
        InvalidInputError: neither ``user_id`` nor ``tenant_id`` was given.
    """
    return await count_threads(target, _subject(user_id, tenant_id))


async def plan_erasure(
    target: Any,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    on_thread: Callable[[str], None] | None = None,
) -> RemovalReport:
    """Return what erasing a user's or a tenant's threads would remove (a dry-run report).

    Every matching thread goes, with every branch of it; lineages under a legal hold
    are listed as skipped. The subject's threads are streamed one conversation tree
    at a time (each read whole, so holds on any thread of it count), in chunks: memory
    is bounded by the plan, not by the number of threads.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        user_id: Erase this user's threads.
        tenant_id: Erase this tenant's threads.
        on_thread: Called with each matching thread examined (progress reporting; the
            total is :func:`count_erasure_candidates`).

    Raises:
        InvalidInputError: neither ``user_id`` nor ``tenant_id`` was given.
    """
    ledger = as_ledger(target)
    subject = _subject(user_id, tenant_id)
    require_callback(on_thread, "on_thread")
    report = RemovalReport("erasure", dry_run=True, covers=covers(user_id, tenant_id))
    async for chunk, act in trees_to_plan(ledger, subject):
        for family in chunk:
            plan_tree(report, family.forest, set(family.matching), act)
            if on_thread is not None:
                for tid in family.matching:
                    on_thread(tid)
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
    on_thread: Callable[[str], None] | None = None,
    on_plan: Callable[[RemovalReport], None] | None = None,
    shred_keys: bool = True,
    key_store: KeyStore | None = None,
    on_keys: Callable[[Any], None] | None = None,
) -> RemovalReport:
    """Plan an erasure and, only when ``apply`` is true, carry it out with receipts.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        user_id: Erase this user's threads in every tenant (and, sealed, every key of
            the user: no new conversation for the user starts in any tenant).
        tenant_id: Erase this tenant's threads (every user of it; sealed, no new
            conversation starts in the tenant). With ``user_id``: only that user's
            threads in this tenant (the user in other tenants is kept).
        apply: Remove; without it this is a dry run that changes nothing.
        by: Who acts, for the receipts; ``user@host`` by default.
        reason: Why (e.g. the ticket of the request), for the receipts.
        on_removal: Called after each lineage is handled (progress reporting).
        on_thread: Called with each matching thread examined while planning (progress).
        on_plan: Called once with the plan (dry run), before anything is removed, so a
            caller can show how many lineages are to come.
        shred_keys: With sealing configured (``key_store``, or the ledger's sealer), also
            destroy the subject's data keys once every lineage is removed, with a
            ``keys.destroyed`` receipt: sealed copies anywhere (journals, backups) become
            unreadable. A lineage kept by a legal hold keeps the keys too.
        key_store: The keys collection (default: the ledger's sealer's, if any).
        on_keys: Called with the :class:`~chatledger.sealing.ShredReport` (what was or,
            dry, would be destroyed, or why the keys were kept).

    Raises:
        InvalidInputError: neither ``user_id`` nor ``tenant_id`` was given, or an argument
            is not of its type (``apply`` and ``shred_keys`` must be real bools), checked
            before anything is read or written.
    """
    apply, shred_keys = require_removal_run(
        apply=apply,
        shred_keys=shred_keys,
        by=by,
        reason=reason,
        key_store=key_store,
        callbacks={"on_removal": on_removal, "on_thread": on_thread, "on_plan": on_plan, "on_keys": on_keys},
    )
    subject = _subject(user_id, tenant_id)
    ledger = as_ledger(target)
    receipts = Receipts.of(ledger)
    report = await plan_erasure(ledger, user_id=user_id, tenant_id=tenant_id, on_thread=on_thread)
    report.dry_run = not apply
    store = key_store_of(ledger, key_store) if shred_keys else None
    if not report.planned and not report.skipped:
        await _refuse_nothing(receipts, store, subject, ledger.ledger_id)
    if on_plan is not None:
        on_plan(report)
    report = await execute(
        ledger,
        report,
        by=by or operator_identity(),
        reason=reason,
        scope=subject.describe(),
        on_removal=on_removal,
    )
    if store is not None:
        from chatledger.admin.shredding import shred_after_erasure

        shred = await shred_after_erasure(
            ledger, store, report, user_id=user_id, tenant_id=tenant_id, by=by, reason=reason
        )
        if apply:
            # The subject's tombstone (its erased mark) and its receipt go together: the
            # receipt is written here when the key step wrote none (no live key was
            # destroyed), or when an earlier run stopped between the two.
            written = await _record_tombstone(
                receipts, store, subject, ledger.ledger_id, by=by, reason=reason
            )
            if written is not None and shred.receipt_id is None:
                shred.receipt_id = written
        if on_keys is not None:
            on_keys(shred)
    return report


async def subject_tombstone(
    key_store: KeyStore,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    ledger_id: str | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """Return the key id of the subject's erased mark (its tombstone once erased) and its stored document.

    Erasing a subject in the ledger ``ledger_id`` (:attr:`Ledger.ledger_id
    <chatledger.ledger.Ledger.ledger_id>`) tombstones this id, so the application can never
    again create a key for the subject; a dry run shows it. The document returned is that
    mark's, or, when the subject was erased before ledger-scoped key ids, the old mark's.
    """
    from chatledger.sealing.sealer import subject_mark

    mark = subject_mark(tenant_id, user_id, ledger_id)
    if mark is None:
        return None, None
    doc = await key_store.get(mark)
    legacy = subject_mark(tenant_id, user_id) if ledger_id is not None else None
    if (doc is None or not is_tombstone(doc)) and legacy is not None:
        old = await key_store.get(legacy)
        if old is not None and is_tombstone(old):
            return legacy, old
    return mark, doc


async def _unrecorded_tombstone(
    receipts: Receipts, key_store: KeyStore, subject: ThreadFilter, ledger_id: str
) -> dict[str, Any] | None:
    """Return the subject's tombstone if no receipt records it (an erasure stopped in between)."""
    _, doc = await subject_tombstone(
        key_store, user_id=subject.user_id, tenant_id=subject.tenant_id, ledger_id=ledger_id
    )
    if doc is None or not is_tombstone(doc):
        return None
    receipt_id = doc.get("receipt_id")
    if isinstance(receipt_id, str) and any(
        r.get("_id") == receipt_id for r in await receipts.for_ids([receipt_id])
    ):
        return None
    return doc


async def _record_tombstone(
    receipts: Receipts,
    key_store: KeyStore,
    subject: ThreadFilter,
    ledger_id: str,
    *,
    by: str | None,
    reason: str,
) -> str | None:
    """Write the missing ``keys.destroyed`` receipt of the subject's tombstone; return its id, or ``None``."""
    from chatledger.sealing.keys import KEYS_DESTROYED

    doc = await _unrecorded_tombstone(receipts, key_store, subject, ledger_id)
    if doc is None:
        return None
    receipt_id = doc.get("receipt_id")
    receipt_id = receipt_id if isinstance(receipt_id, str) else uuid.uuid4().hex
    await receipts.record(
        KEYS_DESTROYED,
        by or operator_identity(),
        _id=receipt_id,
        reason=reason,
        scope=subject.describe(),
        # Every key the killed run destroyed under this receipt, not only the subject's mark.
        key_ids=sorted({str(doc["_id"]), *await key_store.tombstoned_by(receipt_id)}),
        removal_receipts=[],
    )
    return receipt_id


async def _refuse_nothing(
    receipts: Receipts, key_store: KeyStore | None, subject: ThreadFilter, ledger_id: str
) -> None:
    """Raise :class:`NoSuchSubjectError` unless the subject has something left to erase or record."""
    user_id, tenant_id = subject.user_id, subject.tenant_id
    if key_store is not None:
        if await key_store.of_subject(user_id=user_id, tenant_id=tenant_id):
            return  # live keys: erasing destroys them
        _, tombstone = await subject_tombstone(
            key_store, user_id=user_id, tenant_id=tenant_id, ledger_id=ledger_id
        )
        if tombstone is not None and is_tombstone(tombstone):
            # Erased before (a re-run finds nothing left, and completes a missing receipt).
            return
    field, value = next(iter(subject.describe().items()))
    if await receipts.store.has_erasure(field, value):
        return  # erased before, without sealing: a re-run finds nothing left to do
    who = f"user {user_id!r}" if user_id is not None else f"tenant {tenant_id!r}"
    held = " and no data key" if key_store is not None else ""
    raise NoSuchSubjectError(
        f"no such subject: {who} has no thread{held} here (already erased, or a typo?); nothing was "
        "changed, no tombstone written"
    )


async def keys_not_found(
    target: Any, key_store: KeyStore, *, user_id: str | None = None, tenant_id: str | None = None
) -> str | None:
    """Return why erasing the subject now would leave its sealed content decryptable, or ``None``.

    That is the case when some of the subject's events are sealed but ``key_store``
    holds neither a live key of the subject nor its erased mark: the keys live
    somewhere else (another database or collection), and an erasure would remove the
    events but leave every backup of them readable, with nothing left pointing at the
    keys. Cheap when keys are found (one query); otherwise the subject's events are
    probed for a sealed message, a few hundred threads per query, stopping at the first.

    Raises:
        InvalidInputError: neither ``user_id`` nor ``tenant_id`` was given.
    """
    # Imported here: chatledger.sealing imports the admin package (its erasure step).
    from chatledger.sealing.sealer import subject_mark

    subject = _subject(user_id, tenant_id)
    ledger = as_ledger(target)
    if await key_store.of_subject(user_id=user_id, tenant_id=tenant_id, ledger_id=ledger.ledger_id):
        return None
    marks = [m for lid in (ledger.ledger_id, None) if (m := subject_mark(tenant_id, user_id, lid))]
    if await key_store.tombstone_among(marks) is not None:
        return None  # erased before: nothing is left to destroy
    storage = storage_of(ledger)
    sealed, chunk = False, []
    async for thread_id in storage.threads.ids_matching(subject):
        chunk.append(thread_id)
        if len(chunk) >= _SEALED_PROBE_CHUNK:
            sealed, chunk = await storage.tallies.any_sealed(chunk), []
            if sealed:
                break
    if not sealed and (not chunk or not await storage.tallies.any_sealed(chunk)):
        return None
    where = key_store.where
    return (
        f"the subject's content is sealed, but the key store {where} holds no key of it in ledger "
        f"{ledger.ledger_id!r} (the keys live in another database, collection or server: "
        "--keys-database / --keys-collection / --keys-mongodb-uri; or the application gives "
        "its Ledger another ledger_id: --ledger-id)"
    )
