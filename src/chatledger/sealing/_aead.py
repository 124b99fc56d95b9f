"""AES-256-GCM from ``cryptography``, imported only when sealing is actually used.

The library must import (and run unsealed) without ``cryptography`` installed: it is
the optional ``seal`` extra. Every ``cryptography`` exception stays in this module and
in the callers that catch :data:`InvalidTag` right where they open something.
"""

from __future__ import annotations

import os
from typing import Any, Final

from chatledger.errors import InvalidInputError

__all__ = ["KEY_BYTES", "NONCE_BYTES", "aead", "invalid_tag", "nonce"]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


def _module() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import aead as module
    except ImportError as e:  # exercised by a test that blocks the import
        raise InvalidInputError(
            "sealing needs the 'cryptography' package: pip install 'chatledger[seal]'"
        ) from e
    return module


def aead(key: bytes) -> Any:
    """Return an AES-256-GCM cipher object for a 32-byte key."""
    if type(key) is not bytes or len(key) != KEY_BYTES:
        raise InvalidInputError(f"an AES-256 key is {KEY_BYTES} bytes")
    return _module().AESGCM(key)


def invalid_tag() -> type[Exception]:
    """Return ``cryptography``'s ``InvalidTag`` (authentication failed) exception class."""
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def nonce() -> bytes:
    """Return a fresh random 96-bit GCM nonce (random nonces: safe far beyond 2**32 seals per key)."""
    return os.urandom(NONCE_BYTES)
