"""Stored forms of sealed content: cl4, cl3 (cl1, cl2 never released: refused); padding; kept events."""

from __future__ import annotations

import asyncio
import binascii
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from bson import json_util
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.errors import ContentErasedError, IntegrityError, InvalidInputError
from chatledger.hashing import event_hash
from chatledger.sealing import DataKey, KeyStore, LocalKeyProvider, Sealer, sealed_problem
from chatledger.sealing.form import packed
from chatledger.sealing.keys import destroy_subject_keys
from chatledger.sealing.providers import wrapped_of
from tests.helpers import raw_docs, tricky_message

KEK = bytes(range(32))
#: A database sealed in the forms that came before cl3 and were never released (no tag,
#: no version: CHANGELOG): thread conv-cl1 holds three cl1 events (one base64 ciphertext
#: per message, written by commit 6671e09) and two cl2 events (one hex ciphertext per
#: event, in its first message's marker, written by commit bd0b4fd); conv-cl2 is all cl2.
#: Events, threads and key exactly as that code stored them.
CL2 = Path(__file__).parent / "data" / "cl2_events.json"


def sealer_on(database: Any, **options: Any) -> Sealer:
    return Sealer(KeyStore(database), LocalKeyProvider(KEK), **options)


def read_fixture(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return fixture


async def load_fixture(database: Any, path: Path = CL2) -> dict[str, Any]:
    """Insert a fixture's database into ``database``; return the fixture (with the messages it holds)."""
    fixture = read_fixture(path)
    for name, docs in fixture["collections"].items():
        await database[name].insert_many(json_util.loads(json.dumps(docs)))
    return fixture


async def rewrite(database: Any, doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    # The attacker recomputes the event's hash so only the seal can notice.
    changed = {**doc, "messages": messages, "count": len(messages)}
    changed["hash"] = event_hash(doc["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)


async def data_key(database: Any, doc: dict[str, Any]) -> DataKey:
    """The data key a sealed event (as stored) names, unwrapped with the test KEK."""
    key_id = doc["messages"][0]["sealed"].split(":")[1]
    stored = await database["keys"].find_one({"_id": key_id})
    assert stored is not None
    return DataKey(key_id, LocalKeyProvider(KEK).unwrap(wrapped_of(stored), key_id))


async def as_cl3(database: Any, doc: dict[str, Any], prev_hash: str | None = None) -> dict[str, Any]:
    """Store the sealed (cl4) event ``doc`` as the code before cl4 wrote it (cl3, same key); return it.

    Its hash is recomputed (after ``prev_hash``, if given): the chain stays whole when
    a thread's events are rewritten in order, as if cl3 had written them.
    """
    key = await data_key(database, doc)
    clear = key.open_event(doc["messages"], doc["_id"], doc["messages"][0]["ciphertext"])
    messages = key._seal_cl3(clear, doc["_id"])
    changed = {**doc, "messages": messages, "prev_hash": prev_hash or doc["prev_hash"]}
    changed["hash"] = event_hash(changed["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)
    return changed


async def thread_as_cl3(database: Any, thread: str) -> None:
    """Store every sealed event of ``thread`` as cl3 (see :func:`as_cl3`), the chain rebuilt."""
    prev = None
    for doc in await sorted_events(database):
        if doc["thread_id"] == thread:
            prev = (await as_cl3(database, doc, prev))["hash"]


async def sorted_events(database: Any) -> list[dict[str, Any]]:
    return sorted(await raw_docs(database["events"]), key=lambda d: (d["thread_id"], d["seq"]))


async def test_the_never_released_cl1_and_cl2_forms_are_refused_as_malformed(database: Any) -> None:
    await load_fixture(database, CL2)
    docs = await sorted_events(database)
    forms = [(d["thread_id"], d["messages"][0]["sealed"][:3]) for d in docs]
    assert forms == [("conv-cl1", "cl1")] * 3 + [("conv-cl1", "cl2")] * 2 + [("conv-cl2", "cl2")] * 3
    for doc in docs:
        first = doc["messages"][0]
        assert sealed_problem(first, 0) == "the sealed field is not a cl3 or cl4 marker"
        assert all(sealed_problem(m, i, first) is not None for i, m in enumerate(doc["messages"]))
    # verify names every such event (no key needed).
    report = await verify(Ledger(database))
    assert sorted((p.thread_id, p.seq) for p in report.problems) == [(d["thread_id"], d["seq"]) for d in docs]
    assert all("not a cl3 or cl4 marker" in p.reason for p in report.problems)
    # A reader with the key refuses them too: never content, never a placeholder.
    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id="alice")
    for thread in ("conv-cl1", "conv-cl2"):
        with pytest.raises(IntegrityError, match=rf"'{thread}#1'.*malformed"):
            await binding.read(await binding.head(thread))


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_sealed_events_verify_without_keys_and_export_and_import_exactly(
    database: Any, tmp_path: Path, form: str
) -> None:
    from chatledger.admin.export import export_jsonl, import_jsonl

    ledger = Ledger(database, sealer=sealer_on(database))
    binding = ledger.bind(user_id="alice")
    batches = [
        [tricky_message(), Message("user", ["hello"], author_name="Alice", message_id="m-2")],
        [Message("assistant", ["a reply " * 40], message_id="r-1")],
    ]
    at = binding.empty("conv")
    for batch in batches:
        at = (await binding.append(at, batch)).position
    if form == "cl3":
        await thread_as_cl3(database, "conv")
    expected = [m.to_dict() for batch in batches for m in batch]
    assert (await verify(Ledger(database))).ok

    out = io.StringIO()
    await export_jsonl(Ledger(database), out)
    assert f"{form}:" in out.getvalue()
    assert out.getvalue().count('"$binary"') == 2  # each event's ciphertext, as Extended JSON binary
    assert "hello" not in out.getvalue()
    if not hasattr(database, "client"):
        pytest.skip("the driver exposes no client")
    target = database.client[database.name + "_i"]
    path = tmp_path / "export.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    try:
        await import_jsonl(Ledger(target), path)
        assert await raw_docs(target["keys"]) == []
        assert (await verify(Ledger(target))).ok  # no key anywhere near it
        imported, original = await sorted_events(target), await sorted_events(database)
        assert imported == original
        for copy, source in zip(imported, original, strict=True):
            assert type(copy["messages"][0]["ciphertext"]) is bytes
            assert copy["messages"][0]["ciphertext"] == source["messages"][0]["ciphertext"]
        # The keys stayed in the source database: a reader of the import uses them there.
        reader = Ledger(target, sealer=sealer_on(database)).bind(user_id="alice")
        assert [m.to_dict() for m in await reader.read(await reader.head("conv"))] == expected
    finally:
        await database.client.drop_database(target.name)


async def test_padding_hides_lengths_within_a_bucket_and_is_off_by_default(database: Any) -> None:
    async def sealed_lengths(sealer: Sealer, texts: list[str]) -> list[int]:
        binding = Ledger(database, sealer=sealer).bind(user_id="bob")
        at = binding.empty(f"pad-{sealer.pad_to}")
        for text in texts:
            at = (await binding.append(at, [Message("user", [text])])).position
        assert [m.text for m in await binding.read(at)] == texts  # exact round trip
        docs = [d for d in await sorted_events(database) if d["thread_id"] == at.thread_id]
        return [len(d["messages"][0]["ciphertext"]) for d in docs]

    # Plaintexts of ~30, ~100 and ~200 bytes (the JSON of the stored message): the first
    # two share the 128-byte bucket, the third goes to 256.
    texts = ["x" * 5, "y" * 80, "z" * 180]
    assert sealer_on(database).pad_to is None
    plain = await sealed_lengths(sealer_on(database), texts)
    assert len(set(plain)) == 3  # off by default: each length shows
    padded = await sealed_lengths(sealer_on(database, pad_to=128), texts)
    assert padded[0] == padded[1] < padded[2]
    assert padded[2] - padded[1] == 256 - 128  # binary: one stored byte per padded byte
    assert padded == [128 + 28, 128 + 28, 256 + 28]  # the bucket, then nonce and tag
    assert padded[0] > plain[1]  # what it costs: up to the bucket
    for bad in (0, 100, 8, 1 << 17, True, 128.0, "128"):
        with pytest.raises(InvalidInputError, match="pad_to"):
            sealer_on(database, pad_to=bad)


async def test_opened_events_are_kept_only_while_valid(database: Any) -> None:
    sealer = sealer_on(database)
    binding = Ledger(database, sealer=sealer).bind(user_id="carol")
    at = (
        await binding.append(
            binding.empty("kept"), [Message("user", ["first"]), Message("assistant", ["second"])]
        )
    ).position
    (doc,) = await raw_docs(database["events"])
    opened = await sealer.open_messages(doc)
    assert [m["text"] for m in opened] == ["first", "second"]
    opened[0]["text"] = "changed by a caller"  # never reaches what the sealer kept
    assert [m.text for m in await binding.read(at)] == ["first", "second"]

    # A relabelled clear field of an event read before is still caught.
    relabelled = {**doc, "messages": [doc["messages"][0], {**doc["messages"][1], "role": "system"}]}
    with pytest.raises(IntegrityError, match="does not match"):
        await sealer.open_messages(relabelled)

    keep_none = sealer_on(database, opened_events=0)
    for _ in range(2):
        assert [m["text"] for m in await keep_none.open_messages(doc)] == ["first", "second"]
    assert not keep_none._opened
    with pytest.raises(InvalidInputError, match="opened_events"):
        sealer_on(database, opened_events=-1)

    # Erasure: once the key is destroyed and forgotten (as the erasing process does),
    # what was opened with it is gone too.
    await destroy_subject_keys(KeyStore(database), user_id="carol", apply=True)
    assert sealer._opened
    sealer.forget([doc["messages"][0]["sealed"].split(":")[1]])
    assert not sealer._opened
    with pytest.raises(ContentErasedError):
        await sealer.open_messages(doc)


class NoDecrypt:
    """A cipher that refuses to decrypt: proves a read used what the sealer kept."""

    def decrypt(self, *args: Any) -> bytes:
        raise AssertionError("decrypted an event this process sealed and kept")


async def test_events_this_process_seals_read_back_exactly_without_decrypting(database: Any) -> None:
    writer = sealer_on(database)
    binding = Ledger(database, sealer=writer).bind(user_id="dana")
    batches = [
        [tricky_message(), Message("user", ["hello"], author_name="Dana", message_id="m-2")],
        [Message("assistant", ["a reply " * 40], message_id="r-1")],
    ]
    at = binding.empty("own")
    for batch in batches:
        at = (await binding.append(at, batch)).position
    # A branch (another writer took the position first) is kept too.
    base = await binding.at("own", 1)
    other = Ledger(database, sealer=sealer_on(database)).bind(user_id="dana")
    await other.append(base, [Message("user", ["theirs"])])
    branched = await binding.append(base, [Message("user", ["ours, branched"])])
    assert branched.branched
    expected = [m.to_dict() for batch in batches for m in batch]

    (key,) = {seen[2] for seen in writer._opened.values()}
    sealing_cipher, key._aead = key._aead, NoDecrypt()
    try:
        assert [m.to_dict() for m in await binding.read(at)] == expected
        assert [m.text for m in await binding.read(branched.position)][-1] == "ours, branched"
    finally:
        key._aead = sealing_cipher
    # A new process decrypts, and reads the very same messages.
    fresh = Ledger(database, sealer=sealer_on(database)).bind(user_id="dana")
    assert [m.to_dict() for m in await fresh.read(at)] == expected
    assert [m.to_dict() for m in await fresh.read(branched.position)] == [
        m.to_dict() for m in await binding.read(branched.position)
    ]

    # Kept events follow the opened ones' rules: once the key's cache entry expires and
    # the key was destroyed meanwhile, the content is gone for this process too.
    short = sealer_on(database, cache_ttl=0.2)
    writes = Ledger(database, sealer=short).bind(user_id="erin")
    head = (await writes.append(writes.empty("short"), [Message("user", ["soon erased"])])).position
    assert short._opened
    await destroy_subject_keys(KeyStore(database), user_id="erin", apply=True)
    await asyncio.sleep(0.3)
    with pytest.raises(ContentErasedError):
        await writes.read(head)
    keep_none = sealer_on(database, opened_events=0)
    none = Ledger(database, sealer=keep_none).bind(user_id="dana")
    await none.append(at, [Message("user", ["not kept"])])
    assert not keep_none._opened


def flip(blob: bytes, at: int) -> bytes:
    out = bytearray(blob)
    out[at] ^= 1
    return bytes(out)


def test_open_event_refuses_malformed_ciphertext_as_integrity_errors() -> None:
    key = DataKey("k1-uabc", bytes(range(32)))
    stored = [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello", "message_id": "r"}]
    sealed = key.seal(stored, "t#1")
    assert sealed[0]["sealed"] == f"cl4:k1-uabc:{key.fingerprint}"
    assert sealed[1] == {"role": "assistant", "message_id": "r", "sealed": "cl4:@0"}
    blob = sealed[0]["ciphertext"]
    assert type(blob) is bytes
    assert len(blob) == 12 + len(packed(stored)) + 16  # nonce, ciphertext, tag: nothing else
    assert b"user" not in packed(stored)  # the clear fields are not sealed again
    assert key.open_event(sealed, "t#1", blob) == stored
    old = key._seal_cl3(stored, "t#1")  # the form written before: still opens
    assert old[1] == {"role": "assistant", "message_id": "r", "text": "[sealed]", "sealed": "cl3:@0"}
    assert len(old[0]["ciphertext"]) == 12 + len(orjson.dumps(stored)) + 16
    assert key.open_event(old, "t#1", old[0]["ciphertext"]) == stored
    for form, messages in (("cl4", sealed), ("cl3", old)):
        blob = messages[0]["ciphertext"]
        for bad in (flip(blob, 0), flip(blob, 12), flip(blob, -1), blob[:-1], blob + b"\0", blob[:27], b""):
            with pytest.raises(IntegrityError):
                key.open_event(messages, "t#1", bad)
        with pytest.raises(IntegrityError, match="does not open"):
            key.open_event(messages, "t#2", blob)  # moved to another event
        with pytest.raises(IntegrityError, match="does not open"):
            DataKey("k1-uabd", bytes(range(32))).open_event(messages, "t#1", blob)  # another key id
        # One form's ciphertext under the other's markers: another label, it does not open.
        other = old if form == "cl4" else sealed
        with pytest.raises(IntegrityError, match="does not open"):
            key.open_event(other, "t#1", blob)
    assert key.seal([], "t#1") == []


def test_a_ciphertext_bound_to_another_forms_label_does_not_open_as_cl3() -> None:
    # A ciphertext made as the unreleased cl2 code made it, with the cipher itself (its
    # associated data labelled v2): moved into a cl3 event, it does not open.
    raw = bytes(range(32))
    key = DataKey("k1-uabc", raw)
    stored = [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello", "message_id": "r"}]
    iv = bytes(range(12))
    blob = iv + AESGCM(raw).encrypt(iv, orjson.dumps(stored), b"chatledger-seal-v2|7:k1-uabc|3:t#1")
    as_cl3 = [
        {"role": "user", "text": "[sealed]", "sealed": f"cl3:k1-uabc:{key.fingerprint}", "ciphertext": blob},
        {"role": "assistant", "message_id": "r", "text": "[sealed]", "sealed": "cl3:@0"},
    ]
    assert [sealed_problem(m, i, as_cl3[0]) for i, m in enumerate(as_cl3)] == [None, None]  # well formed
    with pytest.raises(IntegrityError, match="does not open"):
        key.open_event(as_cl3, "t#1", blob)
    # The same bytes as hex text (the cl2 way) are no cl3 ciphertext at all.
    text = binascii.b2a_hex(blob).decode("ascii")
    with pytest.raises(IntegrityError, match="not cl3"):
        key.open_event(as_cl3, "t#1", text)  # type: ignore[arg-type]
    cl2 = {"role": "user", "text": "[sealed]", "sealed": f"cl2:k1-uabc:{key.fingerprint}:{text}"}
    assert sealed_problem(cl2, 0) == "the sealed field is not a cl3 or cl4 marker"
