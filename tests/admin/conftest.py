"""Helpers for the admin tests: build conversations through the public library, pin the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import chatledger.ledger.documents
from chatledger import Cursor, Ledger
from chatledger._maf import Message
from chatledger.models import Scope

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
    monkeypatch.setattr(chatledger.ledger.documents, "utc_now_ms", clock)
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
    """Append ``turns`` two-message events to the thread with this id, after ``offset`` (default: head)."""
    binding = ledger.bind(tenant_id=tenant_id, user_id=user_id)
    position = await binding.head(thread_id) if offset is None else await binding.at(thread_id, offset)
    for turn in range(turns):
        result = await binding.append(
            position, [msg("user", f"{thread_id} q{turn}"), msg("assistant", f"{thread_id} a{turn}")]
        )
        position = result.position
    return position.cursor


async def branch(ledger: Ledger, thread_id: str, offset: int, turns: int = 1) -> str:
    """Branch ``thread_id`` at ``offset`` with ``turns`` events; return the branch id."""
    record = await ledger.thread(thread_id, None)
    assert record is not None
    binding = ledger.bind(Scope.of(record))
    result = await binding.append(await binding.at(thread_id, offset), [msg("user", "edit and retry")])
    assert result.branched
    position = result.position
    if turns > 1:
        scope = binding.scope
        await talk(ledger, position.thread_id, turns - 1, tenant_id=scope.tenant_id, user_id=scope.user_id)
    return position.thread_id
