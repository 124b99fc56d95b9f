"""Sealed writers in other OS processes racing ``chatledger erase --user X --apply``: erased means unreadable.

Writer processes (tests/real/_removal_worker.py), each with a sealing ledger and a warm
key cache, keep appending to X's threads (continuing and branching) while the real
command line erases X. Another writer waits for the erasure to finish and for its cached
key to expire, then tries to start new conversations for X. Afterwards:

- no live event or thread of X remains, and no append was acknowledged after the
  erasure finished (a writer whose key is still cached is refused by the removal seal);
- X's keys are all tombstones, and no key was created for X after the erasure: the new
  conversations were refused with ``SubjectErasedError`` (per-subject keys: the
  subject's key is a tombstone; per-lineage keys: the subject's erased mark);
- the bystander's sealed thread still opens, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pytest

from chatledger import Ledger, MongoChatMessageStore
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.helpers import msg
from tests.real._support import assert_chain_intact, finish_workers, start_workers
from tests.real.test_removal_race import _no_live_documents
from tests.scripts import REPO

pytestmark = pytest.mark.real

KEK = bytes(range(7, 39))
TTL = 0.5
#: The writers' cap: each stops a second after it is first refused, long before this. The
#: cap must outlast the erasure on a loaded machine (the CLI's start-up alone can take
#: seconds there): a writer that stopped before the erasure reached its thread would never
#: see it, and the test would fail for the timing, not for the library.
WRITE_SECONDS = 60.0
#: A racing writer's pace (see the worker): ``BURST`` appends ``PAUSE`` seconds apart, then
#: one every ``SLOW_PAUSE`` seconds until it is refused or told the erasure finished.
PAUSE, BURST, SLOW_PAUSE = 0.05, 20, 0.5
TIME_LIMIT = 120


async def _erase(uri: str, database: str, user: str) -> dict[str, Any]:
    """Run ``chatledger erase --user USER --apply --json`` as an operator would; return its JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatledger",
        "erase",
        "--user",
        user,
        "--apply",
        "--json",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIME_LIMIT):
        out, err = await proc.communicate()
    # The JSON names what was skipped and why: the one clue when this fails under load.
    assert proc.returncode == 0, (err.decode(), out.decode())
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("per_lineage", [False, True], ids=["per-subject", "per-lineage"])
async def test_sealed_writers_racing_an_erasure(real_backend: Any, database: Any, per_lineage: bool) -> None:
    user, tenant = "x-user", "acme"
    sealer = Sealer(KeyStore(database), LocalKeyProvider(KEK), cache_ttl=TTL, per_lineage=per_lineage)
    ledger = Ledger(database, sealer=sealer)
    names = ["t1", "t2"]
    for name in names:
        store = MongoChatMessageStore(ledger, thread_id=name, tenant_id=tenant, user_id=user)
        await store.add_messages([msg(f"{name} start"), msg(f"{name} reply")])
    bystander = MongoChatMessageStore(ledger, thread_id="t1", tenant_id=tenant, user_id="bob")
    await bystander.add_messages([msg("bob's")])

    base = {
        "seconds": WRITE_SECONDS,
        "uri": real_backend.uri,
        "driver": real_backend.driver,
        "db": database.name,
        "tenant": tenant,
        "user": user,
        "kek": KEK.hex(),
        "ttl": TTL,
        "per_lineage": per_lineage,
        "pause": PAUSE,
        "burst": BURST,
        "slow_pause": SLOW_PAUSE,
    }
    configs = [{**base, "name": n, "mode": m} for n in names for m in ("line", "fork")]
    configs.append({**base, "name": "t1", "mode": "new"})
    procs = await start_workers("tests.real._removal_worker", configs, time_limit=TIME_LIMIT)
    await asyncio.sleep(0.5)  # let them write (and branch) for a while
    erased = await _erase(real_backend.uri, database.name, user)
    finished = time.time()
    keys_after = {k["_id"]: k async for k in database["keys"].find({})}
    for proc in procs:  # the racing writers stop a second later; the "new" one starts now
        assert proc.stdin is not None
        proc.stdin.write(b"erased\n")
    results = await finish_workers(procs, time_limit=TIME_LIMIT)

    # Erased: events and threads gone, nothing acknowledged afterwards.
    assert erased["keys"]["destroyed"] is True
    assert len(erased["removed_receipts"]) == len(names)
    late = [a for r in results for a in r["acked"] if a["at"] > finished]
    assert late == [], f"{len(late)} appends acknowledged after the erasure finished"
    writers, new_writer = results[:-1], results[-1]
    assert any(r["errors"] for r in writers), "the writers never noticed the erasure"
    allowed = {"ThreadRemovedError", "UnknownThreadError", "SubjectErasedError"}
    assert all(set(r["errors"]) <= allowed for r in writers), [r["errors"] for r in writers]
    await _no_live_documents(database, user)

    # No key re-created: the new conversations were refused, and the key store did not grow.
    assert new_writer["acked"] == []
    assert new_writer["errors"]
    assert set(new_writer["errors"]) == {"SubjectErasedError"}
    keys_now = {k["_id"]: k async for k in database["keys"].find({})}
    assert keys_now.keys() == keys_after.keys()
    assert [k for k in keys_now.values() if k.get("user_id") == user] == []  # only tombstones
    assert set(erased["keys"]["key_ids"]) <= {k for k, v in keys_now.items() if "destroyed_at" in v}

    assert [m.text for m in await bystander.list_messages()] == ["bob's"]
    await assert_chain_intact(database)
