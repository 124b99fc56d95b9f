"""The sealed stored forms attacked: binary ciphertext in the first message, ``cl4:@0`` references
(``cl3``, the form written before, where it differs: the same attacks on both).

Every attacker here can write the events collection and recompute an event's hash; only
the seal (and, for what is malformed in itself, ``verify``) can notice. Malformed shapes
(the ciphertext replaced, references misplaced) are in ``test_sealed_shape.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import json_util

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.errors import IntegrityError, InvalidInputError, InvalidMessageError
from chatledger.hashing import event_hash
from chatledger.sealing import sealed_problem
from tests.helpers import raw_docs, tricky_message
from tests.sealing.test_forms import CL2, flip, load_fixture, rewrite, sealer_on, sorted_events, thread_as_cl3

NONCE_AND_TAG = 12 + 16


def batch_of(size: int, with_ids: bool) -> list[Message]:
    """``size`` messages, each text and author name with a token found nowhere else."""
    out = [
        Message(
            ("user", "assistant")[i % 2],
            [f"PLAIN{i:02d}qx naïve 𝔘 ☃ {'x' * (i * 7)}"],
            author_name=f"AUTHOR{i:02d}qx" if i % 3 == 0 else None,
            message_id=f"id-{i}" if with_ids else None,
        )
        for i in range(size)
    ]
    if with_ids and size > 1:
        out[-1] = tricky_message()  # unicode, NUL, binary data, odd properties
    return out


async def two_events(
    database: Any, user: str = "alice", thread: str = "t", form: str = "cl4"
) -> tuple[Any, Any]:
    """A sealed thread of two two-message events (stored in ``form``); return (binding, head)."""
    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id=user)
    at = binding.empty(thread)
    for turn in ("one", "two"):
        at = (
            await binding.append(
                at,
                [Message("user", [f"{user} {turn}"]), Message("assistant", [f"re {turn}"], message_id=turn)],
            )
        ).position
    if form == "cl3":
        await thread_as_cl3(database, thread)
    return binding, at


def fresh_reader(database: Any, user: str = "alice") -> Any:
    """Another process: nothing cached."""
    return Ledger(database, sealer=sealer_on(database)).bind(user_id=user)


@pytest.mark.parametrize("pad_to", [None, 256], ids=["unpadded", "padded"])
@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "no-ids"])
@pytest.mark.parametrize("size", [1, 2, 10])
async def test_round_trip_is_exact_and_the_stored_event_holds_no_plaintext(
    database: Any, size: int, with_ids: bool, pad_to: int | None
) -> None:
    binding = Ledger(database, sealer=sealer_on(database, pad_to=pad_to)).bind(user_id="alice")
    batch = batch_of(size, with_ids)
    done = await binding.append(binding.empty("conv"), batch)
    expected = [m.to_dict() for m in batch]
    assert [m.to_dict() for m in await binding.read(done.position)] == expected
    assert [m.to_dict() for m in await fresh_reader(database).read(done.position)] == expected
    half = size // 2
    assert [m.to_dict() for m in await binding.read(done.position, offset=half)] == expected[half:]

    (doc,) = await raw_docs(database["events"])
    messages = doc["messages"]
    ids = [{"message_id"} if m.message_id else set() for m in batch]
    # cl4: no placeholder text (cl3 had "[sealed]" in every message).
    assert set(messages[0]) == {"role", "sealed", "ciphertext"} | ids[0]
    assert [set(m) for m in messages[1:]] == [{"role", "sealed"} | i for i in ids[1:]]
    assert [m["role"] for m in messages] == [m.role for m in batch]
    assert [m.get("message_id") for m in messages] == [m.message_id for m in batch]
    blob = messages[0]["ciphertext"]
    assert type(blob) is bytes  # binary, not a text encoding of it
    assert messages[0]["sealed"].startswith("cl4:k2-u")
    assert len(messages[0]["sealed"].split(":")) == 3
    assert [m["sealed"] for m in messages[1:]] == ["cl4:@0"] * (size - 1)
    assert all(sealed_problem(m, i, messages[0]) is None for i, m in enumerate(messages))
    if pad_to is not None:
        padded = len(blob) - NONCE_AND_TAG
        assert padded >= pad_to
        assert padded & (padded - 1) == 0  # a power-of-two bucket
    # No plaintext anywhere in the stored document: not in its fields, not in its BSON.
    encoded = bson.encode(doc)
    for message in batch:
        for secret in (message.text, message.author_name):
            if secret:
                assert secret not in repr(doc)
                assert secret.encode("utf-8") not in encoded
    for i in range(size):
        assert f"PLAIN{i:02d}qx".encode() not in encoded
    assert b"AUTHOR00qx" not in encoded
    assert (await verify(Ledger(database))).ok  # no key


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_a_flipped_bit_is_an_integrity_error_at_read(database: Any, form: str) -> None:
    binding, head = await two_events(database, form=form)
    assert len(await binding.read(head)) == 4  # opened (and kept opened) by this process
    first, last = await sorted_events(database)
    for doc in (last, first):
        for at in (0, 12, len(doc["messages"][0]["ciphertext"]) // 2, -1):  # nonce, body, tag
            message = doc["messages"][0]
            await rewrite(
                database,
                doc,
                [{**message, "ciphertext": flip(message["ciphertext"], at)}, doc["messages"][1]],
            )
            for reader in (binding, fresh_reader(database)):
                with pytest.raises(IntegrityError, match=rf"'{doc['_id']}'.*does not open"):
                    await reader.read(head)
            report = await verify(Ledger(database))
            if doc is last:
                # Without a key nothing can tell: the last event's hash was recomputed, its
                # shape is sound, and nothing chains to it yet (an anchor of the head would).
                assert report.ok
            else:
                # The next event still chains to the old hash.
                assert [p.seq for p in report.problems] == [2]
                assert "prev_hash" in report.problems[0].reason
        await database["events"].replace_one({"_id": doc["_id"]}, doc)
    assert len(await binding.read(head)) == 4
    assert (await verify(Ledger(database))).ok


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_a_ciphertext_moved_from_another_event_is_an_integrity_error(database: Any, form: str) -> None:
    binding, head = await two_events(database, form=form)
    await two_events(database, thread="other", form=form)  # alice again: the same key
    await two_events(database, user="bob", thread="b", form=form)  # another subject, another key
    docs = {d["_id"]: d for d in await raw_docs(database["events"])}
    target = docs["t#2"]
    assert len(await binding.read(head)) == 4
    sources = [docs["t#1"], docs["other#1"], docs["other#2"]]
    for source in sources:
        # Only the bytes, under the target's marker; or the source's whole first message.
        for moved in (
            {**target["messages"][0], "ciphertext": source["messages"][0]["ciphertext"]},
            {**source["messages"][0], "role": target["messages"][0]["role"]},
        ):
            await rewrite(database, target, [moved, target["messages"][1]])
            for reader in (binding, fresh_reader(database)):
                with pytest.raises(IntegrityError, match=r"'t#2'.*moved here"):
                    await reader.read(head)
    # Bob's ciphertext under bob's marker: bob's key opens nothing bound to alice's event.
    bobs = [d for d in docs.values() if d.get("user_id") == "bob"]
    for source in bobs:
        await rewrite(database, target, [source["messages"][0], target["messages"][1]])
        with pytest.raises(IntegrityError, match=r"'t#2'.*does not open"):
            await binding.read(head)
    await database["events"].replace_one({"_id": target["_id"]}, target)
    assert len(await fresh_reader(database).read(head)) == 4


async def test_the_ciphertexts_digest_in_its_place_hashes_the_same_but_is_refused(database: Any) -> None:
    # The hash chain stands for the bytes by {"sha256", "size"}: that very document in
    # place of the bytes leaves the event's hash unchanged. The shape tells, without a key.
    binding, head = await two_events(database)
    _, last = await sorted_events(database)
    blob = last["messages"][0]["ciphertext"]
    stand_in = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    forged = {**last, "messages": [{**last["messages"][0], "ciphertext": stand_in}, last["messages"][1]]}
    assert event_hash(last["prev_hash"], forged) == last["hash"]
    await database["events"].replace_one({"_id": last["_id"]}, forged)  # the stored hash as it was
    report = await verify(Ledger(database))
    assert [(p.seq, "not binary" in p.reason) for p in report.problems] == [(2, True)]
    for reader in (binding, fresh_reader(database)):
        with pytest.raises(IntegrityError, match="'t#2'"):
            await reader.read(head)


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_a_ciphertext_relabelled_as_cl2_is_refused(database: Any, form: str) -> None:
    binding, head = await two_events(database, form=form)
    assert len(await binding.read(head)) == 4
    _, last = await sorted_events(database)
    first, ref = last["messages"]
    as_cl2 = {k: v for k, v in first.items() if k != "ciphertext"}
    as_cl2["sealed"] = first["sealed"].replace(f"{form}:", "cl2:", 1) + ":" + first["ciphertext"].hex()
    await rewrite(database, last, [as_cl2, {**ref, "sealed": "cl2:@0"}])
    # cl2 was never released: its marker is malformed to anyone, key or not (the hash was recomputed).
    report = await verify(Ledger(database))
    assert [(p.seq, "not a cl3 or cl4 marker" in p.reason) for p in report.problems] == [(2, True)]
    for reader in (binding, fresh_reader(database)):
        with pytest.raises(IntegrityError, match=r"'t#2'.*malformed"):
            await reader.read(head)


async def test_a_cl2_ciphertext_relabelled_as_cl3_does_not_open(database: Any) -> None:
    await load_fixture(database, CL2)
    binding = fresh_reader(database)
    head = await binding.head("conv-cl2")
    doc = (await sorted_events(database))[-1]
    assert doc["_id"] == "conv-cl2#3"
    first, *refs = doc["messages"]
    prefix, text = first["sealed"].rsplit(":", 1)
    as_cl3 = {**first, "sealed": prefix.replace("cl2:", "cl3:", 1), "ciphertext": bytes.fromhex(text)}
    relabelled = [as_cl3, *({**m, "sealed": "cl3:@0"} for m in refs)]
    await rewrite(database, doc, relabelled)
    # Sound cl3 to anyone without the key.
    assert [sealed_problem(m, i, as_cl3) for i, m in enumerate(relabelled)] == [None] * len(relabelled)
    for reader in (binding, fresh_reader(database)):
        with pytest.raises(IntegrityError, match=r"'conv-cl2#3'.*does not open"):
            await reader.read(head, offset=4, limit=3)


async def test_opened_events_kept_in_the_cache_never_hide_a_changed_ciphertext(database: Any) -> None:
    sealer = sealer_on(database)
    binding = Ledger(database, sealer=sealer).bind(user_id="alice")
    at = binding.empty("t")
    for turn in ("one", "two"):
        at = (
            await binding.append(at, [Message("user", [turn]), Message("assistant", [f"re {turn}"])])
        ).position
    first, last = await sorted_events(database)
    message, ref = last["messages"]
    as_cl2 = {k: v for k, v in message.items() if k != "ciphertext"}
    as_cl2["sealed"] = message["sealed"].replace("cl4:", "cl2:", 1) + ":" + message["ciphertext"].hex()
    changes = {
        "a flipped bit": [{**message, "ciphertext": flip(message["ciphertext"], -1)}, ref],
        "another event's ciphertext": [{**message, "ciphertext": first["messages"][0]["ciphertext"]}, ref],
        "the same bytes relabelled cl2": [as_cl2, {**ref, "sealed": "cl2:@0"}],
        "a bytes copy of the same value": [{**message, "ciphertext": bytes(message["ciphertext"])}, ref],
    }
    for change, messages in changes.items():
        assert [m.text for m in await binding.read(at)] == ["one", "re one", "two", "re two"]
        assert "t#2" in sealer._opened  # the next read is served from the cache, if still valid
        await rewrite(database, last, messages)
        if change == "a bytes copy of the same value":
            # The very same ciphertext: the cache rightly still serves it.
            assert [m.text for m in await binding.read(at)] == ["one", "re one", "two", "re two"]
            continue
        refused = "malformed" if "cl2" in change else "does not open"  # cl2: never released
        with pytest.raises(IntegrityError, match=rf"'t#2'.*{refused}"):
            await binding.read(at)
        assert "t#2" not in sealer._opened, change  # never kept for the changed event
        await database["events"].replace_one({"_id": last["_id"]}, last)


async def test_an_export_carries_the_binary_and_a_forged_one_is_refused_on_import(
    database: Any, tmp_path: Path
) -> None:
    from chatledger.admin.export import export_jsonl, import_jsonl

    await two_events(database)
    out = io.StringIO()
    await export_jsonl(Ledger(database), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    events = [line for line in lines if line.get("type") == "event"]
    assert len(events) == 2
    stored = {d["_id"]: d for d in await raw_docs(database["events"])}
    for line in events:
        doc = line["doc"]
        carried = doc["messages"][0]["ciphertext"]
        assert set(carried) == {"$binary"}
        assert carried["$binary"]["subType"] == "00"
        assert json_util.loads(json.dumps(carried)) == stored[doc["_id"]]["messages"][0]["ciphertext"]
    if not hasattr(database, "client"):
        pytest.skip("the driver exposes no client")

    # The bytes forged in the file: their digest (same hash), another binary subtype, text.
    blob = stored["t#2"]["messages"][0]["ciphertext"]
    base64_text = json.loads(json_util.dumps(blob))["$binary"]["base64"]
    forgeries = {
        "digest": {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)},
        "subtype": {"$binary": {"base64": base64_text, "subType": "80"}},
        "text": blob.hex(),
    }
    target = database.client[database.name + "_i"]
    try:
        for name, forged in forgeries.items():
            edited = []
            for line in map(json.loads, out.getvalue().splitlines()):
                if line["type"] == "event" and line["doc"]["_id"] == "t#2":
                    line["doc"]["messages"][0]["ciphertext"] = forged
                edited.append(json.dumps(line, ensure_ascii=False))
            path = tmp_path / f"{name}.jsonl"
            path.write_text("\n".join(edited) + "\n", encoding="utf-8")
            with pytest.raises(InvalidInputError, match="'t#2'"):
                await import_jsonl(Ledger(target), path)
            assert await raw_docs(target["events"]) == [], name
        # The file as exported imports, and verifies without any key.
        path = tmp_path / "export.jsonl"
        path.write_text(out.getvalue(), encoding="utf-8")
        await import_jsonl(Ledger(target), path)
        assert (await verify(Ledger(target))).ok
    finally:
        await database.client.drop_database(target.name)


def _as_digest(value: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(value).hexdigest(), "size": len(value)}


@pytest.mark.parametrize(
    "where", ["clear text", "clear extra field", "clear ciphertext field", "sealed reference text"]
)
async def test_bytes_outside_the_ciphertext_field_are_reported_not_hashed_as_a_ciphertext(
    database: Any, where: str
) -> None:
    # Only a cl3 first message's ciphertext may be binary. An attacker who stores bytes
    # anywhere else, with the hash recomputed as if they were a ciphertext (its digest
    # standing in), must not get an event that verifies and reads as an empty text.
    if where == "sealed reference text":
        _, head = await two_events(database)
        thread, index = head.thread_id, 1
    else:
        binding = Ledger(database).bind()
        head = (await binding.append(binding.empty("clear"), [Message("user", ["hello"])])).position
        thread, index = "clear", 0
    (doc,) = [d for d in await sorted_events(database) if d["thread_id"] == thread][-1:]
    field = {"clear extra field": "x", "clear ciphertext field": "ciphertext"}.get(where, "text")
    smuggled = b"smuggled bytes"
    as_hashed = [dict(m) for m in doc["messages"]]
    as_hashed[index][field] = _as_digest(smuggled)
    stored = [dict(m) for m in doc["messages"]]
    stored[index][field] = smuggled
    changed = {
        **doc,
        "messages": stored,
        "hash": event_hash(doc["prev_hash"], {**doc, "messages": as_hashed}),
    }
    await database["events"].replace_one({"_id": doc["_id"]}, changed)

    if field != "ciphertext":
        with pytest.raises(InvalidMessageError):
            event_hash(doc["prev_hash"], changed)  # not hashable: bytes only in the ciphertext field
    report = await verify(Ledger(database))
    assert not report.ok
    assert any(f"message {index}" in p.reason and field in p.reason for p in report.problems)
    if field == "text":
        reader = fresh_reader(database) if where == "sealed reference text" else Ledger(database).bind()
        with pytest.raises(IntegrityError, match=doc["_id"]):
            await reader.read(head)
