"""Attacks on the events a sealer keeps as opened when this process sealed them (Sealer.keep_sealed).

The appending process must read back exactly what a process decrypting from scratch
reads, and fail exactly as that process fails once the stored event was tampered with
or its key destroyed elsewhere.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_framework import Content

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.codec import encode_messages
from chatledger.errors import ChatLedgerError, ContentErasedError, IntegrityError
from chatledger.hashing import event_hash
from chatledger.sealing import CIPHERTEXT_FIELD, SEALED_FIELD, KeyStore
from chatledger.sealing.keys import destroy_subject_keys
from tests.helpers import raw_docs, tricky_message
from tests.sealing.test_forms import NoDecrypt, sealer_on


def shapes() -> list[list[Message]]:
    return [
        [tricky_message(), Message("user", ["plain"], author_name="Dana", message_id="m-1")],
        [Message("assistant", [""])],  # empty text
        [Message("user", ["no id, no author"]), Message("system", ["x" * 5000], message_id="s")],
        [Message("tool", [Content.from_data(b"\x00\xff" * 64, "application/octet-stream")])],
        [Message("user", [f"batch {i}"], message_id=f"b-{i}") for i in range(30)],
    ]


async def reads(binding: Any, thread_id: str) -> list[dict[str, Any]]:
    return [m.to_dict() for m in await binding.read(await binding.head(thread_id))]


@pytest.mark.parametrize(
    "options", [{}, {"pad_to": 256}, {"per_lineage": True}], ids=["default", "padded", "per-lineage"]
)
async def test_kept_appends_read_back_as_a_decrypting_process_reads_them(
    database: Any, options: dict[str, Any]
) -> None:
    writer = sealer_on(database, **options)
    binding = Ledger(database, sealer=writer).bind(user_id="dana")
    at = binding.empty("t")
    for batch in shapes():
        at = (await binding.append(at, batch)).position
    # The same batch through the encoded API, whose dicts the caller then changes.
    stored = encode_messages([Message("user", ["pre-encoded"], message_id="p")])
    at = (await binding.append(at, stored=stored)).position
    stored[0]["text"] = "changed by the caller after the append"

    fresh = Ledger(database, sealer=sealer_on(database, **options)).bind(user_id="dana")
    expected = await reads(fresh, "t")
    assert expected[-1]["contents"][0]["text"] == "pre-encoded"
    # Every key this process holds refuses to decrypt: only kept entries can answer.
    assert len(writer._opened) == len(shapes()) + 1  # every append kept
    keys = {seen[2] for seen in writer._opened.values()}
    ciphers = {key: key._aead for key in keys}
    for key in keys:
        key._aead = NoDecrypt()
    try:
        assert await reads(binding, "t") == expected
    finally:
        for key, cipher in ciphers.items():
            key._aead = cipher
    assert [m.to_dict() for batch in shapes() for m in batch] == expected[:-1]


async def rewrite_head(database: Any, doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    # The head event: no later event's prev_hash betrays the change, only the seal can.
    changed = {**doc, "messages": messages, "count": len(messages)}
    changed["hash"] = event_hash(doc["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)


def swap_ciphertext(messages: list[dict[str, Any]], other: dict[str, Any]) -> list[dict[str, Any]]:
    first = {**messages[0], CIPHERTEXT_FIELD: other["messages"][0][CIPHERTEXT_FIELD]}
    return [first, *messages[1:]]


TAMPERING = {
    "ciphertext-of-the-previous-event": lambda m, prev: swap_ciphertext(m, prev),
    "roles-swapped": lambda m, prev: [{**m[0], "role": m[1]["role"]}, {**m[1], "role": m[0]["role"]}],
    "message-id-relabelled": lambda m, prev: [{**m[0], "message_id": "forged"}, m[1]],
    "message-dropped": lambda m, prev: m[:1],
    "message-added": lambda m, prev: [*m, {**m[1], "message_id": "extra"}],
    "clear-field-added": lambda m, prev: [m[0], {**m[1], "author_name": "Mallory"}],
    "placeholder-replaced": lambda m, prev: [m[0], {**m[1], "text": "forged text"}],
    "marker-fingerprint": lambda m, prev: [
        {**m[0], SEALED_FIELD: m[0][SEALED_FIELD].rsplit(":", 1)[0] + ":0000000000000000"},
        m[1],
    ],
    "marker-of-another-subject": lambda m, prev: [
        {**m[0], SEALED_FIELD: prev["messages"][0][SEALED_FIELD]},
        m[1],
    ],
}


@pytest.mark.parametrize("tamper", list(TAMPERING))
async def test_tampering_after_the_append_fails_the_appending_process_as_any_reader(
    database: Any, tamper: str
) -> None:
    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id="erin")
    at = (await binding.append(binding.empty("t"), [Message("user", ["first turn"])])).position
    if tamper == "marker-of-another-subject":
        # The previous event's marker names frank's key, not erin's.
        other = Ledger(database, sealer=sealer_on(database)).bind(user_id="frank")
        await other.append(other.empty("f"), [Message("user", ["frank's"])])
    await binding.append(
        at, [Message("user", ["secret question"], message_id="q"), Message("assistant", ["secret answer"])]
    )
    docs = {(d["thread_id"], d["seq"]): d for d in await raw_docs(database["events"])}
    head, prev = docs[("t", 2)], docs[("f", 1)] if ("f", 1) in docs else docs[("t", 1)]
    await rewrite_head(database, head, TAMPERING[tamper](head["messages"], prev))

    fresh = Ledger(database, sealer=sealer_on(database)).bind(user_id="erin")
    with pytest.raises(ChatLedgerError) as fresh_error:
        await reads(fresh, "t")
    with pytest.raises(ChatLedgerError) as kept_error:
        await reads(binding, "t")
    # Same verdict as a process that never saw the event; never its content.
    assert type(kept_error.value) is type(fresh_error.value), (kept_error.value, fresh_error.value)
    if not tamper.startswith("marker"):
        assert isinstance(kept_error.value, IntegrityError)
    assert "secret" not in str(kept_error.value)


async def test_erasure_elsewhere_reaches_every_kept_append_once_the_key_cache_expires(
    database: Any,
) -> None:
    short = sealer_on(database, cache_ttl=0.5)
    binding = Ledger(database, sealer=short).bind(user_id="gina")
    at = binding.empty("g")
    for text in ("one", "two", "three"):
        at = (await binding.append(at, [Message("user", [text])])).position
    # A branch: another writer took position 1 first.
    base = await binding.at("g", 1)
    other = Ledger(database, sealer=sealer_on(database)).bind(user_id="gina")
    await other.append(base, [Message("user", ["theirs"])])
    branched = await binding.append(base, [Message("user", ["ours"])])
    assert branched.branched
    # Another process (its own key store handle) destroys gina's keys; nothing tells this one.
    await destroy_subject_keys(KeyStore(database), user_id="gina", apply=True)
    await asyncio.sleep(0.7)
    for position in (at, branched.position, await binding.at("g", 1)):
        with pytest.raises(ContentErasedError):
            await binding.read(position)


async def test_without_a_key_cache_erasure_elsewhere_shows_at_once(database: Any) -> None:
    binding = Ledger(database, sealer=sealer_on(database, cache_ttl=0)).bind(user_id="hal")
    at = (await binding.append(binding.empty("h"), [Message("user", ["gone at once"])])).position
    assert [m.text for m in await binding.read(at)] == ["gone at once"]
    await destroy_subject_keys(KeyStore(database), user_id="hal", apply=True)
    with pytest.raises(ContentErasedError):
        await binding.read(at)


async def test_forgetting_a_key_drops_what_its_appends_kept(database: Any) -> None:
    sealer = sealer_on(database)  # the default TTL: only forget can end the kept entries early
    binding = Ledger(database, sealer=sealer).bind(user_id="ivy")
    at = (await binding.append(binding.empty("i"), [Message("user", ["kept"])])).position
    (doc,) = await raw_docs(database["events"])
    await destroy_subject_keys(KeyStore(database), user_id="ivy", apply=True)
    sealer.forget([doc["messages"][0][SEALED_FIELD].split(":")[1]])
    with pytest.raises(ContentErasedError):
        await binding.read(at)


async def test_replays_and_concurrent_branches_keep_only_what_is_stored(database: Any) -> None:
    sealer = sealer_on(database)
    ledger = Ledger(database, sealer=sealer)
    one, two = ledger.bind(user_id="jo"), ledger.bind(user_id="jo")
    at = (await one.append(one.empty("j"), [Message("user", ["start"])], event_id="e-1")).position
    # The same append again (a retry after a lost reply): recognised, nothing new kept.
    again = await one.append(one.empty("j"), [Message("user", ["start"])], event_id="e-1")
    assert again.replayed
    # Two writers of this process at the same position at once: one line, one branch.
    results = await asyncio.gather(
        one.append(at, [Message("user", ["from one"])]), two.append(at, [Message("user", ["from two"])])
    )
    assert sorted(r.branched for r in results) == [False, True]
    fresh = Ledger(database, sealer=sealer_on(database)).bind(user_id="jo")
    for result in results:
        ours = [m.to_dict() for m in await one.read(result.position)]
        assert ours == [m.to_dict() for m in await fresh.read(result.position)]
    assert len(await raw_docs(database["events"])) == 3
    assert len(sealer._opened) == 3


async def test_kept_appends_stay_within_opened_events(database: Any) -> None:
    sealer = sealer_on(database, opened_events=2)
    binding = Ledger(database, sealer=sealer).bind(user_id="kim")
    at = binding.empty("k")
    for turn in range(5):
        at = (await binding.append(at, [Message("user", [f"turn {turn}"])])).position
        assert len(sealer._opened) <= 2
    # Those that aged out decrypt again, to the same messages.
    assert [m.text for m in await binding.read(at)] == [f"turn {turn}" for turn in range(5)]
