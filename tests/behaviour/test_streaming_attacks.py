"""Hostile review of the streamed replay (``Binding.pages``, ``stream_messages``).

A stream must stay what its docs promise under what a caller or another process does
meanwhile: bounded pages for sealed threads as for clear ones, and ChatLedger's own
errors (never a silent, partial result) when the thread is removed under it.
"""

from __future__ import annotations

from typing import Any

from chatledger import Ledger
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.helpers import msg

KEK = bytes(range(32))


async def test_a_sealed_thread_pages_like_its_clear_copy(database: Any) -> None:
    # A sealed event's ciphertext (all of its messages) lies in its first message: a page
    # that starts there must not count the whole event against that one message, or
    # every later page shrinks to one message and re-reads the event each time.
    counts = []
    for sealer in (None, Sealer(KeyStore(database), LocalKeyProvider(KEK))):
        book = Ledger(database, sealer=sealer).bind(user_id="u")
        at = book.empty(f"t-{sealer is None}")
        for e in range(3):
            at = (await book.append(at, [msg(f"{e}.{i} " + "x" * 2_000) for i in range(100)])).position
        pages = [len(page) async for page in book.pages(at, batch_bytes=100_000)]
        assert sum(pages) == 300
        counts.append(len(pages))
    clear, sealed = counts
    assert sealed <= clear + 1, counts
