"""Sealed events written by the code before sealing/ was split (commit c685306) read and verify the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import json_util

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.admin.erasure import run_erasure
from chatledger.errors import ContentErasedError
from tests.helpers import raw_docs
from tests.sealing.test_forms import sealer_on

#: Written by data/cl3_before_split.py.txt run on the pre-split code (PYTHONPATH=<c685306>/src):
#: tenant acme's dana (one conversation: a two-message batch with quotes, newlines,
#: non-ASCII; a framed 11 KB batch; a branch) padded to 64 bytes; erin's per-lineage one.
FIXTURE = Path(__file__).parent / "data" / "cl3_before_split.json"


async def _load(database: Any) -> None:
    collections = json_util.loads(FIXTURE.read_text(encoding="utf-8"))
    for name, docs in collections.items():
        if docs:
            await database[name].insert_many(docs)


async def test_events_sealed_before_the_split_read_verify_extend_and_erase(database: Any) -> None:
    await _load(database)
    before = await raw_docs(database["events"])
    assert all(str(m.get("sealed", "cl3:"))[:4] == "cl3:" for d in before for m in d["messages"])
    assert (await verify(Ledger(database))).ok
    # The fixture's database was named "old": its keys name that ledger id (as a moved ledger's do).
    ledger = Ledger(database, sealer=sealer_on(database), ledger_id="old/threads/events")
    dana = ledger.bind(user_id="dana", tenant_id="acme")
    head = await dana.at("conv", 2)
    texts = [m.text for m in await dana.read(head)]
    assert texts == ['hello "quoted"\n é 😀', "reply", '{"json": "x"}' * 800]
    assert (await dana.read(head))[0].author_name == "Dana"
    branches = [t for t in await raw_docs(database["threads"]) if t["_id"] not in ("conv", "lin")]
    (branch,) = branches
    assert [m.text for m in await dana.read(await dana.at(branch["_id"], 2))][-1] == "branch"
    erin = ledger.bind(user_id="erin")
    assert [m.text for m in await erin.read(await erin.at("lin", 1))] == ["per lineage"]
    # The same key goes on sealing the conversation: no second key for the subject.
    keys = len(await raw_docs(database["keys"]))
    await dana.append(head, [Message("user", ["after the split"])])
    assert len(await raw_docs(database["keys"])) == keys
    assert (await verify(ledger)).ok
    # Erasure finds and destroys the key the old code created.
    await run_erasure(ledger, user_id="dana", apply=True, reason="test")
    (first,) = [d for d in before if d["_id"] == "conv#1"]
    try:
        await sealer_on(database).open_messages(first)
    except ContentErasedError:
        pass
    else:
        raise AssertionError("dana's old content still opens after erasure")
