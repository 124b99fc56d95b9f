"""One writer for the removal races: ``python -m tests.real._removal_worker CONFIG_JSON``.

Keeps appending to one of the subject's threads (its own client, its own caches) until
``seconds`` have passed, then prints one JSON line: every acknowledged append with the
time it was acknowledged, and every error by class name. Modes:

- ``line``: a store on the thread, continuing its own line (caches the thread and head);
- ``fork``: every append at the same old cursor, so each one branches;
- ``new`` (sealed only): waits for a second line on stdin (the erasure finished), lets
  its cached key expire, then tries to start a NEW conversation for the subject on
  every iteration: none may be acknowledged, and no key may be created.

With ``kek`` in the config the ledger seals (its own key cache, ``ttl`` seconds,
``per_lineage`` keys); a sealed writer stops one second after its first refusal (it has
seen the erasure and kept trying a while), or one second after the next stdin line (the
erasure finished), so it is bounded whatever the erasure takes.
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


def _sealer(database: Any, cfg: dict[str, Any]) -> Any:
    if "kek" not in cfg:
        return None
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer

    return Sealer(
        KeyStore(database),
        LocalKeyProvider(bytes.fromhex(cfg["kek"])),
        cache_ttl=cfg["ttl"],
        per_lineage=cfg["per_lineage"],
    )


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    client = make_client(cfg["driver"], cfg["uri"], serverSelectionTimeoutMS=20_000)
    acked: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        database = client[cfg["db"]]
        sealer = _sealer(database, cfg)
        ledger = Ledger(database, sealer=sealer)
        scope = {"tenant_id": cfg["tenant"], "user_id": cfg["user"]}
        store = MongoChatMessageStore(ledger, thread_id=cfg["name"], **scope)
        # Warm the caches (thread, head, data key), as a long-lived process has them.
        await store.list_messages()
        book = ledger.bind(**scope)
        fork_at = await book.resolve(await store.serialize_state())
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        if cfg["mode"] == "new":
            await asyncio.to_thread(sys.stdin.readline)  # the erasure has finished
            await asyncio.sleep(cfg["ttl"] + 0.2)  # the documented erasure delay has passed
        deadline = time.time() + cfg["seconds"]
        # A sealed writer is also told when the erasure has finished (its next stdin line,
        # or EOF): it tries on for a second after that, so it always races the whole
        # erasure however long the erasure takes on a loaded machine, and stops by itself.
        told = (
            asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
            if sealer is not None and cfg["mode"] != "new"
            else None
        )
        i = 0
        while time.time() < deadline:
            if told is not None and told.done():
                deadline, told = min(deadline, time.time() + 1.0), None
            text = f"{cfg['name']}-{cfg['mode']}-{i}"
            i += 1
            try:
                if cfg["mode"] == "line":
                    await store.add_messages([msg(text)])
                elif cfg["mode"] == "fork":
                    await book.append(fork_at, [msg(text)])
                else:
                    await book.append(book.empty(f"{cfg['name']}-new-{i}"), [msg(text)])
            except ChatLedgerError as e:
                if sealer is not None and not errors:
                    deadline = min(deadline, time.time() + 1.0)
                errors.append(type(e).__name__)
                await asyncio.sleep(0.02)
                continue
            acked.append({"text": text, "at": time.time()})
            if sealer is not None:
                # Paced after a burst: a racing writer, not a flood. Each "fork" append
                # makes a branch the erasure must remove too, so an unpaced writer makes
                # the erasure's work grow with however long it takes on a loaded machine.
                await asyncio.sleep(cfg["pause"] if len(acked) < cfg["burst"] else cfg["slow_pause"])
    finally:
        await close_client(client)
    return {"acked": acked, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
