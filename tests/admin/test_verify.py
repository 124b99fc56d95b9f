"""verify: every tampering an insider with write access could do is named, the first failing event first."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger, UnknownThreadError
from chatledger.admin import ThreadFilter, head_anchors, run_retention, verify
from chatledger.admin.retention import RetentionPolicy
from chatledger.hashing import event_hash
from tests.admin.conftest import branch, talk


async def _story(database: Any) -> tuple[Ledger, str]:
    # A root of 5 events, and a branch made at seq 3 with 2 events of its own.
    ledger = Ledger(database)
    await talk(ledger, "root", 5, tenant_id="acme", user_id="alice")
    return ledger, await branch(ledger, "root", 3, turns=2)


async def _event(database: Any, thread_id: str, seq: int) -> dict[str, Any]:
    doc = await database["events"].find_one({"thread_id": thread_id, "seq": seq})
    assert doc is not None
    return dict(doc)


async def test_untouched_ledger_verifies(database: Any) -> None:
    ledger, b = await _story(database)
    report = await verify(database)
    assert report.ok, report.problems
    assert (report.threads, report.events) == (2, 7)
    assert (await verify(ledger, thread_id=b)).ok
    assert (await verify(ledger, tenant_id="acme")).threads == 2


async def _change_message(db: Any, b: str) -> None:
    doc = await _event(db, "root", 2)
    doc["messages"][0]["text"] = "I never said that"
    await db["events"].replace_one({"_id": doc["_id"]}, doc)


async def _delete_event(db: Any, b: str) -> None:
    await db["events"].delete_one({"thread_id": "root", "seq": 2})


async def _forge_in_place(db: Any, b: str) -> None:
    # Replace event 2 with a forged one that is correctly hashed after event 1.
    doc = await _event(db, "root", 2)
    await db["events"].delete_one({"_id": doc["_id"]})
    doc.pop("_id")
    doc["messages"][0]["text"] = "forged"
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    await db["events"].insert_one(doc)


async def _forge_naive(db: Any, b: str) -> None:
    # Append a copy of the head with a new text, keeping the head's hash fields.
    doc = await _event(db, "root", 5)
    doc.pop("_id")
    doc.update(seq=6, first_message=10, event_id="forged")
    await db["events"].insert_one(doc)


async def _forge_below_base(db: Any, b: str) -> None:
    # An event written into the branch at a position its ancestor owns.
    doc = await _event(db, "root", 2)
    doc.pop("_id")
    doc["thread_id"] = b
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    await db["events"].insert_one(doc)


async def _swap(db: Any, b: str) -> None:
    two, three = await _event(db, "root", 2), await _event(db, "root", 3)
    await db["events"].update_one({"_id": two["_id"]}, {"$set": {"seq": 99}})
    await db["events"].update_one({"_id": three["_id"]}, {"$set": {"seq": 2}})
    await db["events"].update_one({"_id": two["_id"]}, {"$set": {"seq": 3}})


async def _change_parent(db: Any, b: str) -> None:
    await talk(Ledger(db), "other", 4)
    await db["threads"].update_one({"_id": b}, {"$set": {"parent": {"thread_id": "other", "offset": 3}}})


async def _change_parent_consistently(db: Any, b: str) -> None:
    # Every structural field rewritten to agree: only the hash chain can tell.
    await talk(Ledger(db), "other", 4)
    await db["threads"].update_one(
        {"_id": b},
        {
            "$set": {
                "parent": {"thread_id": "other", "offset": 3},
                "root_id": "other",
                "lineage": [{"thread_id": "other", "offset": 3, "messages": 6}],
            }
        },
    )


async def _change_fork_offset(db: Any, b: str) -> None:
    await db["threads"].update_one(
        {"_id": b},
        {
            "$set": {
                "parent": {"thread_id": "root", "offset": 2},
                "base_offset": 2,
                "base_messages": 4,
                "lineage": [{"thread_id": "root", "offset": 2, "messages": 4}],
            }
        },
    )


async def _truncate_under_branch(db: Any, b: str) -> None:
    await db["events"].delete_many({"thread_id": "root", "seq": {"$gte": 3}})


async def _delete_thread_doc(db: Any, b: str) -> None:
    await db["threads"].delete_one({"_id": b})


TAMPERING = {
    "change a message": (_change_message, "root", "does not match its hash"),
    "delete an event": (_delete_event, "root", "missing"),
    "forge an event in place": (_forge_in_place, "root", "prev_hash"),
    "append a naively forged event": (_forge_naive, "root", "prev_hash"),
    "forge an event below a branch's base": (_forge_below_base, "B", "unexpected event"),
    "swap two events": (_swap, "root", "prev_hash"),
    "change a parent": (_change_parent, "B", "parent"),
    "change a parent consistently": (_change_parent_consistently, "B", "prev_hash"),
    "change a fork offset": (_change_fork_offset, "B", "seq"),
    "truncate under a branch": (_truncate_under_branch, "B", "where this branch forked, is missing"),
    "delete a thread document": (_delete_thread_doc, "B", "no thread document"),
}


@pytest.mark.parametrize("tamper", list(TAMPERING))
async def test_tampering_is_named(database: Any, tamper: str) -> None:
    _, b = await _story(database)
    action, victim, why = TAMPERING[tamper]
    await action(database, b)
    report = await verify(Ledger(database))
    assert not report.ok
    victim = b if victim == "B" else victim
    problem = next(p for p in report.problems if p.thread_id == victim)
    assert why in problem.reason, report.problems


async def test_first_failing_event_is_named(database: Any) -> None:
    _, _ = await _story(database)
    await _change_message(database, "")
    [problem] = (await verify(database, thread_id="root")).problems
    assert (problem.thread_id, problem.seq) == ("root", 2)
    assert problem.event_id


async def test_anchors_catch_what_the_chain_cannot(database: Any) -> None:
    ledger, b = await _story(database)
    await talk(ledger, "lonely", 3)
    anchors = await head_anchors(ledger)
    assert (await verify(ledger, anchors=anchors)).ok
    # An unreferenced tail and a whole thread vanish: the chain alone sees nothing ...
    await database["events"].delete_many({"thread_id": b, "seq": {"$gte": 5}})
    await database["events"].delete_many({"thread_id": "lonely"})
    await database["threads"].delete_one({"_id": "lonely"})
    assert (await verify(ledger)).ok
    # ... the anchors do.
    report = await verify(ledger, anchors=anchors)
    assert {p.thread_id for p in report.problems} == {b, "lonely"}


async def test_anchor_of_a_thread_removed_with_a_receipt_passes(database: Any, clock: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 2)
    anchors = await head_anchors(ledger, ThreadFilter(thread_id="old"))
    clock.advance(days=400)
    await run_retention(ledger, RetentionPolicy.from_mapping({"default": "365d"}), apply=True, now=clock.now)
    assert (await verify(ledger, anchors=anchors)).ok


async def test_unknown_thread_is_an_input_error(database: Any) -> None:
    with pytest.raises(UnknownThreadError):
        await verify(database, thread_id="nope")
