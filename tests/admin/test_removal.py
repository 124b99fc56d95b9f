"""Retention and erasure: whole lineages, never a parent a kept branch needs, holds respected, resumable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import chatledger.admin.removal as removal_module
from chatledger import (
    ChatLedgerError,
    Cursor,
    InvalidInputError,
    Ledger,
    LegalHoldError,
    MongoChatMessageStore,
    ThreadRemovedError,
    UnknownThreadError,
)
from chatledger.admin import (
    RetentionPolicy,
    pending_removals,
    release_hold,
    run_erasure,
    run_retention,
    set_hold,
    verify,
)
from chatledger.admin.receipts import Receipts
from chatledger.admin.retention import parse_duration
from chatledger.storage.removals import RemovalMarks
from chatledger.storage.threads import ThreadStore
from tests.admin.conftest import Clock, branch, msg, talk
from tests.helpers import read

POLICY = RetentionPolicy.from_mapping({"default": "30d"})


async def _threads(database: Any) -> set[str]:
    """Live thread documents (a removed thread leaves a tombstone: its id and root only)."""
    out = set()
    async for doc in database["threads"].find({}):
        if "removed" in doc:
            assert set(doc) == {"_id", "root_id", "removed"}, doc
        else:
            out.add(doc["_id"])
    return out


async def _event_threads(database: Any) -> set[str]:
    """Threads with events that still hold anything (a removed event keeps its position only)."""
    out = set()
    async for doc in database["events"].find({}):
        if doc.get("removed"):
            assert set(doc) <= {"_id", "thread_id", "seq", "root_id", "removed", "sealed"}, doc
        else:
            out.add(doc["thread_id"])
    return out


async def test_dry_run_is_the_default_and_changes_nothing(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 2)
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, now=clock.now)
    assert report.dry_run
    assert [r.thread_id for r in report.planned] == ["old"]
    assert await _threads(database) == {"old"}
    assert await database["audit"].count_documents({}) == 0


async def test_an_old_lineage_goes_whole_with_receipts(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 3)
    b = await branch(ledger, "old", 2)
    clock.advance(days=10)
    await talk(ledger, "fresh", 1)
    clock.advance(days=25)  # old lineage: 35 days idle; fresh: 25
    report = await run_retention(ledger, POLICY, apply=True, by="ops@test", reason="ticket 7", now=clock.now)
    assert await _threads(database) == {"fresh"} == await _event_threads(database)
    [receipt] = await database["audit"].find({"kind": "removal"}).to_list(None)
    assert receipt["thread_ids"] == ["old", b]
    assert receipt["by"] == "ops@test"
    assert receipt["reason"] == "ticket 7"
    assert {h["thread_id"] for h in receipt["heads"]} == {"old", b}
    assert all(len(h["head_hash"]) == 64 for h in receipt["heads"])
    assert "old q0" not in str(receipt)  # never content
    assert (
        await database["audit"].count_documents({"kind": "removal.completed", "receipt_id": receipt["_id"]})
        == 1
    )
    assert report.removed == [receipt["_id"]]
    assert (await verify(ledger)).ok
    # The ledger's caches do not serve the removed threads.
    assert await ledger.thread(b, None) is None
    with pytest.raises(UnknownThreadError):
        await read(ledger, Cursor(thread_id="old", offset=3))


async def test_a_recent_branch_keeps_its_ancestors(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 3)
    stale = await branch(ledger, "root", 1)
    clock.advance(days=40)
    fresh = await branch(ledger, "root", 2)
    clock.advance(days=5)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    # Only the stale branch goes; the root is needed by the fresh branch.
    assert [r.thread_id for r in report.planned] == [stale]
    assert await _threads(database) == {"root", fresh}
    assert (await verify(ledger)).ok


async def test_holds_protect_the_whole_lineage(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 3)
    held = await branch(ledger, "root", 1)
    other = await branch(ledger, "root", 2)
    await talk(ledger, "solo", 1)
    await set_hold(ledger, held, reason="case 42", by="legal")
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    # The held branch and the root it needs stay; the unheld sibling and the solo thread go.
    assert await _threads(database) == {"root", held}
    assert [s.thread_id for s in report.skipped] == ["root"]
    assert "case" not in report.skipped[0].reason
    assert held in report.skipped[0].reason
    # Released, it goes on the next run.
    assert await release_hold(ledger, held, reason="case closed")
    await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert await _threads(database) == set()
    kinds = [d["kind"] async for d in database["audit"].find({}).sort("at", 1)]
    assert kinds.count("hold.set") == kinds.count("hold.released") == 1
    assert other not in await _threads(database)


async def test_per_tenant_policy(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "a", 1, tenant_id="acme")
    await talk(ledger, "b", 1, tenant_id="bank")
    await talk(ledger, "c", 1)
    clock.advance(days=60)
    policy = RetentionPolicy.from_mapping({"default": "90d", "tenants": {"acme": "30d", "bank": "forever"}})
    report = await run_retention(ledger, policy, now=clock.now)
    assert [r.thread_id for r in report.planned] == ["a"]
    only_acme = RetentionPolicy.from_mapping({"tenants": {"acme": "30d"}})
    assert [r.thread_id for r in (await run_retention(ledger, only_acme, now=clock.now)).planned] == ["a"]


async def test_an_interrupted_run_is_finished_by_the_next(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 3)
    b = await branch(ledger, "root", 2)
    clock.advance(days=60)
    # Hollowing one thread, then the crash: whichever way the run hollows (by key after
    # the plan's heads, or every live event of the thread).
    real_hollow = removal_module._Run.hollow
    calls = 0

    async def crash_after_one(self: Any, thread_id: str) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("operator's laptop went to sleep")
        return await real_hollow(self, thread_id)

    monkeypatch.setattr(removal_module._Run, "hollow", crash_after_one)
    # The next run treats the removal as interrupted at once (not after RESUME_AFTER).
    monkeypatch.setattr(removal_module, "RESUME_AFTER", timedelta(0))
    with pytest.raises(ConnectionError):
        await run_retention(ledger, POLICY, apply=True, now=clock.now)
    # The crash is visible: a started receipt with no completion, and verify fails.
    [pending] = await pending_removals(ledger)
    assert pending["thread_ids"] == ["root", b]
    assert not (await verify(ledger)).ok
    # Meanwhile nobody can write to the half-removed lineage.
    with pytest.raises(ChatLedgerError):
        await talk(Ledger(database), b, 1)
    monkeypatch.setattr(removal_module._Run, "hollow", real_hollow)
    dry = await run_retention(ledger, POLICY, now=clock.now)
    assert dry.resumed == [pending["_id"]]
    assert await _threads(database) == {"root", b}
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.resumed == [pending["_id"]]
    assert await _threads(database) == set() == await _event_threads(database)
    assert await pending_removals(ledger) == []
    assert (await verify(ledger)).ok
    # Idempotent: nothing left to do.
    again = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert (again.planned, again.resumed, again.removed) == ([], [], [])


async def test_ctrl_c_while_a_claim_is_on_the_wire_leaves_no_claim_behind(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    ledger = Ledger(database)
    for n in range(3):
        await talk(ledger, f"t{n}", 1)
    clock.advance(days=60)
    real_claim = RemovalMarks.claim
    landed = asyncio.Event()

    async def slow_reply(self: Any, thread_id: str, receipt_id: str, root_id: str) -> bool:
        taken = await real_claim(self, thread_id, receipt_id, root_id)
        landed.set()
        await asyncio.sleep(0.2)  # the claim is stored; its reply is still on the way back
        return taken

    monkeypatch.setattr(RemovalMarks, "claim", slow_reply)
    run = asyncio.create_task(run_retention(ledger, POLICY, apply=True, now=clock.now))
    await landed.wait()
    run.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await run
    monkeypatch.setattr(RemovalMarks, "claim", real_claim)
    # The give-up let the claim go: the same command run right away removes everything,
    # instead of keeping a lineage as "being removed by another run" for five minutes.
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.skipped == []
    assert await _threads(database) == set() == await _event_threads(database)
    assert (await verify(ledger)).ok


# Where a removal can be cancelled besides its claims and its receipt: each storage call below has landed
# when Ctrl-C comes (its reply still on the way back), as a real Ctrl-C finds it.
_LATER_STEPS = {
    "adopt": (ThreadStore, "family"),
    "close": (RemovalMarks, "close"),
    "hollow by key": (RemovalMarks, "hollow_positions"),
    "tombstone": (ThreadStore, "tombstone"),
    "completion receipt": (Receipts, "record"),
    "claim release": (RemovalMarks, "release_claim"),
}


@pytest.mark.parametrize("step", list(_LATER_STEPS))
async def test_ctrl_c_at_any_later_step_is_finished_by_the_very_next_run(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    import asyncio

    ledger = Ledger(database)
    await talk(ledger, "root", 3)
    await branch(ledger, "root", 2)
    await talk(ledger, "other", 2)
    clock.advance(days=60)
    owner, name = _LATER_STEPS[step]
    real = getattr(owner, name)
    landed = asyncio.Event()

    async def slow_reply(self: Any, *args: Any, **kwargs: Any) -> Any:
        done = await real(self, *args, **kwargs)
        # The completion receipt is the one receipt of this step (the removal's comes first).
        if owner is not Receipts or args[0] == "removal.completed":
            landed.set()
            await asyncio.sleep(0.2)
        return done

    monkeypatch.setattr(owner, name, slow_reply)
    run = asyncio.create_task(run_retention(ledger, POLICY, apply=True, now=clock.now))
    await asyncio.wait([asyncio.ensure_future(landed.wait()), run], return_when=asyncio.FIRST_COMPLETED)
    assert landed.is_set(), f"the removal never reached its {step}"
    run.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await run
    monkeypatch.setattr(owner, name, real)
    # The same command run right away (RESUME_AFTER untouched) finishes the interrupted
    # removal and removes the rest: nothing kept as "being removed by another run".
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.skipped == []
    assert await _threads(database) == set() == await _event_threads(database)
    assert await pending_removals(ledger) == []
    assert await database["events"].count_documents({"seq": -1}) == 0  # no claim left
    assert (await verify(ledger)).ok


async def test_ctrl_c_while_a_crashed_removal_is_being_finished_is_finished_by_the_next_run(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from datetime import UTC, datetime

    ledger = Ledger(database)
    await talk(ledger, "root", 3)
    await branch(ledger, "root", 2)
    clock.advance(days=60)
    # A run killed while claiming (no give-up: the process died), long enough ago that
    # the next run takes its claims over.
    real_claim = RemovalMarks.claim
    claims = 0

    async def killed_at_the_second(self: Any, thread_id: str, receipt_id: str, root_id: str) -> bool:
        nonlocal claims
        claims += 1
        if claims > 1:
            raise ConnectionError("the operator's process was killed")
        return await real_claim(self, thread_id, receipt_id, root_id)

    monkeypatch.setattr(RemovalMarks, "claim", killed_at_the_second)
    with pytest.raises(ConnectionError):
        await run_retention(ledger, POLICY, apply=True, now=clock.now)
    monkeypatch.setattr(RemovalMarks, "claim", real_claim)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    aged = await database["events"].update_many({"seq": -1}, {"$set": {"claimed_at": long_ago}})
    assert aged.modified_count
    # The next run finishes it (writing its receipt now), and is Ctrl-C'd meanwhile.
    real_tombstone = ThreadStore.tombstone
    landed = asyncio.Event()

    async def slow_reply(self: Any, *args: Any) -> Any:
        done = await real_tombstone(self, *args)
        landed.set()
        await asyncio.sleep(0.2)
        return done

    monkeypatch.setattr(ThreadStore, "tombstone", slow_reply)
    plans: list[Any] = []
    run = asyncio.create_task(run_retention(ledger, POLICY, apply=True, now=clock.now, on_plan=plans.append))
    await asyncio.wait([asyncio.ensure_future(landed.wait()), run], return_when=asyncio.FIRST_COMPLETED)
    assert landed.is_set()
    run.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await run
    monkeypatch.setattr(ThreadStore, "tombstone", real_tombstone)
    # What the Ctrl-C report is made of: the removal it was finishing was left half-way.
    (plan,) = plans
    taken_over = await database["audit"].find_one({"kind": "removal.interrupted"})
    assert (plan.resumed, plan.interrupted) == ([], [taken_over["receipt_id"]])
    # The run after it finishes everything at once: the receipt the Ctrl-C'd run wrote is
    # not taken for a live removal in another process for five minutes.
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.skipped == []
    assert await _threads(database) == set() == await _event_threads(database)
    assert await pending_removals(ledger) == []
    assert (await verify(ledger)).ok


async def test_ctrl_c_in_a_batch_gives_up_every_lineage_of_it(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    ledger = Ledger(database)
    for n in range(5):
        await talk(ledger, f"t{n}", 1)
    clock.advance(days=60)
    # One batch of five lineages, stopped once each is claimed, recorded and closed.
    monkeypatch.setattr(removal_module, "BATCH_FIRST", 5)
    real_close = removal_module._Run.close_claimed
    closed = 0
    stop = asyncio.Event()

    async def stall_after_the_last(run: Any) -> None:
        nonlocal closed
        await real_close(run)
        closed += 1
        if closed == 5:
            stop.set()
            await asyncio.sleep(30)

    monkeypatch.setattr(removal_module._Run, "close_claimed", stall_after_the_last)
    task = asyncio.create_task(run_retention(ledger, POLICY, apply=True, now=clock.now))
    await stop.wait()
    task.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(removal_module._Run, "close_claimed", real_close)
    # Every removal of the batch is given up, so the next run finishes all of them at once.
    assert await database["audit"].count_documents({"kind": "removal.interrupted"}) == 5
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert (report.skipped, len(report.resumed)) == ([], 5)
    assert await _threads(database) == set() == await _event_threads(database)
    assert (await verify(ledger)).ok


async def test_ctrl_c_while_a_claim_fails_on_the_wire_is_still_a_clean_give_up(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from chatledger import StorageError

    ledger = Ledger(database)
    for n in range(2):
        await talk(ledger, f"t{n}", 1)
    clock.advance(days=60)
    real_claim = RemovalMarks.claim
    sent = asyncio.Event()

    async def reset_after_the_ctrl_c(self: Any, thread_id: str, receipt_id: str, root_id: str) -> bool:
        sent.set()
        await asyncio.sleep(0.2)
        raise StorageError("claim thread for removal: connection reset")

    monkeypatch.setattr(RemovalMarks, "claim", reset_after_the_ctrl_c)
    run = asyncio.create_task(run_retention(ledger, POLICY, apply=True, now=clock.now))
    await sent.wait()
    run.cancel()  # Ctrl-C, then the write in flight fails
    # The operator's Ctrl-C is what the run ends with (the give-up runs), not the write's error.
    with pytest.raises(asyncio.CancelledError):
        await run
    monkeypatch.setattr(RemovalMarks, "claim", real_claim)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.skipped == []
    assert await _threads(database) == set()


async def test_a_hold_set_after_planning_wins(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 2)
    clock.advance(days=60)
    real_claim = removal_module._Run.claim

    async def hold_first(run: Any, removal: Any) -> Any:
        await set_hold(ledger, "root", reason="late subpoena")
        return await real_claim(run, removal)

    monkeypatch.setattr(removal_module._Run, "claim", hold_first)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert report.removed == []
    assert "legal hold" in report.skipped[0].reason
    assert await _threads(database) == {"root"}
    assert await database["audit"].count_documents({"kind": "removal"}) == 0


async def test_a_hold_during_the_removal_is_refused_clearly(
    database: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    await talk(ledger, "root", 2)
    clock.advance(days=60)
    real_close = removal_module._Run.close
    refused: list[Exception] = []

    async def hold_in_the_window(run: Any, thread_id: str) -> None:
        try:
            await set_hold(ledger, thread_id, reason="too late")
        except LegalHoldError as e:
            refused.append(e)
        await real_close(run, thread_id)

    monkeypatch.setattr(removal_module._Run, "close", hold_in_the_window)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert len(report.removed) == 1
    assert refused
    assert "being removed" in str(refused[0])
    assert await database["audit"].count_documents({"kind": "hold.set"}) == 0


async def test_erasure_of_a_user(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "alice-1", 2, tenant_id="acme", user_id="alice")
    b = await branch(ledger, "alice-1", 1)
    await talk(ledger, "alice-2", 1, tenant_id="acme", user_id="alice")
    await talk(ledger, "bob-1", 1, tenant_id="acme", user_id="bob")
    await set_hold(ledger, "alice-2", reason="case 9")
    dry = await run_erasure(ledger, user_id="alice")
    assert dry.dry_run
    assert [r.thread_id for r in dry.planned] == ["alice-1"]
    assert [s.thread_id for s in dry.skipped] == ["alice-2"]
    assert len(await _threads(database)) == 4
    report = await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request 123")
    assert await _threads(database) == {"alice-2", "bob-1"}
    assert b not in await _event_threads(database)
    receipt = await database["audit"].find_one({"kind": "removal"})
    assert receipt["action"] == "erasure"
    assert receipt["scope"] == {"user_id": "alice"}
    assert report.removed == [receipt["_id"]]
    assert (await verify(ledger)).ok


async def test_erasure_of_a_tenant(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "x", 1, tenant_id="gone", user_id="u1")
    await talk(ledger, "y", 1, tenant_id="gone", user_id="u2")
    await talk(ledger, "z", 1, tenant_id="stays", user_id="u1")
    await run_erasure(ledger, tenant_id="gone", apply=True)
    assert await _threads(database) == {"z"}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"user_id": "a", "tenant_id": {"$ne": None}}, {"user_id": {"$ne": None}}, {"tenant_id": ""}],
)
async def test_erasure_refuses_bad_subjects(database: Any, kwargs: dict[str, Any]) -> None:
    await talk(Ledger(database), "t", 1, user_id="a")
    with pytest.raises(InvalidInputError):
        await run_erasure(database, apply=True, **kwargs)
    assert await _threads(database) == {"t"}


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"default": "soon"},
        {"default": "0d"},
        {"default": "forever"},
        {"tenants": ["acme"]},
        {"default": "1d", "extra": 1},
    ],
)
def test_bad_policies_are_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        RetentionPolicy.from_mapping(policy)


def test_durations() -> None:
    assert parse_duration("90d").days == 90
    assert parse_duration("2w").days == 14
    assert parse_duration("12h").total_seconds() == 12 * 3600
    assert parse_duration("7").days == 7


async def test_hold_needs_a_reason_and_a_thread(database: Any) -> None:
    await talk(Ledger(database), "t", 1)
    with pytest.raises(InvalidInputError):
        await set_hold(database, "t", reason=" ")
    with pytest.raises(UnknownThreadError):
        await set_hold(database, "nope", reason="x")
    assert await database["audit"].count_documents({}) == 0


async def test_a_removed_thread_refuses_stale_and_new_writers(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    stale = MongoChatMessageStore(ledger, thread_id="s", tenant_id="acme", user_id="u")
    await stale.add_messages([msg("user", "before")])
    assert len(await stale.list_messages()) == 1  # caches warm, as in a long-lived process
    report = await run_erasure(Ledger(database), user_id="u", apply=True)
    assert len(report.removed) == 1
    # The long-lived process: its caches still know the thread.
    with pytest.raises(ThreadRemovedError):
        await stale.add_messages([msg("user", "after")])
    with pytest.raises(ThreadRemovedError):
        await stale.list_messages()
    # A session re-created with the same name is refused, never written onto the erased thread.
    again = MongoChatMessageStore(Ledger(database), thread_id="s", tenant_id="acme", user_id="u")
    with pytest.raises(ThreadRemovedError):
        await again.add_messages([msg("user", "resurrected?")])
    assert await database["events"].count_documents({"removed": {"$exists": False}}) == 0
    assert (await verify(ledger)).ok


async def test_concurrent_runs_remove_each_lineage_once(
    interleaving_backend: Any, database: Any, clock: Clock
) -> None:
    import asyncio

    ledger = Ledger(database)
    for n in range(12):
        await talk(ledger, f"t{n}", 1)
    clock.advance(days=60)
    runs = await asyncio.gather(
        *(run_retention(Ledger(database), POLICY, apply=True, now=clock.now) for _ in range(3))
    )
    removed = [rid for run in runs for rid in run.removed]
    receipts = await database["audit"].find({"kind": "removal"}).to_list(None)
    assert len(receipts) == len(removed) == 12
    assert sorted(r["thread_id"] for r in receipts) == sorted(f"t{n}" for n in range(12))
    assert await _threads(database) == set() == await _event_threads(database)
