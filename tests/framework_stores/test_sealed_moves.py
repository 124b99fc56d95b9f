"""A sealed session snapshot a database writer moves into another user's scope stays shut.

The writer renames the session's thread to the id the other user's store looks up,
rescopes it and its event, and recomputes every digest and hash, so ``verify`` (which
needs no key) passes. The snapshot is sealed under the first user's key: the other
user's store must refuse it, as a history read refuses a moved thread, and say why (the
renamed event no longer matches what its ciphertext is bound to either, but that error
blames the ciphertext, not the move).
"""

from __future__ import annotations

from typing import Any

import pytest
from agent_framework import AgentSession

from chatledger import MongoSessionStore
from chatledger.admin import verify
from chatledger.errors import IntegrityError
from chatledger.hashing import event_hash
from chatledger.ledger import Ledger
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from chatledger.storage.documents import check_thread
from tests.helpers import raw_docs


def _sealer(database: Any) -> Sealer:
    return Sealer(KeyStore(database), LocalKeyProvider(bytes(range(32))))


async def test_a_sealed_snapshot_moved_to_another_user_does_not_open_for_that_user(database: Any) -> None:
    alice = MongoSessionStore(database=database, user_id="alice", sealer=_sealer(database))
    session = AgentSession(session_id="s")
    session.state["secret"] = "alice's launch code"
    await alice.set("key", session)
    (thread,) = await raw_docs(database["threads"])
    (event,) = await raw_docs(database["events"])
    mallory = MongoSessionStore(database=database, user_id="mallory", sealer=_sealer(database))
    # The thread mallory's store looks up for the same session id.
    moved_id = mallory._thread_id("key", 0)
    moved_thread = {**thread, "_id": moved_id, "root_id": moved_id, "user_id": "mallory"}
    moved = {
        **event,
        "_id": f"{moved_id}#{event['seq']}",
        "thread_id": moved_id,
        "root_id": moved_id,
        "user_id": "mallory",
        "thread_digest": check_thread(moved_thread).digest(),
    }
    moved["hash"] = event_hash(moved["prev_hash"], moved)
    await database["threads"].delete_one({"_id": thread["_id"]})
    await database["events"].delete_one({"_id": event["_id"]})
    await database["threads"].insert_one(moved_thread)
    await database["events"].insert_one(moved)
    assert (await verify(Ledger(database))).ok  # no key: nothing tells
    with pytest.raises(IntegrityError, match="does not open in this scope"):
        await mallory.get("key")
