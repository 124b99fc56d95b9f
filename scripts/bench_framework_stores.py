#!/usr/bin/env python3
"""Session store and checkpoint storage against raw PyMongo calls with the same payload: CPU ratios.

Usage::

    python scripts/bench_framework_stores.py [--quick] [--mongodb-uri URI]

Without a URI (or ``MONGODB_URI``) a throw-away FerretDB (SQLite back end) is started on
127.0.0.1 through ``scripts/ferretdb.py`` (telemetry disabled) and removed at the end; the
database ``clfw_<run id>`` is dropped at the end.

Measured, interleaved run by run (``bench.py``'s ``interleaved``), client CPU per call
(``time.process_time``) and wall time:

* ``MongoSessionStore.set`` vs ``insert_one`` of the same ``session.to_dict()`` JSON;
* ``MongoSessionStore.get`` vs ``find_one`` of it by ``_id``;
* ``MongoCheckpointStorage.save`` vs ``insert_one`` of the framework's encoded checkpoint;
* ``MongoCheckpointStorage.load`` vs ``find_one`` of it by ``_id``.

Each against two raw baselines: *payload*, the driver call alone on text encoded once
beforehand (and a reply left undecoded); *objects*, what any store behind the framework's
contract pays besides (the framework hands it an ``AgentSession`` or a ``WorkflowCheckpoint``
built by the caller, and wants one back): building the object where ChatLedger's call
builds it too, ``to_dict`` and the JSON encoding before the insert, the JSON decoding and
``from_dict`` after the find. The store's own JSON work is the framework's format
(``json`` for sessions, the checkpoint encoding for checkpoints), so both sides do the same.

Prints the ratios (ChatLedger / raw); asserts nothing. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "src"))

from agent_framework import AgentSession, WorkflowCheckpoint  # noqa: E402

from bench import Sample, interleaved  # noqa: E402 - scripts/bench.py
from chatledger import MongoCheckpointStorage, MongoSessionStore  # noqa: E402
from chatledger.adapters.checkpoint_encoding import (  # noqa: E402
    decode_checkpoint_value,
    encode_checkpoint_value,
)


def _session() -> AgentSession:
    session = AgentSession(session_id="bench")
    session.state["notes"] = [f"note {i}: " + "x" * 80 for i in range(20)]
    session.state["chatledger"] = {"thread_id": uuid.uuid4().hex, "offset": 12, "v": 1}
    return session


async def amain(args: argparse.Namespace) -> int:
    from pymongo import AsyncMongoClient

    server = None
    uri = args.mongodb_uri or os.environ.get("MONGODB_URI")
    if not uri:
        from ferretdb import FerretDBServer  # scripts/ferretdb.py: 127.0.0.1, telemetry off

        server = FerretDBServer(repo_root=REPO_ROOT).start()
        uri = server.uri
    client: Any = AsyncMongoClient(uri, tz_aware=True)
    database = client[f"clfw_{uuid.uuid4().hex[:8]}"]
    runs, count = (3, 10) if args.quick else (7, 40)
    try:
        sessions = MongoSessionStore(database=database)
        checkpoints = MongoCheckpointStorage(database=database)
        raw = database["raw"]
        session = _session()
        text = json.dumps(session.to_dict())
        await sessions.set("warm", session)
        previous: list[str | None] = [None]

        async def session_set() -> None:
            await sessions.set("bench", session)

        async def raw_insert() -> None:
            await raw.insert_one({"role": "chatledger.session", "text": text})

        async def raw_insert_objects() -> None:
            encoded = json.dumps(session.to_dict(), ensure_ascii=False, separators=(",", ":"))
            await raw.insert_one({"role": "chatledger.session", "text": encoded})

        async def session_get() -> None:
            await sessions.get("warm")

        await raw.insert_one({"_id": "warm", "text": text})

        async def raw_find() -> None:
            await raw.find_one({"_id": "warm"})

        async def raw_find_objects() -> None:
            doc = await raw.find_one({"_id": "warm"})
            AgentSession.from_dict(json.loads(doc["text"]))

        def checkpoint() -> WorkflowCheckpoint:
            return WorkflowCheckpoint(
                workflow_name="bench",
                graph_signature_hash="h",
                previous_checkpoint_id=previous[0],
                state={"counter": 3, "notes": ["y" * 100] * 20},
            )

        def encode(cp: WorkflowCheckpoint) -> str:
            value = encode_checkpoint_value(cp.to_dict())
            return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=True)

        async def checkpoint_save() -> None:
            previous[0] = await checkpoints.save(checkpoint())

        encoded = encode(checkpoint())

        async def raw_checkpoint_insert() -> None:
            await raw.insert_one({"role": "chatledger.checkpoint", "text": encoded})

        async def raw_checkpoint_insert_objects() -> None:
            await raw.insert_one({"role": "chatledger.checkpoint", "text": encode(checkpoint())})

        loaded = await checkpoints.save(checkpoint())
        await raw.insert_one({"_id": "cp", "text": encoded})

        async def checkpoint_load() -> None:
            await checkpoints.load(loaded)

        async def raw_checkpoint_find() -> None:
            await raw.find_one({"_id": "cp"})

        async def raw_checkpoint_find_objects() -> None:
            doc = await raw.find_one({"_id": "cp"})
            value = decode_checkpoint_value(json.loads(doc["text"]), allowed_types=frozenset())
            WorkflowCheckpoint.from_dict(value)

        samples: dict[str, Sample] = {}
        await interleaved(
            {
                "session set": (session_set, count),
                "raw insert_one (session)": (raw_insert, count),
                "raw objects (session set)": (raw_insert_objects, count),
                "session get": (session_get, count),
                "raw find_one (session)": (raw_find, count),
                "raw objects (session get)": (raw_find_objects, count),
                "checkpoint save": (checkpoint_save, count),
                "raw insert_one (checkpoint)": (raw_checkpoint_insert, count),
                "raw objects (checkpoint save)": (raw_checkpoint_insert_objects, count),
                "checkpoint load": (checkpoint_load, count),
                "raw find_one (checkpoint)": (raw_checkpoint_find, count),
                "raw objects (checkpoint load)": (raw_checkpoint_find_objects, count),
            },
            runs,
            samples,
        )
        pairs = (
            ("session set", "raw insert_one (session)", "raw objects (session set)"),
            ("session get", "raw find_one (session)", "raw objects (session get)"),
            ("checkpoint save", "raw insert_one (checkpoint)", "raw objects (checkpoint save)"),
            ("checkpoint load", "raw find_one (checkpoint)", "raw objects (checkpoint load)"),
        )
        print(
            f"{'operation':<16} {'CPU ms':>7} {'payload':>8} {'objects':>8} {'CPU ratio':>10} "
            f"{'(objects)':>10} {'wall ratio':>11}"
        )
        for ours, payload, objects in pairs:
            a, b, c = samples[ours], samples[payload], samples[objects]
            cpu_a, cpu_b, cpu_c = a.median("cpu"), b.median("cpu"), c.median("cpu")
            print(
                f"{ours:<16} {cpu_a:>7.3f} {cpu_b:>8.3f} {cpu_c:>8.3f} {cpu_a / cpu_b:>9.2f}x "
                f"{cpu_a / cpu_c:>9.2f}x {a.median('wall') / b.median('wall'):>10.2f}x"
            )
    finally:
        await client.drop_database(database.name)
        await client.close()
        if server is not None:
            server.stop()
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="few runs (checks the script; not for publishing)"
    )
    parser.add_argument("--mongodb-uri", help="a MongoDB to measure against (default: a throw-away FerretDB)")
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
