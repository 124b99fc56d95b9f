"""Hostile review of ``Binding.append(stored=...)``: a batch said to be already encoded.

A caller's "encoded" batch must be one ``encode_messages`` could have made, or be refused
with InvalidMessageError, nothing written: otherwise an event is stored (and verifies,
when sealed) that no reader can ever decode.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger
from chatledger.errors import InvalidMessageError
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.helpers import raw_docs

KEK = bytes(range(32))
BAD = {
    "a sealed marker": [{"role": "user", "text": "x", "sealed": "cl4:@0"}],
    "a later sealed marker": [
        {"role": "user", "text": "x"},
        {"role": "tool", "text": "y", "sealed": "cl4:@0"},
    ],
    "a ciphertext": [{"role": "user", "text": "x", "ciphertext": "abc"}],
    "no role": [{"text": "x"}],
    "no text": [{"role": "user"}],
    "a null message_id": [{"role": "user", "text": "x", "message_id": None}],
    "an int message_id": [{"role": "user", "text": "x", "message_id": 5}],
    "an int role": [{"role": 5, "text": "x"}],
    "an int text": [{"role": "user", "text": 5}],
    "a lone surrogate": [{"role": "user", "text": "a\ud800"}],
    "not a dict": [["role", "user"]],
    "not a list": "role",
}


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
@pytest.mark.parametrize("batch", list(BAD.values()), ids=list(BAD))
async def test_a_stored_batch_encode_messages_cannot_make_is_refused(
    database: Any, sealed: bool, batch: Any
) -> None:
    sealer = Sealer(KeyStore(database), LocalKeyProvider(KEK)) if sealed else None
    book = Ledger(database, sealer=sealer).bind(user_id="u")
    with pytest.raises(InvalidMessageError):
        await book.append(book.empty("t"), stored=batch)
    assert await raw_docs(database["events"]) == []
    assert await raw_docs(database["threads"]) == []


async def test_what_encode_messages_makes_is_still_stored(database: Any) -> None:
    book = Ledger(database).bind()
    stored = [
        {"role": "user", "text": "x", "author_name": "A", "message_id": "m"},
        {
            "role": "assistant",
            "text": "",
            "rest": '{"contents":[{"type":"text"}],"role":"assistant","type":"message"}',
        },
    ]
    done = await book.append(book.empty("t"), stored=stored)
    assert [m.text for m in await book.read(done.position)] == ["x", ""]
