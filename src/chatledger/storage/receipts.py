"""The ``audit`` collection: receipts of admin actions, and the deployment's marker secret."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from chatledger.errors import ConcurrencyError, IntegrityError, InvalidInputError
from chatledger.storage.driver import cursor_list
from chatledger.storage.gate import CollectionStore

__all__ = ["ReceiptStore"]

#: ``_id`` of the one non-receipt document: the secret that authenticates cursor markers.
_SECRET_ID: Final = "chatledger:marker-secret"
_SECRET_KIND: Final = "config"
#: Ids named in one ``$in`` query (a bounded command, whatever the backlog).
_IDS_PER_QUERY: Final = 1_000


def _hashable(value: object) -> bool:
    """Whether ``value`` can be kept in a set: a stored id that is a document or a list cannot.

    Such a malformed id names no receipt a set can match; it must not crash the check.
    """
    try:
        hash(value)
    except TypeError:
        return False
    return True


class ReceiptStore(CollectionStore):
    """Named operations on the audit collection."""

    async def ensure_indexes(self) -> None:
        """Create the receipts indexes: by receipt referred to (``for_ids``), by thread named (``about``)."""
        for field in ("receipt_id", "thread_id", "thread_ids"):
            # One per command: FerretDB creates indexes one at a time.
            await self.gate.create_index("create index", self.collection, [(field, ASCENDING)], name=field)

    async def insert(self, doc: Mapping[str, Any]) -> None:
        """Insert one receipt.

        Raises:
            ConcurrencyError: a receipt with this id exists (another run wrote it first).
        """
        try:
            await self.gate.call("write receipt", self.collection.insert_one(dict(doc)))
        except DuplicateKeyError as e:
            raise ConcurrencyError(f"receipt {doc.get('_id')!r} was already written (by another run)") from e

    async def insert_once(self, doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """Insert one receipt unless its id exists: ``None`` when inserted, else the stored one.

        An import re-run finds its own receipts there; the caller compares the two.
        """
        try:
            await self.gate.call("write receipt", self.collection.insert_one(dict(doc)))
            return None
        except DuplicateKeyError:
            existing: dict[str, Any] | None = await self.gate.call(
                "read receipt", self.collection.find_one({"_id": doc.get("_id")})
            )
        if existing is None:  # removed by hand between the two calls
            raise IntegrityError(f"receipt {doc.get('_id')!r} clashed but cannot be read back")
        return existing

    async def of_kind(
        self,
        kind: str,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Return every receipt of one kind (only ``_id`` and ``fields``, if given)."""
        projection = None if fields is None else dict.fromkeys(fields, 1)
        return await self.gate.call(
            "read receipts", cursor_list(self.collection.find({"kind": kind}, projection))
        )

    async def unanswered(self, kind: str, answer: str) -> list[dict[str, Any]]:
        """Return the receipts of ``kind`` that no receipt of kind ``answer`` refers to, whole.

        Only ids cross the wire until the unanswered ones are known, so the memory of a
        start-up check grows with the ids in the audit trail, not with the bodies of every
        receipt ever written (a removal receipt lists every thread and head it removed).
        """
        answered = await self.referred_ids(answer)
        unanswered: list[object] = []
        async with self.gate.translated("read receipts"):
            async for doc in self.collection.find({"kind": kind}, {"_id": 1}):
                if not _hashable(doc.get("_id")) or doc.get("_id") not in answered:
                    unanswered.append(doc.get("_id"))
        found: list[dict[str, Any]] = []
        for start in range(0, len(unanswered), _IDS_PER_QUERY):
            chunk = unanswered[start : start + _IDS_PER_QUERY]
            query = {"_id": {"$in": chunk}, "kind": kind}
            found += await self.gate.call("read receipts", cursor_list(self.collection.find(query)))
        return found

    async def referred_ids(self, kind: str) -> set[object]:
        """Return the ``receipt_id`` every receipt of one kind refers to (a completion's removal)."""
        referred: set[object] = set()
        async with self.gate.translated("read receipts"):
            # Streamed into the set: no list of every receipt is held beside it.
            async for doc in self.collection.find({"kind": kind}, {"receipt_id": 1, "_id": 0}):
                if _hashable(doc.get("receipt_id")):
                    referred.add(doc.get("receipt_id"))
        return referred

    async def for_ids(self, receipt_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the receipts with these ids and the receipts that refer to them."""
        ids = [str(i) for i in receipt_ids]
        if not ids:
            return []
        # Two queries, each on its index: DocumentDB plans an ``$or`` of the two as a scan.
        found = await self.gate.call(
            "read receipts", cursor_list(self.collection.find({"_id": {"$in": ids}}))
        )
        seen = {d["_id"] for d in found}
        referring = self.collection.find({"receipt_id": {"$in": ids}})
        found += [
            d for d in await self.gate.call("read receipts", cursor_list(referring)) if d["_id"] not in seen
        ]
        return found

    async def about(self, thread_ids: Sequence[str], kinds: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """Yield receipts of these kinds that name any of these threads (each receipt once)."""
        # Two queries, each on its index (a receipt names one thread or a list of them):
        # DocumentDB plans an ``$or`` of the two as a scan of the audit trail.
        seen: set[object] = set()
        for field in ("thread_id", "thread_ids"):
            query = {field: {"$in": list(thread_ids)}, "kind": {"$in": list(kinds)}}
            async with self.gate.translated("read receipts"):
                async for doc in self.collection.find(query):
                    if doc.get("_id") not in seen:
                        seen.add(doc.get("_id"))
                        yield doc

    async def every(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every receipt in id order, streamed (an export's audit trail)."""
        async with self.gate.translated("read receipts"):
            async for doc in self.collection.find({}).sort("_id", ASCENDING):
                yield doc

    async def has_erasure(self, field: str, value: str) -> bool:
        """Whether a removal receipt of an erasure whose scope has ``field`` = ``value`` exists."""
        if field not in ("user_id", "tenant_id"):
            raise InvalidInputError(f"an erasure's scope is by user_id or tenant_id, not {field!r}")
        query = {"kind": "removal", "action": "erasure", f"scope.{field}": str(value)}
        found = await self.gate.call("read receipts", self.collection.find_one(query, {"_id": 1}))
        return found is not None

    async def marker_secret(self) -> bytes:
        """Return the deployment's marker secret, creating it on first use (insert-once)."""
        doc = await self.gate.call("read secret", self.collection.find_one({"_id": _SECRET_ID}))
        if doc is None:
            fresh = {"_id": _SECRET_ID, "kind": _SECRET_KIND, "secret": secrets.token_hex(32)}
            try:
                await self.gate.call("write secret", self.collection.insert_one(fresh))
                doc = fresh
            except DuplicateKeyError:
                doc = await self.gate.call("read secret", self.collection.find_one({"_id": _SECRET_ID}))
        secret = doc.get("secret") if doc is not None else None
        if type(secret) is not str or len(secret) < 32:
            raise IntegrityError(f"audit document {_SECRET_ID!r} is malformed")
        return secret.encode("ascii")
