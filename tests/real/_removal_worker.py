"""One writer for test_removal_race: ``python -m tests.real._removal_worker CONFIG_JSON``.

Keeps appending to one of the subject's threads (its own client, its own caches) until
``seconds`` have passed, then prints one JSON line: every acknowledged append with the
time it was acknowledged, and every error by class name. Modes:

- ``line``: a store on the thread, continuing its own line (caches the thread and head);
- ``fork``: every append at the same old cursor, so each one branches.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from chatledger import ChatLedgerError, Ledger, MongoChatMessageStore
from chatledger.storage.driver import close_client
from tests.helpers import msg
from tests.real._support import make_client


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    client = make_client(cfg["driver"], cfg["uri"], serverSelectionTimeoutMS=20_000)
    acked: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        ledger = Ledger(client[cfg["db"]])
        scope = {"tenant_id": cfg["tenant"], "user_id": cfg["user"]}
        store = MongoChatMessageStore(ledger, thread_id=cfg["name"], **scope)
        await store.list_messages()  # warm the caches, as a long-lived process has them
        book = ledger.bind(**scope)
        fork_at = await book.resolve(await store.serialize_state())
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        deadline = time.time() + cfg["seconds"]
        i = 0
        while time.time() < deadline:
            text = f"{cfg['name']}-{cfg['mode']}-{i}"
            i += 1
            try:
                if cfg["mode"] == "line":
                    await store.add_messages([msg(text)])
                else:
                    await book.append(fork_at, [msg(text)])
            except ChatLedgerError as e:
                errors.append(type(e).__name__)
                await asyncio.sleep(0.02)
                continue
            acked.append({"text": text, "at": time.time()})
    finally:
        await close_client(client)
    return {"acked": acked, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
