"""Ledgers sharing one key store never share a key; keys written before that (k1) still read.

Two applications' ledgers (two databases) point at one key store, as docs/sealing.md
allows. Each ledger's keys are its own (``k2-…`` ids that cover the ledger id), so a
removal in one ledger never destroys a key the other one uses.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.admin.erasure import run_erasure
from chatledger.admin.retention import RetentionPolicy, run_retention
from chatledger.cli.commands import removal
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.render import Renderer
from chatledger.errors import ContentErasedError, InvalidInputError
from chatledger.models import Scope
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, SubjectErasedError
from chatledger.sealing.sealer import DataKey
from tests.helpers import raw_docs

KEK = bytes(range(32))
LATER = datetime.now(UTC) + timedelta(days=400)
OLD = RetentionPolicy(default=timedelta(days=30))


def sealer(keys_db: Any, per_lineage: bool = False) -> Sealer:
    return Sealer(KeyStore(keys_db), LocalKeyProvider(KEK), per_lineage=per_lineage)


@pytest.fixture
async def two_ledgers(database: Any) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Ledger databases A and B, and the key store database they share."""
    b, keys = database.client[database.name + "_b"], database.client[database.name + "_k"]
    try:
        yield database, b, keys
    finally:
        await database.client.drop_database(b.name)
        await database.client.drop_database(keys.name)


async def say(
    ledger: Ledger, thread: str, text: str, *, user: str | None = None, tenant: str | None = None
) -> Any:
    binding = ledger.bind(user_id=user, tenant_id=tenant)
    at = await binding.head(thread)
    return (await binding.append(at, [Message("user", [text])])).position


async def texts(ledger: Ledger, thread: str, *, user: str | None = None) -> list[str]:
    binding = ledger.bind(user_id=user)
    return [m.text for m in await binding.read(await binding.head(thread))]


@pytest.mark.parametrize("per_lineage", [False, True], ids=["subject-keys", "per-lineage"])
async def test_retention_and_erasure_in_one_ledger_never_touch_the_others_keys(
    two_ledgers: tuple[Any, Any, Any], per_lineage: bool
) -> None:
    a_db, b_db, keys_db = two_ledgers
    a = Ledger(a_db, sealer=sealer(keys_db, per_lineage))
    b = Ledger(b_db, sealer=sealer(keys_db, per_lineage))
    assert a.ledger_id != b.ledger_id
    for ledger, name in ((a, "A"), (b, "B")):
        await say(ledger, "support", f"{name} support")  # no user, no tenant: a thread-subject key
        await say(ledger, "alice-1", f"{name} alice", user="alice")
    key_docs = await raw_docs(keys_db["keys"])
    assert len(key_docs) == 4  # two per ledger, none shared
    assert {d["ledger_id"] for d in key_docs} == {a.ledger_id, b.ledger_id}

    # Retention removes everything in A (and shreds A's tree keys), then A erases alice.
    report = await run_retention(a, OLD, apply=True, now=LATER)
    assert report.threads == 2
    await run_erasure(a, user_id="alice", apply=True)

    # B, read by a fresh process (nothing cached), lost nothing and can still write.
    fresh_b = Ledger(b_db, sealer=sealer(keys_db, per_lineage))
    assert await texts(fresh_b, "support") == ["B support"]
    assert await texts(fresh_b, "alice-1", user="alice") == ["B alice"]
    await say(fresh_b, "alice-2", "B alice again", user="alice")  # alice was erased in A only
    assert (await verify(fresh_b)).ok
    # A's alice is erased: no new conversation for her there.
    with pytest.raises(SubjectErasedError):
        await say(Ledger(a_db, sealer=sealer(keys_db, per_lineage)), "alice-3", "back?", user="alice")


async def test_the_retention_command_on_one_ledger_keeps_the_other_ledgers_thread(
    two_ledgers: tuple[Any, Any, Any], clock: Any
) -> None:
    a_db, b_db, keys_db = two_ledgers
    a = Ledger(a_db, sealer=sealer(keys_db))
    b = Ledger(b_db, sealer=sealer(keys_db))
    await say(a, "support", "A support")
    await say(b, "support", "B support")
    (backup,) = await raw_docs(a_db["events"])  # a copy of A's sealed event, as in a backup
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=True, width=200)
    keys = KeyStoreLocation(keys_db.name, "keys", None, None)
    # The clock fixture dated both threads 2026-01-01: 30 days is long past.
    assert await removal.retention_body(a_db, ui, older_than="30d", apply=True, keys=keys) == 0
    done = json.loads(out.getvalue())
    assert done["threads"] == 1
    assert len(done["keys"]["key_ids"]) == 1  # A's tree key went: A's backups are unreadable ...
    with pytest.raises(ContentErasedError):
        await sealer(keys_db).open_messages(backup)
    fresh_b = Ledger(b_db, sealer=sealer(keys_db))
    assert await texts(fresh_b, "support") == ["B support"]  # ... and B's thread had its own key


class LegacySealer(Sealer):
    """Seals as the code did before key ids named their ledger (k1 ids, no ledger recorded)."""

    def cached_key(self, scope: Scope, root_id: str, ledger_id: str | None = None) -> DataKey | None:
        return super().cached_key(scope, root_id, None)

    async def key_for(
        self, scope: Scope, root_id: str, *, fresh: bool = False, ledger_id: str | None = None
    ) -> DataKey:
        return await super().key_for(scope, root_id, fresh=fresh, ledger_id=None)


async def test_threads_sealed_under_k1_keys_still_read_verify_and_grow(
    two_ledgers: tuple[Any, Any, Any],
) -> None:
    a_db, b_db, keys_db = two_ledgers
    # Before the upgrade: both ledgers sealed their "support" thread under one shared k1 key.
    for db in (a_db, b_db):
        await say(Ledger(db, sealer=LegacySealer(KeyStore(keys_db), LocalKeyProvider(KEK))), "support", "old")
    legacy_a = Ledger(a_db, sealer=LegacySealer(KeyStore(keys_db), LocalKeyProvider(KEK)))
    await say(legacy_a, "bob-1", "old", user="bob")
    (shared, bob_k1) = sorted(await raw_docs(keys_db["keys"]), key=lambda d: "user_id" in d)
    assert shared["_id"].startswith("k1-t")
    assert "ledger_id" not in shared
    # After: the old events open and verify, and new appends go on (under the ledger's own k2 key).
    a = Ledger(a_db, sealer=sealer(keys_db))
    await say(a, "support", "new")
    assert await texts(a, "support") == ["old", "new"]
    assert (await verify(a)).ok
    sealed_under = [e["messages"][0]["sealed"].split(":")[1] for e in await raw_docs(a_db["events"])]
    assert shared["_id"] in sealed_under
    assert any(k.startswith("k2-r") for k in sealed_under)
    # Retention in A destroys A's own k2 tree key, never the k1 key B's thread still uses.
    await run_retention(a, RetentionPolicy(tenants={}, default=timedelta(days=30)), apply=True, now=LATER)
    assert await texts(Ledger(b_db, sealer=sealer(keys_db)), "support") == ["old"]
    # Erasure of a user destroys the user's k1 keys too (they hold this ledger's content).
    await run_erasure(a, user_id="bob", apply=True)
    assert "destroyed_at" in (await KeyStore(keys_db).get(bob_k1["_id"]) or {})


async def test_ledger_id_is_checked_and_names_the_keys(database: Any) -> None:
    with pytest.raises(InvalidInputError):
        Ledger(database, ledger_id="")
    with pytest.raises(InvalidInputError):
        Ledger(database, ledger_id={"$ne": None})  # type: ignore[arg-type]
    explicit = Ledger(database, ledger_id="billing-eu", sealer=sealer(database))
    default = Ledger(database, sealer=sealer(database))
    assert default.ledger_id == f"{database.name}/threads/events"
    await say(explicit, "t1", "x")
    await say(default, "t2", "y")
    assert {d["ledger_id"] for d in await raw_docs(database["keys"])} == {"billing-eu", default.ledger_id}
