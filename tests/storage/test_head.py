"""The head of a thread is found exactly, however the bounded search brackets it.

The head query sorts only the events above a floor found by ``_id`` lookups
(``EventStore._head_floor``); small search constants make every round of that search
happen on short threads. Whatever the floor, the answer is the newest live event.
"""

from __future__ import annotations

from typing import Any

import pytest

import chatledger.storage.events as events_module
from chatledger import Ledger
from chatledger.ledger import storage_of
from tests.helpers import msg


@pytest.fixture
def narrow_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sort at most 4 events, narrowing 2 times a round: several rounds from 9 events on."""
    monkeypatch.setattr(events_module, "HEAD_WINDOW", 4)
    monkeypatch.setattr(events_module, "HEAD_PROBES", 2)


@pytest.mark.usefixtures("narrow_search")
async def test_the_head_at_every_length_around_the_search_boundaries(database: Any) -> None:
    ledger = Ledger(database)
    book = ledger.bind()
    position = book.empty("t")
    for n in range(1, 70):
        position = (await book.append(position, [msg(f"m{n}")] * (1 + n % 3))).position
        if n in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 69):
            head = await storage_of(Ledger(database)).events.head("t")
            assert head is not None
            assert (head["seq"], head["hash"]) == (n, position.head_hash), n
            assert (await Ledger(database).bind().open("t")).cursor == position.cursor


@pytest.mark.usefixtures("narrow_search")
async def test_the_head_of_a_branch_and_with_a_gap(database: Any) -> None:
    ledger = Ledger(database)
    book = ledger.bind()
    position = book.empty("t")
    for n in range(40):
        position = (await book.append(position, [msg(f"m{n}")])).position
    # A branch forked at 37: its own events start at seq 38, above every power of two but 32.
    branched = (await book.append(await book.at("t", 37), [msg("b")])).position
    branched = (await book.append(branched, [msg("c")])).position
    assert branched.thread_id != "t"
    assert (await Ledger(database).bind().head(branched.thread_id)).cursor == branched.cursor
    # A gap (an event deleted by hand) may lower the floor, never hide the head.
    await database["events"].delete_one({"_id": "t#32"})
    head = await storage_of(Ledger(database)).events.head("t")
    assert head is not None
    assert head["seq"] == 40
