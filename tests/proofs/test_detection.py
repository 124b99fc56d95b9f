"""Events that vanish behind the ledger's back: what the sequencer catches, and what it cannot see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatledger import IntegrityError, Ledger
from chatledger.admin import run_erasure
from chatledger.admin.merkle import checkpoint, prove_event, sequence
from chatledger.cli.commands import ledgerproofs
from chatledger.hashing import event_hash
from tests.admin.conftest import branch, talk
from tests.proofs.test_cli import ui
from tests.proofs.test_log import SIGNING, holds
from tests.proofs.test_sequencer import leaf_events, slow_clock, stalled_append  # noqa: F401 (a fixture)


async def checkpointed(database: Any) -> Ledger:
    """A ledger whose thread ``t`` (seq 1 and 2) is in a checkpoint."""
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    await checkpoint(ledger, SIGNING)
    return ledger


async def test_an_event_deleted_before_it_was_sequenced_is_caught_by_the_event_after_it(
    database: Any,
) -> None:
    ledger = await checkpointed(database)
    await talk(ledger, "t", 3)  # seq 3 to 5, not yet sequenced
    await database["events"].delete_one({"_id": "t#4"})
    with pytest.raises(IntegrityError, match=r"event 't#4' vanished before it was sequenced \(event 't#5'"):
        await checkpoint(ledger, SIGNING)
    # A thread no run has seen yet is judged the same way, and in a full run too.
    await talk(ledger, "u", 3)
    await database["events"].delete_one({"_id": "u#2"})
    with pytest.raises(IntegrityError, match="'u#2' vanished"):
        await sequence(ledger, full=True)


async def test_an_event_rewritten_after_it_was_sequenced_is_caught_when_its_thread_goes_on(
    database: Any,
) -> None:
    ledger = await checkpointed(database)
    # The insider rewrites t#2 with a correct hash, and the application appends after it.
    doc = await database["events"].find_one({"_id": "t#2"})
    assert doc is not None
    doc["messages"][0]["text"] = "something else"
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    await database["events"].replace_one({"_id": "t#2"}, doc)
    await talk(ledger, "t", 1)
    with pytest.raises(IntegrityError, match="'t#3' does not follow event 't#2'"):
        await checkpoint(ledger, SIGNING)


async def test_branches_and_removals_are_not_gaps(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "main", 3, user_id="alice")
    await branch(ledger, "main", 2, turns=2)
    await talk(ledger, "other", 2, user_id="bob")
    await sequence(ledger)
    await run_erasure(ledger, user_id="alice", apply=True, reason="GDPR request")
    await talk(ledger, "other", 1, user_id="bob")
    # Hollowed events keep their documents: a full run finds every sequenced event.
    receipts = await database["audit"].count_documents({"kind": {"$ne": "config"}})
    assert (
        await sequence(ledger, full=True)
    ).added == 1 + receipts  # bob's new event, the erasure's receipts
    assert "other#3" in await leaf_events(database)


async def test_events_deleted_after_they_were_sequenced_are_caught_by_a_full_run(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 3)
    await talk(ledger, "whole", 2)
    cp = await checkpoint(ledger, SIGNING)
    # Tail removal and whole-thread removal, after the log recorded the events.
    await database["events"].delete_one({"_id": "t#3"})
    await database["events"].delete_many({"thread_id": "whole"})
    await database["threads"].delete_one({"_id": "whole"})
    # A routine run reads only recent events; the log still proves what was there.
    await sequence(ledger)
    assert holds(await prove_event(ledger, "whole", 1, checkpoint_note=cp.note), cp.note).messages == {}
    with pytest.raises(
        IntegrityError, match=r"'t#3' \(leaf 2\) was deleted after it was sequenced"
    ) as caught:
        await checkpoint(ledger, SIGNING, full=True)
    assert "'whole#1'" in str(caught.value)


async def test_a_tail_deleted_before_any_run_saw_it_leaves_no_trace(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    first = await checkpoint(ledger, SIGNING)
    await talk(ledger, "t", 2)
    await talk(ledger, "never-seen", 2)
    # The documented limit: nothing in the database remembers these events any more.
    await database["events"].delete_many({"_id": {"$in": ["t#3", "t#4"]}})
    await database["events"].delete_many({"thread_id": "never-seen"})
    later = await checkpoint(ledger, SIGNING, full=True)
    assert later.report.size == first.report.size
    assert await leaf_events(database) == ["t#1", "t#2"]


@pytest.mark.usefixtures("slow_clock")
async def test_checkpoint_full_from_the_command_line(database: Any, tmp_path: Path) -> None:
    (tmp_path / "signing.pem").write_bytes(SIGNING)
    key = str(tmp_path / "signing.pem")
    ledger = Ledger(database)
    await talk(ledger, "a", 2)
    await sequence(ledger)

    await stalled_append(ledger)
    r, out, _ = ui(as_json=True)
    assert await ledgerproofs.checkpoint_body(database, r, signing_key=key) == 0
    assert json.loads(out.getvalue())["added"] == 0  # later than the look-back: not looked for
    r, out, _ = ui(as_json=True)
    assert await ledgerproofs.checkpoint_body(database, r, signing_key=key, full=True) == 0
    assert json.loads(out.getvalue())["added"] == 1
    await database["events"].delete_one({"_id": "a#1"})
    with pytest.raises(IntegrityError, match="deleted after it was sequenced"):
        await ledgerproofs.checkpoint_body(database, ui()[0], signing_key=key, full=True)
