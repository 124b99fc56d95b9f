"""Deep branch chains: thread documents list a bounded window of ancestors, reads follow the rest.

A branch's thread document lists only its nearest ``LINEAGE_WINDOW`` ancestors; a line
deeper than that is followed through the window's first ancestor's own document. Most
tests shrink the window to 3 so a chain of a dozen branches crosses it several times.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import bson
import pytest

import chatledger.models
from chatledger import IntegrityError, Ledger
from chatledger.ledger import Binding, Position, storage_of
from tests.helpers import compact_prefix, msg, texts

#: The window most tests use: small, so a short chain crosses it several times.
SMALL_WINDOW = 3


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(chatledger.models, "LINEAGE_WINDOW", SMALL_WINDOW)
    return SMALL_WINDOW


@dataclass
class Line:
    """A thread at the end of a chain, and what its line must read as."""

    position: Position
    #: The texts of each event along the line (index ``seq - 1``).
    events: list[list[str]]
    #: The thread that wrote each event along the line (index ``seq - 1``).
    owners: list[str]

    @property
    def thread_id(self) -> str:
        return self.position.thread_id

    def messages(self, upto: int | None = None) -> list[str]:
        """The texts visible at ``seq`` ``upto`` (default: the head)."""
        return list(itertools.chain.from_iterable(self.events[:upto]))

    def message_owners(self) -> list[str]:
        """The thread holding each message along the line."""
        return [owner for owner, event in zip(self.owners, self.events, strict=True) for _ in event]


async def build_chain(book: Binding, depth: int, *, name: str = "root") -> list[Line]:
    """Return a root and ``depth`` branches, each forked from the one before (index = depth).

    Every fifth level forks one event behind its parent's head; the others fork at the
    parent's own fork point, so a fork event can lie many levels (windows) above.
    """
    position = book.empty(name)
    events: list[list[str]] = []
    for i in range(2):
        batch = [f"{name} e{i} m{j}" for j in range(i + 1)]
        position = (await book.append(position, [msg(t) for t in batch])).position
        events.append(batch)
    lines = [Line(position, events, [name, name])]
    for level in range(1, depth + 1):
        parent = lines[-1]
        record = parent.position.thread
        assert record is not None
        fork = parent.position.offset - 1 if level % 5 == 1 or not record.base_offset else record.base_offset
        at = await book.at(parent.thread_id, fork)
        first = [f"L{level} first a", f"L{level} first b"]
        result = await book.append(at, [msg(t) for t in first])
        assert result.branched
        second = [f"L{level} second"]
        head = (await book.append(result.position, [msg(t) for t in second])).position
        tid = head.thread_id
        lines.append(Line(head, [*parent.events[:fork], first, second], [*parent.owners[:fork], tid, tid]))
    return lines


def pages(total: int) -> Iterator[tuple[int, int | None]]:
    """(offset, limit) pairs: everything, the last two, a middle slice, the first three."""
    yield from ((0, None), (-2, None), (total // 3, 3), (0, 3))


async def test_every_depth_reads_every_message(database: Any, small_window: int) -> None:
    ledger = Ledger(database)
    book = ledger.bind()
    lines = await build_chain(book, 4 * small_window + 2)
    fresh = Ledger(database).bind()  # nothing cached: every ancestor is read from the database
    for depth, line in enumerate(lines):
        expected = line.messages()
        position = await fresh.head(line.thread_id)
        assert position.messages == len(expected)
        for offset, limit in pages(len(expected)):
            page = texts(await fresh.read(position, offset=offset, limit=limit))
            want = expected[offset:] if limit is None else expected[offset:][:limit]
            assert page == want, (depth, offset, limit)
        chain = await ledger.lineage(line.thread_id)
        assert [r.depth for r in chain] == list(range(depth + 1))
        assert chain[0].id == "root"
        assert chain[-1].id == line.thread_id
        # Each record's parent is the one before it: the whole line, root first.
        assert all(
            child.parent is not None and child.parent["thread_id"] == parent.id
            for parent, child in itertools.pairwise(chain)
        )


async def test_thread_documents_hold_at_most_the_window(database: Any, small_window: int) -> None:
    lines = await build_chain(Ledger(database).bind(), 3 * small_window)
    docs = {d["_id"]: d async for d in database["threads"].find({})}
    for depth, line in enumerate(lines):
        doc = docs[line.thread_id]
        assert doc["depth"] == depth
        assert len(doc.get("lineage") or ()) == min(depth, small_window)
        if depth:
            assert doc["lineage"][-1]["thread_id"] == lines[depth - 1].thread_id
            assert doc["root_id"] == "root"


async def test_cursors_before_fork_points_land_on_the_thread_that_wrote_them(
    database: Any, small_window: int
) -> None:
    book = Ledger(database).bind()
    deep = (await build_chain(book, 3 * small_window + 1))[-1]
    record = deep.position.thread
    assert record is not None
    fresh = Ledger(database).bind()
    for seq in range(deep.position.offset + 1):
        position = await fresh.resolve({"thread_id": deep.thread_id, "offset": seq})
        if seq >= record.base_offset:
            assert position.thread_id == deep.thread_id
        else:
            assert position.thread_id == (deep.owners[seq - 1] if seq else "root"), seq
        assert position.offset == seq
        assert position.messages == len(deep.messages(seq))
        assert texts(await fresh.read(position)) == deep.messages(seq), seq


async def test_branching_from_old_points_of_a_deep_line(database: Any, small_window: int) -> None:
    book = Ledger(database).bind()
    deep = (await build_chain(book, 3 * small_window + 1))[-1]
    record = deep.position.thread
    assert record is not None
    # Every position of the line that lies behind its thread's head branches from it.
    for seq in range(1, record.base_offset):
        at = await book.resolve({"thread_id": deep.thread_id, "offset": seq})
        result = await book.append(at, [msg(f"retry at {seq}")])
        assert result.branched
        branch = result.position
        assert texts(await book.read(branch)) == [*deep.messages(seq), f"retry at {seq}"]
        assert texts(await book.read(branch, offset=-1)) == [f"retry at {seq}"]
        owner = await book.ledger.thread(deep.owners[seq - 1], None)
        made = branch.thread
        assert owner is not None
        assert made is not None
        assert made.depth == owner.depth + 1
        assert len(made.lineage) == min(made.depth, small_window)
        assert made.continues(owner) is None


async def test_real_window_bounds_documents_and_reads_past_it(database: Any) -> None:
    window = chatledger.models.LINEAGE_WINDOW
    book = Ledger(database).bind()
    lines = await build_chain(book, 2 * window + 6)
    sizes = {}
    async for doc in database["threads"].find({}):
        assert len(doc.get("lineage") or ()) == min(doc["depth"], window)
        sizes[doc["depth"]] = len(bson.encode(doc))
    # The document stops growing once the window is full.
    assert sizes[2 * window + 6] - sizes[window] < 200
    deep = lines[-1]
    fresh = Ledger(database).bind()
    position = await fresh.head(deep.thread_id)
    assert texts(await fresh.read(position)) == deep.messages()
    assert texts(await fresh.read(position, offset=-3)) == deep.messages()[-3:]
    assert texts(await fresh.read(await fresh.at(deep.thread_id, 2))) == deep.messages(2)


def _counting(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str, calls: list[str]
) -> Callable[..., Awaitable[Any]]:
    original = getattr(target, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return counted


async def test_read_cost_within_and_past_the_window(
    database: Any, small_window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    depth = 5 * small_window
    deep = (await build_chain(Ledger(database).bind(), depth))[-1]
    ledger = Ledger(database)
    book = ledger.bind()
    position = await book.head(deep.thread_id)
    calls: list[str] = []
    for name in ("get", "get_raw"):
        _counting(monkeypatch, storage_of(ledger).threads, name, calls)
    _counting(monkeypatch, storage_of(ledger).events, "page", calls)
    owners = deep.message_owners()
    total = len(owners)
    window_start = position.earlier
    assert window_start is not None

    async def cost(offset: int, limit: int | None = None) -> tuple[int, int]:
        calls.clear()
        page = texts(await book.read(position, offset=offset, limit=limit))
        start, stop, _ = slice(offset, None).indices(total)
        stop = stop if limit is None else min(stop, start + limit)
        assert page == deep.messages()[start:stop]
        touched = len(set(owners[start:stop]))
        assert calls.count("page") == touched  # one range read per segment the page touches
        return calls.count("get") + calls.count("get_raw"), touched

    # The last page, and a page starting exactly where the window starts: no thread read.
    assert (await cost(-2))[0] == 0
    assert (await cost(window_start.messages))[0] == 0
    # The whole line crosses (depth - window) / window windows: one thread read each.
    assert (await cost(0))[0] == (depth - small_window) // small_window
    # Read again: the ancestors' documents are cached (they never change).
    assert (await cost(0))[0] == 0
    # A fresh ledger reading a page just before the window crosses exactly one.
    ledger.forget()
    position = await book.head(deep.thread_id)
    assert (await cost(window_start.messages - 1, 2))[0] == 1


async def test_resolving_far_back_reads_one_thread_per_window(
    database: Any, small_window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    depth = 3 * small_window + 1
    lines = await build_chain(Ledger(database).bind(), depth)
    deep = lines[-1]
    ledger = Ledger(database)
    book = ledger.bind()
    calls: list[str] = []
    _counting(monkeypatch, storage_of(ledger).threads, "get", calls)
    # Its own thread, one per window crossed (the last one is the root's), nothing else.
    position = await book.resolve({"thread_id": deep.thread_id, "offset": 1})
    assert position.thread_id == "root"
    assert calls.count("get") == 1 + -(-(depth - small_window) // small_window) + 1
    # A branch's own fork point, held within its window: its document only, as before the window.
    for line in reversed(lines):
        record = line.position.thread
        assert record is not None
        owner = line.owners[record.base_offset - 1]
        if record.windowed and owner in {f.thread_id for f in record.lineage[1:]}:
            break
    else:
        raise AssertionError("the chain has no windowed branch forked within its window")
    calls.clear()
    ledger.forget()
    position = await book.resolve({"thread_id": line.thread_id, "offset": record.base_offset})
    assert position.thread_id == line.thread_id
    assert calls.count("get") == 1
    assert texts(await book.read(position)) == line.messages(record.base_offset)


async def test_an_ancestor_deleted_above_the_window_is_damage_not_a_removal(
    database: Any, small_window: int
) -> None:
    lines = await build_chain(Ledger(database).bind(), 3 * small_window)
    deep = lines[-1]
    record = deep.position.thread
    assert record is not None
    assert record.windowed
    # Deleted outright (no removal ever ran: no tombstone, no receipt).
    await database["threads"].delete_one({"_id": record.lineage[0].thread_id})
    fresh = Ledger(database).bind()
    position = await fresh.head(deep.thread_id)
    with pytest.raises(IntegrityError, match="descends from missing thread"):
        await fresh.read(position)


async def test_a_thread_document_that_contradicts_itself_is_never_followed(
    database: Any, small_window: int
) -> None:
    lines = await build_chain(Ledger(database).bind(), 2 * small_window)
    deep = lines[-1]
    # Tampered: the lineage emptied, the depth kept (it would read as "windowed" with no window).
    await database["threads"].update_one({"_id": deep.thread_id}, {"$set": {"lineage": []}})
    fresh = Ledger(database).bind()
    for attempt in (fresh.head(deep.thread_id), fresh.at(deep.thread_id, 1)):
        with pytest.raises(IntegrityError, match="contradicts itself"):
            await attempt


async def test_a_summary_further_up_than_the_window_is_seen_and_superseded(
    database: Any, small_window: int
) -> None:
    from chatledger.admin import verify
    from chatledger.ledger.compaction import compacted_view

    ledger = Ledger(database)
    book = ledger.bind()
    position = book.empty("root")
    for text in ("e1", "e2"):
        position = (await book.append(position, [msg(text)])).position

    position = await compact_prefix(book, position, 2, "summary of e1-e2")  # the root's seq 3
    for text in ("e4", "e5"):
        position = (await book.append(position, [msg(text)])).position
    # A chain deeper than three windows, each branch forking at its parent's own event.
    for level in range(1, 3 * small_window + 2):
        at = await book.at(position.thread_id, position.offset - 1)
        result = await book.append(at, [msg(f"L{level} a")])
        assert result.branched
        position = (await book.append(result.position, [msg(f"L{level} b")])).position
    fresh = Ledger(database).bind()  # nothing cached
    deep = await fresh.head(position.thread_id)
    view = texts(await compacted_view(fresh, deep))
    assert view[0] == "summary of e1-e2"  # not the full transcript
    assert "e1" not in view
    assert view[1] == "e4"
    # A new summary there supersedes the root's, and verify agrees with what it names.
    head = await compact_prefix(fresh, deep, deep.offset - 1, "summary of it all")
    newest = await database["events"].find_one({"thread_id": head.thread_id, "seq": head.offset})
    assert newest["compaction"]["previous"] == 3
    assert (await verify(ledger)).ok
    assert (await verify(ledger, thread_id=head.thread_id)).ok
    assert texts(await compacted_view(fresh, head))[0] == "summary of it all"
