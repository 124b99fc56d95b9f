"""One subject's unwrapped data key: seals a batch into the stored form, and opens it again.

The form itself (markers, framing, padding, associated data, the clear-field check) is
:mod:`chatledger.sealing.form`'s; this module adds the cipher.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from chatledger.errors import IntegrityError
from chatledger.sealing._aead import NONCE_BYTES, aead, invalid_tag, nonce
from chatledger.sealing.form import (
    CIPHERTEXT_FIELD,
    FORM,
    FRAME_FROM,
    FRAMED,
    SEALED_FIELD,
    TAG_BYTES,
    ad_event_part,
    ad_key_part,
    check_clear,
    framed,
    padded_size,
    placeholders,
    unframed,
)

__all__ = ["DataKey", "fingerprint"]


def fingerprint(key: bytes) -> str:
    """Return a key's fingerprint, stored beside it and in each marker."""
    # Tells a key store holding another key for the same id (misconfiguration) apart
    # from tampering; 64 bits of a keyed digest reveal nothing usable about the key.
    return hashlib.blake2b(b"chatledger-key-fingerprint", key=key, digest_size=8).hexdigest()


class DataKey:
    """One subject's unwrapped data key: seals and opens that subject's events.

    Args:
        key_id: The key's id (bound into every ciphertext).
        key: The 32-byte data key.
        pad_to: Pad each sealed plaintext to a size bucket of at least this many bytes
            (see :class:`~chatledger.sealing.Sealer`); ``None``: no padding.
    """

    __slots__ = ("_ad", "_aead", "_marker", "_pad_to", "fingerprint", "key_id")

    def __init__(self, key_id: str, key: bytes, pad_to: int | None = None) -> None:
        self.key_id = key_id
        self.fingerprint = fingerprint(key)
        self._aead = aead(key)  # one cipher object per key, made once: reads reuse it
        self._pad_to = pad_to
        self._marker = f"{FORM}:{key_id}:{self.fingerprint}"
        self._ad = ad_key_part(key_id)  # the key's part of the associated data, made once

    def __repr__(self) -> str:
        return f"DataKey({self.key_id!r})"  # never the key

    def seal(self, stored: Sequence[Mapping[str, Any]], event_id: str) -> list[dict[str, Any]]:
        """Return the sealed (``cl3``) form of an encoded batch, for the event ``event_id``.

        The whole batch, as encoded, is one ciphertext in the first message; the others
        refer to it. ``role`` and ``message_id`` stay in clear too (and are checked against
        the sealed copy on open).
        """
        out = placeholders(stored)
        if not out:
            return out
        plain = orjson.dumps(list(stored))
        if len(plain) > FRAME_FROM:
            # Content that is itself JSON (tool results: the stored "rest"/"payload", and
            # quotes or newlines in text) is escaped again inside a JSON list, up to ~1.4x
            # its size; a framed plaintext holds the stored strings' bytes as they are.
            frame = framed(stored)
            if frame is not None and len(frame) < len(plain):
                plain = frame
        if self._pad_to is not None:
            # Spaces after the JSON (or the frame): JSON ignores them and a frame knows
            # its lengths, so opening needs no length field.
            plain += b" " * (padded_size(len(plain), self._pad_to) - len(plain))
        iv = nonce()
        out[0][SEALED_FIELD] = self._marker
        out[0][CIPHERTEXT_FIELD] = iv + self._aead.encrypt(iv, plain, self._ad + ad_event_part(event_id))
        return out

    def open_event(self, messages: Sequence[Any], event_id: str, ciphertext: bytes) -> list[dict[str, Any]]:
        """Return the stored (clear) form of a sealed event's messages.

        Args:
            messages: The event's messages as stored (the first holds the ciphertext).
            event_id: The ``_id`` of the event they were read from.
            ciphertext: The first message's ``ciphertext`` field.

        Raises:
            IntegrityError: the ciphertext was altered or moved from another event, or
                the event's messages were swapped, dropped, added or relabelled.
        """
        if type(ciphertext) is not bytes or len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise IntegrityError(f"event {event_id!r}: its sealed ciphertext is not {FORM} or is truncated")
        view = memoryview(ciphertext)  # slices without copying the ciphertext
        try:
            plain = self._aead.decrypt(
                view[:NONCE_BYTES], view[NONCE_BYTES:], self._ad + ad_event_part(event_id)
            )
            opened = unframed(plain, event_id) if plain[:1] == FRAMED else orjson.loads(plain)
        except (invalid_tag(), ValueError) as e:
            raise IntegrityError(
                f"event {event_id!r}: its sealed content does not open (the ciphertext was altered, "
                "or moved here from another event)"
            ) from e
        if type(opened) is not list:
            raise IntegrityError(f"event {event_id!r}: its sealed content holds no list of messages")
        check_clear(messages, opened, event_id)
        return opened
