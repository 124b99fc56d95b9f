"""An append whose outcome is unknown, as the adapters remember it between calls.

Both adapters keep one of these while an append is in flight (the store in memory, the
history provider in the session state): re-sending the same batch reuses its event id,
so a retry can never duplicate an event that did commit; sending a different batch
first settles it (:meth:`~chatledger.ledger.Binding.settle`), so a lost reply never moves
a conversation onto a branch behind the caller's back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["PendingAppend", "new_event_id"]

# The bits uuid.UUID(version=4) clears and sets: the RFC 4122 variant and the version.
_UUID4_CLEAR: Final = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET: Final = (0x8000 << 48) | (4 << 76)


def new_event_id() -> str:
    """Return a fresh event id: exactly ``uuid.uuid4().hex``, without building a ``UUID``.

    ``UUID.__init__`` is a long general-purpose function; on an append, whose other
    work is small, it cost as much as hashing the event. Same randomness
    (``os.urandom``), same bits, same text.
    """
    value = int.from_bytes(os.urandom(16), "big") & _UUID4_CLEAR | _UUID4_SET
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class PendingAppend:
    """The event id and batch digest of an append not yet confirmed."""

    event_id: str
    digest: str

    @classmethod
    def for_batch(cls, digest: str, previous: PendingAppend | None) -> PendingAppend:
        """Return the pending entry for a batch: ``previous`` again if it is the same batch."""
        if previous is not None and previous.digest == digest:
            return previous
        return cls(new_event_id(), digest)

    @classmethod
    def from_state(cls, value: object) -> PendingAppend | None:
        """Return the entry kept in a session state, or ``None`` if there is none (or it is not one).

        The entry is not trusted: the ledger counts it as committed only where an event
        with its id and its digest sits exactly where the append would have gone.
        """
        if not isinstance(value, Mapping):
            return None
        event_id: Any = value.get("event_id")
        digest: Any = value.get("digest")
        if type(event_id) is not str or type(digest) is not str or not event_id or not digest:
            return None
        if len(event_id) > 64 or len(digest) > 64:
            return None
        return cls(event_id, digest)

    def to_state(self) -> dict[str, str]:
        """Return the JSON-safe form kept in a session state."""
        return {"event_id": self.event_id, "digest": self.digest}
