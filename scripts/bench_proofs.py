#!/usr/bin/env python3
"""Benchmark the Merkle log: sequencing memory and speed, proof reads, verification CPU.

Usage::

    python scripts/ferretdb.py run -- python scripts/bench_proofs.py [--events N]
    python scripts/bench_proofs.py --mongodb-uri URI [--events N]

It needs a server (``--mongodb-uri``, or ``CHATLEDGER_TEST_FERRETDB_URI`` as
``scripts/ferretdb.py run`` exports it, or ``MONGODB_URI``); mongomock checks unique
indexes by scanning, so it would measure itself. A database ``clbench_proofs_<id>`` is
created and dropped at the end. Prints ratios, asserts nothing.

What it shows:

* sequencing ``N`` pending events: wall time, events per second, and the peak memory
  Python allocated during it, against the same for ``N/4`` events (bounded memory: the
  ratio stays near 1 while the work grows 4×; routine runs, so the rate should not
  fall as the log grows); then a full sweep of the whole log (nothing left to add);
* one inclusion proof in logs of ``N/4`` and ``5N/4`` leaves: the stored nodes it reads
  (grows with log n, not n) and the queries it sends;
* verifying that proof offline: client CPU per verification.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

# FerretDB must never report home: started by scripts/ferretdb.py it runs with
# --telemetry=disable; DO_NOT_TRACK=1 also covers anything started from here.
os.environ.setdefault("DO_NOT_TRACK", "1")
import time
import tracemalloc
import uuid
from typing import Any

from chatledger import Ledger, proofs
from chatledger._maf import Message
from chatledger.admin import merkle
from chatledger.storage.merkle import MerkleStore


async def fill(ledger: Ledger, events: int, prefix: str) -> None:
    """Append ``events`` one-message events over 100 threads (10 concurrent writers)."""
    binding = ledger.bind()
    per_thread = max(1, events // 100)

    async def thread(i: int) -> None:
        position = await binding.head(f"{prefix}-{i}")
        for turn in range(per_thread):
            position = (await binding.append(position, [Message("user", [f"message {turn}"])])).position

    threads = list(range(events // per_thread))
    for start in range(0, len(threads), 10):
        await asyncio.gather(*(thread(i) for i in threads[start : start + 10]))


async def sequence_measured(ledger: Ledger) -> tuple[int, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    report = await merkle.sequence(ledger)
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return report.added, wall, peak


async def proof_reads(ledger: Ledger, key: bytes, thread: str) -> tuple[int, int, dict[str, Any], str]:
    counted = {"nodes": 0, "queries": 0}
    original = MerkleStore.hashes

    async def hashes(self: MerkleStore, log: str, nodes: Any) -> Any:
        counted["nodes"] += len(set(nodes))
        counted["queries"] += 2
        return await original(self, log, nodes)

    note = (await merkle.checkpoint(ledger, key)).note
    MerkleStore.hashes = hashes  # type: ignore[method-assign]
    try:
        proof = await merkle.prove_event(ledger, thread, 1, checkpoint_note=note)
    finally:
        MerkleStore.hashes = original  # type: ignore[method-assign]
    return counted["nodes"], counted["queries"], proof, note


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--mongodb-uri")
    args = parser.parse_args()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    key = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    uri = args.mongodb_uri or os.environ.get("CHATLEDGER_TEST_FERRETDB_URI") or os.environ.get("MONGODB_URI")
    if not uri:
        parser.error("needs a server: --mongodb-uri URI (or run it through scripts/ferretdb.py run --)")
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(uri, tz_aware=True)
    name = f"clbench_proofs_{uuid.uuid4().hex[:8]}"
    db = client[name]
    try:
        ledger = Ledger(db)
        n = args.events
        # A log's first run reads every event once; later runs read their backlog (plus
        # the look-back window). Start the log, so both runs measured are routine runs.
        await fill(ledger, 1, "seed")
        await merkle.sequence(ledger)
        # A quarter of the backlog, then four times as much: memory must not follow the work.
        await fill(ledger, n // 4, "small")
        small = await sequence_measured(ledger)
        reads = [await proof_reads(ledger, key, "small-0")]
        await fill(ledger, n, "large")
        large = await sequence_measured(ledger)
        reads.append(await proof_reads(ledger, key, "small-0"))
        started = time.perf_counter()
        await merkle.sequence(ledger, full=True)
        sweep = time.perf_counter() - started
        for added, wall, peak in (small, large):
            rate = added / wall if wall else 0.0
            print(f"sequencing {added} events: {wall:.2f}s ({rate:.0f}/s), peak {peak / 1e6:.1f} MB")
        print(f"full sweep of the whole log (nothing to add): {sweep:.2f}s")
        print(f"  ratio large/small: work {large[0] / small[0]:.1f}x, peak memory {large[2] / small[2]:.2f}x")
        for nodes, queries, proof, _ in reads:
            size = proof["tree_size"]
            print(f"inclusion proof, log of {size} leaves: {nodes} stored nodes read, {queries} queries")
        _, _, proof, note = reads[-1]
        raw = json.dumps(proof).encode()
        started = time.process_time()
        rounds = 500
        for _ in range(rounds):
            proofs.verify_proof(raw, [note], public)
        cpu = (time.process_time() - started) / rounds
        print(f"verify-proof (library): {cpu * 1e6:.0f} µs of CPU per proof (signature check included)")
    finally:
        await client.drop_database(name)
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
