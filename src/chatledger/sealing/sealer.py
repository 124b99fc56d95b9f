"""Sealing: each event's message content encrypted under its data subject's key, bound to its place.

:class:`Sealer` is what a :class:`~chatledger.ledger.Ledger` is given: it finds the key of
a write's data subject and opens what a read returns, keeping recently opened events.
The parts it stands on, each in its own module:

- :mod:`~chatledger.sealing.form`: the stored forms (``cl4``, written, and ``cl3``, read:
  one AES-256-GCM ciphertext per event, as BSON binary in its first message; every other
  message refers to it), and their checks without a key (:func:`sealed_problem`);
- :mod:`~chatledger.sealing.datakey`: :class:`DataKey`, the cipher that seals a batch into
  that form and opens it;
- :mod:`~chatledger.sealing.subjects`: key ids (whose key seals content written in a scope)
  and the marks that say a subject was erased;
- :mod:`~chatledger.sealing.keyring`: a process's keys, created once in the key store,
  unwrapped by the KEK provider, cached for ``cache_ttl``.

The hash chain covers the ciphertext through its SHA-256
(:func:`chatledger.hashing.event_hash`), ``verify`` needs no key, and the JSON Lines
export carries it as Extended JSON binary. The ledger never hands out a sealed
message's placeholder text: it opens the message, or raises.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, NamedTuple

from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.models import Scope
from chatledger.sealing.datakey import DataKey
from chatledger.sealing.form import (
    CIPHERTEXT_FIELD,
    PAD_MIN,
    PAD_STEP,
    SEALED_FIELD,
    SEALED_TEXT,
    check_clear,
    is_head,
    is_sealed,
    sealed_problem,
)
from chatledger.sealing.keyring import KeyRing, SubjectErasedError
from chatledger.sealing.providers import KeyProvider
from chatledger.sealing.subjects import blocking_marks, subject_key, subject_mark
from chatledger.storage.keys import KeyStore

# The names after Sealer's own lived here before sealing/ was split by responsibility:
# they stay importable from this module.
__all__ = [
    "CIPHERTEXT_FIELD",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_OPENED_EVENTS",
    "SEALED_FIELD",
    "SEALED_TEXT",
    "DataKey",
    "Reader",
    "Sealer",
    "SubjectErasedError",
    "blocking_marks",
    "is_sealed",
    "sealed_problem",
    "subject_key",
    "subject_mark",
]

#: Seconds an unwrapped data key stays cached in a process: the longest any process can
#: still read (or write) a subject's content after its key was destroyed.
DEFAULT_CACHE_TTL: Final = 60.0
#: Opened events a sealer keeps by default (``Sealer(opened_events=...)``).
DEFAULT_OPENED_EVENTS: Final = 1024


class Sealer:
    """Seals messages on append and opens them on read, with one data key per data subject.

    Give it to :class:`~chatledger.ledger.Ledger` (``Ledger(db, sealer=Sealer(...))``).
    Data keys are created on a subject's first write, stored wrapped by the provider's
    KEK in ``key_store``, and cached unwrapped in this process for ``cache_ttl``
    seconds: with a cached key, sealing and opening cost no database round trip.

    Args:
        key_store: Where the wrapped data keys live (may be another database).
        provider: Wraps and unwraps data keys (the KEK).
        cache_ttl: Seconds an unwrapped key (or an "erased" verdict) stays cached; the
            erasure delay: a process may read a destroyed key's content this long.
        per_lineage: Seal each conversation tree of a user or tenant under its own key,
            so retention destroys the key of a tree it removes (readers need not know).
        pad_to: Pad what each event seals to a size bucket, hiding its exact length: the
            next power of two of at least ``pad_to`` bytes (a power of two from 16 to
            65536), multiples of 64 KiB beyond 64 KiB. ``None`` (default): no padding.
            Readers need not know.
        compress: Deflate what each event seals (zlib) before encrypting it, where that
            makes it smaller (batches of 256 bytes and more): a typical tool-using turn
            then stores in about half the bytes. Off by default: the stored size then
            depends on how repetitive the content is, which can leak a secret to
            whoever can both read the database and put chosen text into the same batch,
            again and again (docs/sealing.md, "Compression"). Readers need not know.
        opened_events: How many opened events this process keeps (least recently read
            dropped first), so reading a page again does not decrypt it again (an agent
            reads the last page every turn); the events this process seals are kept
            too, so reading back its own appends decrypts nothing. An entry is used
            only while its key is cached and its stored ciphertext and clear fields
            are unchanged, so it adds no delay to erasure; ``forget`` drops it.
            ``0``: keep none.

    Raises:
        InvalidInputError: an argument is not usable.
    """

    def __init__(
        self,
        key_store: KeyStore,
        provider: KeyProvider,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        per_lineage: bool = False,
        pad_to: int | None = None,
        compress: bool = False,
        opened_events: int = DEFAULT_OPENED_EVENTS,
    ) -> None:
        if not isinstance(key_store, KeyStore):
            raise InvalidInputError("key_store must be a chatledger.storage.KeyStore")
        if not callable(getattr(provider, "wrap", None)) or not callable(getattr(provider, "unwrap", None)):
            raise InvalidInputError("provider must have wrap(data_key, key_id) and unwrap(wrapped, key_id)")
        if type(cache_ttl) not in (int, float) or not 0 <= cache_ttl <= 3600:
            raise InvalidInputError("cache_ttl must be a number of seconds from 0 to 3600")
        if type(per_lineage) is not bool:
            raise InvalidInputError("per_lineage must be a bool")
        if pad_to is not None and (
            type(pad_to) is not int or not PAD_MIN <= pad_to <= PAD_STEP or pad_to & (pad_to - 1)
        ):
            raise InvalidInputError(f"pad_to must be None or a power of two from {PAD_MIN} to {PAD_STEP}")
        if type(compress) is not bool:
            raise InvalidInputError("compress must be a bool")
        if type(opened_events) is not int or not 0 <= opened_events <= 1_000_000:
            raise InvalidInputError("opened_events must be an int from 0 to 1000000")
        # As given; the key ring below works with these values (set them here, not later).
        self.key_store, self.provider, self.cache_ttl = key_store, provider, float(cache_ttl)
        self.per_lineage, self.pad_to, self.opened_events = per_lineage, pad_to, opened_events
        self.compress = compress
        self._keys = KeyRing(key_store, provider, self.cache_ttl, pad_to, compress)
        # event _id -> (its stored marker and ciphertext, the key that opened it, its opened messages)
        self._opened: OrderedDict[str, tuple[str, bytes, DataKey, list[dict[str, Any]]]] = OrderedDict()

    def forget(self, key_ids: Sequence[str] | None = None) -> None:
        """Drop cached keys (all, or these) and what they opened: the next use reads the key store again."""
        self._keys.forget(key_ids)
        if key_ids is None:
            self._opened.clear()
            return
        gone = set(key_ids)
        for event_id in [e for e, seen in self._opened.items() if seen[2].key_id in gone]:
            del self._opened[event_id]

    def keep_sealed(self, doc: Mapping[str, Any], stored: Sequence[Mapping[str, Any]], key: DataKey) -> None:
        """Keep an event this process just sealed and stored as if it had been opened.

        Reading it back (an agent reads its last page every turn) then decrypts nothing.
        The entry obeys the rules of every opened event: used only while ``key`` is the
        cached key and the stored marker and ciphertext are these; ``forget`` drops it.

        Args:
            doc: The event document as stored (its messages sealed by ``key``).
            stored: The clear (encoded) messages that were sealed: what opening gives back.
            key: The key that sealed them.
        """
        if self._keeps():
            first = doc["messages"][0]
            # Copies: the caller's list and dicts stay the caller's (values are str, immutable).
            self._keep(
                str(doc["_id"]), first[SEALED_FIELD], first[CIPHERTEXT_FIELD], key, [dict(m) for m in stored]
            )

    def _keeps(self) -> bool:
        """Whether opened (and sealed) events are kept: not with ``opened_events=0`` or ``cache_ttl=0``."""
        return self.opened_events > 0 and self.cache_ttl > 0

    def _keep(
        self, event_id: str, marker: str, ciphertext: bytes, key: DataKey, opened: list[dict[str, Any]]
    ) -> None:
        """Keep an event's opened messages, dropping the least recently read beyond ``opened_events``."""
        self._opened[event_id] = (marker, ciphertext, key, opened)
        if len(self._opened) > self.opened_events:
            self._opened.popitem(last=False)

    def _kept(self, event_id: str, marker: str, ciphertext: bytes) -> list[dict[str, Any]] | None:
        """The messages kept for this event, if still valid: same marker and ciphertext, key still cached."""
        seen = self._opened.get(event_id)
        if seen is None:
            return None
        if seen[0] == marker and seen[1] == ciphertext and self._keys.live(seen[2].key_id) is seen[2]:
            self._opened.move_to_end(event_id)
            return seen[3]
        del self._opened[event_id]  # stale: its key expired or was destroyed, or it changed
        return None

    def cached_key(self, scope: Scope, root_id: str, ledger_id: str | None = None) -> DataKey | None:
        """Return the cached key to seal a write to an existing conversation in ``scope``, or ``None``.

        The append path's shortcut (no coroutine, no round trip); ``None`` (not cached,
        expired, or the subject known erased) means: ask :meth:`key_for`, which decides.
        ``ledger_id`` is the writing ledger's (see :func:`subject_key`).
        """
        return self._keys.live(
            subject_key(scope.tenant_id, scope.user_id, root_id, self.per_lineage, ledger_id)[0]
        )

    async def key_for(
        self, scope: Scope, root_id: str, *, fresh: bool = False, ledger_id: str | None = None
    ) -> DataKey:
        """Return the key to seal a write in ``scope`` (on the tree ``root_id``), creating it once.

        With ``fresh`` (the write starts a new conversation), a cached key is checked
        against the key store first, so a subject erased by another process gets no new
        conversation even within the cache TTL. Writes to existing conversations need no
        such check: the removal sealed their next positions. ``ledger_id`` is the
        writing ledger's: its keys are its own (see :func:`subject_key`).

        Raises:
            SubjectErasedError: the subject's key was destroyed by erasure (nothing is written).
            KeyUnavailableError: the key exists but cannot be unwrapped with this provider.
            StorageUnavailableError: the key store could not be reached.
        """
        key_id, subject = subject_key(scope.tenant_id, scope.user_id, root_id, self.per_lineage, ledger_id)
        marks = [m for m in blocking_marks(scope.tenant_id, scope.user_id, ledger_id) if m != key_id]
        return await self._keys.to_write(key_id, subject, marks, fresh=fresh)

    def reader(self, scope: Scope, root_id: str, ledger_id: str | None) -> Reader:
        """Return who reads content of the tree ``root_id`` in ``scope`` of the ledger ``ledger_id``.

        Given to :meth:`open_messages`, it keeps a thread moved into another scope by a
        database writer (which ``verify`` without a key cannot tell) from opening there.
        """
        return Reader(scope.tenant_id, scope.user_id, root_id, ledger_id)

    async def open_messages(self, doc: Mapping[str, Any], reader: Reader | None = None) -> Any:
        """Return an event's messages with every sealed one opened (the stored list itself if none is).

        ``reader`` (:meth:`reader`): the content must be sealed under a key of its data
        subject (per lineage or not, ``k1`` or of any ledger); ``None`` (admin tools,
        which read every scope): any key.

        Raises:
            ContentErasedError: the content's key was destroyed by erasure.
            KeyUnavailableError: the key is missing (no tombstone) or cannot be unwrapped.
            IntegrityError: a sealed message is malformed, altered or moved.
        """
        messages = doc.get("messages")
        if type(messages) is not list or not messages:
            return messages  # the caller reports a malformed event as it always did
        event_id = str(doc.get("_id"))
        first = messages[0]
        if not is_head(first):
            # A clear event. A sealed message met here has no ciphertext in the event's first message.
            for index, item in enumerate(messages):
                if isinstance(item, Mapping) and SEALED_FIELD in item:
                    self._opened.pop(event_id, None)  # what it was when opened is gone
                    raise IntegrityError(f"event {event_id!r}: sealed message {index} is malformed")
            return messages
        marker: str = first[SEALED_FIELD]
        parts = marker.split(":")
        ciphertext = first.get(CIPHERTEXT_FIELD)
        # An empty key id or fingerprint is a malformed marker (as sealed_problem says), not
        # a key the key store lacks: it must not reach the key store as a lookup.
        if (
            len(parts) != 3
            or not parts[1]
            or not parts[2]
            or type(ciphertext) is not bytes
            or type(first.get("role")) is not str
        ):
            raise IntegrityError(f"event {event_id!r}: its sealed first message is malformed")
        kept = self._kept(event_id, marker, ciphertext)
        if kept is not None:
            _check_reader(parts[1], self._opened[event_id][2], reader, event_id)
            # Opened before, same ciphertext, key still cached: no decryption.
            check_clear(messages, kept, event_id, parts[0])
            return [dict(m) for m in kept]  # copies: the kept ones stay as opened
        key = self._keys.live(parts[1])  # the hot path of every sealed read: no await
        if key is None or key.fingerprint != parts[2]:
            try:
                key = await self._keys.to_open(parts[1], parts[2], event_id)
            except InvalidInputError as e:
                # A key id no key store accepts (too long): the stored marker is bad, not the caller's input.
                raise IntegrityError(
                    f"event {event_id!r}: its sealed first message is malformed ({e})"
                ) from e
        _check_reader(parts[1], key, reader, event_id)
        opened = key.open_event(messages, event_id, ciphertext)
        if not self._keeps():
            return opened
        self._keep(event_id, marker, ciphertext, key, opened)
        return [dict(m) for m in opened]


class Reader(NamedTuple):
    """Who reads sealed content: the scope's tenant and user, the tree's root thread, the ledger."""

    tenant_id: str | None
    user_id: str | None
    root_id: str
    ledger_id: str | None


@lru_cache(maxsize=4096)
def _readable_keys(
    tenant_id: str | None, user_id: str | None, root_id: str, ledger_id: str | None
) -> frozenset[str]:
    """The key ids a writer in this scope seals under: per lineage or not, ``k2`` of the ledger or ``k1``."""
    return frozenset(
        subject_key(tenant_id, user_id, root_id, per_lineage, lid)[0]
        for per_lineage in (False, True)
        for lid in dict.fromkeys((ledger_id, None))
    )


def _check_reader(key_id: str, key: DataKey, reader: Reader | None, event_id: str) -> None:
    """Refuse content sealed under another data subject's key than the reader's.

    Raises:
        IntegrityError: its thread was moved into this scope (thread and events rescoped,
            their hashes recomputed: only the key id tells).
    """
    if reader is None or key_id in _readable_keys(*reader):
        return
    # A ledger moved to another database (another default id) keeps reading its content:
    # the key names its ledger, and the key id is that ledger's key of this same subject.
    if key.ledger_id not in (None, reader.ledger_id) and key_id in _readable_keys(*reader[:3], key.ledger_id):
        return
    raise IntegrityError(
        f"event {event_id!r} does not open in this scope: it is sealed under key {key_id!r}, another "
        "data subject's (its thread was moved here from another user, tenant or conversation)"
    )
