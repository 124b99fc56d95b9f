"""Helpers for the admin tests: build conversations through the public library, pin the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import chatledger.ledger
from chatledger import Cursor, Ledger
from chatledger._maf import Message

#: The clock the tests pin: "now" is this date plus whatever a test advances.
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Make the ledger stamp events with a controllable time."""
    clock = Clock()
    monkeypatch.setattr(chatledger.ledger, "utc_now_ms", clock)
    return clock


def msg(role: str, text: str) -> Any:
    return Message(role, [text])


async def talk(
    ledger: Ledger,
    thread_id: str,
    turns: int,
    *,
    offset: int | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
) -> Cursor:
    """Append ``turns`` two-message events after ``offset`` (the head by default)."""
    cursor = await ledger.head(thread_id) if offset is None else Cursor(thread_id=thread_id, offset=offset)
    for turn in range(turns):
        result = await ledger.append(
            cursor,
            [msg("user", f"{thread_id} q{turn}"), msg("assistant", f"{thread_id} a{turn}")],
            tenant_id=tenant_id,
            user_id=user_id,
        )
        cursor = result.position.cursor
    return cursor


async def branch(ledger: Ledger, thread_id: str, offset: int, turns: int = 1) -> str:
    """Branch ``thread_id`` at ``offset`` with ``turns`` events; return the branch id."""
    result = await ledger.append(Cursor(thread_id=thread_id, offset=offset), [msg("user", "edit and retry")])
    assert result.branched
    cursor = result.position.cursor
    if turns > 1:
        cursor = await talk(ledger, cursor.thread_id, turns - 1)
    return cursor.thread_id
