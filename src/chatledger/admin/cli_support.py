"""What the command line needs from the ledger's storage, as admin functions.

``cli/`` never reaches the storage ports (``storage_of``) nor imports ``chatledger.storage``
(tests/test_architecture.py): whatever it needs from them is a function here, on the
floor that may.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatledger.admin.catalog import as_ledger
from chatledger.admin.erasure import subject_tombstone
from chatledger.ledger import Ledger, storage_of
from chatledger.storage.clients import (
    ServerRefusedError,
    command,
    is_driver_error,
    mongomock_client,
    new_client,
    option_names,
    ping,
)
from chatledger.storage.driver import close_client
from chatledger.storage.keys import KeyStore, is_tombstone, key_kind
from chatledger.storage.merkle import log_collections

__all__ = [
    "LedgerPlace",
    "ServerRefusedError",
    "close_client",
    "command",
    "describe_key",
    "erased_mark",
    "holds_ledger_data",
    "is_driver_error",
    "ledger_place",
    "log_collections",
    "mongomock_client",
    "new_client",
    "open_key_store",
    "option_names",
    "ping",
    "with_sealer",
]


@dataclass(frozen=True, slots=True)
class LedgerPlace:
    """Where a ledger's documents live: its database and collection names (for messages)."""

    database: str
    threads_collection: str
    events_collection: str


def ledger_place(target: Any) -> LedgerPlace:
    """Return the database and collection names of ``target`` (a :class:`Ledger` or a database handle)."""
    database, threads, events, _ = storage_of(as_ledger(target)).names
    return LedgerPlace(database, threads, events)


async def holds_ledger_data(target: Any) -> bool:
    """Return whether the ledger's threads or events collection holds any document (tombstones count).

    One indexed read each, however large the collections: a misspelled database name
    reads as an empty ledger, which callers refuse to report as a clean result.
    """
    # Any document, removed ones included: an erased ledger is still a ledger.
    return await storage_of(as_ledger(target)).holds_any_document()


def with_sealer(target: Any, sealer: Any) -> Ledger:
    """Return a :class:`Ledger` on ``target``'s collections and ledger id, opening content with ``sealer``."""
    if not isinstance(target, Ledger):
        return Ledger(target, sealer=sealer)
    _, threads, events, audit = storage_of(target).names
    return Ledger(
        target.database,
        sealer=sealer,
        threads_collection=threads,
        events_collection=events,
        audit_collection=audit,
        ledger_id=target.ledger_id,
    )


async def open_key_store(database: Any, collection: str) -> KeyStore:
    """Return the key store in ``collection`` of ``database``, read once so a refusal shows now.

    Raises:
        InvalidInputError: the collection name is not usable.
        ChatLedgerError: the key store cannot be read (a name its server refuses, a role without read access).
    """
    store = KeyStore(database, collection=collection)
    await store.check_readable()
    return store


def describe_key(doc: dict[str, Any]) -> dict[str, Any]:
    """Return what may be shown of a key document: ids, kind, state, times, KEK id; never key material."""
    destroyed = is_tombstone(doc)
    return {
        "key_id": str(doc.get("_id")),
        "kind": key_kind(doc),
        "state": "destroyed" if destroyed else "active",
        "created_at": doc.get("created_at"),
        "destroyed_at": doc.get("destroyed_at") if destroyed else None,
        "kek_id": doc.get("kek_id"),
        "fingerprint": doc.get("fp"),
        "receipt_id": doc.get("receipt_id") if destroyed else None,
    }


async def erased_mark(
    store: KeyStore | None, *, user_id: str | None, tenant_id: str | None, ledger_id: str
) -> dict[str, Any] | None:
    """Return the key tombstone erasing the subject writes (``new``: not there yet); ``None``: no key store.

    The shape ``erase --json`` prints as ``tombstone``: ``{key_id, kind, new}``.
    """
    if store is None:
        return None
    key_id, doc = await subject_tombstone(store, user_id=user_id, tenant_id=tenant_id, ledger_id=ledger_id)
    if key_id is None:
        return None
    return {
        "key_id": key_id,
        "kind": "user" if user_id is not None else "tenant",
        "new": doc is None or not is_tombstone(doc),
    }
