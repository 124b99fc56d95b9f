"""Sealed message content with per-subject keys (crypto-shredding); opt-in, needs ``chatledger[seal]``.

Importing this package never needs ``cryptography``: it is imported when a key is
first used. See ``docs/sealing.md`` for the threat model and the operating procedures.
"""

from __future__ import annotations

from chatledger.sealing.datakey import DataKey
from chatledger.sealing.form import CIPHERTEXT_FIELD, SEALED_FIELD, is_sealed, sealed_problem
from chatledger.sealing.keyring import SubjectErasedError
from chatledger.sealing.keys import KEYS_DESTROYED, RewrapReport, ShredReport, destroy_subject_keys, rewrap
from chatledger.sealing.providers import DEFAULT_KEK_ENV, KeyProvider, LocalKeyProvider
from chatledger.sealing.sealer import DEFAULT_CACHE_TTL, Sealer
from chatledger.sealing.subjects import subject_key
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
