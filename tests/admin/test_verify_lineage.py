"""verify and import on deep chains whose thread documents list a bounded lineage window.

The window is shrunk to 3 so a dozen levels cross it several times; documents written
before the window existed (their whole lineage) are built with a window too large to
ever trim, and must keep verifying, alone and under windowed branches.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import chatledger.models
from chatledger import InvalidInputError, Ledger, ThreadRemovedError
from chatledger.admin import (
    RetentionPolicy,
    ThreadFilter,
    export_jsonl,
    import_jsonl,
    release_hold,
    run_retention,
    set_hold,
    verify,
)
from chatledger.admin.verify import Problem
from chatledger.ledger import storage_of
from tests.admin.conftest import Clock
from tests.behaviour.test_deep_lineage import SMALL_WINDOW, Line, build_chain
from tests.helpers import msg, texts

#: A chain this deep crosses the small window three times.
DEPTH = 3 * SMALL_WINDOW + 2


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(chatledger.models, "LINEAGE_WINDOW", SMALL_WINDOW)
    return SMALL_WINDOW


async def _chain(database: Any, depth: int = DEPTH) -> tuple[Ledger, list[Line]]:
    ledger = Ledger(database)
    lines = await build_chain(ledger.bind(), depth)
    # A second tree, and side branches at a few depths, so the chain is not the whole forest.
    await build_chain(ledger.bind(), 2, name="other")
    book = ledger.bind()
    for line in lines[1::4]:
        await book.append(await book.at(line.thread_id, line.position.offset - 1), [msg("side")])
    return ledger, lines


def _about(problems: list[Problem], thread_id: str) -> list[str]:
    return [p.reason for p in problems if p.thread_id == thread_id]


async def test_windowed_tree_verifies(database: Any, small_window: int) -> None:
    ledger, lines = await _chain(database)
    report = await verify(ledger)
    assert report.ok, report.problems
    assert report.threads == len(await database["threads"].find({}).to_list(None))
    # One thread at a time: its ancestors (outside the chunk) are read as needed.
    for line in (lines[-1], lines[SMALL_WINDOW + 1], lines[1]):
        assert (await verify(Ledger(database), thread_id=line.thread_id)).ok
    assert (await verify(ledger, chunk=1)).ok


async def _set(db: Any, thread_id: str, **fields: Any) -> None:
    await db["threads"].update_one({"_id": thread_id}, {"$set": fields})


async def _wrong_entry(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    lineage = doc["lineage"]
    # Still in order (offsets never go backwards), but not where the line forked.
    lineage[0] = {**lineage[0], "offset": lineage[0]["offset"] - 1}
    await _set(db, doc["_id"], lineage=lineage)


async def _foreign_entry(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    lineage = doc["lineage"]
    lineage[0] = {**lineage[0], "thread_id": "other"}
    await _set(db, doc["_id"], lineage=lineage)


async def _short_window(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    await _set(db, doc["_id"], lineage=doc["lineage"][1:])


async def _wrong_depth(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    await _set(db, doc["_id"], depth=doc["depth"] + 1)


async def _depth_of_a_complete_lineage(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    # Now the window claims to be the whole line: its first entry must then be the root.
    await _set(db, doc["_id"], depth=len(doc["lineage"]))


async def _wrong_root(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    await _set(db, doc["_id"], root_id="other")


async def _missing_window_ancestor(db: Any, doc: dict[str, Any], lines: list[Line]) -> None:
    await db["threads"].delete_one({"_id": doc["lineage"][0]["thread_id"]})


TAMPERING: dict[str, tuple[Callable[[Any, dict[str, Any], list[Line]], Awaitable[None]], str]] = {
    "an entry's fork offset": (_wrong_entry, "lineage disagrees"),
    "an entry's thread": (_foreign_entry, "lineage disagrees"),
    "a window one short": (_short_window, "ancestors"),
    "the depth": (_wrong_depth, "depth"),
    "the depth, to look complete": (_depth_of_a_complete_lineage, "root_id"),
    "the root id": (_wrong_root, "root_id"),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_tampered_windowed_lineage_is_reported(
    database: Any, small_window: int, tampering: str
) -> None:
    _, lines = await _chain(database)
    change, reason = TAMPERING[tampering]
    target = lines[2 * SMALL_WINDOW]
    doc = await database["threads"].find_one({"_id": target.thread_id})
    assert doc is not None
    assert len(doc["lineage"]) == SMALL_WINDOW < doc["depth"]
    await change(database, doc, lines)
    for report in (
        await verify(Ledger(database)),
        await verify(Ledger(database), thread_id=target.thread_id),
    ):
        assert not report.ok
        found = _about(report.problems, target.thread_id)
        assert found, report.problems
        assert reason in found[0], report.problems
    # Every branch below it is reported too, naming it.
    report = await verify(Ledger(database))
    below = _about(report.problems, lines[-1].thread_id)
    assert below
    assert target.thread_id in below[0]


async def test_missing_ancestor_above_the_window_is_reported(database: Any, small_window: int) -> None:
    _, lines = await _chain(database)
    doc = await database["threads"].find_one({"_id": lines[-1].thread_id})
    assert doc is not None
    await _missing_window_ancestor(database, doc, lines)
    report = await verify(Ledger(database), thread_id=lines[-1].thread_id)
    assert not report.ok
    assert "missing" in _about(report.problems, lines[-1].thread_id)[0]


async def test_legacy_full_lineages_keep_reading_and_verifying(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written before the window existed: every document lists its whole lineage.
    monkeypatch.setattr(chatledger.models, "LINEAGE_WINDOW", 10_000)
    ledger = Ledger(database)
    book = ledger.bind()
    legacy = await build_chain(book, DEPTH)
    async for doc in database["threads"].find({}):
        assert len(doc.get("lineage") or ()) == doc["depth"]
    # Upgraded: new branches of the deepest legacy thread store only the window.
    monkeypatch.setattr(chatledger.models, "LINEAGE_WINDOW", SMALL_WINDOW)
    tip = legacy[-1]
    upgraded = Ledger(database)
    book = upgraded.bind()
    at = await book.at(tip.thread_id, tip.position.offset - 1)
    child = (await book.append(at, [msg("after the upgrade")])).position
    assert child.thread is not None
    assert len(child.thread.lineage) == SMALL_WINDOW
    assert child.thread.depth == DEPTH + 1
    assert texts(await book.read(child)) == [*tip.messages(tip.position.offset - 1), "after the upgrade"]
    for line in legacy:
        assert texts(await book.read(await book.head(line.thread_id))) == line.messages()
    grandchild = await book.append(await book.at(child.thread_id, child.offset), [msg("again")])
    assert grandchild.position.thread is not None
    assert texts(await book.read(grandchild.position))[-2:] == ["after the upgrade", "again"]
    assert [r.id for r in await upgraded.lineage(child.thread_id)][-2:] == [tip.thread_id, child.thread_id]
    assert len(await upgraded.lineage(child.thread_id)) == DEPTH + 2
    report = await verify(upgraded)
    assert report.ok, report.problems
    assert (await verify(Ledger(database), thread_id=child.thread_id)).ok


def _rewrite(path: Path, change: Callable[[dict[str, Any]], bool]) -> None:
    """Apply ``change`` to each thread line's document; keep the lines where it returns True."""
    out = []
    threads = events = 0
    keep_events = True
    for text in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(text)
        if item["type"] == "thread":
            keep_events = change(item["doc"])
            threads += keep_events
        elif item["type"] == "event":
            if not keep_events:
                continue
            events += 1
        elif item["type"] in ("header", "end"):
            item["threads"] = threads if item["type"] == "end" else item["threads"]
            if item["type"] == "end":
                item["events"] = events
        if item["type"] != "thread" or keep_events:
            out.append(json.dumps(item, ensure_ascii=False))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


async def _export(ledger: Ledger, path: Path, thread_filter: ThreadFilter | None = None) -> None:
    with path.open("w", encoding="utf-8") as out:
        await export_jsonl(ledger, out, thread_filter)


async def _snapshot(database: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    threads = await database["threads"].find({}).sort("_id", 1).to_list(None)
    events = await database["events"].find({}).sort([("thread_id", 1), ("seq", 1)]).to_list(None)
    return threads, events


async def _wipe(database: Any) -> None:
    for name in ("threads", "events"):
        await database[name].delete_many({})


async def test_export_import_round_trips_a_windowed_tree(
    database: Any, small_window: int, tmp_path: Path
) -> None:
    ledger, lines = await _chain(database)
    before = await _snapshot(database)
    path = tmp_path / "all.jsonl"
    await _export(ledger, path)
    await _wipe(database)
    ledger.forget()
    await import_jsonl(ledger, path)
    assert await _snapshot(database) == before
    assert (await verify(ledger)).ok
    book = ledger.bind()
    assert texts(await book.read(await book.head(lines[-1].thread_id))) == lines[-1].messages()
    # One deep thread's export brings its whole line (found through parent links).
    one = tmp_path / "one.jsonl"
    await _export(ledger, one, ThreadFilter(thread_id=lines[-1].thread_id))
    exported = {json.loads(t)["doc"]["_id"] for t in one.read_text().splitlines() if '"thread"' in t[:20]}
    assert {line.thread_id for line in lines} <= exported


async def test_import_of_windowed_branches_under_stored_ancestors(
    database: Any, small_window: int, tmp_path: Path
) -> None:
    ledger, lines = await _chain(database)
    path = tmp_path / "all.jsonl"
    await _export(ledger, path)
    before = await _snapshot(database)
    # The file keeps only the deepest levels; the database keeps only the rest.
    deep = {line.thread_id for line in lines[-SMALL_WINDOW:]}
    _rewrite(path, lambda doc: doc["_id"] in deep)
    await database["threads"].delete_many({"_id": {"$in": sorted(deep)}})
    await database["events"].delete_many({"thread_id": {"$in": sorted(deep)}})
    ledger.forget()
    summary = await import_jsonl(ledger, path)
    assert summary.threads == len(deep)
    assert await _snapshot(database) == before
    assert (await verify(ledger)).ok


FORGERIES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "an entry": (
        lambda doc: doc["lineage"][0].update(offset=doc["lineage"][0]["offset"] - 1),
        "lineage disagrees",
    ),
    "the window's length": (lambda doc: doc.update(lineage=doc["lineage"][1:]), "ancestors"),
    "the depth": (lambda doc: doc.update(depth=doc["depth"] + 1), "depth"),
    "the root id": (lambda doc: doc.update(root_id="other"), "root_id"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_import_refuses_a_forged_windowed_lineage(
    database: Any, small_window: int, tmp_path: Path, forgery: str
) -> None:
    ledger, lines = await _chain(database)
    path = tmp_path / "all.jsonl"
    await _export(ledger, path)
    target = lines[2 * SMALL_WINDOW].thread_id

    def forge(doc: dict[str, Any]) -> bool:
        if doc["_id"] == target:
            FORGERIES[forgery][0](doc)
        return True

    _rewrite(path, forge)
    await _wipe(database)
    ledger.forget()
    # Refused on the thread line itself, before any event is judged.
    with pytest.raises(InvalidInputError, match=f"thread '{target}'.*{FORGERIES[forgery][1]}"):
        await import_jsonl(ledger, path)
    assert await database["threads"].count_documents({}) == 0
    assert await database["events"].count_documents({}) == 0


async def test_orphan_thread_ids_stream_in_chunks(database: Any) -> None:
    ledger = Ledger(database)
    book = ledger.bind()
    sizes = {"a": 1, "b": 5, "c": 2, "d": 1, "e": 7, "f": 3}
    for tid, events in sizes.items():
        position = book.empty(tid)
        for n in range(events):
            position = (await book.append(position, [msg(f"{tid}{n}")])).position
    store = storage_of(ledger).tallies
    for chunk in (1, 2, 3, 4, 100):
        seen: dict[str, int] = {}
        async for counts in store.thread_ids({"removed": {"$ne": True}}, chunk=chunk):
            assert not seen.keys() & counts.keys()  # each thread in exactly one chunk
            assert len(counts) <= chunk
            seen.update(counts)
        assert seen == sizes, chunk
    # Deleted thread documents and a tampered thread id are still found by verify.
    await database["threads"].delete_many({"_id": {"$in": ["b", "e"]}})
    await database["events"].update_one({"_id": "f#1"}, {"$unset": {"thread_id": ""}})
    report = await verify(Ledger(database))
    reasons = {p.thread_id: p.reason for p in report.problems}
    assert "no thread document" in reasons["b"]
    assert reasons["b"].startswith("5 events")
    assert reasons["e"].startswith("7 events")
    assert "None" in reasons


async def test_a_hold_above_the_window_protects_the_deepest_branch(
    database: Any, small_window: int, clock: Clock
) -> None:
    ledger, lines = await _chain(database)
    deep = lines[-1].thread_id
    record = await ledger.thread(deep, None)
    assert record is not None
    assert "root" not in {f.thread_id for f in record.lineage}  # the root lies above the window
    await set_hold(ledger, "root", reason="case 7", by="legal")
    clock.advance(days=60)
    report = await run_retention(ledger, RetentionPolicy.from_mapping({"default": "30d"}), now=clock.now)
    planned = {tid for removal in report.planned for tid in removal.thread_ids}
    assert not planned & {line.thread_id for line in lines}
    assert "other" in planned
    # The other tree, never held, is planned; released, the chain goes too.
    assert await release_hold(ledger, "root", reason="case closed")
    await run_retention(ledger, RetentionPolicy.from_mapping({"default": "30d"}), apply=True, now=clock.now)
    assert await database["threads"].count_documents({"removed": {"$exists": False}}) == 0
    assert (await verify(ledger)).ok


async def test_reading_past_the_window_of_a_removed_line_says_it_was_removed(
    database: Any, small_window: int, clock: Clock
) -> None:
    ledger, lines = await _chain(database)
    book = ledger.bind()
    deep = await book.head(lines[-1].thread_id)
    assert deep.earlier is not None
    assert texts(await book.read(deep)) == lines[-1].messages()
    clock.advance(days=60)
    await run_retention(ledger, RetentionPolicy.from_mapping({"default": "30d"}), apply=True, now=clock.now)
    # A position resolved before the removal: within the window, and reaching past it.
    with pytest.raises(ThreadRemovedError):
        await book.read(deep, offset=-1)
    with pytest.raises(ThreadRemovedError):
        await book.read(deep, offset=0, limit=1)
