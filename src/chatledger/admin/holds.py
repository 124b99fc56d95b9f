"""Legal holds: mark a thread so retention and erasure leave its whole lineage alone.

A hold on a thread protects the thread, every branch of it, and every ancestor it
replays through. Holds live on the thread document (``legal_holds``, one per case: the one field
admin code ever changes) and each change leaves a receipt.
"""

from __future__ import annotations

from typing import Any

from chatledger.admin.catalog import as_ledger
from chatledger.admin.receipts import HOLD_RELEASED, HOLD_SET, operator_identity, record
from chatledger.errors import InvalidInputError, UnknownThreadError
from chatledger.models import utc_now_ms, validate_thread_id

__all__ = ["release_hold", "set_hold"]


def _text(kind: str, value: object) -> str:
    if type(value) is not str or not value.strip():
        raise InvalidInputError(f"a legal hold needs a {kind} (e.g. the case or ticket number)")
    return value.strip()


async def set_hold(
    target: Any, thread_id: str, *, reason: str, case: str | None = None, by: str | None = None
) -> dict[str, Any]:
    """Put a thread under legal hold for one case and return the hold written.

    A thread can carry several holds, one per case; setting a hold for a case that
    already holds the thread changes nothing (and leaves no receipt).

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
    before = await ledger.storage.threads.get_raw(thread_id)
    if before is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    if any(isinstance(h, dict) and h.get("case") == case_id for h in before.get("legal_holds") or ()):
        return hold
    if not await ledger.storage.threads.add_hold(thread_id, hold):
        raise UnknownThreadError(f"no thread {thread_id!r}")
    await record(ledger, HOLD_SET, who, thread_id=thread_id, case=case_id, reason=why)
    return hold


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
    doc = await ledger.storage.threads.get_raw(thread_id)
    if doc is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    who = by or operator_identity()
    if isinstance(doc.get("legal_hold"), dict) and case is None:
        # A hold written by ChatLedger 0.1 (one per thread).
        released = await ledger.storage.threads.remove_legacy_hold(thread_id)
        if released:
            await record(ledger, HOLD_RELEASED, who, thread_id=thread_id, case=None, reason=why)
        return released
    cases = [h.get("case") for h in doc.get("legal_holds") or () if isinstance(h, dict)]
    if case is None:
        if not cases:
            return False
        if len(cases) > 1:
            raise InvalidInputError(
                f"thread {thread_id!r} is held for {len(cases)} cases {cases!r}; name the case"
            )
        case = str(cases[0])
    case_id = _text("case id", case)
    if not await ledger.storage.threads.remove_hold(thread_id, case_id):
        return False
    await record(ledger, HOLD_RELEASED, who, thread_id=thread_id, case=case_id, reason=why)
    return True
