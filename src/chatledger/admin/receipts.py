"""Receipts in the ``audit`` collection: who did what, when, to which threads; never content.

The audit collection is append-only too: a removal writes a ``removal`` receipt before
it deletes anything and a ``removal.completed`` receipt after, so a crash in between
is visible (and :func:`pending_removals` finds it for a re-run to finish).
"""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from chatledger.ledger import Ledger, storage_of
from chatledger.models import utc_now_ms

__all__ = [
    "COMPLETED",
    "HOLD_RELEASED",
    "HOLD_SET",
    "REMOVAL",
    "operator_identity",
    "pending_removals",
    "receipts_for",
    "record",
    "removed_heads",
]

REMOVAL: Final = "removal"
COMPLETED: Final = "removal.completed"
HOLD_SET: Final = "hold.set"
HOLD_RELEASED: Final = "hold.released"


def operator_identity() -> str:
    """Return ``user@host`` of the process, the default ``by`` of a receipt."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def record(ledger: Ledger, kind: str, by: str, **fields: Any) -> dict[str, Any]:
    """Insert one receipt of ``kind`` and return it.

    Args:
        ledger: The ledger whose ``audit`` collection receives the receipt.
        kind: ``removal``, ``removal.completed``, ``hold.set`` or ``hold.released``.
        by: Who acted.
        **fields: The rest of the receipt (ids, counts, hashes, reason): never content.
    """
    doc: dict[str, Any] = {"_id": uuid.uuid4().hex, "kind": kind, "at": utc_now_ms(), "by": by, **fields}
    await storage_of(ledger).receipts.insert(doc)
    return doc


async def _receipts(
    ledger: Ledger, kind: str, projection: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    return await storage_of(ledger).receipts.of_kind(kind, projection)


async def pending_removals(ledger: Ledger) -> list[dict[str, Any]]:
    """Return removal receipts that have no completion receipt (interrupted runs), oldest first."""
    done = {r.get("receipt_id") for r in await _receipts(ledger, COMPLETED, {"receipt_id": 1})}
    started = await _receipts(ledger, REMOVAL)
    # A malformed receipt (no date) still counts; it sorts first rather than crashing.
    return sorted(
        (r for r in started if r.get("_id") not in done),
        key=lambda r: (
            isinstance(r.get("at"), datetime),
            r["at"] if isinstance(r.get("at"), datetime) else 0,
        ),
    )


async def removed_heads(ledger: Ledger) -> dict[str, list[tuple[int, str]]]:
    """Return, per removed thread id, the heads (seq, hash) recorded by completed removals."""
    done = {r.get("receipt_id") for r in await _receipts(ledger, COMPLETED, {"receipt_id": 1})}
    out: dict[str, list[tuple[int, str]]] = {}
    for receipt in await _receipts(ledger, REMOVAL, {"heads": 1}):
        if receipt["_id"] not in done:
            continue
        heads: Sequence[Mapping[str, Any]] = receipt.get("heads") or ()
        for head in heads:
            out.setdefault(str(head["thread_id"]), []).append((int(head["head_seq"]), str(head["head_hash"])))
    return out


async def receipts_for(ledger: Ledger, receipt_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Return the receipts with these ids and the completion receipts that refer to them."""
    return await storage_of(ledger).receipts.for_ids(receipt_ids)
