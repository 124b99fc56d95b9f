"""Poisoned documents: one malformed field never turns an admin command into a raw traceback.

A field such as ``seq`` or ``count`` stored as a string (by another tool, a bad migration or
an insider) must give the operator a report or a ChatLedger error naming the document: never
a raw ``ValueError``/``KeyError``/``TypeError`` from deep inside, and never a silent wrong answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatledger import ChatLedgerError, IntegrityError, Ledger
from chatledger.admin import (
    RetentionPolicy,
    collect_stats,
    head_anchors,
    list_threads,
    plan_erasure,
    run_erasure,
    run_retention,
    verify,
)
from chatledger.ledger import storage_of
from chatledger.models import Scope
from tests.admin.conftest import Clock, branch, talk

#: (event, change): each poisons one event of the story below.
POISONS = {
    "seq a string (middle)": ("root#3", {"$set": {"seq": "3"}}),
    "seq a string (head)": ("root#5", {"$set": {"seq": "5"}}),
    "count a string": ("root#3", {"$set": {"count": "2"}}),
    "count not a number": ("root#5", {"$set": {"count": "two"}}),
    "first_message a float": ("root#4", {"$set": {"first_message": 6.5}}),
    "payload not JSON": ("root#2", {"$set": {"messages.0.payload": "{not json"}}),
}


async def _poisoned(database: Any, poison: str) -> tuple[Ledger, str]:
    ledger = Ledger(database)
    await talk(ledger, "root", 5, user_id="alice")
    await talk(ledger, "bystander", 2, user_id="bob")
    await branch(ledger, "root", 2)
    key, change = POISONS[poison]
    await database["events"].update_one({"_id": key}, change)
    return Ledger(database), key


async def _outcome(action: Awaitable[Any]) -> ChatLedgerError | None:
    """Run an admin action: it may succeed, or fail with a ChatLedger error (returned)."""
    try:
        await action
    except ChatLedgerError as e:
        return e
    return None


@pytest.mark.parametrize("poison", list(POISONS))
async def test_verify_reports_the_poisoned_event(database: Any, poison: str) -> None:
    ledger, key = await _poisoned(database, poison)
    report = await verify(ledger)
    assert not report.ok
    assert any(repr(key) in p.reason for p in report.problems), report.problems


@pytest.mark.parametrize("poison", list(POISONS))
async def test_reads_raise_integrity_error_naming_the_event(database: Any, poison: str) -> None:
    ledger, key = await _poisoned(database, poison)
    binding = ledger.bind(Scope(user_id="alice"))
    with pytest.raises(IntegrityError, match=key.split("#")[0]):
        await binding.read(await binding.head("root"))
    # Other threads are unaffected.
    bob = ledger.bind(Scope(user_id="bob"))
    assert len(await bob.read(await bob.head("bystander"))) == 4


AdminAction = Callable[[Ledger, Clock], Awaitable[Any]]


async def _heads(ledger: Ledger, clock: Clock) -> Any:
    return await head_anchors(ledger)


async def _threads(ledger: Ledger, clock: Clock) -> Any:
    return [s async for s in list_threads(ledger)]


async def _stats(ledger: Ledger, clock: Clock) -> Any:
    return await collect_stats(ledger)


async def _erase_plan(ledger: Ledger, clock: Clock) -> Any:
    return await plan_erasure(ledger, user_id="alice")


async def _erase(ledger: Ledger, clock: Clock) -> Any:
    return await run_erasure(ledger, user_id="alice", apply=True)


async def _retention(ledger: Ledger, clock: Clock) -> Any:
    clock.advance(days=400)
    return await run_retention(
        ledger, RetentionPolicy.from_mapping({"default": "30d"}), apply=True, now=clock.now
    )


ACTIONS: dict[str, AdminAction] = {
    "heads": _heads,
    "threads": _threads,
    "stats": _stats,
    "erase (plan)": _erase_plan,
    "erase --apply": _erase,
    "retention --apply": _retention,
}


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("poison", list(POISONS))
async def test_admin_commands_do_not_crash(database: Any, clock: Clock, poison: str, action: str) -> None:
    ledger, key = await _poisoned(database, poison)
    error = await _outcome(ACTIONS[action](ledger, clock))
    if error is not None:
        # A refusal names the event (or at least its thread), so the operator can find it.
        assert key in str(error) or "'root'" in str(error), error
    # Whatever the command did, verify can still say what the database holds.
    await verify(Ledger(database))


async def test_a_parent_loop_is_reported_by_removals_never_silently_kept(database: Any) -> None:
    # Tampering makes A's parent its own branch B: no thread of the tree is its top any more.
    ledger = Ledger(database)
    await talk(ledger, "A", 3, user_id="alice")
    b = await branch(ledger, "A", 1)
    c = await branch(ledger, "A", 2)
    await database["threads"].update_one({"_id": "A"}, {"$set": {"parent": {"thread_id": b, "offset": 1}}})
    await storage_of(ledger).threads.replace_holds(b, 0, [{"case": "c-1", "reason": "court order"}])
    ledger.forget()
    erasure = await run_erasure(ledger, user_id="alice", apply=True)
    later = datetime.now(UTC) + timedelta(days=1)
    policy = RetentionPolicy(default=timedelta(seconds=1))
    retention = await run_retention(ledger, policy, apply=True, now=later)
    for report in (erasure, retention):
        assert report.planned == []
        # Every thread of the loop, and the branch below it, is named as skipped (exit 1).
        assert {s.thread_id for s in report.skipped} == {"A", b, c}
        assert all("loop" in s.reason for s in report.skipped)
    assert await database["threads"].count_documents({"removed": {"$exists": False}}) == 3
