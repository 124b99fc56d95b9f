"""Hostile review of cl4: what a database writer or a caller can do to a sealed event.

A keyed reader must refuse (with ChatLedger's own error) every stored event ``verify``
reports, fresh or from the events its sealer keeps; and a write must never store what
no reader can open.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.errors import IntegrityError
from chatledger.hashing import event_hash
from chatledger.ledger.compaction import compacted_view
from chatledger.sealing import DataKey
from chatledger.sealing.form import ad_clear_part, ad_event_part
from chatledger.storage.documents import check_thread
from tests.helpers import compact_prefix
from tests.sealing.test_forms import as_cl3, rewrite, sealer_on, sorted_events


@pytest.mark.parametrize("form", ["cl4", "cl3"])
@pytest.mark.parametrize("index", [0, 1])
async def test_a_null_message_id_added_in_clear_is_refused_by_every_keyed_reader(
    database: Any, form: str, index: int
) -> None:
    # A message stored without an id and one whose id is null bind the same associated
    # data (both read as null): the reader must still refuse what verify reports.
    writer = Ledger(database, sealer=sealer_on(database))
    binding = writer.bind(user_id="u")
    await binding.append(binding.empty("t"), [Message("user", ["hi"]), Message("assistant", ["yo"])])
    (doc,) = await sorted_events(database)
    if form == "cl3":
        doc = await as_cl3(database, doc)
        # The writer's kept copy was of the cl4 event: read the cl3 one once, so it keeps that.
        assert [m.text for m in await binding.read(await binding.head("t"))] == ["hi", "yo"]
    messages = [dict(m) for m in doc["messages"]]
    messages[index]["message_id"] = None
    await rewrite(database, doc, messages)
    report = await verify(Ledger(database))
    assert not report.ok
    assert "message_id" in report.problems[0].reason
    fresh = Ledger(database, sealer=sealer_on(database)).bind(user_id="u")
    for reader in (fresh, binding):  # decrypting, and the appending process's kept copy
        with pytest.raises(IntegrityError, match="does not match"):
            await reader.read(await reader.head("t"))


def test_a_compressed_batch_never_inflates_past_what_readers_accept() -> None:
    # A very repetitive batch deflates to a small ciphertext; its frame must stay within
    # what opening inflates, or the write succeeds and the event never reads again.
    key = DataKey("k2-uabc", bytes(range(32)), compress=True)
    stored = [{"role": "user", "text": "a" * (64 << 20)}]
    sealed = key.seal(stored, "t#1")
    assert key.open_event(sealed, "t#1", sealed[0]["ciphertext"]) == stored


@pytest.mark.parametrize("name", ["message_id", "role", "sealed", "ciphertext"])
def test_a_frame_naming_a_clear_or_form_field_is_refused(name: str) -> None:
    # The clear fields are the stored ones, bound by the associated data; a frame (written
    # by a wrong writer with the key) that names one, or a field of the stored form, must
    # not slip a message_id or a marker into the opened message (the JSON plaintext refuses it).
    key = DataKey("k2-uabc", bytes(range(32)))
    stored = [{"role": "user", "text": "hi"}]
    sealed = key.seal(stored, "t#1")
    head = json.dumps([[["text", name]], [2, 2]]).encode()
    plain = b"\x00" + len(head).to_bytes(4, "big") + head + b"hizz"
    iv = bytes(12)
    ad = key._ad + ad_event_part("t#1") + ad_clear_part(sealed, "t#1")
    with pytest.raises(IntegrityError, match="malformed"):
        key.open_event(sealed, "t#1", iv + key._aead.encrypt(iv, plain, ad))


async def test_a_thread_moved_to_another_user_does_not_open_for_that_user(database: Any) -> None:
    # A database writer gives alice's thread to mallory (thread and events rescoped, every
    # digest and hash recomputed: verify, without a key, cannot tell). The content is
    # sealed under alice's key: a keyed reader in mallory's scope must not open it.
    alice = Ledger(database, sealer=sealer_on(database)).bind(user_id="alice")
    done = await alice.append(alice.empty("t"), [Message("user", ["alice's secret"])])
    await compact_prefix(alice, done.position, 1, "summary: alice's secret")
    thread = await database["threads"].find_one({"_id": "t"})
    thread["user_id"] = "mallory"
    await database["threads"].replace_one({"_id": "t"}, thread)
    prev = None
    for doc in await sorted_events(database):
        moved = {**doc, "user_id": "mallory", "prev_hash": prev or doc["prev_hash"]}
        if doc["seq"] == 1:
            moved["thread_digest"] = check_thread(thread).digest()
        else:  # the summary names the range it replaces by its (recomputed) hashes
            moved["compaction"] = {**doc["compaction"], "first_hash": prev, "last_hash": prev}
        moved["hash"] = prev = event_hash(moved["prev_hash"], moved)
        await database["events"].replace_one({"_id": doc["_id"]}, moved)
    assert (await verify(Ledger(database))).ok
    mallory = Ledger(database, sealer=sealer_on(database)).bind(user_id="mallory")
    head = await mallory.head("t")
    with pytest.raises(IntegrityError, match="does not open in this scope"):
        await mallory.read(head)
    with pytest.raises(IntegrityError, match="does not open in this scope"):
        [m async for page in mallory.pages(head) for m in page]
    with pytest.raises(IntegrityError, match="does not open in this scope"):
        await compacted_view(mallory, head)  # the summary too
