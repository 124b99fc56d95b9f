"""Retention at scale: removing a lineage reads and writes its documents by ``_id``, not by thread.

What an operator of a large deployment notices: on a server that scans for anything but
an exact ``_id`` lookup (FerretDB v1), each query keyed otherwise costs a read of the
whole collection. ``retention --apply`` sends the same number of such queries whether it
removes a few lineages of short threads or many lineages of long ones: none is sent per
lineage (the trees of a batch of lineages are read together).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from pymongo import monitoring

from chatledger import Ledger
from chatledger.admin import RetentionPolicy, plan_retention, run_retention, verify
from chatledger.admin import removal as removal_module
from chatledger.admin.removal import execute
from chatledger.ledger import storage_of
from tests.admin.conftest import Clock, branch, talk
from tests.conftest import Backend
from tests.helpers import Listener

POLICY = RetentionPolicy.from_mapping({"default": "30d"})

#: The commands that can read or change events, and where each carries its filters.
_FILTERED = ("find", "update", "delete", "aggregate", "count")


def _keyed(query: Mapping[str, Any], name: str) -> bool:
    """Whether a filter names its documents by ``_id`` as the server serves it from its index.

    One key (other conditions beside it are fine, except for a delete: FerretDB v1 scans
    a delete whose filter is anything but exactly ``{_id: x}``), or, for a read, a list of
    keys (a scan on FerretDB v1, but one per batch of threads, never per lineage).
    """
    key = query.get("_id")
    if name == "delete":
        return isinstance(key, str) and set(query) == {"_id"}
    return isinstance(key, str) or (name == "find" and isinstance(key, Mapping) and set(key) == {"$in"})


def _filters(command: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    if name == "find":
        return [command.get("filter") or {}]
    if name in ("update", "delete"):
        return [u.get("q") or {} for u in command.get("updates", command.get("deletes", []))]
    if name == "count":
        return [command.get("query") or {}]
    stages = command.get("pipeline") or [{}]
    return [stages[0].get("$match") or {}]


class _EventQueries(Listener):
    """Counts, per collection, the commands that do not name their documents by ``_id``."""

    def __init__(self) -> None:
        self.unkeyed: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in _FILTERED:
            collection = str(event.command.get(name))
            scans = sum(1 for q in _filters(event.command, name) if not _keyed(q, name))
            self.unkeyed[collection] = self.unkeyed.get(collection, 0) + scans


async def _lineages(ledger: Ledger, prefix: str, n: int, turns: int) -> None:
    for i in range(n):
        root = f"{prefix}{i:02d}"
        await talk(ledger, root, turns)
        await branch(ledger, root, 1, turns=turns)


async def test_removal_queries_by_key_on_the_wire(
    real_backend: Backend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    if real_backend.driver != "pymongo":
        pytest.skip("command monitoring is PyMongo's; one run per server suffices")
    from pymongo import AsyncMongoClient

    # Every lineage in one batch (a run starts with one lineage and grows its batches with
    # the server's speed): what is left per lineage must then be by key only.
    monkeypatch.setattr(removal_module, "BATCH_FIRST", removal_module.BATCH_MAX)
    listener = _EventQueries()
    client: Any = AsyncMongoClient(real_backend.uri, event_listeners=[listener], tz_aware=True)
    unkeyed: list[dict[str, int]] = []
    try:
        # Two lineages of short threads, then six of threads four times as long.
        for n, turns in ((2, 2), (6, 8)):
            database = client[f"t_{uuid.uuid4().hex[:12]}"]
            try:
                ledger = Ledger(database)
                await _lineages(ledger, "c", n, turns)
                clock.advance(days=60)
                listener.unkeyed = {}
                report = await run_retention(Ledger(database), POLICY, apply=True, now=clock.now)
                unkeyed.append(dict(listener.unkeyed))
                assert len(report.removed) == n
                assert await database["threads"].count_documents({"removed": {"$exists": False}}) == 0
                # Every event was hollowed: none keeps content.
                assert await database["events"].count_documents({"removed": {"$exists": False}}) == 0
                assert (await verify(Ledger(database))).ok
            finally:
                await client.drop_database(database.name)
        # As many queries by thread (on the events, the threads and the receipts) for six
        # long lineages as for two short ones.
        assert unkeyed[0] == unkeyed[1], unkeyed
    finally:
        await client.close()


async def test_appends_after_the_plan_are_closed_after_and_hollowed(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await _lineages(ledger, "c", 1, 3)
    clock.advance(days=60)
    report = await plan_retention(ledger, POLICY, now=clock.now)
    report.dry_run = False
    # An application appends to the root and to its branch after the plan was made:
    # the removal finds those events by key after the planned heads and removes them too.
    await talk(ledger, "c00", 2)
    [branched] = [t for t in report.planned[0].thread_ids if t != "c00"]
    await talk(ledger, branched, 1)
    await execute(ledger, report, by="test", reason="retention", scope={})
    assert len(report.removed) == 1
    assert await database["events"].count_documents({"removed": {"$exists": False}}) == 0
    # Each thread's closing mark sits right after its newest event.
    marks = {d["thread_id"]: d["seq"] async for d in database["events"].find({"sealed": True})}
    assert marks == {"c00": 6, branched: 6}
    [done] = [r async for r in database["audit"].find({"kind": "removal.completed"})]
    heads = {h["thread_id"]: h["head_seq"] for h in done["heads"]}
    assert heads == {"c00": 5, branched: 5}
    assert (await verify(ledger)).ok


async def test_an_event_stored_off_its_key_is_hollowed_all_the_same(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await _lineages(ledger, "c", 1, 2)
    # A planted event of the root past a gap, under an id that is not its key: the plan
    # sees the thread's events are not an unbroken run, so nothing is trusted by key.
    planted = await database["events"].find_one({"_id": "c00#2"})
    assert planted is not None
    await database["events"].insert_one({**planted, "_id": "planted", "seq": 9})
    clock.advance(days=60)
    report = await run_retention(ledger, POLICY, apply=True, now=clock.now)
    assert len(report.removed) == 1
    assert await database["events"].count_documents({"removed": {"$exists": False}}) == 0
    planted = await database["events"].find_one({"_id": "planted"})
    assert planted is not None
    assert "messages" not in planted
    # Closed after the planted position, as an index read of the thread would.
    assert await database["events"].find_one({"thread_id": "c00", "seq": 10, "sealed": True}) is not None


async def test_a_claim_is_released_only_by_its_own_removal(database: Any) -> None:
    marks = storage_of(Ledger(database)).removals
    assert await marks.claim("t", "ours", "t")
    await marks.release_claim("t", "another run's")
    assert await marks.claim_of("t") == "ours"
    await marks.release_claim("t", "ours")
    assert await marks.claim_of("t") is None
    await marks.release_claim("t", "ours")  # released already: nothing to do
    assert await marks.claim("t", "next", "t")


def _sizes(lineages: int, seconds_per_lineage: float) -> list[int]:
    planned = [removal_module.Removal(f"t{n}", (f"t{n}",), (), None) for n in range(lineages)]
    batches = removal_module._batches(planned)
    sizes = [len(batch := next(batches))]
    while True:
        try:
            batch = batches.send(seconds_per_lineage * len(batch))
        except StopIteration:
            return sizes
        sizes.append(len(batch))


def test_batches_grow_with_a_fast_server_and_stay_short_on_a_slow_one() -> None:
    # A batch's lineages stay claimed until it ends: it is kept far below the five minutes
    # after which another run would take them for an interrupted removal.
    assert _sizes(200, 0.01) == [1, 2, 4, 8, 16, 32, 64, 64, 9]
    assert _sizes(5, 30.0) == [1, 1, 1, 1, 1]
    assert max(_sizes(100, 2.0)) * 2.0 <= removal_module.BATCH_SECONDS
