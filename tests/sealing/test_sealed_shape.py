"""Sealed messages malformed without a key: verify names them, ``show`` never turns them into placeholders."""

from __future__ import annotations

import io
from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.cli.commands import browse
from chatledger.cli.render import Renderer
from chatledger.errors import IntegrityError
from chatledger.hashing import event_hash
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer, destroy_subject_keys, sealed_problem

KEK = bytes(range(32))
GOOD_HEX = "ab" * 28


def sealed_ledger(database: Any) -> Ledger:
    return Ledger(database, sealer=Sealer(KeyStore(database), LocalKeyProvider(KEK)))


async def sealed_event(database: Any) -> dict[str, Any]:
    """Append one sealed two-message event for alice (thread a1); return it as stored."""
    binding = sealed_ledger(database).bind(user_id="alice")
    await binding.append(
        binding.empty("a1"), [Message("user", ["secret one"]), Message("assistant", ["secret two"])]
    )
    doc = await database["events"].find_one({"_id": "a1#1"})
    assert doc is not None
    assert doc["messages"][0]["sealed"].startswith("cl2:")
    assert doc["messages"][1]["sealed"] == "cl2:@0"
    return dict(doc)


async def rewrite(database: Any, doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Store ``messages`` in place of the event's, its hash recomputed (what a forger does)."""
    changed = {**doc, "messages": messages, "count": len(messages)}
    changed["hash"] = event_hash(doc["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)


def tampered(doc: dict[str, Any], how: str) -> list[dict[str, Any]]:
    first, second = dict(doc["messages"][0]), dict(doc["messages"][1])
    prefix = first["sealed"].rsplit(":", 1)[0]
    if how == "not hex":
        return [{**first, "sealed": prefix + ":zz"}, second]
    if how == "truncated":
        return [{**first, "sealed": prefix + ":" + "ab" * 10}, second]
    if how == "ref first":  # messages swapped: the reference comes first
        return [second, first]
    if how == "two ciphertexts":
        return [first, {**second, "sealed": first["sealed"]}]
    if how == "clear after":
        return [first, {"role": "assistant", "text": "forged in clear"}]
    raise AssertionError(how)


HOWS = ["not hex", "truncated", "ref first", "two ciphertexts", "clear after"]


@pytest.mark.parametrize("how", HOWS)
async def test_verify_names_an_event_whose_sealed_messages_are_malformed(database: Any, how: str) -> None:
    doc = await sealed_event(database)
    assert (await verify(Ledger(database))).ok
    await rewrite(database, doc, tampered(doc, how))
    report = await verify(Ledger(database))  # no sealer, no key: the shape alone tells
    assert not report.ok
    (problem,) = report.problems
    assert problem.thread_id == "a1"
    assert problem.seq == 1
    assert "'a1#1'" in problem.reason
    assert "message" in problem.reason


def show(database: Any, kek: Any = None) -> Any:
    out, err = io.StringIO(), io.StringIO()
    return browse.show_body(database, Renderer(out, err, as_json=False, width=200), thread="a1", kek=kek)


@pytest.mark.parametrize("how", HOWS)
async def test_show_never_turns_a_malformed_sealed_message_into_a_placeholder(
    database: Any, how: str
) -> None:
    doc = await sealed_event(database)
    assert await show(database) == 0  # intact: placeholders, no KEK needed
    await rewrite(database, doc, tampered(doc, how))
    with pytest.raises(IntegrityError, match="a1#1"):
        await show(database, LocalKeyProvider(KEK))
    with pytest.raises(IntegrityError, match="a1#1"):
        await show(database)  # no KEK: was "[sealed: no key]"
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    with pytest.raises(IntegrityError, match="a1#1"):
        await show(database)  # erased: was "[content erased]"


async def test_show_still_shows_placeholders_for_intact_sealed_events(database: Any) -> None:
    await sealed_event(database)
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=False, width=200)
    assert await browse.show_body(database, ui, thread="a1") == 0
    assert "[sealed: no key]" in out.getvalue()
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    out.seek(0)
    out.truncate()
    assert await browse.show_body(database, ui, thread="a1") == 0
    assert "[content erased]" in out.getvalue()
    assert (await verify(Ledger(database))).ok


def test_sealed_problem_judges_the_cl2_layout_given_a_place() -> None:
    head = {"role": "user", "text": "[sealed]", "sealed": f"cl2:k1-uab:0011:{GOOD_HEX}"}
    ref = {"role": "assistant", "text": "[sealed]", "sealed": "cl2:@0"}
    cl1 = {"role": "user", "text": "[sealed]", "sealed": "cl1:k1-uab:0011:" + "A" * 40}
    clear = {"role": "assistant", "text": "hi"}
    # Alone, each is well formed (a reference may be well placed).
    assert [sealed_problem(m) for m in (head, ref, cl1)] == [None, None, None]
    # At their place.
    assert sealed_problem(head, 0) is None
    assert sealed_problem(ref, 1, head) is None
    assert sealed_problem(cl1, 0) is None
    assert sealed_problem(cl1, 1, cl1) is None
    assert sealed_problem(clear, 1, cl1) is None  # the cl1 reader opens each sealed message alone
    assert sealed_problem(ref, 0) is not None  # nothing to refer to
    assert sealed_problem(head, 1, head) is not None  # a second ciphertext
    assert sealed_problem(clear, 1, head) is not None  # clear inside a cl2 event
    assert sealed_problem(ref, 1, cl1) is not None  # a reference in a cl1 event
    assert sealed_problem(head, 1, cl1) is not None
    assert sealed_problem({**head, "sealed": "cl2:k1-uab:0011:zz"}, 0) is not None
