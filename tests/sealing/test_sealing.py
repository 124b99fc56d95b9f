"""Sealed content with per-subject keys: exact round trips, tamper evidence, crypto-shredding."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.admin.erasure import run_erasure
from chatledger.admin.holds import set_hold
from chatledger.errors import (
    ChatLedgerError,
    ContentErasedError,
    EventIdReusedError,
    IntegrityError,
    InvalidInputError,
    KeyUnavailableError,
)
from chatledger.hashing import event_hash
from chatledger.sealing import (
    KEYS_DESTROYED,
    KeyStore,
    LocalKeyProvider,
    Sealer,
    SubjectErasedError,
    rewrap,
    sealed_problem,
)
from chatledger.sealing import keyring as keyring_module
from tests.helpers import raw_docs, tricky_message

KEK = bytes(range(32))
MARKER = "ZEBRA-7731-secret"  # what must never survive an erasure in clear


def sealer_on(database: Any, *, kek: bytes = KEK, collection: str = "keys", ttl: float = 60.0) -> Sealer:
    return Sealer(KeyStore(database, collection=collection), LocalKeyProvider(kek), cache_ttl=ttl)


def sealed_ledger(database: Any, **options: Any) -> Ledger:
    return Ledger(database, sealer=sealer_on(database, **options))


async def talk(ledger: Ledger, user: str | None, texts: list[str], *, tenant: str | None = None) -> Any:
    binding = ledger.bind(tenant_id=tenant, user_id=user)
    at = binding.empty(f"t-{tenant}-{user}")
    for text in texts:
        at = (
            await binding.append(at, [Message("user", [text]), Message("assistant", [f"re: {text}"])])
        ).position
    return binding, at


async def events(database: Any) -> list[dict[str, Any]]:
    return await raw_docs(database["events"])


def contains(docs: list[dict[str, Any]], needle: str) -> bool:
    return needle in repr(docs)


async def test_round_trip_is_exact_and_nothing_is_stored_in_clear(database: Any) -> None:
    ledger = sealed_ledger(database)
    binding = ledger.bind(user_id="alice")
    batch = [tricky_message(), Message("user", [f"hello {MARKER}"], author_name="Alice", message_id="m-2")]
    result = await binding.append(binding.empty("conv"), batch)
    got = await binding.read(result.position)
    assert [m.to_dict() for m in got] == [m.to_dict() for m in batch]
    assert [m.to_dict() for m in await binding.read(result.position, offset=1)] == [batch[1].to_dict()]

    (doc,) = await events(database)
    # Shape stays visible to an operator: roles and message ids in clear, content sealed.
    assert [set(m) for m in doc["messages"]] == [
        {"role", "message_id", "sealed", "ciphertext"},
        {"role", "message_id", "sealed"},
    ]
    assert [m["role"] for m in doc["messages"]] == ["assistant", "user"]
    # One binary ciphertext per event, in its first message; the others refer to it.
    assert doc["messages"][0]["sealed"].startswith("cl4:k2-u")
    assert doc["messages"][0]["sealed"].count(":") == 2
    assert type(doc["messages"][0]["ciphertext"]) is bytes
    assert doc["messages"][1]["sealed"] == "cl4:@0"
    assert all(sealed_problem(m, i, doc["messages"][0]) is None for i, m in enumerate(doc["messages"]))
    assert not contains([doc], MARKER)
    assert not contains([doc], "Alice")
    assert not contains([doc], "Jöker")
    keys = await raw_docs(database["keys"])
    assert len(keys) == 1
    assert keys[0]["user_id"] == "alice"
    assert "wrapped" in keys[0]


async def test_sealed_and_clear_events_coexist_and_verify_without_any_key(database: Any) -> None:
    await talk(Ledger(database), None, ["plain one"], tenant="clear")
    await talk(sealed_ledger(database), "alice", ["sealed one", "sealed two"])
    report = await verify(Ledger(database))  # no sealer, no key store, no KEK
    assert report.ok, report.to_dict()

    # A reader without a sealer is told the content is sealed: not erased, not corrupt.
    binding = Ledger(database).bind(user_id="alice")
    with pytest.raises(KeyUnavailableError, match="no sealer"):
        await binding.read(await binding.head("t-None-alice"))


async def test_tampered_or_moved_ciphertext_is_an_integrity_error(database: Any) -> None:
    ledger = sealed_ledger(database)
    binding, head = await talk(ledger, "alice", ["one", "two", "three"])
    docs = sorted(await events(database), key=lambda d: d["seq"])

    async def rewrite(doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        # The attacker recomputes the event's hash so only the seal can notice.
        changed = {**doc, "messages": messages, "count": len(messages)}
        changed["hash"] = event_hash(doc["prev_hash"], changed)
        await database["events"].replace_one({"_id": doc["_id"]}, changed)

    assert len(await binding.read(head)) == 6  # every event opened once (and kept opened)

    # 1. One flipped bit inside the ciphertext of event 1 (in its tag, or its body).
    first = docs[0]["messages"][0]
    for at in (-1, len(first["ciphertext"]) // 2):
        raw = bytearray(first["ciphertext"])
        raw[at] ^= 1
        flipped = {**first, "ciphertext": bytes(raw)}
        await rewrite(docs[0], [flipped, docs[0]["messages"][1]])
        with pytest.raises(IntegrityError, match="does not open"):
            await binding.read(head)
    await database["events"].replace_one({"_id": docs[0]["_id"]}, docs[0])
    assert len(await binding.read(head)) == 6

    # 2. Event 1's ciphertext replayed into event 3 (same subject, same key): the whole
    # first message, or only its ciphertext bytes.
    await rewrite(docs[2], docs[0]["messages"])
    with pytest.raises(IntegrityError, match="moved here"):
        await binding.read(head, offset=4)
    only_bytes = {**docs[2]["messages"][0], "ciphertext": docs[0]["messages"][0]["ciphertext"]}
    await rewrite(docs[2], [only_bytes, docs[2]["messages"][1]])
    with pytest.raises(IntegrityError, match="moved here"):
        await binding.read(head, offset=4)
    # 3. Swapping the two messages of event 2: the ciphertext is no longer first.
    await rewrite(docs[1], list(reversed(docs[1]["messages"])))
    with pytest.raises(IntegrityError, match="malformed"):
        await binding.read(head, offset=2, limit=2)
    # 4. Relabelling a message (its role or id) or dropping one: the clear fields are bound
    # to the ciphertext (cl4: its associated data; cl3: a sealed copy), it does not open.
    relabelled = [docs[1]["messages"][0], {**docs[1]["messages"][1], "role": "system"}]
    renamed = [docs[1]["messages"][0], {**docs[1]["messages"][1], "message_id": "other"}]
    for messages in (relabelled, renamed, docs[1]["messages"][:1]):
        await rewrite(docs[1], messages)
        with pytest.raises(IntegrityError, match="relabelled"):
            await binding.read(head, offset=2, limit=1)


async def test_a_retried_sealed_append_is_recognised_not_duplicated(database: Any) -> None:
    ledger = sealed_ledger(database)
    binding = ledger.bind(user_id="alice")
    start = binding.empty("conv")
    batch = [Message("user", ["same batch"])]
    first = await binding.append(start, batch, event_id="e-1")
    again = await binding.append(start, batch, event_id="e-1")  # its reply was "lost"
    assert again.replayed
    assert not again.branched
    assert again.position.cursor == first.position.cursor
    assert len(await events(database)) == 1
    with pytest.raises(EventIdReusedError):
        await binding.append(start, [Message("user", ["another batch"])], event_id="e-1")

    # A retry that clashed and went to a branch is recognised there too.
    other = await binding.append(first.position, [Message("user", ["theirs"])])
    mine = await binding.append(first.position, [Message("user", ["mine"])], event_id="e-2")
    assert mine.branched
    retried = await binding.append(first.position, [Message("user", ["mine"])], event_id="e-2")
    assert retried.replayed
    assert retried.position.cursor == mine.position.cursor
    assert [m.text for m in await binding.read(mine.position)] == ["same batch", "mine"]
    assert [m.text for m in await binding.read(other.position)] == ["same batch", "theirs"]


async def test_erasure_destroys_the_subjects_keys_and_leaves_no_plaintext(database: Any) -> None:
    ledger = sealed_ledger(database)
    _, alice_head = await talk(ledger, "alice", [f"{MARKER} one", f"{MARKER} two"])
    _, alice_work = await talk(ledger, "alice", [f"{MARKER} at work"], tenant="acme")
    bob, bob_head = await talk(ledger, "bob", ["bob's own words"], tenant="acme")
    backup = await events(database)  # a backup taken before the erasure
    alice_events = [d for d in backup if d.get("user_id") == "alice"]
    assert len(alice_events) == 3

    shreds: list[Any] = []
    report = await run_erasure(ledger, user_id="alice", apply=True, by="dpo", on_keys=shreds.append)
    assert report.removed
    assert not report.skipped
    (shred,) = shreds
    assert shred.destroyed
    assert len(shred.key_ids) == 2

    keys = {k["_id"]: k for k in await raw_docs(database["keys"])}
    for key_id in shred.key_ids:
        # A tombstone: no subject fields, no key; only the kind of subject it was.
        assert set(keys[key_id]) == {"_id", "v", "destroyed_at", "receipt_id", "kind"}
        assert keys[key_id]["kind"] == "user"
    (receipt,) = [r for r in await raw_docs(database["audit"]) if r["kind"] == KEYS_DESTROYED]
    assert receipt["key_ids"] == shred.key_ids
    assert receipt["by"] == "dpo"
    assert set(receipt["removal_receipts"]) == set(report.removed)

    # Nothing the library stores holds the erased subject's plaintext or key material.
    for name in ("events", "threads", "audit", "keys"):
        assert not contains(await raw_docs(database[name]), MARKER), name
    assert not any("wrapped" in k for k in keys.values() if k["_id"] in shred.key_ids)

    # A backup copy of the ciphertext can no longer be opened, by this process or a new one.
    for sealer in (ledger.sealer, sealer_on(database)):
        assert sealer is not None
        for doc in alice_events:
            with pytest.raises(ContentErasedError):
                await sealer.open_messages(doc)
    # Nobody can write for the erased subject again: its key is never re-created.
    fresh = ledger.bind(user_id="alice")
    with pytest.raises(SubjectErasedError):
        await fresh.append(fresh.empty("new-conv"), [Message("user", ["back again"])])
    assert {k["_id"] for k in await raw_docs(database["keys"])} == set(keys)

    # Other subjects are untouched; the chain still verifies with no key at all.
    assert [m.text for m in await bob.read(bob_head)] == ["bob's own words", "re: bob's own words"]
    assert (await verify(Ledger(database))).ok
    del alice_head, alice_work


async def test_the_erasure_delay_is_the_cache_ttl(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The sealer's own clock, so a slow erasure on a busy server cannot outlast the TTL.
    now = [1000.0]
    monkeypatch.setattr(keyring_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    reader = sealer_on(database, ttl=0.3)
    ledger = Ledger(database, sealer=reader)
    await talk(ledger, "alice", [MARKER])
    (doc,) = await events(database)
    assert (await reader.open_messages(doc))[0]["text"] == MARKER  # now cached in this process

    # Another process (its own sealer) erases alice.
    await run_erasure(sealed_ledger(database), user_id="alice", apply=True)
    now[0] += 0.25
    assert (await reader.open_messages(doc))[0]["text"] == MARKER  # within the TTL: still readable
    now[0] += 0.1
    with pytest.raises(ContentErasedError):
        await reader.open_messages(doc)


async def test_an_erased_subject_starts_no_new_conversation_even_within_the_ttl(database: Any) -> None:
    # A long-lived application process with alice's key cached for an hour.
    writer = Ledger(database, sealer=sealer_on(database, ttl=3600))
    await talk(writer, "alice", [MARKER])
    # Another process erases alice.
    await run_erasure(sealed_ledger(database), user_id="alice", apply=True)
    before = await events(database)
    binding = writer.bind(user_id="alice")
    with pytest.raises(SubjectErasedError):
        await binding.append(binding.empty("a-new-conversation"), [Message("user", [MARKER])])
    assert await events(database) == before
    assert await database["threads"].find_one({"_id": "a-new-conversation"}) is None


async def test_a_legal_hold_keeps_the_keys(database: Any) -> None:
    ledger = sealed_ledger(database)
    binding, head = await talk(ledger, "alice", ["held words"])
    await set_hold(ledger, head.thread_id, reason="litigation", case="C-1")
    shreds: list[Any] = []
    report = await run_erasure(ledger, user_id="alice", apply=True, on_keys=shreds.append)
    assert report.skipped
    assert shreds[0].kept
    assert (shreds[0].key_ids, shreds[0].destroyed) == ([], False)
    assert "legal hold" in shreds[0].kept_because
    assert [m.text for m in await binding.read(head)] == ["held words", "re: held words"]
    dry: list[Any] = []
    await run_erasure(ledger, user_id="alice", apply=False, on_keys=dry.append)
    assert (dry[0].key_ids, dry[0].kept) == ([], shreds[0].kept)
    assert not dry[0].destroyed


async def test_a_misconfigured_key_store_is_never_reported_as_erased(database: Any) -> None:
    await talk(sealed_ledger(database), "alice", ["words"])
    (doc,) = await events(database)
    with pytest.raises(KeyUnavailableError, match="does not hold") as missing:
        await sealer_on(database, collection="other_keys").open_messages(doc)
    assert not isinstance(missing.value, ContentErasedError)
    with pytest.raises(KeyUnavailableError, match="cannot be unwrapped"):
        await sealer_on(database, kek=bytes(32)).open_messages(doc)

    # A writer on the wrong key store creates another key under the same id: its reads
    # of the real store's ciphertext say "another key", not "tampered" or "erased".
    wrong = sealed_ledger(database, collection="other_keys")
    binding, head = await talk(wrong, "alice", ["written on the wrong store"])
    with pytest.raises(KeyUnavailableError, match="another key"):
        await wrong.bind(user_id="alice").read(await wrong.bind(user_id="alice").head("t-None-alice"))
    assert len(await binding.read(head)) == 2


async def test_keys_live_in_another_database(database: Any) -> None:
    if not hasattr(database, "client"):
        pytest.skip("the driver exposes no client")
    keys_db = database.client[database.name + "_k"]
    try:
        ledger = Ledger(database, sealer=sealer_on(keys_db))
        binding, head = await talk(ledger, "alice", ["elsewhere"])
        assert await raw_docs(database["keys"]) == []
        assert len(await raw_docs(keys_db["keys"])) == 1
        await run_erasure(ledger, user_id="alice", apply=True)
        assert "destroyed_at" in (await raw_docs(keys_db["keys"]))[0]
    finally:
        await database.client.drop_database(database.name + "_k")
    del binding, head


async def test_rotation_rewraps_every_key_without_touching_events(database: Any) -> None:
    await talk(sealed_ledger(database), "alice", ["a"])
    await talk(sealed_ledger(database), None, ["t"], tenant="acme")
    await talk(sealed_ledger(database), None, ["r"])
    before = await events(database)
    store = KeyStore(database)
    new_kek = bytes(range(100, 132))
    report = await rewrap(store, LocalKeyProvider(KEK), LocalKeyProvider(new_kek))
    assert (report.rewrapped, report.already, report.failed) == (3, 0, [])
    assert await events(database) == before
    for doc in before:
        assert await sealer_on(database, kek=new_kek).open_messages(doc)
        with pytest.raises(KeyUnavailableError):
            await sealer_on(database).open_messages(doc)
    again = await rewrap(store, LocalKeyProvider(KEK), LocalKeyProvider(new_kek))
    assert (again.rewrapped, again.already) == (0, 3)
    assert {k["kek_id"] for k in await raw_docs(database["keys"])} == {LocalKeyProvider(new_kek).kek_id}


def test_kek_sources_and_bad_input(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = LocalKeyProvider.generate()
    (tmp_path / "kek").write_text(text + "\n")
    monkeypatch.setenv("TEST_KEK", text)
    ids = {LocalKeyProvider.from_file(tmp_path / "kek").kek_id, LocalKeyProvider.from_env("TEST_KEK").kek_id}
    assert len(ids) == 1
    assert text not in repr(LocalKeyProvider.from_env("TEST_KEK"))
    assert LocalKeyProvider.from_text(KEK.hex()).kek_id == LocalKeyProvider(KEK).kek_id
    for bad in ("", "short", "Z" * 64):
        with pytest.raises(InvalidInputError) as caught:
            LocalKeyProvider.from_text(bad)
        assert bad not in str(caught.value) or not bad
    with pytest.raises(InvalidInputError, match="not set"):
        LocalKeyProvider.from_env("TEST_KEK_UNSET")
    with pytest.raises(InvalidInputError, match="cannot read"):
        LocalKeyProvider.from_file(tmp_path / "missing")
    with pytest.raises(ChatLedgerError):
        Sealer("not a store", LocalKeyProvider(KEK))  # type: ignore[arg-type]


def test_the_library_imports_and_runs_unsealed_without_cryptography(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "no_crypto.py"
    script.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cryptography' or name.startswith('cryptography.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import asyncio\n"
        "import chatledger, chatledger.sealing, chatledger.admin.erasure\n"
        "from mongomock_motor import AsyncMongoMockClient\n"
        "from chatledger._maf import Message\n"
        "from chatledger.errors import InvalidInputError\n"
        "async def main():\n"
        "    ledger = chatledger.Ledger(AsyncMongoMockClient()['x'])\n"
        "    b = ledger.bind()\n"
        "    r = await b.append(b.empty('t'), [Message('user', ['hi'])])\n"
        "    assert [m.text for m in await b.read(r.position)] == ['hi']\n"
        "    try:\n"
        "        chatledger.sealing.LocalKeyProvider(bytes(32))\n"
        "    except InvalidInputError as e:\n"
        "        assert 'chatledger[seal]' in str(e)\n"
        "    else:\n"
        "        raise AssertionError('sealing ran without cryptography')\n"
        "    assert 'cryptography' not in sys.modules\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_sealed_problem_names_malformed_sealed_messages() -> None:
    # cl1 and cl2 were never released: their markers are malformed, however well formed.
    old = {"role": "user", "text": "[sealed]", "sealed": "cl1:k1-uab:0011:" + "A" * 40}
    for marker in (old["sealed"], "cl2:k1-uab:0011:" + "ab" * 28, "cl2:@0", "cl2:x:y:z"):
        assert sealed_problem({**old, "sealed": marker}) == "the sealed field is not a cl3 or cl4 marker"
    assert sealed_problem({**old, "sealed": "cl3:k1-uab:0011:" + "ab" * 28}) is not None  # cl3 holds no hex
    cl3 = {"role": "user", "text": "[sealed]", "sealed": "cl3:k1-uab:0011", "ciphertext": bytes(28)}
    assert sealed_problem(cl3) is None
    assert sealed_problem({**cl3, "message_id": "m"}) is None
    assert sealed_problem({**cl3, "sealed": "cl3:@0"}) is not None  # a reference holds no ciphertext
    assert sealed_problem({**cl3, "ciphertext": bytes(27)}) is not None  # too short for nonce and tag
    assert sealed_problem({**cl3, "ciphertext": "00" * 28}) is not None  # text, not binary
    assert sealed_problem({**cl3, "ciphertext": None}) is not None
    assert sealed_problem({k: v for k, v in cl3.items() if k != "ciphertext"}) is not None
    assert sealed_problem({**cl3, "sealed": "cl3:k1-uab:0011:" + "ab" * 28}) is not None  # 4 parts
    assert sealed_problem({**cl3, "sealed": "cl3:k1-uab:"}) is not None
    assert sealed_problem({**cl3, "sealed": "cl3::0011"}) is not None
    assert sealed_problem({**cl3, "sealed": "cl2:k1-uab:0011:" + "ab" * 28}) is not None  # cl2 with bytes
    assert sealed_problem({**cl3, "author_name": "leaked"}) is not None
    assert sealed_problem({**cl3, "message_id": 7}) is not None
    assert sealed_problem({**cl3, "text": "clear text"}) is not None
    ref = {"role": "user", "text": "[sealed]", "sealed": "cl3:@0"}
    assert sealed_problem(ref) is None
    assert sealed_problem({**ref, "text": "clear text"}) is not None
    assert sealed_problem({**ref, "author_name": "leaked"}) is not None
    # cl4, written now: no placeholder text, no other field.
    cl4 = {"role": "user", "sealed": "cl4:k2-uab:0011", "ciphertext": bytes(28)}
    assert sealed_problem(cl4) is None
    assert sealed_problem({**cl4, "message_id": "m"}) is None
    assert sealed_problem({"role": "user", "sealed": "cl4:@0"}) is None
    for field, value in (("text", "[sealed]"), ("author_name", "leaked"), ("message_id", 7)):
        assert sealed_problem({**cl4, field: value}) is not None
    assert sealed_problem({**cl4, "ciphertext": bytes(27)}) is not None
    assert sealed_problem({**cl4, "sealed": "cl4::0011"}) is not None


async def test_export_and_import_carry_ciphertext_only(database: Any, tmp_path: Any) -> None:
    import io

    from chatledger.admin.export import export_jsonl, import_jsonl

    await talk(sealed_ledger(database), "alice", [MARKER, "more"])
    out = io.StringIO()
    await export_jsonl(Ledger(database), out)
    assert MARKER not in out.getvalue()
    assert '"cl4:@0"' in out.getvalue()
    assert '"$binary"' in out.getvalue()

    # Imported into a database without the keys: it verifies, and reads say "key unavailable".
    path = tmp_path / "export.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    if not hasattr(database, "client"):
        pytest.skip("the driver exposes no client")
    target = database.client[database.name + "_i"]
    try:
        await import_jsonl(Ledger(target), path)
        assert (await verify(Ledger(target))).ok
        reader = Ledger(target, sealer=sealer_on(target)).bind(user_id="alice")
        with pytest.raises(KeyUnavailableError, match="does not hold"):
            await reader.read(await reader.head("t-None-alice"))
    finally:
        await database.client.drop_database(database.name + "_i")


async def test_keys_rotate_command_rewraps_and_reports(database: Any, tmp_path: Any) -> None:
    import json

    from chatledger.cli.commands.keys import rotate_body
    from chatledger.cli.render import Renderer

    ledger = sealed_ledger(database)
    binding, at = await talk(ledger, "alice", [f"hello {MARKER}"])
    old_file, new_file = tmp_path / "old.kek", tmp_path / "new.kek"
    old_file.write_bytes(KEK)
    new_kek = bytes(reversed(range(32)))
    new_file.write_text(base64.b64encode(new_kek).decode("ascii"), encoding="utf-8")
    out = tmp_path / "out.json"
    with out.open("w", encoding="utf-8") as stream:
        ui = Renderer(as_json=True, out=stream)
        assert await rotate_body(database, ui, old_kek=old_file, new_kek=new_file) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert (report["command"], report["rewrapped"], report["failed"]) == ("keys rotate", 1, [])
    assert str(KEK) not in out.read_text(encoding="utf-8")
    # The content now opens only with the new KEK; the events were not touched.
    rotated = Ledger(database, sealer=sealer_on(database, kek=new_kek)).bind(user_id="alice")
    texts = [m.text for m in await rotated.read(await rotated.resolve(binding.state(at)))]
    assert texts == [f"hello {MARKER}", f"re: hello {MARKER}"]
    # A second run with the old KEK as "old" finds nothing it can unwrap but nothing lost.
    with out.open("w", encoding="utf-8") as stream:
        ui = Renderer(as_json=True, out=stream)
        assert await rotate_body(database, ui, old_kek=old_file, new_kek=new_file) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["already"] == 1
