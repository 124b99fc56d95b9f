"""verify: every tampering an insider with write access could do is named, the first failing event first."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger, UnknownThreadError
from chatledger.admin import ThreadFilter, head_anchors, run_retention, verify
from chatledger.admin.retention import RetentionPolicy
from chatledger.hashing import event_hash
from chatledger.ledger import storage_of
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
    doc["messages"][0]["text"] = "forged"
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    await db["events"].insert_one(doc)


async def _forge_naive(db: Any, b: str) -> None:
    # Append a copy of the head with a new text, keeping the head's hash fields.
    doc = await _event(db, "root", 5)
    doc.update(_id="root#6", seq=6, first_message=10, event_id="forged")
    await db["events"].insert_one(doc)


async def _forge_below_base(db: Any, b: str) -> None:
    # An event written into the branch at a position its ancestor owns.
    doc = await _event(db, "root", 2)
    doc.update(_id=f"{b}#2", thread_id=b)
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    await db["events"].insert_one(doc)


async def _swap(db: Any, b: str) -> None:
    # Events 2 and 3 trade places, each re-keyed to its new position.
    two, three = await _event(db, "root", 2), await _event(db, "root", 3)
    await db["events"].delete_many({"_id": {"$in": [two["_id"], three["_id"]]}})
    two.update(_id="root#3", seq=3)
    three.update(_id="root#2", seq=2)
    await db["events"].insert_many([two, three])


async def _rekey(db: Any, b: str) -> None:
    # The event moves to another _id: position lookups (resuming a session) no longer find it.
    doc = await _event(db, "root", 4)
    await db["events"].delete_one({"_id": doc["_id"]})
    doc["_id"] = "root#4 "
    await db["events"].insert_one(doc)


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
    "re-key an event": (_rekey, "root", "re-keyed"),
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


# --------------------------------------------------------------------------- malformed documents

POISON = {
    # field changed on event root#3: what verify must say about it
    "seq a string": ({"$set": {"seq": "3"}}, "seq"),
    "count a string": ({"$set": {"count": "2"}}, "count is '2'"),
    "first_message missing": ({"$unset": {"first_message": ""}}, "first_message is None"),
    "hash missing": ({"$unset": {"hash": ""}}, "hash is None"),
    "messages not a list": ({"$set": {"messages": "hello"}}, "messages is not a list"),
    "payload not JSON": ({"$set": {"messages.0.payload": "{not json"}}, "cannot be decoded"),
    "payload not a message": ({"$set": {"messages.0.payload": "[1, 2]"}}, "cannot be decoded"),
    "message without a role": ({"$unset": {"messages.0.role": ""}}, "cannot be decoded"),
    "message not a document": ({"$set": {"messages.0": 7}}, "not a document"),
}


@pytest.mark.parametrize("poison", list(POISON))
async def test_malformed_event_is_a_problem_naming_it(database: Any, poison: str) -> None:
    await _story(database)
    update, why = POISON[poison]
    await database["events"].update_one({"_id": "root#3"}, update)
    # Never an exception: the operator gets a report naming the document.
    report = await verify(Ledger(database))
    assert not report.ok
    named = [p for p in report.problems if "'root#3'" in p.reason]
    assert named, report.problems
    assert why in named[0].reason, report.problems


async def test_every_malformed_event_is_named_not_only_the_first(database: Any) -> None:
    await _story(database)
    await database["events"].update_one({"_id": "root#2"}, {"$set": {"count": "2"}})
    await database["events"].update_one({"_id": "root#4"}, {"$set": {"messages.1.payload": "{"}})
    report = await verify(database, thread_id="root")
    assert {p.seq for p in report.problems} == {2, 4}


async def test_malformed_thread_document_is_a_problem(database: Any) -> None:
    _, b = await _story(database)
    await database["threads"].update_one({"_id": "root"}, {"$set": {"depth": "zero"}})
    report = await verify(database)
    reasons = {p.thread_id: p.reason for p in report.problems}
    assert "malformed" in reasons["root"]
    # The branch cannot be judged on a broken ancestor, and says which one.
    assert "'root'" in reasons[b]


@pytest.mark.parametrize(
    "change",
    [{"user_id": "mallory"}, {"tenant_id": "evil"}, {"metadata": {"session_id": "other"}}, {"user_id": None}],
)
async def test_changed_thread_record_is_named(database: Any, change: dict[str, Any]) -> None:
    # A thread document rewritten to another owner: sessions stop resuming, so verify must say why.
    await _story(database)
    await database["threads"].update_one({"_id": "root"}, {"$set": change})
    report = await verify(database)
    reason = next(p.reason for p in report.problems if p.thread_id == "root")
    assert "thread_digest" in reason or "differs from the thread document" in reason, reason


async def test_changed_branch_record_is_named(database: Any) -> None:
    _, b = await _story(database)
    await database["threads"].update_one({"_id": b}, {"$set": {"metadata": {"x": 1}}})
    [problem] = (await verify(database)).problems
    assert (problem.thread_id, problem.seq) == (b, 4)
    assert "thread_digest" in problem.reason


# --------------------------------------------------------------------------- removed threads


async def _tombstone(db: Any, thread_id: str) -> None:
    """Leave what a completed removal leaves: a tombstone, hollow events, and a seal at head + 1."""
    doc = await db["threads"].find_one({"_id": thread_id})
    events = await db["events"].find({"thread_id": thread_id}).sort("seq", 1).to_list(None)
    await db["threads"].replace_one(
        {"_id": thread_id},
        {"root_id": doc["root_id"], "removed": {"receipt_id": "r1", "at": doc["created_at"]}},
    )
    for event in events:
        hollow = {"thread_id": thread_id, "seq": event["seq"], "root_id": doc["root_id"], "removed": True}
        await db["events"].replace_one({"_id": event["_id"]}, hollow)
    head = events[-1]["seq"] if events else doc.get("base_offset", 0)
    seal = {
        "thread_id": thread_id,
        "seq": head + 1,
        "root_id": doc["root_id"],
        "removed": True,
        "sealed": True,
    }
    await db["events"].insert_one({"_id": f"{thread_id}#{head + 1}", **seal})


async def test_tombstones_and_hollow_events_are_not_problems(database: Any) -> None:
    ledger, b = await _story(database)
    await talk(ledger, "kept", 2)
    await _tombstone(database, b)
    await _tombstone(database, "root")
    report = await verify(database)
    assert report.ok, report.problems
    assert report.threads == 1
    with pytest.raises(UnknownThreadError, match="removed"):
        await verify(database, thread_id="root")


async def test_live_branch_of_a_removed_thread_is_a_problem(database: Any) -> None:
    _, b = await _story(database)
    await _tombstone(database, "root")
    [problem] = (await verify(database)).problems
    assert problem.thread_id == b
    assert "branch of a removed thread 'root'" in problem.reason


async def test_content_written_to_a_removed_thread_is_a_problem(database: Any) -> None:
    _, b = await _story(database)
    await _tombstone(database, b)
    await database["events"].insert_one({"_id": f"{b}#9", "thread_id": b, "seq": 9, "messages": []})
    [problem] = (await verify(database)).problems
    assert problem.thread_id == b
    assert "removed thread" in problem.reason


# --------------------------------------------------------------------------- anchors compare hashes


async def _removal_receipts(db: Any, thread_id: str, head_seq: int, head_hash: str) -> None:
    head = {"thread_id": thread_id, "head_seq": head_seq, "head_hash": head_hash, "events": 1, "messages": 2}
    await db["audit"].insert_one(
        {"_id": f"rm-{head_hash[:8]}", "kind": "removal", "at": 1, "thread_ids": [thread_id], "heads": [head]}
    )
    await db["audit"].insert_one(
        {"_id": f"done-{head_hash[:8]}", "kind": "removal.completed", "receipt_id": f"rm-{head_hash[:8]}"}
    )


async def test_an_older_receipt_does_not_cover_a_recreated_thread(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    # An earlier thread "t" was removed at the same head seq, with another hash.
    await _removal_receipts(database, "t", 2, "f" * 64)
    anchors = await head_anchors(ledger)
    # The re-created "t" disappears with no receipt of its own.
    await database["events"].delete_many({"thread_id": "t"})
    await database["threads"].delete_one({"_id": "t"})
    [problem] = (await verify(ledger, anchors=anchors)).problems
    assert (problem.thread_id, problem.seq) == ("t", 2)
    assert "no completed removal receipt records its head hash" in problem.reason
    # Its own receipt, with the anchored hash, does cover it.
    await _removal_receipts(database, "t", 2, anchors[0].head_hash)
    assert (await verify(ledger, anchors=anchors)).ok


async def test_anchor_of_a_tombstoned_thread_needs_the_matching_receipt(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    anchors = await head_anchors(ledger)
    await _tombstone(database, "t")
    assert not (await verify(ledger, anchors=anchors)).ok
    await _removal_receipts(database, "t", 2, anchors[0].head_hash)
    assert (await verify(ledger, anchors=anchors)).ok


async def test_a_running_removal_is_not_tampering(database: Any) -> None:
    # A removal has claimed "root" and hollowed its first events when verify runs.
    ledger, _ = await _story(database)
    assert await storage_of(ledger).removals.claim("root", "rm-1", "root")
    for seq in (1, 2):
        await database["events"].update_one(
            {"_id": f"root#{seq}"}, {"$set": {"removed": True}, "$unset": {"messages": "", "hash": ""}}
        )
    report = await verify(database, thread_id="root")
    assert all("hollowed" not in p.reason and "#claim" not in p.reason for p in report.problems), (
        report.problems
    )
