"""export / import: JSON Lines that restore exactly; re-imports and bad files change nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from chatledger import Cursor, IntegrityError, InvalidInputError, Ledger
from chatledger.admin import (
    ThreadFilter,
    collect_stats,
    export_jsonl,
    import_jsonl,
    run_erasure,
    set_hold,
    verify,
)
from chatledger.admin import export as export_module
from chatledger.hashing import GENESIS_HASH, event_hash
from chatledger.ledger import Binding
from chatledger.models import Scope, ThreadRecord
from tests.admin.conftest import branch, msg, talk
from tests.helpers import append


async def _snapshot(database: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    threads = (
        await database["threads"].find({}, {"legal_holds": 0, "holds_rev": 0}).sort("_id", 1).to_list(None)
    )
    events = await database["events"].find({}).sort([("thread_id", 1), ("seq", 1)]).to_list(None)
    return threads, events


async def _wipe(database: Any) -> None:
    for name in ("threads", "events"):
        await database[name].delete_many({})


async def _story(database: Any) -> tuple[Ledger, str]:
    ledger = Ledger(database)
    await talk(ledger, "r1", 3, tenant_id="acme", user_id="alice")
    # Content that must survive exactly: unicode, emoji, dotted and dollar keys inside the payload.
    odd = msg("user", "naïve café 🧾")
    odd.additional_properties = {"a.b": 1, "$x": [1, [2, 3]]}
    binding = ledger.bind(tenant_id="acme", user_id="alice")
    await binding.append(await binding.head("r1"), [odd])
    b = await branch(ledger, "r1", 2, turns=2)
    await talk(ledger, "r2", 2, tenant_id="bank", user_id="bob")
    return ledger, b


async def test_round_trip_restores_exactly(database: Any, tmp_path: Path) -> None:
    ledger, b = await _story(database)
    before = await _snapshot(database)
    stats = await collect_stats(ledger)
    path = tmp_path / "all.jsonl"
    with path.open("w", encoding="utf-8") as out:
        summary = await export_jsonl(ledger, out)
    assert (summary.threads, summary.events) == (3, 8)
    await _wipe(database)
    ledger.forget()
    restored = await import_jsonl(ledger, path)
    assert (restored.threads, restored.events) == (3, 8)
    assert await _snapshot(database) == before
    assert (await verify(ledger)).ok
    assert (await collect_stats(ledger)).to_dict() == stats.to_dict()
    record = await ledger.thread(b, None)
    assert record is not None
    binding = ledger.bind(Scope.of(record))
    messages = await binding.read(await binding.head(b))
    assert [m.text for m in messages[:5]] == ["r1 q0", "r1 a0", "r1 q1", "r1 a1", "edit and retry"]
    # A re-import is a no-op.
    again = await import_jsonl(ledger, path)
    assert (again.threads, again.events, again.threads_present, again.events_present) == (0, 0, 3, 8)


async def test_one_thread_brings_its_ancestors_and_branches(database: Any) -> None:
    ledger, b = await _story(database)
    out = io.StringIO()
    await export_jsonl(ledger, out, ThreadFilter(thread_id="r1"))
    kinds = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [k["doc"]["_id"] for k in kinds if k["type"] == "thread"] == ["r1", b]
    out = io.StringIO()
    await export_jsonl(ledger, out, ThreadFilter(tenant_id="bank"))
    assert [json.loads(x)["doc"]["_id"] for x in out.getvalue().splitlines() if '"thread"' in x] == ["r2"]


async def test_holds_are_not_changed_by_import(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    path = tmp_path / "x.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out)
    await set_hold(ledger, "r2", reason="case")
    await import_jsonl(ledger, path)
    doc = await database["threads"].find_one({"_id": "r2"})
    assert [h["reason"] for h in doc["legal_holds"]] == ["case"]


def _mangle_truncate(lines: list[str]) -> list[str]:
    return lines[:-2]


def _mangle_content(lines: list[str]) -> list[str]:
    return [line.replace("r2 a1", "r2 a1 (edited)") for line in lines]


def _mangle_garbage(lines: list[str]) -> list[str]:
    return [*lines[:3], "{not json\n", *lines[3:]]


def _mangle_header(lines: list[str]) -> list[str]:
    return lines[1:]


@pytest.mark.parametrize("mangle", [_mangle_truncate, _mangle_content, _mangle_garbage, _mangle_header])
async def test_bad_files_change_nothing(database: Any, tmp_path: Path, mangle: Any) -> None:
    ledger, _ = await _story(database)
    out = io.StringIO()
    await export_jsonl(ledger, out)
    await _wipe(database)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(mangle(out.getvalue().splitlines(keepends=True))), encoding="utf-8")
    with pytest.raises(InvalidInputError):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 0
    assert await database["events"].count_documents({}) == 0


async def test_import_refuses_to_overwrite_a_different_thread(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    path = tmp_path / "x.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out)
    await _wipe(database)
    ledger.forget()
    # Someone else's "r2" lives here now.
    await append(ledger, Cursor(thread_id="r2", offset=0), [msg("user", "different")], tenant_id="other")
    with pytest.raises(IntegrityError):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 1


# --------------------------------------------------------------------------- forged files
#
# Each forgery below is internally consistent wherever the forger could make it so: hashes,
# digests and the end line are recomputed after the change, so only the check that the
# change defeats can refuse the file.

_JSON = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)
Records = list[dict[str, Any]]


def _parse(text: str) -> Records:
    return [json_util.loads(line, json_options=_JSON) for line in text.splitlines()]


def _reseal(records: Records) -> str:
    """Recompute every digest, chain and the end line, as a careful forger would."""
    hashes: dict[tuple[str, int], str] = {}
    record: ThreadRecord | None = None
    prev = GENESIS_HASH
    threads = events = 0
    for item in records:
        doc = item.get("doc")
        if item["type"] == "thread":
            record = ThreadRecord.model_validate(doc)
            prev = hashes.get((record.holder(record.base_offset), record.base_offset), GENESIS_HASH)
            threads += 1
        elif item["type"] == "event":
            assert record is not None
            if doc["seq"] == record.base_offset + 1 and doc.get("v") == 2:
                doc["thread_digest"] = record.digest()
            doc["prev_hash"] = prev
            doc["hash"] = prev = event_hash(prev, doc)
            hashes[doc["thread_id"], doc["seq"]] = prev
            events += 1
        elif item["type"] == "end":
            item.update(threads=threads, events=events)
    return "".join(json_util.dumps(r, json_options=_JSON, ensure_ascii=False) + "\n" for r in records)


def _event(records: Records, key: str) -> dict[str, Any]:
    return next(r["doc"] for r in records if r["type"] == "event" and r["doc"]["_id"] == key)


def _forge_middle(records: Records) -> str:
    # Event r1#2 is rewritten and re-hashed, but event r1#3 still chains to the original.
    doc = _event(records, "r1#2")
    doc["messages"][0]["text"] = "I never said that"
    doc["hash"] = event_hash(doc["prev_hash"], doc)
    return "".join(json_util.dumps(r, json_options=_JSON) + "\n" for r in records)


def _gap(records: Records) -> str:
    return _reseal([r for r in records if r.get("doc", {}).get("_id") != "r1#2"])


def _lying_count(records: Records) -> str:
    _event(records, "r2#1")["count"] = 3
    return _reseal(records)


def _control_char_id(records: Records) -> str:
    bad = "r\x072"
    for item in records:
        doc = item.get("doc") or {}
        if doc.get("_id") == "r2":
            doc.update(_id=bad, root_id=bad)
        elif doc.get("thread_id") == "r2":
            doc.update(_id=f"{bad}#{doc['seq']}", thread_id=bad, root_id=bad)
    return _reseal(records)


def _huge_event(records: Records) -> str:
    _event(records, "r2#2")["messages"][1]["text"] = "x" * (17 * 1024 * 1024)
    return _reseal(records)


def _undecodable(records: Records) -> str:
    _event(records, "r2#1")["messages"][0] = {"role": "user", "text": "hi", "payload": "{not json"}
    return _reseal(records)


def _not_a_message(records: Records) -> str:
    _event(records, "r2#1")["messages"][0] = {"role": "user", "text": "hi", "payload": "[1, 2]"}
    return _reseal(records)


def _rekeyed(records: Records) -> str:
    _event(records, "r2#2")["_id"] = "r2#9"
    return _reseal(records)


def _event_moved_to_another_user(records: Records) -> str:
    _event(records, "r2#2")["user_id"] = "mallory"
    return _reseal(records)


def _branch_without_parent(records: Records) -> str:
    return _reseal(
        [
            r
            for r in records
            if r.get("doc", {}).get("_id") != "r1" and r.get("doc", {}).get("thread_id") != "r1"
        ]
    )


FORGERIES = {
    "forged middle": (_forge_middle, "prev_hash"),
    "gapped": (_gap, "missing"),
    "count lying": (_lying_count, "count 3 but 2 messages"),
    "control character in an id": (_control_char_id, "control characters"),
    "17 MiB event": (_huge_event, "document limit"),
    "payload not JSON": (_undecodable, "cannot be decoded"),
    "payload not a message": (_not_a_message, "cannot be decoded"),
    "re-keyed event": (_rekeyed, "re-keyed"),
    "event moved to another user": (_event_moved_to_another_user, "user_id"),
    "branch without its parent": (_branch_without_parent, "parent 'r1' is missing"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_files_are_refused_whole(database: Any, tmp_path: Path, forgery: str) -> None:
    ledger, _ = await _story(database)
    out = io.StringIO()
    await export_jsonl(ledger, out)
    await _wipe(database)
    forge, why = FORGERIES[forgery]
    path = tmp_path / "forged.jsonl"
    path.write_text(forge(_parse(out.getvalue())), encoding="utf-8")
    with pytest.raises(InvalidInputError, match=why):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 0
    assert await database["events"].count_documents({}) == 0


async def test_a_resealed_file_imports_and_verifies(database: Any, tmp_path: Path) -> None:
    # The forging helper itself is faithful: resealing an untouched export changes nothing.
    ledger, _ = await _story(database)
    out = io.StringIO()
    await export_jsonl(ledger, out)
    await _wipe(database)
    path = tmp_path / "same.jsonl"
    path.write_text(_reseal(_parse(out.getvalue())), encoding="utf-8")
    assert (await import_jsonl(ledger, path)).events == 8
    assert (await verify(ledger)).ok


async def test_a_thread_record_changed_in_the_file_is_refused(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    out = io.StringIO()
    await export_jsonl(ledger, out)
    await _wipe(database)
    records = _parse(out.getvalue())
    # Only the thread digest in r2's first event can tell that its metadata was changed.
    thread = next(r["doc"] for r in records if r["type"] == "thread" and r["doc"]["_id"] == "r2")
    thread["metadata"] = {"session_id": "someone else's"}
    path = tmp_path / "owner.jsonl"
    path.write_text("".join(json_util.dumps(r, json_options=_JSON) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(InvalidInputError, match="thread_digest"):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 0


# --------------------------------------------------------------------------- all or nothing


async def _import_that_will_clash(database: Any, tmp_path: Path) -> tuple[Ledger, Path]:
    """Export the story, empty the database, and plant what will stop its import part-way."""
    ledger, _ = await _story(database)
    path = tmp_path / "all.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out)
    await _wipe(database)
    ledger.forget()
    # A stray event sits where the last thread of the file will go (no thread document,
    # so nothing shows before writing starts): r1 and its branch are written first.
    await database["events"].insert_one(
        {"_id": "r2#2", "thread_id": "r2", "seq": 2, "first_message": 2, "count": 0, "hash": "x" * 64}
    )
    return ledger, path


def _when_r1_is_imported(
    monkeypatch: pytest.MonkeyPatch, database: Any, other_process: Callable[[Binding], Awaitable[None]]
) -> None:
    """Run ``other_process`` (another process's writer in r1's scope) the moment the import wrote r1."""
    writer = Ledger(database)
    insert_thread = export_module._Writer.thread

    async def thread_then_other(self: Any, doc: dict[str, Any]) -> bool:
        wrote = await insert_thread(self, doc)
        if doc["_id"] == "r1":
            await other_process(writer.bind(Scope.of(ThreadRecord.model_validate(doc))))
        return wrote

    monkeypatch.setattr(export_module._Writer, "thread", thread_then_other)


async def test_a_clash_part_way_takes_back_what_was_written(database: Any, tmp_path: Path) -> None:
    ledger, path = await _import_that_will_clash(database, tmp_path)
    with pytest.raises(IntegrityError, match="different event at seq 2"):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 0
    assert [d["_id"] for d in await database["events"].find({}).to_list(None)] == ["r2#2"]


async def test_an_append_racing_a_rolled_back_import_is_kept_and_named(
    database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, path = await _import_that_will_clash(database, tmp_path)

    async def append_meanwhile(binding: Binding) -> None:
        await binding.append(await binding.head("r1"), [msg("user", "written during the import")])

    _when_r1_is_imported(monkeypatch, database, append_meanwhile)
    with pytest.raises(IntegrityError, match=r"different event at seq 2.*another process wrote 1 events"):
        await import_jsonl(ledger, path)
    # The import's own documents are gone; the other process's acknowledged event is not.
    assert await database["threads"].count_documents({}) == 0
    left = sorted(d["_id"] for d in await database["events"].find({}).to_list(None))
    assert len(left) == 2
    assert left[1] == "r2#2"
    assert left[0].startswith("r1#")
    # Once the clash is cleared, re-running the import puts r1 back under that event.
    await database["events"].delete_one({"_id": "r2#2"})
    monkeypatch.undo()
    await import_jsonl(Ledger(database), path)
    assert (await verify(Ledger(database))).ok


async def test_a_branch_racing_a_rolled_back_import_is_kept_and_named(
    database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, path = await _import_that_will_clash(database, tmp_path)
    branched: list[str] = []

    async def edit_first_turn(binding: Binding) -> None:
        result = await binding.append(await binding.at("r1", 1), [msg("user", "an edit")])
        branched.append(result.position.thread_id)

    _when_r1_is_imported(monkeypatch, database, edit_first_turn)
    with pytest.raises(IntegrityError, match="another process wrote 1 events") as caught:
        await import_jsonl(ledger, path)
    assert branched[0] in str(caught.value)
    # The branch and its event are kept; the import's own documents are gone.
    assert [d["_id"] for d in await database["threads"].find({}).to_list(None)] == branched


async def test_reimport_after_erasure_is_refused(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    path = tmp_path / "backup.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out)
    await run_erasure(ledger, user_id="alice", apply=True)
    before = await _snapshot(database)
    # An old backup must not silently bring erased conversations back.
    with pytest.raises(InvalidInputError, match="were removed"):
        await import_jsonl(ledger, path)
    assert await _snapshot(database) == before


async def test_forced_import_of_removed_threads_leaves_a_receipt(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    path = tmp_path / "bank.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out, ThreadFilter(tenant_id="bank"))
    # r2 was removed here by a removal that deleted its documents outright (ChatLedger 0.1).
    await database["events"].delete_many({"thread_id": "r2"})
    await database["threads"].delete_one({"_id": "r2"})
    await database["audit"].insert_many(
        [
            {"_id": "rm1", "kind": "removal", "at": 1, "thread_ids": ["r2"]},
            {"_id": "done1", "kind": "removal.completed", "receipt_id": "rm1"},
        ]
    )
    ledger.forget()
    with pytest.raises(InvalidInputError, match="rm1"):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({"_id": "r2"}) == 0
    summary = await import_jsonl(ledger, path, force=True, by="dpo@example")
    assert (summary.threads, summary.events, summary.forced) == (1, 2, ["r2"])
    [receipt] = await database["audit"].find({"kind": "import.forced"}).to_list(None)
    assert (receipt["thread_ids"], receipt["by"]) == (["r2"], "dpo@example")
    assert (await verify(ledger)).ok


async def test_a_tombstoned_id_is_refused_even_when_forced(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    path = tmp_path / "bank.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out, ThreadFilter(tenant_id="bank"))
    await database["events"].delete_many({"thread_id": "r2"})
    await database["threads"].replace_one({"_id": "r2"}, {"root_id": "r2", "removed": {"receipt_id": "x"}})
    with pytest.raises(InvalidInputError, match="tombstone"):
        await import_jsonl(ledger, path, force=True)
    assert await database["events"].count_documents({"thread_id": "r2"}) == 0


async def test_imported_holds_leave_receipts(database: Any, tmp_path: Path) -> None:
    ledger, _ = await _story(database)
    await set_hold(ledger, "r2", reason="litigation", case="C-7")
    path = tmp_path / "held.jsonl"
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out)
    await _wipe(database)
    await database["audit"].delete_many({})
    ledger.forget()
    summary = await import_jsonl(ledger, path, by="restore@ops")
    assert summary.holds == 1
    [receipt] = await database["audit"].find({"kind": "hold.set"}).to_list(None)
    assert (receipt["thread_id"], receipt["case"], receipt["imported"], receipt["by"]) == (
        "r2",
        "C-7",
        True,
        "restore@ops",
    )
    # A re-import writes nothing, so it records no second hold.
    await import_jsonl(ledger, path)
    assert await database["audit"].count_documents({"kind": "hold.set"}) == 1


async def test_force_must_be_a_bool(database: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        await import_jsonl(database, tmp_path / "x.jsonl", force="false")  # type: ignore[arg-type]
