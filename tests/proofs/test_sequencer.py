"""The sequencer's watermark: a run reads the backlog, not the log, and misses no event."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import datetime, timedelta
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin.merkle import count_log_events, sequence
from chatledger.ledger import core
from tests.admin.conftest import talk

#: How long before its commit the current task's writer stamps its events (a slow writer).
_LATE: contextvars.ContextVar[timedelta] = contextvars.ContextVar("late", default=timedelta(0))


@pytest.fixture
def slow_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let one writer task stamp its events earlier than it commits them (its own context only)."""
    real = core.utc_now_ms

    def stamped() -> datetime:
        return real() - _LATE.get()

    monkeypatch.setattr(core, "utc_now_ms", stamped)


async def stalled_append(ledger: Ledger) -> None:
    """Append one event to thread ``stalled`` from a writer stamping it 30 minutes early."""

    async def stalled() -> None:
        _LATE.set(timedelta(minutes=30))
        await talk(ledger, "stalled", 1)

    await asyncio.create_task(stalled())


async def live_keys(database: Any) -> set[str]:
    docs = await database["events"].find({"removed": {"$exists": False}}, {"_id": 1}).to_list(None)
    return {d["_id"] for d in docs}


async def leaf_events(database: Any) -> list[str]:
    docs = await database["log_entries"].find({"log": "default"}).sort("index", 1).to_list(None)
    assert [d["index"] for d in docs] == list(range(len(docs)))
    return [d["event"] for d in docs]


async def test_a_routine_run_reads_only_the_events_since_the_last_run(database: Any) -> None:
    ledger = Ledger(database)
    for name in ("a", "b", "c"):
        await talk(ledger, name, 10)
    # Times are kept to the millisecond: an event of the same millisecond as a run's
    # start is read again by the next run (harmless), which this count would show.
    await asyncio.sleep(0.005)
    first = await sequence(ledger)  # the log's first run reads every event once
    assert first.added == 30
    await asyncio.sleep(0.005)
    await talk(ledger, "d", 3)
    # With no look-back, the run looks at the three new events and none of the 30 old ones.
    assert await count_log_events(ledger, lookback=timedelta(0)) == 3
    seen: list[int] = []
    report = await sequence(ledger, lookback=timedelta(0), on_progress=seen.append)
    assert (sum(seen), report.added, report.size) == (3, 3, 33)
    # The default look-back re-reads recent events; those already in the log stay once.
    again = await sequence(ledger)
    assert (again.added, again.size) == (0, 33)
    assert sorted(await leaf_events(database)) == sorted(await live_keys(database))
    # A full sweep reads all of them and finds nothing missing.
    assert await count_log_events(ledger, full=True) == 33
    assert (await sequence(ledger, full=True)).added == 0


@pytest.mark.usefixtures("slow_clock")
async def test_writers_racing_the_sequencer_lose_no_event(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "seed", 2)
    await sequence(ledger)
    runs = 0
    writing, passed = asyncio.Event(), asyncio.Event()

    async def sequencer() -> None:
        nonlocal runs
        while not writing.is_set():
            await sequence(Ledger(database), batch=3)
            runs += 1
            if runs >= 2:
                passed.set()
            await asyncio.sleep(0)

    async def writer(i: int) -> None:
        for turn in range(4):
            await talk(ledger, f"w{i}-{turn % 2}", 1)
            await asyncio.sleep(0)

    async def slow_writer() -> None:
        # Stamped two minutes before it commits, after several runs have passed that time:
        # the commit order differs from the stamp order, as with a stalled append.
        _LATE.set(timedelta(minutes=2))
        await passed.wait()
        await talk(ledger, "slow", 2)

    async def writers() -> None:
        try:
            await asyncio.gather(*(writer(i) for i in range(6)), slow_writer())
        finally:
            writing.set()

    await asyncio.gather(sequencer(), writers())
    await sequence(ledger)
    leaves = await leaf_events(database)
    assert len(leaves) == len(set(leaves)) == 2 + 6 * 4 + 2
    assert set(leaves) == await live_keys(database)


@pytest.mark.usefixtures("slow_clock")
async def test_a_writer_later_than_the_lookback_needs_a_full_run(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "a", 2)
    await sequence(ledger)

    await stalled_append(ledger)
    # The documented limit: an event stamped longer ago than the look-back is not looked for
    # by a routine run, and a full run sequences it.
    assert (await sequence(ledger, lookback=timedelta(minutes=10))).added == 0
    assert (await sequence(ledger, full=True)).added == 1
    assert set(await leaf_events(database)) == await live_keys(database)
