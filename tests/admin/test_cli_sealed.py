"""The admin CLI on sealed content: erase and retention shred keys, keys list, show's placeholders.

Command bodies run on every tier; the real command line (options, exit codes, nothing
secret printed) runs against a real server.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatledger import InvalidInputError, Ledger
from chatledger._maf import Message
from chatledger.admin.holds import set_hold
from chatledger.cli.commands import browse, keys, removal
from chatledger.cli.connection import KeyStoreLocation, kek_provider
from chatledger.cli.render import Renderer
from chatledger.hashing import event_hash
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, SubjectErasedError, destroy_subject_keys
from chatledger.sealing.sealer import subject_mark
from tests.admin.conftest import Clock
from tests.admin.test_cli import chatledger
from tests.helpers import raw_docs
from tests.sealing.test_forms import thread_as_cl3

KEK = bytes(range(32))
MARKER = "OKAPI-4410-secret"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def ui(as_json: bool = False) -> tuple[Renderer, Callable[[], str], Callable[[], str]]:
    out, err = io.StringIO(), io.StringIO()
    return Renderer(out, err, as_json=as_json, width=200), out.getvalue, err.getvalue


def sealer_on(database: Any, *, collection: str = "keys", per_lineage: bool = False) -> Sealer:
    return Sealer(KeyStore(database, collection=collection), LocalKeyProvider(KEK), per_lineage=per_lineage)


async def talk(
    ledger: Ledger, user: str | None, thread: str, texts: list[str], tenant: str | None = None
) -> Any:
    binding = ledger.bind(tenant_id=tenant, user_id=user)
    at = binding.empty(thread)
    for text in texts:
        at = (await binding.append(at, [Message("user", [text], message_id=f"m-{text[:4]}")])).position
    return at


async def test_erase_destroys_the_subjects_keys_dry_run_first(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await talk(ledger, "alice", "a1", [f"{MARKER} one"])
    await talk(ledger, "bob", "b1", ["bob's"])

    r, out, _ = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice") == 0
    dry = json.loads(out())
    assert dry["dry_run"]
    assert dry["keys"]["destroyed"] is False
    (key_id,) = dry["keys"]["key_ids"]
    assert "destroyed_at" not in (await KeyStore(database).get(key_id) or {})  # a dry run changes nothing

    r, out, _ = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice", apply=True, by="dpo") == 0
    done = json.loads(out())
    assert done["keys"]["key_ids"] == [key_id]
    assert done["keys"]["destroyed"] is True
    assert "destroyed_at" in (await KeyStore(database).get(key_id) or {})
    assert MARKER not in out()
    assert "wrapped" not in out()
    # Bob's key is untouched; erasing alice again finds nothing left to do and still exits 0.
    assert len([k for k in await raw_docs(database["keys"]) if "destroyed_at" not in k]) == 1
    r, _, _ = ui()
    assert await removal.erase_body(database, r, user="alice", apply=True) == 0


async def test_erase_refuses_when_the_key_store_is_elsewhere(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database, collection="vault"))
    await talk(ledger, "alice", "a1", ["words"])
    before = await raw_docs(database["events"])

    r, _, _ = ui()
    with pytest.raises(InvalidInputError, match=r"holds no key of it.*Nothing was changed.*--no-keys"):
        await removal.erase_body(database, r, user="alice", apply=True)
    assert await raw_docs(database["events"]) == before  # nothing removed

    # Pointed at the right collection, the erasure goes through and shreds.
    r, out, _ = ui(as_json=True)
    vault = KeyStoreLocation(collection="vault")
    assert await removal.erase_body(database, r, user="alice", apply=True, keys=vault) == 0
    assert json.loads(out())["keys"]["destroyed"] is True


async def test_erase_no_keys_removes_events_and_says_the_keys_stay(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database, collection="vault"))
    await talk(ledger, "alice", "a1", ["words"])
    r, out, err = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice", apply=True, no_keys=True) == 0
    assert json.loads(out())["keys"] is None
    assert "--no-keys" in err()
    assert "stay readable" in err()
    assert all("destroyed_at" not in k for k in await raw_docs(database["vault"]))
    # Unsealed subjects need no key store at all.
    await talk(Ledger(database), "carol", "c1", ["clear"])
    r, _, _ = ui()
    assert await removal.erase_body(database, r, user="carol", apply=True) == 0


async def test_keys_list_streams_one_json_shape_without_key_material(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await talk(ledger, "alice", "a1", ["x"])
    await talk(ledger, None, "t1", ["y"], tenant="acme")
    await talk(ledger, None, "r1", ["z"])
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)

    r, out, _ = ui(as_json=True)
    assert await keys.list_body(database, r) == 0
    doc = json.loads(out())
    assert (doc["schema"], doc["command"], doc["count"]) == (1, "keys list", len(doc["keys"]))
    by_kind = {k["kind"]: k for k in doc["keys"]}
    assert set(by_kind) == {"user", "tenant", "thread"}
    assert by_kind["user"]["state"] == "destroyed"
    assert ISO_UTC.match(by_kind["user"]["destroyed_at"])
    for kind in ("tenant", "thread"):
        row = by_kind[kind]
        assert row["state"] == "active"
        assert ISO_UTC.match(row["created_at"])
        assert row["kek_id"] == LocalKeyProvider(KEK).kek_id
        assert row["fingerprint"]
    raw = [k.get("wrapped") for k in await raw_docs(database["keys"]) if k.get("wrapped")]
    assert raw
    assert not any(w in out() for w in raw)
    assert [k["key_id"] for k in doc["keys"]] == sorted(k["key_id"] for k in doc["keys"])

    r, out, _ = ui(as_json=True)
    assert await keys.list_body(database, r, limit=2) == 0
    assert json.loads(out())["count"] == 2
    r, out, err = ui()
    assert await keys.list_body(database, r, limit=1) == 0
    assert len(out().splitlines()) == 1
    assert "1 key (--limit 1)" in err()
    with pytest.raises(InvalidInputError):
        await keys.list_body(database, r, limit=0)


async def test_show_opens_with_the_kek_and_shows_placeholders_otherwise(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await talk(ledger, "alice", "a1", [f"{MARKER} one", "two"])
    await talk(Ledger(database), "alice", "clear", ["in clear"])
    kek = LocalKeyProvider(KEK)
    sealed = [d for d in await raw_docs(database["events"]) if d["thread_id"] == "a1"]
    assert all(type(d["messages"][0]["ciphertext"]) is bytes for d in sealed)  # the cl4 form

    r, out, _ = ui()
    assert await browse.show_body(database, r, thread="a1", kek=kek) == 0
    assert f"{MARKER} one" in out()

    # Without a KEK: the shape (roles, ids) and a placeholder per message, and why, once.
    r, out, err = ui(as_json=True)
    assert await browse.show_body(database, r, thread="a1") == 0
    doc = json.loads(out())
    assert [m["contents"][0]["text"] for m in doc["messages"]] == ["[sealed: no key]"] * 2
    assert [m.get("message_id") for m in doc["messages"]] == ["m-OKAP", "m-two"]
    assert doc["unreadable"] == [{"index": 0, "why": "no key"}, {"index": 1, "why": "no key"}]
    assert "no KEK was given" in err()
    assert MARKER not in out() + err()

    # A wrong KEK is "no key" too; a thread in clear needs no key at all.
    r, out, _ = ui()
    assert await browse.show_body(database, r, thread="a1", kek=LocalKeyProvider(bytes(32))) == 0
    assert out().count("[sealed: no key]") == 2
    r, out, _ = ui(as_json=True)
    assert await browse.show_body(database, r, thread="clear") == 0
    assert json.loads(out())["unreadable"] == []

    # Keys destroyed while the events are still there (a restored backup): erased, even with the KEK.
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    r, out, err = ui()
    assert await browse.show_body(database, r, thread="a1", kek=kek) == 0
    assert out().count("[content erased]") == 2
    assert "user" in out()
    assert MARKER not in out()
    assert "erased" in err()


async def test_per_lineage_keys_retention_shreds_one_conversation(database: Any, clock: Clock) -> None:
    ledger = Ledger(database, sealer=sealer_on(database, per_lineage=True))
    old = await talk(ledger, "alice", "old", ["old words"])  # written at the pinned clock: long ago
    clock.now = datetime.now(UTC)
    kept = await talk(ledger, "alice", "kept", ["kept words"])
    store = KeyStore(database)
    lineage_keys = {k["root_id"]: k["_id"] for k in await raw_docs(database["keys"])}
    assert set(lineage_keys) == {"old", "kept"}
    assert all(k.startswith("k2-lu") for k in lineage_keys.values())

    r, out, _ = ui(as_json=True)
    assert await removal.retention_body(database, r, older_than="1d") == 0
    assert json.loads(out())["keys"]["key_ids"] == [lineage_keys["old"]]  # dry: would go
    r, out, _ = ui(as_json=True)
    assert await removal.retention_body(database, r, older_than="1d", apply=True) == 0
    assert json.loads(out())["keys"]["destroyed"] is True
    assert "destroyed_at" in (await store.get(lineage_keys["old"]) or {})
    assert "destroyed_at" not in (await store.get(lineage_keys["kept"]) or {})
    binding = ledger.bind(user_id="alice")
    assert [m.text for m in await binding.read(kept)] == ["kept words"]
    receipts = [r for r in await raw_docs(database["audit"]) if r["kind"] == "keys.destroyed"]
    assert [r["key_ids"] for r in receipts] == [[lineage_keys["old"]]]
    del old


async def test_per_lineage_erasure_with_a_hold_and_no_key_recreated(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database, per_lineage=True))
    await talk(ledger, "alice", "free", ["free words"])
    held = await talk(ledger, "alice", "held", ["held words"])
    await set_hold(ledger, "held", reason="litigation", case="C-9")
    lineage_keys = {k["root_id"]: k["_id"] for k in await raw_docs(database["keys"])}

    r, out, _ = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice", apply=True) == 1  # the hold kept a lineage
    shred = json.loads(out())["keys"]
    assert shred["key_ids"] == [lineage_keys["free"]]
    assert shred["kept"] == [lineage_keys["held"]]
    assert "litigation" in shred["kept_because"] or "hold" in shred["kept_because"]
    assert [m.text for m in await ledger.bind(user_id="alice").read(held)] == ["held words"]
    # Not erased yet: alice may still start a conversation.
    await talk(ledger, "alice", "new-before", ["allowed"])

    # Hold released, erasure again: every key goes, and the subject is marked erased.
    from chatledger.admin.holds import release_hold

    await release_hold(ledger, "held", reason="closed", case="C-9")
    r, _, _ = ui()
    assert await removal.erase_body(database, r, user="alice", apply=True) == 0
    live = [k for k in await raw_docs(database["keys"]) if "destroyed_at" not in k]
    assert live == []
    count = len(await raw_docs(database["keys"]))
    # A fresh writer (no cache) cannot start a new conversation for alice: no new lineage key.
    fresh = Ledger(database, sealer=sealer_on(database, per_lineage=True)).bind(user_id="alice")
    with pytest.raises(SubjectErasedError):
        await fresh.append(fresh.empty("new-after"), [Message("user", ["back again"])])
    assert len(await raw_docs(database["keys"])) == count


async def test_a_lineage_key_created_while_the_subject_is_erased_is_destroyed(database: Any) -> None:
    # The race the erased mark closes: erasure marks the subject between a writer's
    # check and its insert. The writer sees the mark after inserting and destroys its key.
    sealer = sealer_on(database, per_lineage=True)
    store = sealer.key_store
    insert = store.insert_once
    mark = subject_mark(None, "alice")
    assert mark is not None

    async def insert_then_erase(doc: Any) -> Any:
        stored = await insert(doc)
        await store.destroy(mark, at=stored["created_at"], receipt_id="r-erasure", kind="user")
        return stored

    store.insert_once = insert_then_erase  # type: ignore[method-assign]
    binding = Ledger(database, sealer=sealer).bind(user_id="alice")
    with pytest.raises(SubjectErasedError):
        await binding.append(binding.empty("racing"), [Message("user", ["late"])])
    assert [k for k in await raw_docs(database["keys"]) if "destroyed_at" not in k] == []
    assert await raw_docs(database["events"]) == []


def test_kek_options_never_echo_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    value = base64.b64encode(KEK).decode("ascii")
    for wrong in (value, KEK.hex(), "not a name"):
        with pytest.raises(InvalidInputError) as bad:
            kek_provider(None, wrong)
        assert wrong not in str(bad.value)
        assert "NAME" in str(bad.value)
    with pytest.raises(InvalidInputError, match="not both"):
        kek_provider(tmp_path / "k", "CHATLEDGER_KEK")
    monkeypatch.setenv("MY_KEK", value)
    assert kek_provider(None, "MY_KEK").kek_id == LocalKeyProvider(KEK).kek_id
    assert kek_provider(None, None) is None


async def test_sealed_operator_session(real_backend: Any, database: Any, tmp_path: Path) -> None:
    # The real command line against a real server: options, exit codes, nothing secret printed.
    keys_db = database.name + "_k"
    try:
        ledger = Ledger(database, sealer=sealer_on(database.client[keys_db]))
        await talk(ledger, "alice", "a1", [f"{MARKER} one"])
        uri, name = real_backend.uri, database.name
        run = lambda *a, check=0, env=None: chatledger(*a, uri=uri, database=name, check=check, env=env)  # noqa: E731
        kek_file = tmp_path / "kek"
        kek_file.write_bytes(KEK)
        where = ["--keys-database", keys_db]

        listed = json.loads(run("keys", "list", "--json", *where).stdout)
        assert [k["state"] for k in listed["keys"]] == ["active"]
        shown = run("show", "a1", "--kek-file", str(kek_file), *where).stdout
        assert f"{MARKER} one" in shown
        assert "[sealed: no key]" in run("show", "a1", *where).stdout
        env_shown = run("show", "a1", "--kek-env", "T_KEK", *where, env={"T_KEK": KEK.hex()})
        assert MARKER in env_shown.stdout
        assert KEK.hex() not in env_shown.stdout + env_shown.stderr

        # Keys elsewhere and not said where: refused, nothing changed, exit 2.
        refused = run("erase", "--user", "alice", "--apply", check=2)
        assert "--keys-database" in refused.stderr
        assert "Nothing was changed" in refused.stderr
        assert json.loads(run("stats", "--json").stdout)["threads"] == 1
        for args in (
            ["show", "a1", "--kek-env", KEK.hex()],
            ["show", "a1", "--kek-file", str(tmp_path / "missing")],
            ["show", "a1", "--kek-file", str(kek_file), "--kek-env", "X"],
            ["keys", "list", "--limit", "0"],
            ["keys", "list", "--keys-database", "bad.name"],
        ):
            done = run(*args, check=2)
            assert done.stderr.strip(), args
            assert KEK.hex() not in done.stderr, args

        erased = json.loads(run("erase", "--user", "alice", "--apply", "--json", *where).stdout)
        assert erased["keys"]["destroyed"] is True
        listed = json.loads(run("keys", "list", "--json", *where).stdout)
        assert {k["state"] for k in listed["keys"]} == {"destroyed"}
        assert json.loads(run("verify", "--json").stdout)["ok"]
    finally:
        await database.client.drop_database(keys_db)


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_show_on_a_sealed_thread_from_the_command_line(
    real_backend: Any, database: Any, tmp_path: Path, form: str
) -> None:
    # The real command line on events sealed in the form written now (cl4) and the one
    # before (cl3), both a binary ciphertext: without a KEK, placeholders with roles and
    # ids and one warning, exit 0; tampered, exit 1.
    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id="alice")
    at = binding.empty("a1")
    for batch in (
        [
            Message("user", [f"{MARKER} one"], message_id="m-1"),
            Message("assistant", ["reply"], message_id="r-1"),
        ],
        [Message("user", [f"{MARKER} two"])],
    ):
        at = (await binding.append(at, batch)).position
    if form == "cl3":
        await thread_as_cl3(database, "a1")
    docs = sorted(await raw_docs(database["events"]), key=lambda d: d["seq"])
    assert [d["messages"][0]["sealed"][:4] for d in docs] == [f"{form}:", f"{form}:"]
    assert all(type(d["messages"][0]["ciphertext"]) is bytes for d in docs)
    uri, name = real_backend.uri, database.name
    run = lambda *a, check=0: chatledger(*a, uri=uri, database=name, check=check)  # noqa: E731

    shown = run("show", "a1")
    assert shown.stdout.count("[sealed: no key]") == 3
    assert "[m-1]" in shown.stdout
    assert "[r-1]" in shown.stdout
    assert "3 sealed messages shown as placeholders" in shown.stderr
    assert "no KEK was given" in shown.stderr
    assert MARKER not in shown.stdout + shown.stderr
    doc = json.loads(run("show", "a1", "--json").stdout)
    assert [m["contents"][0]["text"] for m in doc["messages"]] == ["[sealed: no key]"] * 3
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "user"]
    assert doc["unreadable"] == [{"index": i, "why": "no key"} for i in range(3)]
    kek_file = tmp_path / "kek"
    kek_file.write_bytes(KEK)
    opened = run("show", "a1", "--kek-file", str(kek_file))
    assert f"{MARKER} one" in opened.stdout
    assert f"{MARKER} two" in opened.stdout
    assert "[sealed: no key]" not in opened.stdout
    assert json.loads(run("verify", "--json").stdout)["ok"]

    # The ciphertext as text instead of binary (the hash recomputed): never a placeholder.
    first = docs[0]
    message = first["messages"][0]
    forged = [{**message, "ciphertext": message["ciphertext"].hex()}, first["messages"][1]]
    changed = {**first, "messages": forged}
    changed["hash"] = event_hash(first["prev_hash"], changed)
    await database["events"].replace_one({"_id": first["_id"]}, changed)
    for args in (["show", "a1"], ["show", "a1", "--kek-file", str(kek_file)]):
        failed = run(*args, check=1)
        assert "a1#1" in failed.stderr, args
        assert "[sealed: no key]" not in failed.stdout, args
        assert MARKER not in failed.stdout + failed.stderr, args
    assert "a1#1" in run("verify", check=1).stdout + run("verify", check=1).stderr
