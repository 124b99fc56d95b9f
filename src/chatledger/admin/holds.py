"""Legal holds: mark a thread so retention and erasure leave its whole lineage alone.

A hold on a thread protects the thread, every branch of it, and every ancestor it
replays through. Holds live on the thread document (``legal_holds``, one per case: the one field
admin code ever changes) and each change leaves a receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatledger.admin.catalog import as_ledger
from chatledger.admin.receipts import HOLD_RELEASED, HOLD_SET, Receipts, operator_identity
from chatledger.errors import InvalidInputError, LegalHoldError, StorageError, UnknownThreadError
from chatledger.ledger import storage_of
from chatledger.models import utc_now_ms, validate_thread_id
from chatledger.storage.documents import holds_of
from chatledger.storage.removals import RemovalMarks
from chatledger.storage.threads import ThreadStore

__all__ = ["list_holds", "place_hold", "release_hold", "set_hold"]


def _text(kind: str, value: object) -> str:
    if type(value) is not str or not value.strip():
        raise InvalidInputError(f"a legal hold needs a {kind} (e.g. the case or ticket number)")
    return value.strip()


async def _change(
    threads: ThreadStore,
    marks: RemovalMarks,
    thread_id: str,
    change: Callable[[list[dict[str, Any]], bool], tuple[list[dict[str, Any]], bool] | None],
) -> bool:
    """Apply ``change`` to a thread's holds with compare-and-set; return whether anything changed.

    ``change`` gets the current holds (and whether a 0.1 single hold is present) and
    returns the new list and whether the 0.1 single hold ends with it, or ``None`` to
    change nothing. (A 0.1 hold ends only when it is the hold released: releasing a
    case's hold must not end it.)

    Raises:
        UnknownThreadError: there is no such thread.
        LegalHoldError: a removal has claimed the thread.
    """
    for _ in range(20):
        await _refuse_if_claimed(marks, thread_id)
        live = await threads.live(thread_id)
        if live is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        holds, legacy, rev = list(live.holds.cases), live.holds.legacy, live.holds.rev
        changed = change(holds, legacy)
        if changed is None:
            return False
        new, ends_legacy = changed
        if not await threads.replace_holds(thread_id, rev, new, legacy=ends_legacy):
            continue
        try:
            # Checked again AFTER writing: a removal reads the holds after claiming, so of
            # the two at least one sees the other. If the removal won, undo and say so
            # (the 0.1 single hold, if this ended it, comes back as it was).
            await _refuse_if_claimed(marks, thread_id)
        except LegalHoldError:
            await threads.replace_holds(
                thread_id, rev + 1, holds, restore=live.holds.legacy_hold if ends_legacy else None
            )
            raise
        return True
    raise StorageError(f"the legal holds of thread {thread_id!r} keep changing; try again")


async def _refuse_if_claimed(marks: RemovalMarks, thread_id: str) -> None:
    claim = await marks.claim_of(thread_id)
    if claim is not None:
        raise LegalHoldError(
            f"thread {thread_id!r} is being removed (receipt {claim!r}); a hold can no longer be set or "
            "released on it"
        )


async def set_hold(
    target: Any, thread_id: str, *, reason: str, case: str | None = None, by: str | None = None
) -> dict[str, Any]:
    """Put a thread under legal hold for one case and return the hold as stored.

    A thread can carry several holds, one per case; setting a hold for a case that
    already holds the thread changes nothing (and leaves no receipt): the stored hold,
    with its own reason and time, is returned. :func:`place_hold` also says which it was.

    Raises:
        InvalidInputError: ``reason`` or ``case`` is empty, or ``thread_id`` is malformed.
        UnknownThreadError: there is no such thread.
    """
    hold, _ = await place_hold(target, thread_id, reason=reason, case=case, by=by)
    return hold


async def place_hold(
    target: Any, thread_id: str, *, reason: str, case: str | None = None, by: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Put a thread under legal hold for one case; return the hold as stored, and whether this call set it.

    ``False``: the case already held the thread; nothing was written and the stored
    hold (its reason, time and author) is returned.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The thread to hold.
        reason: Why; required.
        case: The case or ticket id the hold belongs to (default: the reason).
        by: Who sets it; ``user@host`` by default.

    Raises:
        InvalidInputError: ``reason`` or ``case`` is empty, or ``thread_id`` is malformed.
        UnknownThreadError: there is no such thread.
    """
    ledger = as_ledger(target)
    validate_thread_id(thread_id)
    why = _text("reason", reason)
    case_id = _text("case id", case) if case is not None else why
    who = by or operator_identity()
    hold: dict[str, Any] = {"case": case_id, "reason": why, "set_at": utc_now_ms(), "set_by": who}

    existing: list[dict[str, Any]] = []

    def add(holds: list[dict[str, Any]], legacy: bool) -> tuple[list[dict[str, Any]], bool] | None:
        existing[:] = [h for h in holds if h.get("case") == case_id]
        if existing:
            return None
        return [*holds, hold], False

    storage = storage_of(ledger)
    if await _change(storage.threads, storage.removals, thread_id, add):
        await Receipts(storage.receipts).record(HOLD_SET, who, thread_id=thread_id, case=case_id, reason=why)
        return hold, True
    return existing[0], False


async def release_hold(
    target: Any, thread_id: str, *, reason: str, case: str | None = None, by: str | None = None
) -> bool:
    """Release one case's legal hold on a thread; return whether that hold was there.

    Other cases' holds stay. Without ``case``, the thread's only hold is released; if
    it carries several, the case must be named.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The held thread.
        reason: Why the hold ends; required.
        case: The case whose hold ends.
        by: Who releases it; ``user@host`` by default.

    Raises:
        InvalidInputError: ``reason`` is empty, ``thread_id`` is malformed, or the thread
            carries several holds and no ``case`` was named.
        UnknownThreadError: there is no such thread.
    """
    ledger = as_ledger(target)
    validate_thread_id(thread_id)
    why = _text("reason", reason)
    case_id = _text("case id", case) if case is not None else None
    released: list[str | None] = []

    def remove(holds: list[dict[str, Any]], legacy: bool) -> tuple[list[dict[str, Any]], bool] | None:
        released.clear()
        if case_id is None:
            if legacy and not holds:
                released.append(None)  # a hold written by ChatLedger 0.1 (one per thread)
                return [], True
            if len(holds) + legacy > 1:
                # A 0.1 single hold (case None) counts: a bare release must not pick one of two.
                cases = [h.get("case") for h in holds] + ([None] if legacy else [])
                raise InvalidInputError(
                    f"thread {thread_id!r} is held for {len(cases)} cases {cases!r}; name the case "
                    "(a ChatLedger 0.1 hold, case None, is released without one once it is the last)"
                )
            if not holds:
                return None
            released.append(str(holds[0].get("case")))
            return [], False
        kept = [h for h in holds if h.get("case") != case_id]
        if len(kept) == len(holds):
            return None
        released.append(case_id)
        return kept, False

    storage = storage_of(ledger)
    if not await _change(storage.threads, storage.removals, thread_id, remove):
        return False
    await Receipts(storage.receipts).record(
        HOLD_RELEASED, by or operator_identity(), thread_id=thread_id, case=released[0], reason=why
    )
    return True


async def list_holds(
    target: Any, *, case: str | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Return every legal hold of the live threads, one per thread and case, by thread id then case.

    Each is ``{thread_id, tenant_id, user_id, case, reason, set_at, set_by}``, as stored
    (a ChatLedger 0.1 single hold has ``case`` ``None``).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        case: Only this case's holds.
        tenant: Only the holds of this tenant's threads.

    Raises:
        InvalidInputError: ``case`` or ``tenant`` is empty.
    """
    if case is not None:
        case = _text("case id", case)
    if tenant is not None and (type(tenant) is not str or not tenant):
        raise InvalidInputError("--tenant: a tenant id is a non-empty string")
    out: list[dict[str, Any]] = []
    async for doc in storage_of(as_ledger(target)).threads.held(tenant_id=tenant):
        rows = [
            {
                "thread_id": str(doc["_id"]),
                "tenant_id": doc.get("tenant_id"),
                "user_id": doc.get("user_id"),
                "case": h.get("case"),
                "reason": h.get("reason"),
                "set_at": h.get("set_at"),
                "set_by": h.get("set_by"),
            }
            for h in holds_of(doc).listed()
            if case is None or h.get("case") == case
        ]
        out += sorted(rows, key=lambda r: str(r["case"] or ""))
    return out
