"""Hostile cl4 (and cl3) markers: a reader with the key must report a malformed marker as IntegrityError."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger
from chatledger._maf import Message
from chatledger.errors import IntegrityError
from chatledger.sealing import sealed_problem
from tests.helpers import raw_docs
from tests.sealing.test_forms import sealer_on, thread_as_cl3


@pytest.mark.parametrize("form", ["cl4", "cl3"])
@pytest.mark.parametrize("change", ["no fingerprint", "no key id", "empty", "long key id"])
async def test_a_marker_with_an_empty_part_is_malformed_not_a_missing_key(
    database: Any, change: str, form: str
) -> None:
    binding = Ledger(database, sealer=sealer_on(database)).bind(user_id="dana")
    at = (await binding.append(binding.empty("own"), [Message("user", ["secret"])])).position
    if form == "cl3":
        await thread_as_cl3(database, "own")
    (doc,) = await raw_docs(database["events"])
    _, key_id, fingerprint = doc["messages"][0]["sealed"].split(":")
    marker = {
        "no fingerprint": f"{form}:{key_id}:",
        "no key id": f"{form}::{fingerprint}",
        "empty": f"{form}::",
        "long key id": f"{form}:" + "k" * 300 + ":" + fingerprint,
    }[change]
    await database["events"].update_one({"_id": doc["_id"]}, {"$set": {"messages.0.sealed": marker}})
    (altered,) = await raw_docs(database["events"])
    # verify (no key) calls it malformed; a reader (with the key) must say the same, not
    # "sealed under another key / the key store does not hold it" (a key-store problem).
    if change != "long key id":
        assert sealed_problem(altered["messages"][0], 0) == f"the sealed field is not a {form} marker"
    reader = Ledger(database, sealer=sealer_on(database)).bind(user_id="dana")
    with pytest.raises(IntegrityError, match="malformed"):
        await reader.read(at)
