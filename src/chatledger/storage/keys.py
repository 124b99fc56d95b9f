"""The ``keys`` collection: wrapped data keys of sealed content, one per data subject.

It may live in another database (or cluster) than the ledger: keys want a shorter
backup retention and tighter roles than conversations (the application finds and
inserts keys; only the operator destroys them; only rotation rewraps them). A key
document is never deleted: destroying a key replaces it by a *tombstone* that keeps only
its id and when and why it was destroyed, so an erased subject's key is told apart from
a missing one (a misconfiguration) and can never be re-created by accident (its id is
taken for good).

Key documents hold the data key wrapped by a key-encryption key (KEK) and never the
key itself; tombstones hold no subject fields, so the erased user or tenant id is not
kept here either (only the subject's *kind*, see :func:`key_kind`). A key whose subject
fields include ``root_id`` covers one conversation tree (a per-lineage key, or the key
of a tree with neither user nor tenant): removing the whole tree may destroy it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from chatledger.errors import InvalidInputError
from chatledger.storage.driver import cursor_list
from chatledger.storage.gate import Consistency, Gate

__all__ = ["DEFAULT_KEYS_COLLECTION", "KEY_SUBJECT_FIELDS", "KeyStore", "is_tombstone", "key_kind"]

DEFAULT_KEYS_COLLECTION: Final = "keys"
#: The fields of a live key document that name its data subject (erasure selects on them).
KEY_SUBJECT_FIELDS: Final = ("tenant_id", "user_id", "root_id")


def is_tombstone(doc: Mapping[str, Any]) -> bool:
    """Return whether a key document is the tombstone of a destroyed key."""
    return "destroyed_at" in doc


def key_kind(doc: Mapping[str, Any]) -> str | None:
    """Return a key's subject kind: ``user``, ``tenant``, ``thread``, ``user-lineage`` or ``tenant-lineage``.

    A tombstone keeps the kind it was destroyed with (``None`` for tombstones written
    before kinds were kept); it names no subject, so it is kept after erasure.
    """
    if is_tombstone(doc):
        kind = doc.get("kind")
        return kind if type(kind) is str else None
    if doc.get("user_id") is not None:
        kind = "user"
    elif doc.get("tenant_id") is not None:
        kind = "tenant"
    else:
        return "thread"
    return f"{kind}-lineage" if doc.get("root_id") is not None else kind


class KeyStore:
    """Named operations on the keys collection: find, insert once, destroy, rewrap.

    Args:
        database: A PyMongo ``AsyncDatabase``, a Motor database or a mongomock-motor one:
            the ledger's own database or another one.
        collection: Name of the keys collection.
        operation_timeout: Seconds one operation may take; ``None`` leaves it to the client.
        consistency: ``"majority"`` (default) or ``"client"``, as for the ledger.

    Raises:
        InvalidInputError: the collection name or the database handle is not usable.
    """

    def __init__(
        self,
        database: Any,
        *,
        collection: str = DEFAULT_KEYS_COLLECTION,
        operation_timeout: float | None = None,
        consistency: Consistency = "majority",
    ) -> None:
        self.gate = Gate(database, operation_timeout=operation_timeout, consistency=consistency)
        self.collection = self.gate.collection(collection)  # the name is checked there
        self._indexes_ready = False

    async def ensure_indexes(self) -> None:
        """Create the subject indexes erasure selects on (idempotent, once per store)."""
        if self._indexes_ready:
            return
        for name in ("user_id", "tenant_id", "root_id"):
            await self.gate.create_index(
                "create key index", self.collection, [(name, ASCENDING)], sparse=True
            )
        self._indexes_ready = True

    @property
    def where(self) -> str:
        """``<database>.<collection>`` of the key store, for messages."""
        return str(getattr(self.collection, "full_name", self.collection.name))

    async def check_readable(self) -> None:
        """Read one key id, so a key store that cannot be read fails here, before any work.

        Raises:
            StorageError: the key store cannot be read (its server refuses the name,
                the role may not read it, or the server went away).
        """
        await self.gate.call("read key store", self.collection.find_one({}, {"_id": 1}))

    async def get(self, key_id: str) -> dict[str, Any] | None:
        """Return the key document (live or tombstone) with this id, or ``None``."""
        doc: dict[str, Any] | None = await self.gate.call(
            "read key", self.collection.find_one({"_id": _key_id(key_id)})
        )
        return doc

    async def insert_once(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Insert a key document unless its id exists; return the one that counts.

        Two writers creating the first key of a subject at once both get the winner's
        key; a writer creating the key of an erased subject gets its tombstone.
        """
        fresh = dict(doc)
        _key_id(fresh.get("_id"))
        try:
            await self.gate.call("write key", self.collection.insert_one(fresh))
            return fresh
        except DuplicateKeyError:
            existing = await self.get(str(fresh["_id"]))
        if existing is None:  # destroyed and purged by hand between the two calls
            raise InvalidInputError(f"key {fresh['_id']!r} clashed but cannot be read back")
        return existing

    async def of_subject(
        self, *, user_id: str | None = None, tenant_id: str | None = None, ledger_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the live key documents of a user (in any tenant), a tenant (all its users), or both.

        Given both, the keys of that user in that tenant. With ``ledger_id``, only that
        ledger's keys and the keys written before key ids named their ledger (which may
        be that ledger's); without it, the subject's keys in every ledger.
        """
        if user_id is None and tenant_id is None:
            raise InvalidInputError("select keys of a subject: a user id, a tenant id, or both")
        query: dict[str, Any] = {"destroyed_at": {"$exists": False}}
        for name, value in (("user_id", user_id), ("tenant_id", tenant_id)):
            if value is not None:
                query[name] = _name(name, value)
        if ledger_id is not None:
            # None matches a key document without the field: a k1 key (see subject_key).
            query["ledger_id"] = {"$in": [_name("ledger_id", ledger_id), None]}
        return await self.gate.call("read keys", cursor_list(self.collection.find(query)))

    async def of_roots(self, root_ids: list[str], *, ledger_id: str | None = None) -> list[dict[str, Any]]:
        """Return the live key documents that cover exactly these conversation trees.

        With ``ledger_id``, only keys that ledger created (a ``k1`` key, written before
        key ids named their ledger, may cover another ledger's tree of the same id).
        """
        ids = [_root_id(r) for r in root_ids]
        if not ids:
            return []
        query: dict[str, Any] = {"root_id": {"$in": ids}, "destroyed_at": {"$exists": False}}
        if ledger_id is not None:
            query["ledger_id"] = _name("ledger_id", ledger_id)
        return await self.gate.call("read keys", cursor_list(self.collection.find(query)))

    async def tombstone_among(self, key_ids: list[str]) -> dict[str, Any] | None:
        """Return the tombstone of one of these key ids (an erased mark), or ``None`` (one query)."""
        query = {"_id": {"$in": [_key_id(k) for k in key_ids]}, "destroyed_at": {"$exists": True}}
        doc: dict[str, Any] | None = await self.gate.call("read keys", self.collection.find_one(query))
        return doc

    async def tombstoned_by(self, receipt_id: str) -> list[str]:
        """Return the ids of the keys tombstoned under ``receipt_id`` (one erasure's), sorted.

        Not indexed: read only when a killed erasure's receipt is completed, and only the
        ids are read.
        """
        if type(receipt_id) is not str:
            raise InvalidInputError("receipt_id must be a string")
        query = {"receipt_id": receipt_id, "destroyed_at": {"$exists": True}}
        cursor = self.collection.find(query, {"_id": 1}).sort("_id", ASCENDING)
        docs = await self.gate.call("read keys", cursor_list(cursor))
        return [str(d["_id"]) for d in docs]

    async def live(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every live (not destroyed) key document."""
        async for doc in self.all(live_only=True):
            yield doc

    async def all(
        self, *, live_only: bool = False, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield key documents (tombstones too, unless ``live_only``) in key id order, streamed.

        Never the wrapped key: it is not read (listing needs no KEK and shows no key material).
        """
        query: dict[str, Any] = {"destroyed_at": {"$exists": False}} if live_only else {}
        projection = None if live_only else {"wrapped": 0}
        cursor = self.collection.find(query, projection).sort("_id", ASCENDING)
        if limit is not None:
            cursor = cursor.limit(limit)
        async with self.gate.translated("read keys"):
            async for doc in cursor:
                yield doc

    async def tombstones(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every key tombstone (a destroyed key: no key material) in key id order, streamed."""
        cursor = self.collection.find({"destroyed_at": {"$exists": True}}).sort("_id", ASCENDING)
        async with self.gate.translated("read keys"):
            async for doc in cursor:
                yield doc

    async def destroy(self, key_id: str, *, at: Any, receipt_id: str, kind: str | None = None) -> bool:
        """Tombstone a key id (live or never created); return whether this call did.

        The tombstone keeps the id (so the key is never re-created), the kind of its
        subject, when, and the receipt; the wrapped key and the subject fields are gone.
        An id nobody created yet is tombstoned too: erasure marks a subject erased this
        way even when its content was sealed only under per-lineage keys.
        """
        tombstone: dict[str, Any] = {
            "_id": _key_id(key_id),
            "v": 1,
            "destroyed_at": at,
            "receipt_id": receipt_id,
        }
        if kind is not None:
            tombstone["kind"] = kind
        try:
            result = await self.gate.call(
                "destroy key",
                self.collection.replace_one(
                    {"_id": key_id, "destroyed_at": {"$exists": False}}, tombstone, upsert=True
                ),
            )
        except DuplicateKeyError:
            return False  # already a tombstone: the upsert found no live key and clashed
        return bool(result.modified_count) or result.upserted_id is not None

    async def rewrap(self, key_id: str, old_wrapped: str, new_wrapped: str, kek_id: str | None) -> bool:
        """Replace a live key's wrapped form, only if it is still ``old_wrapped`` (compare and set)."""
        result = await self.gate.call(
            "rewrap key",
            self.collection.update_one(
                {"_id": _key_id(key_id), "wrapped": old_wrapped, "destroyed_at": {"$exists": False}},
                {"$set": {"wrapped": new_wrapped, "kek_id": kek_id}},
            ),
        )
        return bool(result.modified_count)


def _root_id(value: object) -> str:
    if type(value) is not str or not value:
        raise InvalidInputError(f"invalid root thread id {value!r}")
    return value


def _name(field: str, value: object) -> str:
    if type(value) is not str or not value:
        raise InvalidInputError(f"{field} must be a non-empty str")
    return value


def _key_id(value: object) -> str:
    # Checked before it reaches a query: a dict such as {"$ne": None} must never widen one.
    if type(value) is not str or not value or len(value) > 128:
        raise InvalidInputError(f"invalid key id {value!r}")
    return value
