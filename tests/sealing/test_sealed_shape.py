"""Sealed messages malformed without a key: verify names them, ``show`` never turns them into placeholders.

Each attack runs on an event written now (``cl4``: the ciphertext as binary in the first
message, no placeholder text) and on one in the form written before (``cl3``). The forms
before those (``cl1``, ``cl2``) were never released: their markers are malformed
(``test_forms.py``).
"""

from __future__ import annotations

import hashlib
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
from tests.sealing.test_forms import as_cl3

KEK = bytes(range(32))
GOOD_HEX = "ab" * 28
#: The thread whose first event is tampered with.
THREAD = "a1"


def sealed_ledger(database: Any) -> Ledger:
    return Ledger(database, sealer=Sealer(KeyStore(database), LocalKeyProvider(KEK)))


async def sealed_event(database: Any, form: str = "cl4") -> dict[str, Any]:
    """Return, as stored, alice's first sealed two-message event (appended now, thread a1), in ``form``."""
    binding = sealed_ledger(database).bind(user_id="alice")
    await binding.append(
        binding.empty(THREAD), [Message("user", ["secret one"]), Message("assistant", ["secret two"])]
    )
    doc = await database["events"].find_one({"_id": f"{THREAD}#1"})
    assert doc is not None
    assert doc["messages"][0]["sealed"].startswith("cl4:")
    assert doc["messages"][1]["sealed"] == "cl4:@0"
    assert "ciphertext" in doc["messages"][0]
    return await as_cl3(database, dict(doc)) if form == "cl3" else dict(doc)


async def rewrite(database: Any, doc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Store ``messages`` in place of the event's, its hash recomputed (what a forger does)."""
    changed = {**doc, "messages": messages, "count": len(messages)}
    changed["hash"] = event_hash(doc["prev_hash"], changed)
    await database["events"].replace_one({"_id": doc["_id"]}, changed)


def without(message: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != name}


def tampered(doc: dict[str, Any], how: str) -> list[dict[str, Any]]:
    first, second = dict(doc["messages"][0]), dict(doc["messages"][1])
    blob = first.get("ciphertext")
    form, other = ("cl3", "cl4") if first["sealed"].startswith("cl3:") else ("cl4", "cl3")
    if how == "ref first":  # messages swapped: the reference comes first
        return [second, first]
    if how == "two ciphertexts":
        return [first, {**second, **{k: first[k] for k in ("sealed", "ciphertext") if k in first}}]
    if how == "clear after":
        return [first, {"role": "assistant", "text": "forged in clear"}]
    if how == "ref first alone":  # the reference in message 0, no ciphertext anywhere
        return [{**without(first, "ciphertext"), "sealed": second["sealed"]}, second]
    if how == "ref in a clear event":
        return [{"role": first["role"], "text": "forged in clear"}, second]
    if how == "ciphertext as text":
        return [{**first, "ciphertext": blob.hex()}, second]
    if how == "ciphertext as its digest":  # what the hash chain stands for the bytes by
        return [
            {**first, "ciphertext": {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}},
            second,
        ]
    if how == "ciphertext removed":
        return [without(first, "ciphertext"), second]
    if how == "ciphertext truncated":
        return [{**first, "ciphertext": blob[:27]}, second]
    if how == "ciphertext empty":
        return [{**first, "ciphertext": b""}, second]
    if how == "ref first keeps the ciphertext":
        return [{**first, "sealed": f"{form}:@0"}, second]
    if how == "cl2 ref in a sealed event":
        return [first, {**second, "sealed": "cl2:@0"}]
    if how == "the other form's ref":  # cl3 and cl4 never mix in one event
        return [first, {**second, "sealed": f"{other}:@0"}]
    if how == "placeholder text added" and form == "cl4":  # cl3's field, not cl4's
        return [first, {**second, "text": "[sealed]"}]
    if how == "placeholder text added":  # cl3: a text that is not the placeholder
        return [first, {**second, "text": "forged"}]
    if how == "marker with hex":
        return [{**first, "sealed": f"{first['sealed']}:{blob.hex()}"}, second]
    if how == "ref carries a ciphertext":
        return [first, {**second, "ciphertext": blob}]
    raise AssertionError(how)


HOWS = [
    "ref first",
    "two ciphertexts",
    "clear after",
    "ref first alone",
    "ref in a clear event",
    "ciphertext as text",
    "ciphertext as its digest",
    "ciphertext removed",
    "ciphertext truncated",
    "ciphertext empty",
    "ref first keeps the ciphertext",
    "cl2 ref in a sealed event",
    "the other form's ref",
    "placeholder text added",
    "marker with hex",
    "ref carries a ciphertext",
]


@pytest.mark.parametrize("form", ["cl4", "cl3"])
@pytest.mark.parametrize("how", HOWS)
async def test_verify_names_an_event_whose_sealed_messages_are_malformed(
    database: Any, how: str, form: str
) -> None:
    doc = await sealed_event(database, form)
    assert (await verify(Ledger(database))).ok
    await rewrite(database, doc, tampered(doc, how))
    report = await verify(Ledger(database))  # no sealer, no key: the shape alone tells
    assert not report.ok
    (problem,) = report.problems
    thread = THREAD
    assert problem.thread_id == thread
    assert problem.seq == 1
    assert f"'{thread}#1'" in problem.reason
    assert "message" in problem.reason


def show(database: Any, thread: str, kek: Any = None) -> Any:
    out, err = io.StringIO(), io.StringIO()
    return browse.show_body(database, Renderer(out, err, as_json=False, width=200), thread=thread, kek=kek)


@pytest.mark.parametrize("form", ["cl4", "cl3"])
@pytest.mark.parametrize("how", HOWS)
async def test_show_never_turns_a_malformed_sealed_message_into_a_placeholder(
    database: Any, how: str, form: str
) -> None:
    doc = await sealed_event(database, form)
    thread = THREAD
    assert await show(database, thread) == 0  # intact: placeholders, no KEK needed
    await rewrite(database, doc, tampered(doc, how))
    with pytest.raises(IntegrityError, match=f"{thread}#1"):
        await show(database, thread, LocalKeyProvider(KEK))
    with pytest.raises(IntegrityError, match=f"{thread}#1"):
        await (
            sealed_ledger(database)
            .bind(user_id="alice")
            .read(await sealed_ledger(database).bind(user_id="alice").head(thread))
        )
    with pytest.raises(IntegrityError, match=f"{thread}#1"):
        await show(database, thread)  # no KEK: was "[sealed: no key]"
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    with pytest.raises(IntegrityError, match=f"{thread}#1"):
        await show(database, thread)  # erased: was "[content erased]"


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_a_keyed_read_refuses_a_reference_carrying_a_ciphertext(database: Any, form: str) -> None:
    doc = await sealed_event(database, form)
    await rewrite(database, doc, tampered(doc, "ref carries a ciphertext"))
    binding = sealed_ledger(database).bind(user_id="alice")
    with pytest.raises(IntegrityError, match="a1#1"):
        await binding.read(await binding.head("a1"))


@pytest.mark.parametrize("form", ["cl4", "cl3"])
async def test_show_still_shows_placeholders_for_intact_sealed_events(database: Any, form: str) -> None:
    await sealed_event(database, form)
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=False, width=200)
    assert await browse.show_body(database, ui, thread=THREAD) == 0
    assert "[sealed: no key]" in out.getvalue()
    assert "secret" not in out.getvalue()
    await destroy_subject_keys(KeyStore(database), user_id="alice", apply=True)
    out.seek(0)
    out.truncate()
    assert await browse.show_body(database, ui, thread=THREAD) == 0
    assert "[content erased]" in out.getvalue()
    assert (await verify(Ledger(database))).ok


def test_sealed_problem_refuses_the_never_released_cl1_and_cl2_markers() -> None:
    head = {"role": "user", "text": "[sealed]", "sealed": f"cl2:k1-uab:0011:{GOOD_HEX}"}
    ref = {"role": "assistant", "text": "[sealed]", "sealed": "cl2:@0"}
    cl1 = {"role": "user", "text": "[sealed]", "sealed": "cl1:k1-uab:0011:" + "A" * 40}
    clear = {"role": "assistant", "text": "hi"}
    for message in (head, ref, cl1):
        assert sealed_problem(message) == "the sealed field is not a cl3 or cl4 marker"  # alone
        assert sealed_problem(message, 0) == "the sealed field is not a cl3 or cl4 marker"
    for first in (head, cl1, clear):
        for message in (head, ref, cl1):
            assert sealed_problem(message, 1, first) is not None
    # A clear message after one of them: the event's problem is its first message.
    assert sealed_problem(clear, 1, head) is None


def test_sealed_problem_judges_the_cl3_layout_given_a_place() -> None:
    head = {"role": "user", "text": "[sealed]", "sealed": "cl3:k1-uab:0011", "ciphertext": bytes(28)}
    ref = {"role": "assistant", "message_id": "r", "text": "[sealed]", "sealed": "cl3:@0"}
    cl2_head = {"role": "user", "text": "[sealed]", "sealed": f"cl2:k1-uab:0011:{GOOD_HEX}"}
    cl2_ref = {**ref, "sealed": "cl2:@0"}
    cl1 = {"role": "user", "text": "[sealed]", "sealed": "cl1:k1-uab:0011:" + "A" * 40}
    clear = {"role": "assistant", "text": "hi"}
    assert [sealed_problem(m) for m in (head, ref)] == [None, None]
    assert sealed_problem(head, 0) is None
    assert sealed_problem(ref, 1, head) is None
    assert sealed_problem(ref, 9, head) is None
    assert sealed_problem(ref, 0) is not None  # nothing to refer to
    assert sealed_problem({**ref, "ciphertext": bytes(28)}, 0) is not None  # nor with bytes
    assert sealed_problem(head, 1, head) is not None  # a second ciphertext
    assert sealed_problem({**ref, "ciphertext": bytes(28)}, 1, head) is not None  # one in a reference
    assert sealed_problem({**ref, "ciphertext": bytes(28)}) is not None
    assert sealed_problem(clear, 1, head) is not None  # clear inside a cl3 event
    assert sealed_problem(cl1, 1, head) is not None
    # The two whole-event forms never mix, and neither refers from a cl1 or clear event.
    assert sealed_problem(cl2_ref, 1, head) is not None
    assert sealed_problem(ref, 1, cl2_head) is not None
    assert sealed_problem(ref, 1, cl1) is not None
    assert sealed_problem(ref, 1, clear) is not None
    assert sealed_problem(head, 1, cl1) is not None
    assert sealed_problem(head, 1, clear) is not None
    # A first message that lost its ciphertext is the event's problem (references go by its marker).
    assert sealed_problem(without(head, "ciphertext"), 0) is not None


def test_sealed_problem_names_a_misplaced_ciphertext_field() -> None:
    ref = {"role": "assistant", "text": "[sealed]", "sealed": "cl3:@0", "ciphertext": bytes(28)}
    cl2_head = {
        "role": "user",
        "text": "[sealed]",
        "sealed": f"cl2:k1-uab:0011:{GOOD_HEX}",
        "ciphertext": b"x",
    }
    for message in (ref, cl2_head):
        assert "ciphertext" in (sealed_problem(message) or "")


def test_sealed_problem_judges_the_cl4_layout_given_a_place() -> None:
    head = {"role": "user", "sealed": "cl4:k2-uab:0011", "ciphertext": bytes(28)}
    ref = {"role": "assistant", "message_id": "r", "sealed": "cl4:@0"}
    cl3_head = {"role": "user", "text": "[sealed]", "sealed": "cl3:k1-uab:0011", "ciphertext": bytes(28)}
    cl3_ref = {"role": "assistant", "text": "[sealed]", "sealed": "cl3:@0"}
    clear = {"role": "assistant", "text": "hi"}
    assert [sealed_problem(m) for m in (head, ref)] == [None, None]
    assert sealed_problem(head, 0) is None
    assert sealed_problem(ref, 1, head) is None
    assert sealed_problem(ref, 0) is not None  # nothing to refer to
    assert sealed_problem(head, 1, head) is not None  # a second ciphertext
    assert sealed_problem({**ref, "ciphertext": bytes(28)}, 1, head) is not None
    assert sealed_problem(clear, 1, head) is not None  # clear inside a cl4 event
    # cl3's placeholder text is not a cl4 field; the forms never mix in one event.
    assert "text" in (sealed_problem({**ref, "text": "[sealed]"}) or "")
    assert "text" in (sealed_problem({**head, "text": "[sealed]"}, 0) or "")
    assert sealed_problem(cl3_ref, 1, head) is not None
    assert sealed_problem(ref, 1, cl3_head) is not None
    assert sealed_problem(cl3_ref, 1, cl3_head) is None
    assert sealed_problem(without(head, "ciphertext"), 0) is not None
