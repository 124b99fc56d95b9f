"""export / import: JSON Lines that restore exactly; re-imports and bad files change nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from chatledger import Cursor, IntegrityError, InvalidInputError, Ledger
from chatledger.admin import ThreadFilter, collect_stats, export_jsonl, import_jsonl, set_hold, verify
from chatledger.models import Scope
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
