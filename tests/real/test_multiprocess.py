"""Several OS processes append to one thread at once: nothing lost, nothing doubled, every branch reachable.

Four writer processes (tests/real/_append_worker.py), each with its own client, start
together on the same thread: one appends every message at the same shared cursor, one
resumes a store from that cursor and continues its own line, two open the thread at its
head and continue their own lines. Every clash on ``(thread_id, seq)`` becomes a branch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chatledger import Ledger, MongoChatMessageStore
from tests.helpers import msg, raw_docs, read, texts
from tests.real._support import finish_workers, start_workers

pytestmark = pytest.mark.real

MODES = ("fixed", "resume", "head", "head")
APPENDS = 25  # per process
TIME_LIMIT = 180  # seconds for the whole run; the processes are killed after that


async def _run_writers(configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    procs = await start_workers("tests.real._append_worker", configs, time_limit=TIME_LIMIT)
    results: list[list[dict[str, Any]]] = await finish_workers(procs, time_limit=TIME_LIMIT)
    return results


async def test_processes_appending_to_one_thread_lose_and_double_nothing(
    real_backend: Any, database: Any
) -> None:
    origin = MongoChatMessageStore(database)
    await origin.add_messages([msg("shared start")])
    root = origin.thread_id
    shared = await origin.serialize_state()

    configs = [
        {
            "worker": k,
            "mode": mode,
            "count": APPENDS,
            "uri": real_backend.uri,
            "driver": real_backend.driver,
            "db": database.name,
            "root": root,
            "cursor": shared,
        }
        for k, mode in enumerate(MODES)
    ]
    results = await _run_writers(configs)

    # Every acknowledged append is stored exactly once.
    events = await raw_docs(database["events"])
    stored = Counter(m["text"] for e in events for m in e["messages"])
    expected = Counter(["shared start"] + [r["text"] for rs in results for r in rs])
    assert len(expected) == 1 + len(MODES) * APPENDS
    assert stored == expected
    # No position is held twice: the unique index did its job under real contention.
    assert len({(e["thread_id"], e["seq"]) for e in events}) == len(events)
    # The writers really did collide (the fixed-cursor writer alone forces branches).
    assert sum(r["branched"] for rs in results for r in rs) >= APPENDS - 1

    # Every branch leads back to the root, through its parents and through lineage().
    ledger = Ledger(database)
    threads = {t["_id"]: t for t in await raw_docs(database["threads"])}
    assert root in threads
    assert threads[root]["parent"] is None
    for tid, doc in threads.items():
        assert doc["root_id"] == root
        hops, at = 0, doc
        while at["parent"] is not None:
            at = threads[at["parent"]["thread_id"]]  # KeyError = a dangling parent
            hops += 1
            assert hops <= len(threads), "cycle in the parent chain"
        assert at["_id"] == root
        assert hops == doc["depth"]
        lineage = await ledger.lineage(tid)
        assert lineage[0].id == root
        assert len(lineage) == doc["depth"] + 1
        assert lineage[-1].id == tid
        # Each branch's line starts with the shared prefix and replays without gaps.
        head = await ledger.bind().head(tid)
        line = texts(await read(ledger, head))
        assert line[0] == "shared start"
        assert len(line) == len(set(line))

    # Each writer, reading where it ended, sees its own conversation, in its order.
    for k, (mode, rs) in enumerate(zip(MODES, results, strict=True)):
        mine = [r["text"] for r in rs]
        if mode == "fixed":
            for r in rs:
                assert texts(await read(ledger, r["cursor"])) == ["shared start", r["text"]]
        else:
            line = texts(await read(ledger, rs[-1]["cursor"]))
            assert line[0] == "shared start"
            assert [t for t in line if t.startswith(f"w{k}-")] == mine
