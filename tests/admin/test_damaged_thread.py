"""One tampered field blocks no operator: heads, retention and erase finish every other thread.

With one event's ``seq`` or ``count`` set to a string, the damaged thread has no
readable head. Each admin tool names it in its JSON problem list, does its work on every
other thread, and only then exits 1; ``verify`` names the event.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatledger import IntegrityError, Ledger
from chatledger.admin import verify
from chatledger.admin.erasure import run_erasure
from chatledger.admin.retention import RetentionPolicy, run_retention
from chatledger.admin.verify import head_anchors
from chatledger.cli.commands import integrity, removal
from chatledger.cli.render import Renderer
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.admin.conftest import talk
from tests.admin.test_cli import chatledger
from tests.helpers import raw_docs

LATER = datetime.now(UTC) + timedelta(days=400)
TAMPER = pytest.mark.parametrize("field", ["seq", "count"])


async def damaged_ledger(database: Any, field: str, *, sealed: bool = False) -> Ledger:
    """Alice's "bad" thread has one tampered event; "alice-ok", "bob" and "carol" are sound."""
    sealer = Sealer(KeyStore(database), LocalKeyProvider(bytes(32))) if sealed else None
    ledger = Ledger(database, sealer=sealer)
    await talk(ledger, "bad", 2, user_id="alice")
    await talk(ledger, "alice-ok", 1, user_id="alice")
    await talk(ledger, "bob", 1, user_id="bob")
    await talk(ledger, "carol", 1, user_id="carol")
    await database["events"].update_one({"thread_id": "bad", "seq": 2}, {"$set": {field: "2"}})
    return ledger


async def live_threads(database: Any) -> set[str]:
    return {d["_id"] for d in await raw_docs(database["threads"]) if "removed" not in d}


def json_ui() -> tuple[Renderer, io.StringIO]:
    out = io.StringIO()
    return Renderer(out, io.StringIO(), as_json=True, width=200), out


@TAMPER
async def test_heads_anchors_every_other_thread(database: Any, field: str) -> None:
    ledger = await damaged_ledger(database, field)
    ui, out = json_ui()
    assert await integrity.heads_body(database, ui) == 1
    done = json.loads(out.getvalue())
    assert {h["thread_id"] for h in done["heads"]} == {"alice-ok", "bob", "carol"}
    assert [p["thread_id"] for p in done["problems"]] == ["bad"]
    assert "bad#2" in done["problems"][0]["reason"]

    problems: list[Any] = []
    anchors = await head_anchors(ledger, problems=problems)
    assert {a.thread_id for a in anchors} == {"alice-ok", "bob", "carol"}
    assert [p.thread_id for p in problems] == ["bad"]
    with pytest.raises(IntegrityError, match="'bad'"):
        await head_anchors(ledger)  # no list to report it in: not a silent gap
    # The anchors taken still verify the sound threads; verify names the tampered event.
    report = await verify(ledger, anchors=anchors)
    assert {p.thread_id for p in report.problems} == {"bad"}


@TAMPER
async def test_retention_removes_every_other_due_lineage(database: Any, field: str) -> None:
    ledger = await damaged_ledger(database, field)
    report = await run_retention(ledger, RetentionPolicy(default=timedelta(days=30)), apply=True, now=LATER)
    assert [d.thread_id for d in report.damaged] == ["bad"]
    assert report.to_dict()["problems"][0]["thread_id"] == "bad"
    assert await live_threads(database) == {"bad"}


@TAMPER
async def test_the_retention_command_exits_1_after_doing_the_rest(
    database: Any, field: str, clock: Any
) -> None:
    await damaged_ledger(database, field)
    ui, out = json_ui()
    assert await removal.retention_body(database, ui, older_than="30d", apply=True) == 1
    done = json.loads(out.getvalue())
    assert [p["thread_id"] for p in done["problems"]] == ["bad"]
    assert len(done["removed_receipts"]) == 3
    assert await live_threads(database) == {"bad"}


@TAMPER
async def test_erasing_the_owner_removes_what_it_can_and_keeps_the_keys(database: Any, field: str) -> None:
    ledger = await damaged_ledger(database, field, sealed=True)
    report = await run_erasure(ledger, user_id="alice")
    assert [d.thread_id for d in report.damaged] == ["bad"]
    assert [r.thread_id for r in report.planned] == ["alice-ok"]

    ui, out = json_ui()
    assert await removal.erase_body(database, ui, user="alice", apply=True) == 1
    done = json.loads(out.getvalue())
    assert [p["thread_id"] for p in done["problems"]] == ["bad"]
    # The damaged thread's content stays readable for the investigation: alice's key is kept, and said why.
    assert done["keys"]["destroyed"] is False
    assert "bad" in done["keys"]["kept_because"]
    assert await live_threads(database) == {"bad", "bob", "carol"}


async def test_the_heads_command_exits_1_and_prints_the_sound_anchors(
    real_backend: Any, database: Any
) -> None:
    await damaged_ledger(database, "seq")
    done = chatledger("heads", uri=real_backend.uri, database=database.name, check=1)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {h["thread_id"] for h in lines} == {"alice-ok", "bob", "carol"}
    assert "bad" in done.stderr
