"""Key-encryption-key (KEK) providers: wrap and unwrap data keys, nothing else.

A provider never sees content, only 32-byte data keys. :class:`LocalKeyProvider`
keeps the KEK in process (from bytes, a file or an environment variable); a cloud KMS
or an HSM plugs in behind the same two methods (see ``docs/sealing.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

from chatledger.errors import ChatLedgerError, InvalidInputError, KeyUnavailableError
from chatledger.sealing._aead import KEY_BYTES, NONCE_BYTES, aead, invalid_tag, nonce

__all__ = ["DEFAULT_KEK_ENV", "KeyProvider", "LocalKeyProvider", "provider_call", "wrapped_of"]

#: The environment variable :meth:`LocalKeyProvider.from_env` reads by default.
DEFAULT_KEK_ENV: Final = "CHATLEDGER_KEK"
_WRAP_CONTEXT: Final = b"chatledger-kek-v1\x00"


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps data keys under a key-encryption key and unwraps them again.

    Implementations should bind the wrapped key to ``key_id`` (associated data, or the
    KMS's encryption context) so a wrapped key copied onto another key id fails to
    unwrap. ``unwrap`` raises :class:`~chatledger.errors.KeyUnavailableError` when it
    cannot (wrong KEK, KMS unreachable, access denied); never a provider exception.
    An optional ``kek_id`` attribute (a str naming the KEK, not revealing it) is stored
    beside each wrapped key, so an operator can see which keys a rotation has reached.
    """

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        """Return ``data_key`` encrypted under the KEK, bound to ``key_id``."""
        ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        """Return the data key ``wrap`` was given for ``key_id``."""
        ...


class LocalKeyProvider:
    """A 256-bit KEK held in process; data keys are wrapped with AES-256-GCM (associated data: key id).

    Args:
        kek: The 32-byte key-encryption key.

    Raises:
        InvalidInputError: ``kek`` is not 32 bytes.
    """

    def __init__(self, kek: bytes) -> None:
        if type(kek) is not bytes or len(kek) != KEY_BYTES:
            raise InvalidInputError(f"a KEK is {KEY_BYTES} bytes")
        self._aead = aead(kek)
        #: Names the KEK without revealing it (a digest), stored beside each wrapped key.
        self.kek_id = "local:" + hashlib.sha256(b"chatledger-kek-id\x00" + kek).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"LocalKeyProvider(kek_id={self.kek_id!r})"  # never the key itself

    @staticmethod
    def generate() -> str:
        """Return a fresh KEK, base64-encoded, for a file or an environment variable."""
        return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> LocalKeyProvider:
        """Return a provider for a KEK written as 64 hex digits or base64 of 32 bytes.

        Raises:
            InvalidInputError: the text is neither (the message never echoes it).
        """
        value = text.strip()
        try:
            raw = (
                bytes.fromhex(value)
                if len(value) == 2 * KEY_BYTES
                else base64.b64decode(value, validate=True)
            )
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise InvalidInputError(f"a KEK must be {KEY_BYTES} bytes as 64 hex digits or base64")
        return cls(raw)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Return a provider for the KEK in a file (32 raw bytes, hex or base64 text).

        Raises:
            InvalidInputError: the file cannot be read or holds no usable KEK.
        """
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise InvalidInputError(f"cannot read the KEK file {os.fspath(path)!r}: {e.strerror}") from e
        if len(raw) == KEY_BYTES:
            return cls(raw)
        try:
            return cls.from_text(raw.decode("ascii"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"the KEK file {os.fspath(path)!r} holds no usable KEK") from None

    @classmethod
    def from_env(cls, name: str = DEFAULT_KEK_ENV) -> LocalKeyProvider:
        """Return a provider for the KEK in an environment variable (hex or base64).

        Raises:
            InvalidInputError: the variable is unset or holds no usable KEK.
        """
        value = os.environ.get(name)
        if not value:
            raise InvalidInputError(f"environment variable {name} (the KEK) is not set")
        return cls.from_text(value)

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        """Return ``nonce || AES-GCM(KEK, data_key, ad=key_id)``."""
        if type(data_key) is not bytes or len(data_key) != KEY_BYTES:
            raise InvalidInputError(f"a data key is {KEY_BYTES} bytes")
        iv = nonce()
        return iv + bytes(self._aead.encrypt(iv, data_key, _WRAP_CONTEXT + key_id.encode("utf-8")))

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        """Return the data key wrapped for ``key_id``.

        Raises:
            KeyUnavailableError: this KEK did not wrap it (wrong or rotated KEK), or it was
                wrapped for another key id, or it is damaged.
        """
        try:
            key = bytes(
                self._aead.decrypt(
                    wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_CONTEXT + key_id.encode("utf-8")
                )
            )
        except (invalid_tag(), ValueError, TypeError) as e:
            raise KeyUnavailableError(
                f"data key {key_id!r} cannot be unwrapped with KEK {self.kek_id!r} "
                "(another KEK wrapped it, e.g. before or after a rotation, or it is damaged)"
            ) from e
        if len(key) != KEY_BYTES:
            raise KeyUnavailableError(f"data key {key_id!r} unwraps to {len(key)} bytes, not {KEY_BYTES}")
        return key


def provider_call(provider: KeyProvider, verb: Literal["wrap", "unwrap"], data: bytes, key_id: str) -> bytes:
    """Return ``provider.wrap(data, key_id)`` (or ``unwrap``) as bytes.

    Raises:
        KeyUnavailableError: the provider failed. A provider is a plug-in (a KMS client):
            whatever it raises reaches the caller as ours, naming the key, never as a raw
            provider exception.
    """
    try:
        return bytes(getattr(provider, verb)(data, key_id))
    except ChatLedgerError:
        raise
    except Exception as e:
        raise KeyUnavailableError(f"the key provider cannot {verb} key {key_id!r}: {type(e).__name__}") from e


def wrapped_of(doc: Mapping[str, Any]) -> bytes:
    """Return the wrapped data key of a key document, or ``b""`` when it holds none (damaged)."""
    wrapped = doc.get("wrapped")
    try:
        return base64.b64decode(wrapped, validate=True) if type(wrapped) is str else b""
    except (ValueError, binascii.Error):
        return b""
