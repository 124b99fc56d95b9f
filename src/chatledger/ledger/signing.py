"""Signed cursors: a short MAC over scope, thread id and offset, with key rotation.

With signing keys configured, every cursor a binding hands out carries ``mac``, and a
cursor whose MAC is missing or does not verify under any of the keys is refused. This
is what makes it safe to keep a session dict in a browser or round-trip it through a
stateless API: the holder can keep and replay its own cursors, but cannot forge one
for another thread, another offset or another scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Final

from chatledger.errors import InvalidCursorError, InvalidInputError
from chatledger.models import Cursor, Scope

__all__ = ["MIN_KEY_BYTES", "CursorSigner", "mac"]

#: Shortest accepted key: 128 bits.
MIN_KEY_BYTES: Final = 16
#: Characters of the base64url MAC kept in a cursor (22 characters: 132 bits).
_MAC_CHARS: Final = 22


def _key(key: object) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if not isinstance(raw, bytes) or len(raw) < MIN_KEY_BYTES:
        raise InvalidInputError(f"each signing key must be a str or bytes of at least {MIN_KEY_BYTES} bytes")
    return raw


def mac(key: bytes, purpose: str, scope: Scope, thread_id: str, offset: int) -> str:
    """Return the MAC of a position for one purpose (``"cursor"`` or ``"marker"``)."""
    message = json.dumps(
        [f"chatledger-{purpose}-v1", scope.tenant_id, scope.user_id, scope.source_id, thread_id, offset],
        ensure_ascii=False,
    ).encode("utf-8")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:_MAC_CHARS]


class CursorSigner:
    """Signs cursors with the first key; accepts cursors signed with any of them (rotation).

    Args:
        keys: Secret keys, newest first. To rotate: put the new key first, keep the old
            one until every session signed with it has expired, then drop it.

    Raises:
        InvalidInputError: no key, or a key shorter than 16 bytes.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if isinstance(keys, (str, bytes)) or not keys:
            raise InvalidInputError("signing_keys must be a non-empty list of keys (newest first)")
        self._keys = [_key(k) for k in keys]

    @property
    def current(self) -> bytes:
        """The key new MACs are made with."""
        return self._keys[0]

    def sign(self, scope: Scope, cursor: Cursor) -> Cursor:
        """Return ``cursor`` carrying its MAC for ``scope``."""
        tag = mac(self.current, "cursor", scope, cursor.thread_id, cursor.offset)
        return Cursor(thread_id=cursor.thread_id, offset=cursor.offset, mac=tag)

    def check(self, scope: Scope, cursor: Cursor) -> Cursor:
        """Return the unsigned cursor if its MAC verifies for ``scope`` under any key.

        Raises:
            InvalidCursorError: the MAC is missing or wrong.
        """
        if cursor.mac is None:
            raise InvalidCursorError("this ledger signs its cursors, and the cursor carries no mac")
        for key in self._keys:
            if hmac.compare_digest(mac(key, "cursor", scope, cursor.thread_id, cursor.offset), cursor.mac):
                return cursor.unsigned()
        raise InvalidCursorError(
            "the cursor's mac does not verify (forged, altered, or signed with a retired key)"
        )
