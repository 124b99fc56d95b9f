"""The binding: the ledger as one scope sees it, assembled from its parts.

Each part is a class of its own module: :mod:`~chatledger.ledger.resolving` (cursors
and positions), :mod:`~chatledger.ledger.verdicts` and :mod:`~chatledger.ledger.appending`
(appends, retries and branches), :mod:`~chatledger.ledger.reading` (pages). They are
bases rather than collaborators so the append path pays no delegation.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from chatledger.errors import ChatLedgerError
from chatledger.ledger.appending import Appending
from chatledger.ledger.positions import Position
from chatledger.ledger.reading import Reading
from chatledger.ledger.signing import mac
from chatledger.models import Cursor

__all__ = ["Binding"]


class Binding(Reading, Appending):
    """The ledger as one scope (tenant, user, source id) sees it.

    Every position it resolves lies inside its scope; a thread of any other scope is,
    to it, a thread that does not exist. With signing keys, every cursor it hands out
    (:meth:`state`) is signed for its scope and every cursor it accepts must be.
    """

    async def marker(self, position: Position) -> dict[str, Any]:
        """Return the authenticated cursor carried by the old framework's serialized thread."""
        position = self._check(position)
        key = await self.ledger._marker_secret()
        state = self.state(position)
        state["marker"] = mac(key, "marker", self.scope, position.thread_id, position.offset)
        return state

    async def from_marker(self, value: object) -> Position | None:
        """Return the position a marker names, or ``None`` if ``value`` is not an authentic marker.

        A message whose properties merely look like a marker (anybody can set them) is
        not one: the marker's MAC is keyed by the ledger's signing key or by a secret
        stored in the database, which message content cannot know.
        """
        if not isinstance(value, Mapping):
            return None
        tag = value.get("marker")
        if type(tag) is not str:
            return None
        try:
            cursor = Cursor.from_state({k: v for k, v in value.items() if k != "marker"})
        except ChatLedgerError:
            return None
        key = await self.ledger._marker_secret()
        if not hmac.compare_digest(mac(key, "marker", self.scope, cursor.thread_id, cursor.offset), tag):
            return None
        return await self.resolve(cursor)
