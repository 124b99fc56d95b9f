"""Stored forms of sealed content: cl1 (existing data) and cl2, padding, and the opened-event cache."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.errors import ContentErasedError, IntegrityError, InvalidInputError
from chatledger.hashing import event_hash
from chatledger.sealing import DataKey, KeyStore, LocalKeyProvider, Sealer, sealed_problem
from chatledger.sealing.keys import destroy_subject_keys
from tests.helpers import raw_docs, tricky_message

KEK = bytes(range(32))
#: A database sealed in the cl1 form (one base64 ciphertext per message) by the release
#: before cl2 (commit 6671e09): events, thread and key exactly as that code stored them.
CL1 = Path(__file__).parent / "data" / "cl1_events.json"


def sealer_on(database: Any, **options: Any) -> Sealer:
    return Sealer(KeyStore(database), LocalKeyProvider(KEK), **options)


async def load_cl1(database: Any) -> dict[str, Any]:
    """Insert the cl1 database into ``database``; return the fixture (with the messages it holds)."""
    fixture: dict[str, Any] = json.loads(CL1.read_text(encoding="utf-8"))
    for name, docs in fixture["collections"].items():
        await database[name].insert_many(json_util.loads(json.dumps(docs)))
    return fixture


async def rewrite(database: Any, doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    # The attacker recomputes the event's hash so only the seal can notice.
    changed = {**doc, "messages": messages, "count": len(messages)}
    changed["hash"] = event_hash(doc["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)


async def sorted_events(database: Any) -> list[dict[str, Any]]:
    return sorted(await raw_docs(database["events"]), key=lambda d: (d["thread_id"], d["seq"]))


async def test_cl1_events_written_before_still_read_verify_and_catch_tampering(database: Any) -> None:
    fixture = await load_cl1(database)
    docs = await sorted_events(database)
    assert all(m["sealed"].startswith("cl1:") for d in docs for m in d["messages"])
    assert all(sealed_problem(m) is None for d in docs for m in d["messages"])
    assert (await verify(Ledger(database))).ok  # no key needed

    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id="alice")
    head = await binding.head(fixture["thread_id"])
    expected = [m for batch in fixture["messages"] for m in batch]
    assert [m.to_dict() for m in await binding.read(head)] == expected

    # New appends to the old thread are cl2; the mixed thread reads and verifies.
    done = await binding.append(head, [Message("user", ["now in cl2"])])
    assert [m.to_dict() for m in await binding.read(done.position)] == [
        *expected,
        Message("user", ["now in cl2"]).to_dict(),
    ]
    newest = (await sorted_events(database))[-1]
    assert newest["messages"][0]["sealed"].startswith("cl2:")
    assert (await verify(Ledger(database))).ok

    # A cl1 message's flipped bit, or its ciphertext moved to another event or index.
    first = docs[0]["messages"][0]
    head_part, blob = first["sealed"].rsplit(":", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    flipped = {**first, "sealed": f"{head_part}:{base64.b64encode(bytes(raw)).decode()}"}
    await rewrite(database, docs[0], [flipped, docs[0]["messages"][1]])
    with pytest.raises(IntegrityError, match="does not open"):
        await binding.read(head, limit=2)
    await rewrite(database, docs[0], list(reversed(docs[0]["messages"])))
    with pytest.raises(IntegrityError, match="moved here"):
        await binding.read(head, limit=2)
    await rewrite(database, docs[2], docs[1]["messages"][:1])
    with pytest.raises(IntegrityError, match="moved here"):
        await binding.read(head, offset=4, limit=1)


async def test_cl2_verifies_without_keys_and_exports_and_imports_exactly(
    database: Any, tmp_path: Path
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
    expected = [m.to_dict() for batch in batches for m in batch]
    assert (await verify(Ledger(database))).ok

    out = io.StringIO()
    await export_jsonl(Ledger(database), out)
    assert "cl2:" in out.getvalue()
    assert "hello" not in out.getvalue()
    if not hasattr(database, "client"):
        pytest.skip("the driver exposes no client")
    target = database.client[database.name + "_i"]
    path = tmp_path / "export.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    try:
        await import_jsonl(Ledger(target), path)
        assert (await verify(Ledger(target))).ok
        # The keys stayed in the source database: a reader of the import uses them there.
        reader = Ledger(target, sealer=sealer_on(database)).bind(user_id="alice")
        assert [m.to_dict() for m in await reader.read(await reader.head("conv"))] == expected
        assert await sorted_events(target) == await sorted_events(database)
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
        return [len(d["messages"][0]["sealed"]) for d in docs]

    # Plaintexts of ~30, ~100 and ~200 bytes (the JSON of the stored message): the first
    # two share the 128-byte bucket, the third goes to 256.
    texts = ["x" * 5, "y" * 80, "z" * 180]
    assert sealer_on(database).pad_to is None
    plain = await sealed_lengths(sealer_on(database), texts)
    assert len(set(plain)) == 3  # off by default: each length shows
    padded = await sealed_lengths(sealer_on(database, pad_to=128), texts)
    assert padded[0] == padded[1] < padded[2]
    assert padded[2] - padded[1] == 2 * (256 - 128)  # hex: two characters per padded byte
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


def test_open_event_refuses_malformed_ciphertext_as_integrity_errors() -> None:
    key = DataKey("k1-uabc", bytes(range(32)))
    stored = [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello", "message_id": "r"}]
    sealed = key.seal(stored, "t#1")
    text = sealed[0]["sealed"].split(":", 3)[3]
    assert key.open_event(sealed, "t#1", text) == stored
    for bad in ("zz" + text[2:], text[:-1], text[:40], " " + text[1:]):
        with pytest.raises(IntegrityError):
            key.open_event(sealed, "t#1", bad)
    with pytest.raises(IntegrityError, match="does not open"):
        key.open_event(sealed, "t#2", text)  # moved to another event
    with pytest.raises(IntegrityError, match="does not open"):
        DataKey("k1-uabd", bytes(range(32))).open_event(sealed, "t#1", text)  # another key id
    assert key.seal([], "t#1") == []
