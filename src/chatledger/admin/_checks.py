"""Argument checks shared by the public admin functions: the library refuses what the CLI refuses.

Each runs before anything is read or written, and raises ChatLedger's
:class:`~chatledger.errors.InvalidInputError` (also a ``ValueError``), never a raw
``TypeError`` or ``AttributeError`` from deep inside a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chatledger.errors import InvalidInputError
from chatledger.storage.keys import KeyStore

__all__ = [
    "require_bool",
    "require_callback",
    "require_datetime",
    "require_instance",
    "require_removal_run",
    "require_text",
]


def require_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a real bool.

    ``"false"`` is truthy and ``0``/``1`` are not flags: a destructive switch must be
    said with ``True`` or ``False`` before it can delete anything.
    """
    if type(value) is not bool:
        raise InvalidInputError(f"{name} must be True or False, not {value!r}")
    return value


def require_callback(value: object, name: str) -> None:
    """Refuse a progress or report callback that is neither ``None`` nor callable."""
    if value is not None and not callable(value):
        raise InvalidInputError(f"{name} must be a callable or None, not {type(value).__name__}")


def require_text(value: object, name: str, *, optional: bool = False) -> None:
    """Refuse a receipt field (who acts, why) that is not a non-empty str (or ``None`` if optional)."""
    if value is None and optional:
        return
    if type(value) is not str or not value.strip() or len(value) > 1000:
        raise InvalidInputError(f"{name} must be a non-empty str of at most 1000 characters")


def require_datetime(value: object, name: str) -> None:
    """Refuse a reference time that is neither ``None`` nor a datetime."""
    if value is not None and not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime or None, not {type(value).__name__}")


def require_instance(value: object, cls: type[Any], name: str) -> None:
    """Refuse ``value`` unless it is ``None`` or a ``cls``."""
    if value is not None and not isinstance(value, cls):
        raise InvalidInputError(f"{name} must be a {cls.__name__} or None, not {type(value).__name__}")


def require_removal_run(
    *,
    apply: object,
    shred_keys: object,
    by: object,
    reason: object,
    key_store: object,
    callbacks: Mapping[str, object],
) -> tuple[bool, bool]:
    """Check the arguments every removal run takes (erasure, retention); return ``apply`` and ``shred_keys``.

    Raises:
        InvalidInputError: ``apply`` or ``shred_keys`` is not a real bool, ``by`` or
            ``reason`` is not a receipt's text, a callback (by its name) is not callable,
            or ``key_store`` is not a key store.
    """
    apply = require_bool(apply, "apply")
    shred_keys = require_bool(shred_keys, "shred_keys")
    require_text(by, "by", optional=True)
    require_text(reason, "reason")
    for name, callback in callbacks.items():
        require_callback(callback, name)
    require_instance(key_store, KeyStore, "key_store")
    return apply, shred_keys
