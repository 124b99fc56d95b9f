"""A long-lived provider keeps nothing per session once its bounded caches are full.

Issue 23: a server process serves one ``MongoHistoryProvider`` to every session it ever
sees. Its caches (the ledger's thread records and heads, the provider's read positions)
are bounded; past them, memory allocated by ChatLedger's own code and still alive must
not grow with the number of sessions. The caches are made small here so the test sees
many times their size; ``scripts/bench_memory.py`` measures the same at full size on a
real server, with RSS.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from agent_framework import Message

import chatledger
from chatledger import MongoHistoryProvider
from chatledger.adapters import line_cache
from chatledger.ledger import core
from tests.conftest import Backend

_SRC = str(Path(chatledger.__file__).parent)
_CACHE = 40


def _held() -> int:
    """Bytes allocated by ChatLedger's own lines and still alive."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, _SRC + "/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_memory_held_stays_flat_over_many_sessions(
    real_backend: Backend, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a real server only: mongomock keeps every stored document (built by ChatLedger's
    # code) in this very process, so there it grows by design.
    monkeypatch.setattr(core, "_CACHE_SIZE", _CACHE)
    monkeypatch.setattr(line_cache, "_POSITIONS_KEPT", _CACHE)
    provider = MongoHistoryProvider(database=database)

    async def sessions(n: int) -> None:
        for i in range(n):
            state: dict[str, Any] = {}
            await provider.get_messages(None, state=state)
            turn = [Message(role="user", contents=[f"hello {i}"]), Message(role="assistant", contents=["hi"])]
            await provider.save_messages(None, turn, state=state)

    tracemalloc.start()
    try:
        await sessions(3 * _CACHE)  # warm-up: every cache full
        before = _held()
        await sessions(6 * _CACHE)
        grown = _held() - before
    finally:
        tracemalloc.stop()
    # Kept per session it would be hundreds of bytes each (a thread record alone is more):
    # 240 sessions leave less than a tenth of one such record's worth per session.
    assert grown < 20 * 6 * _CACHE, f"{grown} bytes held after {6 * _CACHE} more sessions"
