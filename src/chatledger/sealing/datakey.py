"""One subject's unwrapped data key: seals a batch into the stored form, and opens it again.

The forms themselves (markers, framing, compression, padding, associated data, the
clear-field check) are :mod:`chatledger.sealing.form`'s; this module adds the cipher.
It writes ``cl4`` and opens ``cl4`` and ``cl3``.
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
    FORMS,
    FRAME_FROM,
    FRAMED,
    SEALED_FIELD,
    TAG_BYTES,
    ad_clear_part,
    ad_event_part,
    ad_key_part,
    check_clear,
    form_of,
    framed,
    packed,
    padded_size,
    placeholders,
    unframed,
    unpacked,
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
        compress: Deflate a batch's plaintext before sealing it where that makes it
            smaller (see :class:`~chatledger.sealing.Sealer`).
        ledger_id: The ledger its key document names (``None``: a ``k1`` key, or not known).
    """

    __slots__ = (
        "_ad",
        "_ad3",
        "_aead",
        "_compress",
        "_marker",
        "_pad_to",
        "fingerprint",
        "key_id",
        "ledger_id",
    )

    def __init__(
        self,
        key_id: str,
        key: bytes,
        pad_to: int | None = None,
        compress: bool = False,
        *,
        ledger_id: str | None = None,
    ) -> None:
        self.key_id = key_id
        self.ledger_id = ledger_id
        self.fingerprint = fingerprint(key)
        self._aead = aead(key)  # one cipher object per key, made once: reads reuse it
        self._pad_to = pad_to
        self._compress = compress
        self._marker = f"{FORM}:{key_id}:{self.fingerprint}"
        # The key's part of the associated data in each form, made once.
        self._ad = ad_key_part(key_id)
        self._ad3 = ad_key_part(key_id, "cl3")

    def __repr__(self) -> str:
        return f"DataKey({self.key_id!r})"  # never the key

    def seal(self, stored: Sequence[Mapping[str, Any]], event_id: str) -> list[dict[str, Any]]:
        """Return the sealed (``cl4``) form of an encoded batch, for the event ``event_id``.

        The whole batch, as encoded, is one ciphertext in the first message; the others
        refer to it. ``role`` and ``message_id`` stay in clear, bound to the ciphertext
        by its associated data.
        """
        out = placeholders(stored)
        if not out:
            return out
        plain = packed(stored, self._compress)
        if self._pad_to is not None:
            # Spaces after the frame (or the deflated stream, or the JSON): opening knows
            # where each ends, so it needs no length field.
            plain += b" " * (padded_size(len(plain), self._pad_to) - len(plain))
        iv = nonce()
        out[0][SEALED_FIELD] = self._marker
        ad = self._ad + ad_event_part(event_id) + ad_clear_part(out, event_id)
        out[0][CIPHERTEXT_FIELD] = iv + self._aead.encrypt(iv, plain, ad)
        return out

    def _seal_cl3(self, stored: Sequence[Mapping[str, Any]], event_id: str) -> list[dict[str, Any]]:
        """Return the ``cl3`` form of a batch (written before ``cl4``): kept to test and measure readers."""
        out = placeholders(stored, "cl3")
        if not out:
            return out
        plain = orjson.dumps(list(stored))
        if len(plain) > FRAME_FROM:
            frame = framed(stored)
            if frame is not None and len(frame) < len(plain):
                plain = frame
        if self._pad_to is not None:
            plain += b" " * (padded_size(len(plain), self._pad_to) - len(plain))
        iv = nonce()
        out[0][SEALED_FIELD] = f"cl3:{self.key_id}:{self.fingerprint}"
        out[0][CIPHERTEXT_FIELD] = iv + self._aead.encrypt(iv, plain, self._ad3 + ad_event_part(event_id))
        return out

    def open_event(self, messages: Sequence[Any], event_id: str, ciphertext: bytes) -> list[dict[str, Any]]:
        """Return the stored (clear) form of a sealed (``cl4`` or ``cl3``) event's messages.

        Args:
            messages: The event's messages as stored (the first holds the ciphertext).
            event_id: The ``_id`` of the event they were read from.
            ciphertext: The first message's ``ciphertext`` field.

        Raises:
            IntegrityError: the ciphertext was altered or moved from another event, or
                the event's messages were swapped, dropped, added or relabelled.
        """
        first = messages[0] if messages else None
        form = form_of(first.get(SEALED_FIELD)) if isinstance(first, Mapping) else None
        if form is None or type(ciphertext) is not bytes or len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            named = form or " or ".join(FORMS)
            raise IntegrityError(f"event {event_id!r}: its sealed ciphertext is not {named} or is truncated")
        view = memoryview(ciphertext)  # slices without copying the ciphertext
        if form == FORM:
            ad = self._ad + ad_event_part(event_id) + ad_clear_part(messages, event_id)
        else:
            ad = self._ad3 + ad_event_part(event_id)
        try:
            plain = self._aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], ad)
        except invalid_tag() as e:
            raise IntegrityError(
                f"event {event_id!r}: its sealed content does not open (the ciphertext was altered or "
                "moved here from another event, or its messages swapped, dropped, added or relabelled)"
            ) from e
        if form == FORM:
            return unpacked(plain, messages, event_id)  # checks the stored messages' shape too
        try:
            opened = unframed(plain, event_id) if plain[:1] == FRAMED else orjson.loads(plain)
        except ValueError as e:
            raise IntegrityError(f"event {event_id!r}: its sealed content is malformed") from e
        if type(opened) is not list:
            raise IntegrityError(f"event {event_id!r}: its sealed content holds no list of messages")
        check_clear(messages, opened, event_id, form)
        return opened
