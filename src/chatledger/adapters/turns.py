"""Saves of one session take turns, in the order they commit.

Runs that share one ``AgentSession`` are one conversation: their saves take turns, and
each reads the session's cursor only once it holds the turn, so every turn lands on the
session's line in the order the saves commit instead of on a branch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

__all__ = ["TURNS", "session_turn"]

#: Saves in progress per session: by the id of its state dict (a dict cannot be weakly
#: referenced), or, for a session saved without one, by its scope and session id.
TURNS: dict[Hashable, tuple[asyncio.Lock, int]] = {}


@asynccontextmanager
async def session_turn(key: Hashable | None) -> AsyncIterator[None]:
    """Hold the turn of the session ``key`` names (see :data:`TURNS`), until the block ends."""
    if key is None:
        yield
        return
    lock, users = TURNS.get(key, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    TURNS[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = TURNS[key]
        if users == 1:
            del TURNS[key]  # the entry never outlives its users, so an id is never reused stale
        else:
            TURNS[key] = (lock, users - 1)
