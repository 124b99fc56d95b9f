"""What an erasure covers: a user in every tenant (unless scoped to one), a tenant's every user.

After the erasure no new conversation starts for what it covered (sealed ledgers: the
erased marks refuse a new key), and nothing else is touched. The dry run says which.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin.erasure import run_erasure
from chatledger.cli.commands import removal
from chatledger.cli.render import Renderer
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, SubjectErasedError

KEK = bytes(range(32))


def sealed(database: Any, per_lineage: bool) -> Ledger:
    # A new sealer each time: a fresh process, nothing cached.
    return Ledger(database, sealer=Sealer(KeyStore(database), LocalKeyProvider(KEK), per_lineage=per_lineage))


async def say(ledger: Ledger, thread: str, *, user: str, tenant: str) -> None:
    binding = ledger.bind(user_id=user, tenant_id=tenant)
    await binding.append(await binding.head(thread), [Message("user", [f"{user}@{tenant}"])])


async def texts(ledger: Ledger, thread: str, *, user: str, tenant: str) -> list[str]:
    binding = ledger.bind(user_id=user, tenant_id=tenant)
    return [m.text for m in await binding.read(await binding.head(thread))]


MODES = pytest.mark.parametrize("per_lineage", [False, True], ids=["subject-keys", "per-lineage"])


@MODES
async def test_a_user_erasure_covers_the_user_in_every_tenant(database: Any, per_lineage: bool) -> None:
    ledger = sealed(database, per_lineage)
    await say(ledger, "a-acme", user="alice", tenant="acme")
    await say(ledger, "b-globex", user="bob", tenant="globex")
    dry = await run_erasure(ledger, user_id="alice")
    assert dry.to_dict()["covers"] == "user 'alice' in every tenant"
    out = io.StringIO()
    assert await removal.erase_body(database, Renderer(out, io.StringIO(), width=200), user="alice") == 0
    assert "erasure of user 'alice' in every tenant" in out.getvalue()  # the dry run says it to people too
    await run_erasure(ledger, user_id="alice", apply=True)
    # Another process: alice cannot start a conversation in acme, nor in a tenant she never used.
    for tenant in ("acme", "globex", "initech"):
        with pytest.raises(SubjectErasedError):
            await say(sealed(database, per_lineage), f"new-{tenant}", user="alice", tenant=tenant)
    fresh = sealed(database, per_lineage)
    await say(fresh, "b2", user="bob", tenant="globex")  # others go on
    assert await texts(fresh, "b-globex", user="bob", tenant="globex") == ["bob@globex"]


@MODES
async def test_a_user_erasure_scoped_to_one_tenant_keeps_the_user_elsewhere(
    database: Any, per_lineage: bool
) -> None:
    ledger = sealed(database, per_lineage)
    await say(ledger, "a-acme", user="alice", tenant="acme")
    await say(ledger, "a-globex", user="alice", tenant="globex")
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=True, width=200)
    assert await removal.erase_body(database, ui, user="alice", tenant="acme") == 0
    dry = json.loads(out.getvalue())
    assert dry["covers"] == "user 'alice' in tenant 'acme' only (the user in other tenants is kept)"
    assert [p["thread_id"] for p in dry["planned"]] == ["a-acme"]
    out.truncate(0)
    out.seek(0)
    assert await removal.erase_body(database, ui, user="alice", tenant="acme", apply=True) == 0
    assert json.loads(out.getvalue())["keys"]["destroyed"] is True
    with pytest.raises(SubjectErasedError):
        await say(sealed(database, per_lineage), "again", user="alice", tenant="acme")
    fresh = sealed(database, per_lineage)
    assert await texts(fresh, "a-globex", user="alice", tenant="globex") == ["alice@globex"]
    await say(fresh, "a-globex-2", user="alice", tenant="globex")


@MODES
async def test_a_tenant_erasure_blocks_new_users_of_the_tenant(database: Any, per_lineage: bool) -> None:
    ledger = sealed(database, per_lineage)
    await say(ledger, "a", user="alice", tenant="acme")
    await say(ledger, "d", user="dave", tenant="globex")
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=True, width=200)
    assert await removal.erase_body(database, ui, tenant="acme", apply=True) == 0
    assert json.loads(out.getvalue())["covers"] == "tenant 'acme': every user of it"
    # carol never wrote in acme: after the tenant's erasure she cannot start there.
    with pytest.raises(SubjectErasedError):
        await say(sealed(database, per_lineage), "c", user="carol", tenant="acme")
    fresh = sealed(database, per_lineage)
    await say(fresh, "c", user="carol", tenant="globex")
    assert await texts(fresh, "d", user="dave", tenant="globex") == ["dave@globex"]
