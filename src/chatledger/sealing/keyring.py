"""A process's data keys: created once per subject in the key store, unwrapped by the KEK provider, cached.

A key is cached unwrapped for ``cache_ttl`` seconds, and so is the verdict "destroyed":
with a cached key, sealing and opening cost no database round trip, and the TTL is the
longest a process can still use a key after it was destroyed elsewhere.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chatledger.errors import ContentErasedError, KeyUnavailableError
from chatledger.models import utc_now_ms
from chatledger.sealing._aead import KEY_BYTES
from chatledger.sealing.datakey import DataKey, fingerprint
from chatledger.sealing.providers import KeyProvider, provider_call, wrapped_of
from chatledger.storage.keys import KeyStore, is_tombstone, key_kind

__all__ = ["KeyRing", "SubjectErasedError"]

_KEY_DOC_VERSION: Final = 1
_MAX_CACHED: Final = 10_000


class SubjectErasedError(ContentErasedError):
    """Nothing can be written for this data subject: its key was destroyed by erasure."""


class KeyRing:
    """The data keys this process uses: each read from (or created once in) the key store, then cached.

    Args:
        key_store: Where the wrapped data keys live.
        provider: Wraps and unwraps data keys (the KEK).
        cache_ttl: Seconds an unwrapped key (or a "destroyed" verdict) stays cached.
        pad_to: Given to each :class:`DataKey` (its padding bucket).
        compress: Given to each :class:`DataKey` (whether it deflates what it seals).
    """

    def __init__(
        self,
        key_store: KeyStore,
        provider: KeyProvider,
        cache_ttl: float,
        pad_to: int | None,
        compress: bool = False,
    ) -> None:
        self.key_store = key_store
        self.provider = provider
        self.cache_ttl = cache_ttl
        self.pad_to = pad_to
        self.compress = compress
        # key id -> (monotonic expiry, the key, or None once the key is known destroyed)
        self._cache: OrderedDict[str, tuple[float, DataKey | None]] = OrderedDict()

    def live(self, key_id: str) -> DataKey | None:
        """Return the cached, unexpired key ``key_id``; ``None``: ask the key store (or it is destroyed)."""
        hit = self._cache.get(key_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def forget(self, key_ids: Sequence[str] | None = None) -> None:
        """Drop cached keys (all, or these): the next use reads the key store again."""
        if key_ids is None:
            self._cache.clear()
        else:
            for key_id in key_ids:
                self._cache.pop(key_id, None)

    def _cached(self, key_id: str) -> tuple[bool, DataKey | None]:
        hit = self._cache.get(key_id)
        if hit is None or hit[0] <= time.monotonic():
            return False, None
        return True, hit[1]

    def _remember(self, key_id: str, key: DataKey | None) -> None:
        self._cache[key_id] = (time.monotonic() + self.cache_ttl, key)
        self._cache.move_to_end(key_id)
        if len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

    async def to_write(
        self, key_id: str, subject: tuple[tuple[str, str], ...], marks: list[str], *, fresh: bool
    ) -> DataKey:
        """Return the key ``key_id`` of ``subject`` to seal a write, creating it once.

        ``marks``: the erased marks that forbid creating it (see :meth:`_create`). With
        ``fresh`` (a new conversation), a cached key is checked against the key store
        first, so a subject erased by another process gets no new conversation even
        within the cache TTL.

        Raises:
            SubjectErasedError: the key was destroyed by erasure (nothing is written).
            KeyUnavailableError: the key exists but cannot be unwrapped with this provider.
            StorageUnavailableError: the key store could not be reached.
        """
        hit, key = self._cached(key_id)
        if hit and key is not None and fresh:
            stored = await self.key_store.get(key_id)
            if stored is None or is_tombstone(stored):
                self._cache.pop(key_id, None)
                hit = False  # decided below from the store: erased, or (missing) created once
        if not hit:
            doc = await self.key_store.get(key_id)
            if doc is None:
                doc = await self._create(key_id, subject, marks)
            key = self._load(key_id, doc)
        if key is None:
            raise SubjectErasedError(
                f"the data subject of this scope was erased (key {key_id!r} destroyed): "
                "nothing can be written for it"
            )
        return key

    async def _create(
        self, key_id: str, subject: tuple[tuple[str, str], ...], marks: list[str]
    ) -> dict[str, Any]:
        """Create a subject's key once; return the key document that counts (maybe a tombstone).

        ``marks`` are the erased marks that cover the scope (:func:`blocking_marks`: the
        subject's own key id when ``key_id`` is a per-lineage key, the user's in every
        tenant, the tenant's, the ``k1`` ones): no key may appear for an erased subject.
        They are checked before the insert and again after it (one query each), because
        erasure tombstones the mark *before* it lists the subject's keys: a key inserted
        before the mark was set is listed and destroyed by that erasure; one inserted
        after is seen here and destroyed at once.
        """
        if marks and (erased := await self.key_store.tombstone_among(marks)) is not None:
            return erased
        raw = secrets.token_bytes(KEY_BYTES)
        doc: dict[str, Any] = {
            "_id": key_id,
            "v": _KEY_DOC_VERSION,
            **dict(subject),
            "wrapped": base64.b64encode(provider_call(self.provider, "wrap", raw, key_id)).decode("ascii"),
            "kek_id": getattr(self.provider, "kek_id", None),
            "fp": fingerprint(raw),
            "created_at": utc_now_ms(),
        }
        await self.key_store.ensure_indexes()
        # Insert-once on the deterministic id: a concurrent creator's key wins for both,
        # and a destroyed key's tombstone comes back instead of a new key.
        stored = await self.key_store.insert_once(doc)
        if marks and not is_tombstone(stored):
            erased = await self.key_store.tombstone_among(marks)
            if erased is not None:
                await self.key_store.destroy(
                    key_id, at=utc_now_ms(), receipt_id=str(erased.get("receipt_id")), kind=key_kind(stored)
                )
                return erased
        return stored

    def _load(self, key_id: str, doc: Mapping[str, Any]) -> DataKey | None:
        """Return the unwrapped key of a key document (``None``: destroyed), and cache the verdict."""
        if is_tombstone(doc):
            self._remember(key_id, None)
            return None
        blob = wrapped_of(doc)
        if not blob:
            raise KeyUnavailableError(f"key document {key_id!r} holds no wrapped key (damaged key store)")
        unwrapped = provider_call(self.provider, "unwrap", blob, key_id)
        ledger_id = doc.get("ledger_id")
        key = DataKey(
            key_id,
            unwrapped,
            self.pad_to,
            self.compress,
            ledger_id=ledger_id if type(ledger_id) is str else None,
        )
        if doc.get("fp") not in (None, key.fingerprint):
            raise KeyUnavailableError(
                f"key {key_id!r} does not match its stored fingerprint (damaged key store)"
            )
        self._remember(key_id, key)
        return key

    async def to_open(self, key_id: str, fingerprint: str, event_id: str) -> DataKey:
        """Return the key to open content sealed under ``key_id``; the caller has tried :meth:`live`.

        Raises:
            ContentErasedError: the key was destroyed by erasure.
            KeyUnavailableError: the key is missing (no tombstone), cannot be unwrapped, or
                is not the one that sealed the content (``fingerprint``).
        """
        hit, key = self._cached(key_id)
        if not hit:
            doc = await self.key_store.get(key_id)
            if doc is None:
                raise KeyUnavailableError(
                    f"event {event_id!r} is sealed under key {key_id!r}, which the key store does not hold "
                    "(wrong key database or collection?); it was not erased: erasure leaves a tombstone"
                )
            key = self._load(key_id, doc)
        if key is None:
            raise ContentErasedError(
                f"event {event_id!r}: its content was erased (key {key_id!r} destroyed) and can never be read"
            )
        if fingerprint != key.fingerprint:
            raise KeyUnavailableError(
                f"event {event_id!r} was sealed under another key than the key store's {key_id!r} "
                "(a key re-created in a wrong key store, or the marker was altered: run verify)"
            )
        return key
