"""A sealed event stores about its clear size plus 28 bytes, also when its content is JSON.

Tool results are JSON inside the stored message (``rest``/``payload``): sealed as a JSON
list they were escaped a second time (1.42-1.44x the clear event), so a tool result that
stores in clear failed to append sealed. Large batches are sealed as a frame of the
stored strings' own bytes (docs/sealing.md, "What is stored").
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import bson
import orjson
import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.codec import encode_messages
from chatledger.errors import IntegrityError
from chatledger.ledger import MAX_EVENT_BYTES
from chatledger.sealing.form import ad_clear_part, packed
from chatledger.sealing.sealer import DataKey
from tests.helpers import raw_docs
from tests.sealing.test_cl3 import fresh_reader, sealer_on

try:
    from agent_framework import Content

    def tool_result(call_id: str, result: str) -> Any:
        return Content.from_function_result(call_id=call_id, result=result)
except ImportError:  # agent-framework-core before 1.0: FunctionResultContent
    from agent_framework import FunctionResultContent

    def tool_result(call_id: str, result: str) -> Any:
        return FunctionResultContent(call_id=call_id, result=result)


def tool_batch(rows: int) -> list[Message]:
    """A question, and a tool result that is JSON full of quotes, backslashes and newlines."""
    items = [{"id": i, "name": f'item "{i}"', "path": f"C:\\data\\{i}", "note": "a\nb"} for i in range(rows)]
    result = json.dumps({"rows": items})
    return [Message("user", ["list the items"]), Message("tool", [tool_result("call-1", result)])]


async def stored_size(database: Any, thread: str) -> int:
    (doc,) = [d for d in await raw_docs(database["events"]) if d["thread_id"] == thread]
    return len(bson.encode(doc))


@pytest.mark.parametrize("pad_to", [None, 256], ids=["unpadded", "padded"])
async def test_a_tool_result_heavy_event_seals_at_about_its_clear_size(
    database: Any, pad_to: int | None
) -> None:
    batch = tool_batch(3000)  # ~250 KB of JSON
    clear = Ledger(database).bind(user_id="bob")
    await clear.append(clear.empty("clear"), batch)
    sealed = Ledger(database, sealer=sealer_on(database, pad_to=pad_to)).bind(user_id="alice")
    done = await sealed.append(sealed.empty("sealed"), batch)

    clear_size, sealed_size = await stored_size(database, "clear"), await stored_size(database, "sealed")
    # Clear size + nonce and tag + the frame's header and placeholders; padding adds at most 64 KiB.
    assert sealed_size <= clear_size * 1.01 + 200 + (65_536 if pad_to else 0)
    expected = [m.to_dict() for m in batch]
    assert [m.to_dict() for m in await fresh_reader(database).read(done.position)] == expected
    assert [m.to_dict() for m in await sealed.read(done.position)] == expected


async def test_a_tool_result_that_stores_in_clear_also_stores_sealed(database: Any) -> None:
    batch = tool_batch(60_000)  # ~12.8 MB stored: under the 16 MiB limit once, over it escaped again
    assert len(orjson.dumps(encode_messages(batch))) > MAX_EVENT_BYTES  # the JSON list would not fit
    clear = Ledger(database).bind(user_id="bob")
    await clear.append(clear.empty("clear"), batch)
    sealed = Ledger(database, sealer=sealer_on(database)).bind(user_id="alice")
    done = await sealed.append(sealed.empty("big"), batch)
    assert await stored_size(database, "big") <= await stored_size(database, "clear") + 1000
    assert [m.to_dict() for m in await fresh_reader(database).read(done.position)] == [
        m.to_dict() for m in batch
    ]


def test_a_malformed_frame_is_an_integrity_error() -> None:
    key = DataKey("k2-uabc", bytes(range(32)))
    small = [{"role": "user", "text": 'say "hi"'}]
    sealed = key.seal(small, "t#1")
    assert key.open_event(sealed, "t#1", sealed[0]["ciphertext"]) == small
    # A frame is authenticated like the JSON: only a writer with the key can make one,
    # and a malformed one (lengths past the end) is refused, never half-read.
    iv = bytes(12)
    bad_frames = {
        "cl4": [json.dumps([[["text"]], [99]]), json.dumps([[["text"]], [-1]]), json.dumps([[["text"]], []])],
        "cl3": [json.dumps([["role", 4, "text", 99]])],
    }
    bad_frames["cl4"] += [
        json.dumps([[[1]], [2]]),
        json.dumps([[["text"]], [2.0]]),
        json.dumps([["text"], [2]]),
    ]
    for form, heads in bad_frames.items():
        messages = sealed if form == "cl4" else key._seal_cl3(small, "t#1")
        ad = (key._ad + b"3:t#1" + ad_clear_part(messages, "t#1")) if form == "cl4" else key._ad3 + b"3:t#1"
        plains = [b"\x00" + len(head).to_bytes(4, "big") + head.encode() + b"user" for head in heads]
        if form == "cl4":
            good = packed(small)
            deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
            stream = deflate.compress(good) + deflate.flush()
            # Deflated: garbage, cut short, something after the stream, not a frame inside.
            plains += [b"\x01garbage", b"\x01" + stream[:-2], b"\x01" + stream + b"x"]
            deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
            plains.append(b"\x01" + deflate.compress(b"[]") + deflate.flush())
            padded = b"\x01" + stream + b"   "  # padding after the stream: fine
            blob = iv + key._aead.encrypt(iv, padded, ad)
            assert key.open_event(messages, "t#1", blob) == small
        for bad in plains:
            blob = iv + key._aead.encrypt(iv, bad, ad)
            with pytest.raises(IntegrityError, match="malformed"):
                key.open_event(messages, "t#1", blob)
