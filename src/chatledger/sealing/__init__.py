"""Sealed message content with per-subject keys (crypto-shredding); opt-in, needs ``chatledger[seal]``.

Importing this package never needs ``cryptography``: it is imported when a key is
first used. See ``docs/sealing.md`` for the threat model and the operating procedures.
"""

from __future__ import annotations

from chatledger.sealing.keys import KEYS_DESTROYED, RewrapReport, ShredReport, destroy_subject_keys, rewrap
from chatledger.sealing.providers import DEFAULT_KEK_ENV, KeyProvider, LocalKeyProvider
from chatledger.sealing.sealer import (
    CIPHERTEXT_FIELD,
    DEFAULT_CACHE_TTL,
    SEALED_FIELD,
    DataKey,
    Sealer,
    SubjectErasedError,
    is_sealed,
    sealed_problem,
    subject_key,
)
from chatledger.storage.keys import DEFAULT_KEYS_COLLECTION, KeyStore

__all__ = [
    "CIPHERTEXT_FIELD",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_KEK_ENV",
    "DEFAULT_KEYS_COLLECTION",
    "KEYS_DESTROYED",
    "SEALED_FIELD",
    "DataKey",
    "KeyProvider",
    "KeyStore",
    "LocalKeyProvider",
    "RewrapReport",
    "Sealer",
    "ShredReport",
    "SubjectErasedError",
    "destroy_subject_keys",
    "is_sealed",
    "rewrap",
    "sealed_problem",
    "subject_key",
]
