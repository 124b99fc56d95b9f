"""ChatLedger's exception hierarchy: one root, a few meaningful branches.

Every error the library raises on purpose derives from :class:`ChatLedgerError`.
Bad-argument errors also derive from ``ValueError`` or ``TypeError`` so callers that
only know the standard hierarchy can still catch them.
"""

from __future__ import annotations

__all__ = [
    "BatchTooLargeError",
    "ChatLedgerError",
    "ConcurrencyError",
    "ContentErasedError",
    "EventIdReusedError",
    "IntegrityError",
    "InvalidCursorError",
    "InvalidInputError",
    "InvalidMessageError",
    "InvalidThreadIdError",
    "KeyUnavailableError",
    "LegalHoldError",
    "StorageError",
    "StorageUnavailableError",
    "ThreadRemovedError",
    "UnknownThreadError",
    "VersionConflictError",
]


class ChatLedgerError(Exception):
    """Root of every exception ChatLedger raises on purpose."""


class InvalidInputError(ChatLedgerError, ValueError):
    """An argument was rejected before anything was written."""


class InvalidThreadIdError(InvalidInputError, TypeError):
    """A thread id was not a plain, bounded, non-empty string (e.g. ``{"$ne": None}``)."""


class InvalidCursorError(InvalidInputError):
    """A serialized cursor was malformed, or points past the head of its thread."""


class UnknownThreadError(InvalidCursorError):
    """A cursor names a thread that does not exist."""


class ThreadRemovedError(UnknownThreadError):
    """The thread was removed by retention or erasure: nothing can be read from or added to it."""


class InvalidMessageError(InvalidInputError, TypeError):
    """A message was not an Agent Framework ``Message`` or cannot be stored losslessly."""


class BatchTooLargeError(InvalidInputError):
    """A batch of messages does not fit in one MongoDB document (16 MiB)."""


class EventIdReusedError(InvalidInputError):
    """An append's ``event_id`` already names a different batch at that place (nothing was written)."""


class ConcurrencyError(ChatLedgerError):
    """Another writer appended at this cursor first (raised only in strict mode)."""


class VersionConflictError(ConcurrencyError):
    """A session snapshot was written (or deleted) by someone else since the version this write expected."""


class IntegrityError(ChatLedgerError):
    """Stored data does not match its hash chain or its own structure."""


class ContentErasedError(ChatLedgerError):
    """The content was sealed under a data key that erasure destroyed: it can never be read again."""


class KeyUnavailableError(ChatLedgerError):
    """Sealed content cannot be opened because its key is missing or cannot be unwrapped.

    This is a configuration or availability problem (wrong key store, wrong KEK, no
    sealer configured), never an erasure: an erased key leaves a tombstone and gives
    :class:`ContentErasedError` instead.
    """


class LegalHoldError(ChatLedgerError):
    """The operation would remove data that is under legal hold."""


class StorageError(ChatLedgerError):
    """The database refused an operation for a reason other than a lost connection."""


class StorageUnavailableError(StorageError):
    """The database could not be reached in time; the operation may be retried."""
