"""One writer process for test_multiprocess: ``python -m tests.real._append_worker CONFIG_JSON``.

Connects with its own client, prints ``ready``, waits for ``go`` on stdin (so all
writers start together), makes ``count`` appends to the shared thread and prints one
JSON line with what each append returned. Modes:

- ``fixed``: every append goes through ``Ledger.append`` at the same shared cursor;
- ``resume``: a store positioned at the shared cursor, then continuing its own line;
- ``head``: a store opened on the thread at its current head, continuing its own line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from chatledger import Ledger, MongoChatMessageStore
from chatledger.storage.driver import close_client
from tests.helpers import msg
from tests.real._support import make_client


async def run(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    client = make_client(cfg["driver"], cfg["uri"], serverSelectionTimeoutMS=20_000)
    try:
        db = client[cfg["db"]]
        await db.command("ping")
        ledger = Ledger(db)
        store = MongoChatMessageStore(ledger, thread_id=cfg["root"] if cfg["mode"] == "head" else None)
        if cfg["mode"] == "resume":
            await store.deserialize_state(cfg["cursor"])
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the start gun
        out: list[dict[str, Any]] = []
        for i in range(cfg["count"]):
            text = f"w{cfg['worker']}-{i}"
            if cfg["mode"] == "fixed":
                book = ledger.bind()
                result = await book.append(await book.resolve(cfg["cursor"]), [msg(text)])
                cursor, branched = result.position.cursor.to_state(), result.branched
            else:
                before = store.thread_id
                await store.add_messages([msg(text)])
                cursor, branched = store.cursor.to_state(), store.thread_id != before
            out.append({"text": text, "cursor": cursor, "branched": branched})
        return out
    finally:
        await close_client(client)


if __name__ == "__main__":
    results = asyncio.run(run(json.loads(sys.argv[1])))
    print(json.dumps(results), flush=True)
