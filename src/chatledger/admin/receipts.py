"""Receipts in the ``audit`` collection: who did what, when, to which threads; never content.

The audit collection is append-only too: a removal writes a ``removal`` receipt before
it deletes anything and a ``removal.completed`` receipt after, so a crash in between
is visible (and :func:`pending_removals` finds it for a re-run to finish).
"""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from chatledger.ledger import Ledger, storage_of
from chatledger.models import utc_now_ms
from chatledger.storage.receipts import ReceiptStore

__all__ = [
    "CHECKPOINT_DELETED",
    "COMPLETED",
    "HOLD_RELEASED",
    "HOLD_SET",
    "REMOVAL",
    "Receipts",
    "operator_identity",
    "pending_removals",
    "receipts_for",
    "record",
]

REMOVAL: Final = "removal"
COMPLETED: Final = "removal.completed"
HOLD_SET: Final = "hold.set"
HOLD_RELEASED: Final = "hold.released"
#: Receipt kind of a checkpoint withdrawn with ``MongoCheckpointStorage.delete``.
CHECKPOINT_DELETED: Final = "checkpoint.deleted"


def operator_identity() -> str:
    """Return ``user@host`` of the process, the default ``by`` of a receipt."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Receipts:
    """A ledger's audit trail as admin code writes and reads it: receipts, never content.

    Args:
        store: The audit collection's store (an admin entry point hands it over).
    """

    def __init__(self, store: ReceiptStore) -> None:
        self.store = store

    @classmethod
    def of(cls, ledger: Ledger) -> Receipts:
        """Return the audit trail of ``ledger``."""
        return cls(storage_of(ledger).receipts)

    async def record(self, kind: str, by: str, **fields: Any) -> dict[str, Any]:
        """Insert one receipt of ``kind`` and return it (see :func:`record`)."""
        doc: dict[str, Any] = {"_id": uuid.uuid4().hex, "kind": kind, "at": utc_now_ms(), "by": by, **fields}
        await self.store.insert(doc)
        return doc

    async def for_ids(self, receipt_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the receipts with these ids and the receipts that refer to them."""
        return await self.store.for_ids(receipt_ids)

    async def completed(self, receipt_id: str) -> bool:
        """Return whether the removal ``receipt_id`` has its completion receipt."""
        return any(r.get("kind") == COMPLETED for r in await self.for_ids([receipt_id]))

    async def referred_ids(self, kind: str) -> set[object]:
        """Return the receipt ids the receipts of ``kind`` refer to."""
        return await self.store.referred_ids(kind)

    async def pending_removals(self) -> list[dict[str, Any]]:
        """Return removal receipts that have no completion receipt (interrupted runs), oldest first."""
        started = await self.store.unanswered(REMOVAL, COMPLETED)
        # A malformed receipt (no date) still counts; it sorts first rather than crashing.
        return sorted(
            started,
            key=lambda r: (
                isinstance(r.get("at"), datetime),
                r["at"] if isinstance(r.get("at"), datetime) else 0,
            ),
        )


async def record(ledger: Ledger, kind: str, by: str, **fields: Any) -> dict[str, Any]:
    """Insert one receipt of ``kind`` and return it.

    Args:
        ledger: The ledger whose ``audit`` collection receives the receipt.
        kind: ``removal``, ``removal.completed``, ``hold.set`` or ``hold.released``.
        by: Who acted.
        **fields: The rest of the receipt (ids, counts, hashes, reason): never content.
    """
    return await Receipts.of(ledger).record(kind, by, **fields)


async def pending_removals(ledger: Ledger) -> list[dict[str, Any]]:
    """Return removal receipts that have no completion receipt (interrupted runs), oldest first."""
    return await Receipts.of(ledger).pending_removals()


async def receipts_for(ledger: Ledger, receipt_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Return the receipts with these ids and the completion receipts that refer to them."""
    return await Receipts.of(ledger).for_ids(receipt_ids)
