"""Legal holds: mark a thread so retention and erasure leave its whole lineage alone.

A hold on a thread protects the thread, every branch of it, and every ancestor it
replays through. The hold lives on the thread document (``legal_hold``: the one field
admin code ever changes) and each change leaves a receipt.
"""

from __future__ import annotations

from typing import Any

from chatledger.admin.catalog import as_ledger
from chatledger.admin.receipts import HOLD_RELEASED, HOLD_SET, operator_identity, record
from chatledger.errors import InvalidInputError, UnknownThreadError
from chatledger.models import utc_now_ms, validate_thread_id

__all__ = ["release_hold", "set_hold"]


def _reason(reason: object) -> str:
    if type(reason) is not str or not reason.strip():
        raise InvalidInputError("a legal hold needs a reason (e.g. the case or ticket number)")
    return reason.strip()


async def set_hold(target: Any, thread_id: str, *, reason: str, by: str | None = None) -> dict[str, Any]:
    """Put a thread under legal hold and return the hold written.

    Setting a hold on a held thread replaces its reason (and leaves a new receipt).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The thread to hold.
        reason: Why (case or ticket number); required.
        by: Who sets it; ``user@host`` by default.

    Raises:
        InvalidInputError: ``reason`` is empty or ``thread_id`` is malformed.
        UnknownThreadError: there is no such thread.
    """
    ledger = as_ledger(target)
    validate_thread_id(thread_id)
    who = by or operator_identity()
    hold: dict[str, Any] = {"reason": _reason(reason), "set_at": utc_now_ms(), "set_by": who}
    result = await ledger.call(
        "set legal hold", ledger.threads.update_one({"_id": thread_id}, {"$set": {"legal_hold": hold}})
    )
    if result.matched_count == 0:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    ledger.forget([thread_id])
    await record(ledger, HOLD_SET, who, thread_id=thread_id, reason=hold["reason"])
    return hold


async def release_hold(target: Any, thread_id: str, *, reason: str, by: str | None = None) -> bool:
    """Release a thread's legal hold; return whether it was held.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The held thread.
        reason: Why the hold ends; required.
        by: Who releases it; ``user@host`` by default.

    Raises:
        InvalidInputError: ``reason`` is empty or ``thread_id`` is malformed.
        UnknownThreadError: there is no such thread.
    """
    ledger = as_ledger(target)
    validate_thread_id(thread_id)
    why = _reason(reason)
    doc = await ledger.call("read thread", ledger.threads.find_one({"_id": thread_id}, {"legal_hold": 1}))
    if doc is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    if not doc.get("legal_hold"):
        return False
    # $set to null rather than $unset: the contract allows $set on legal_hold only.
    await ledger.call(
        "release legal hold", ledger.threads.update_one({"_id": thread_id}, {"$set": {"legal_hold": None}})
    )
    ledger.forget([thread_id])
    await record(ledger, HOLD_RELEASED, by or operator_identity(), thread_id=thread_id, reason=why)
    return True
