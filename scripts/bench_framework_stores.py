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

The peer, when it is installed (the benchmark virtualenv, ``requirements-bench.txt``): LangGraph's
``MongoDBSaver`` on the same server, in the same runs, keeping the same object as one channel
value of a LangGraph checkpoint (its own serializer): ``put`` of ``session.to_dict()`` or
``checkpoint.to_dict()`` against ``set``/``save``, and ``get_tuple`` of a stored one by its id
(then ``from_dict``) against ``get``/``load``. It uses the synchronous PyMongo client, as its
users do.

Prints the ratios (ChatLedger / raw, ChatLedger / peer); asserts nothing. Not part of the test suite.
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


class _Peer:
    """LangGraph ``MongoDBSaver`` keeping one object per checkpoint, as its users keep state."""

    def __init__(self, uri: str, db_name: str) -> None:
        from langgraph.checkpoint.mongodb import MongoDBSaver
        from pymongo import MongoClient

        self.client: Any = MongoClient(uri, tz_aware=True)
        self.saver = MongoDBSaver(self.client, db_name=db_name)

    def put(self, thread_id: str, value: dict[str, Any]) -> dict[str, Any]:
        """Store ``value`` as a new checkpoint of the thread; return its config."""
        from langgraph.checkpoint.base import empty_checkpoint

        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"value": value}
        checkpoint["channel_versions"] = {"value": 1}
        config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        saved: dict[str, Any] = self.saver.put(
            config, checkpoint, {"source": "loop", "step": 1}, {"value": 1}
        )
        return saved

    def get(self, config: dict[str, Any]) -> dict[str, Any]:
        """Return the value stored in the checkpoint ``config`` names."""
        found = self.saver.get_tuple(config)
        assert found is not None
        value: dict[str, Any] = found.checkpoint["channel_values"]["value"]
        return value


def _peer(uri: str, db_name: str) -> _Peer | None:
    try:
        return _Peer(uri, db_name)
    except ImportError:
        print("(LangGraph's MongoDBSaver is not installed: no peer column; see requirements-bench.txt)")
        return None


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
    peer: _Peer | None = None
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

        ops: dict[str, Any] = {}
        peer = _peer(uri, database.name)
        if peer is not None:
            peer_session = peer.put("peer-warm", session.to_dict())
            peer_checkpoint = peer.put("peer-cp", checkpoint().to_dict())

            async def peer_set() -> None:
                peer.put("peer-bench", session.to_dict())

            async def peer_get() -> None:
                AgentSession.from_dict(peer.get(peer_session))

            async def peer_save() -> None:
                peer.put("peer-run", checkpoint().to_dict())

            async def peer_load() -> None:
                WorkflowCheckpoint.from_dict(peer.get(peer_checkpoint))

            ops = {
                "peer put (session)": (peer_set, count),
                "peer get (session)": (peer_get, count),
                "peer put (checkpoint)": (peer_save, count),
                "peer get (checkpoint)": (peer_load, count),
            }
        samples: dict[str, Sample] = {}
        await interleaved(
            {
                **ops,
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
            ("session set", "raw insert_one (session)", "raw objects (session set)", "peer put (session)"),
            ("session get", "raw find_one (session)", "raw objects (session get)", "peer get (session)"),
            (
                "checkpoint save",
                "raw insert_one (checkpoint)",
                "raw objects (checkpoint save)",
                "peer put (checkpoint)",
            ),
            (
                "checkpoint load",
                "raw find_one (checkpoint)",
                "raw objects (checkpoint load)",
                "peer get (checkpoint)",
            ),
        )
        print(
            f"{'operation':<16} {'CPU ms':>7} {'payload':>8} {'objects':>8} {'peer':>7} {'CPU ratio':>10} "
            f"{'(objects)':>10} {'÷ peer':>7} {'wall ratio':>11} {'wall ÷ peer':>11}"
        )
        for ours, payload, objects, peer_name in pairs:
            a, b, c = samples[ours], samples[payload], samples[objects]
            p = samples.get(peer_name)
            cpu_a, cpu_b, cpu_c = a.median("cpu"), b.median("cpu"), c.median("cpu")
            wall_a = a.median("wall")
            peer_cells = (
                (
                    f"{p.median('cpu'):>7.3f}",
                    f"{cpu_a / p.median('cpu'):>6.2f}x",
                    f"{wall_a / p.median('wall'):>10.2f}x",
                )
                if p is not None
                else (f"{'-':>7}", f"{'-':>7}", f"{'-':>11}")
            )
            peer_cpu, per_peer, wall_per_peer = peer_cells
            print(
                f"{ours:<16} {cpu_a:>7.3f} {cpu_b:>8.3f} {cpu_c:>8.3f} {peer_cpu} {cpu_a / cpu_b:>9.2f}x "
                f"{cpu_a / cpu_c:>9.2f}x {per_peer} {wall_a / b.median('wall'):>10.2f}x {wall_per_peer}"
            )
    finally:
        await client.drop_database(database.name)
        await client.close()
        if peer is not None:
            peer.client.close()
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
