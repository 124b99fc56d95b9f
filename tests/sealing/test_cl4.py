"""cl4 (written now) beside cl3 (written before): old events keep reading; compression is opt-in.

cl4 keeps ``role`` and ``message_id`` only in clear (bound to the ciphertext by its
associated data) and drops cl3's ``[sealed]`` placeholder text, so a sealed event stores
fewer bytes; docs/sealing.md, "What is stored". ``Sealer(compress=True)`` deflates
what an event seals where that makes it smaller.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.admin import verify
from chatledger.admin.erasure import run_erasure
from chatledger.codec import encode_messages
from chatledger.errors import ContentErasedError, InvalidInputError
from chatledger.ledger.compaction import compacted_view
from chatledger.sealing import DataKey
from chatledger.sealing.form import COMPRESS_FROM, packed
from tests.helpers import raw_docs
from tests.sealing.test_forms import sealer_on, sorted_events
from tests.sealing.test_sealed_size import tool_result

#: Written by data/cl3_mixed.py.txt on the code before cl4 (commit e8cab7a): tenant acme's
#: dana and padded (pad_to=64) each have a thread of two tool-using turns (a user question
#: with quotes and non-ASCII, a function call, its JSON result, an answer) and a framed
#: 5 KB answer; padded's thread ends in a sealed compaction summary of its first two events.
FIXTURE = Path(__file__).parent / "data" / "cl3_mixed.json"
#: The fixture's database was named "old": its keys name that ledger id.
OLD_LEDGER = "old/threads/events"


async def _load(database: Any) -> None:
    for name, docs in json_util.loads(FIXTURE.read_text(encoding="utf-8")).items():
        if docs:
            await database[name].insert_many(docs)


def _expected_turn(n: int) -> list[str]:
    """What each message of the fixture's turn ``n`` must read back as (its text, or its call)."""
    return [f"Where is order {n}? é 😀", f"call_{n}", f"2026-12-0{n}", f"Order {n} has shipped."]


def _seen(message: Message) -> str:
    return message.text or json.dumps(message.to_dict(), ensure_ascii=False)


@pytest.mark.parametrize("user", ["dana", "padded"])
async def test_cl3_events_read_verify_extend_export_and_erase(
    database: Any, user: str, tmp_path: Path
) -> None:
    await _load(database)
    before = await sorted_events(database)
    assert {m["sealed"][:4] for d in before for m in d["messages"]} == {"cl3:"}
    assert (await verify(Ledger(database))).ok  # no key
    ledger = Ledger(database, sealer=sealer_on(database), ledger_id=OLD_LEDGER)
    binding = ledger.bind(user_id=user, tenant_id="acme")
    thread = f"mixed-{user}"
    head = await binding.head(thread)
    got = await binding.read(head, limit=9)
    assert [str(m.role) for m in got] == ["user", "assistant", "tool", "assistant"] * 2 + ["assistant"]
    for message, expected in zip(got, _expected_turn(1) + _expected_turn(2), strict=False):
        assert expected in _seen(message)
    assert got[0].author_name == "Dana"
    assert got[0].message_id == "u1"
    assert got[8].text == '{"json": "x"}' * 400  # the framed batch
    if user == "padded":
        view = await compacted_view(binding, head)  # the cl3 summary opens
        assert view[0].text == "summary: two orders shipped"
    # The thread goes on in cl4, under the same key; both forms read and verify together.
    done = await binding.append(head, [Message("user", ["and now cl4"])])
    (last,) = [d for d in await sorted_events(database) if d["_id"] == f"{thread}#{done.position.offset}"]
    assert last["messages"][0]["sealed"].startswith("cl4:")
    assert len(await raw_docs(database["keys"])) == 2
    assert [m.text for m in await binding.read(done.position, offset=-1)] == ["and now cl4"]
    assert (await verify(ledger)).ok
    # Export and import carry both forms' bytes exactly; the import verifies without a key.
    from chatledger.admin.export import export_jsonl, import_jsonl

    out = io.StringIO()
    await export_jsonl(Ledger(database), out)
    assert '"cl3:@0"' in out.getvalue()
    assert '"cl4:' in out.getvalue()
    if hasattr(database, "client"):
        target = database.client[database.name + "_i"]
        path = tmp_path / "export.jsonl"
        path.write_text(out.getvalue(), encoding="utf-8")
        try:
            await import_jsonl(Ledger(target), path)
            assert (await verify(Ledger(target))).ok
            assert await sorted_events(target) == await sorted_events(database)
        finally:
            await database.client.drop_database(target.name)
    # Erasure destroys the key: neither form opens any more.
    await run_erasure(ledger, user_id=user, apply=True, reason="test")
    for doc in (before[0] if user == "dana" else before[3], last):
        assert doc["thread_id"] == thread
        with pytest.raises(ContentErasedError):
            await sealer_on(database).open_messages(doc)


def _tool_turn(n: int) -> list[Message]:
    result = json.dumps(
        {"orders": [{"id": f"O{i}", "status": "shipped", "eta": "2026-12-01"} for i in range(n)]}
    )
    return [
        Message("user", ["Where are my orders?"]),
        Message("tool", [tool_result("call-1", result)]),
        Message("assistant", ["All of them have shipped."], message_id="a1"),
    ]


async def _ciphertext(database: Any, thread: str) -> bytes:
    (doc,) = [d for d in await sorted_events(database) if d["thread_id"] == thread]
    blob: bytes = doc["messages"][0]["ciphertext"]
    return blob


@pytest.mark.parametrize("pad_to", [None, 64])
async def test_compression_is_opt_in_stores_fewer_bytes_and_every_reader_opens_it(
    database: Any, pad_to: int | None
) -> None:
    assert sealer_on(database).compress is False
    batch = _tool_turn(8)
    expected = [m.to_dict() for m in batch]
    for compress in (False, True):
        binding = Ledger(database, sealer=sealer_on(database, compress=compress, pad_to=pad_to)).bind(
            user_id="u"
        )
        done = await binding.append(binding.empty(f"c-{compress}"), batch)
        assert [m.to_dict() for m in await binding.read(done.position)] == expected
        # A reader that does not compress opens it: nothing about compression is stored in clear.
        reader = Ledger(database, sealer=sealer_on(database)).bind(user_id="u")
        assert [m.to_dict() for m in await reader.read(done.position)] == expected
    plain, small = await _ciphertext(database, "c-False"), await _ciphertext(database, "c-True")
    assert len(small) < len(plain) // 2
    assert (await verify(Ledger(database))).ok


def test_small_batches_are_not_compressed() -> None:
    key = DataKey("k2-uabc", bytes(range(32)), compress=True)
    short = encode_messages([Message("user", ["hi there " * 5]), Message("assistant", ["hello!"])])
    assert len(packed(short)) < COMPRESS_FROM
    sealed = key.seal(short, "t#1")
    assert len(sealed[0]["ciphertext"]) == 12 + len(packed(short)) + 16
    assert key.open_event(sealed, "t#1", sealed[0]["ciphertext"]) == short
    # A batch that repeats itself shrinks, and opens exactly.
    stored = encode_messages(_tool_turn(8))
    sealed = key.seal(stored, "t#2")
    assert len(sealed[0]["ciphertext"]) < len(packed(stored)) // 2
    assert key.open_event(sealed, "t#2", sealed[0]["ciphertext"]) == stored


def test_compress_must_be_a_bool(database: Any) -> None:
    with pytest.raises(InvalidInputError, match="compress"):
        sealer_on(database, compress="yes")
