"""Shared helpers for the real-server tests (tests/real)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from tests.scripts import REPO


def make_client(driver: str, uri: str, **options: Any) -> Any:
    """A PyMongo async or Motor client (tz-aware, like the suite's)."""
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient(uri, tz_aware=True, **options)
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(uri, tz_aware=True, **options)


async def assert_chain_intact(database: Any) -> None:
    """Every thread's events form an unbroken, untampered hash chain: ``verify`` says so.

    One checker for the whole project: the same code the operators' ``chatledger verify``
    and ``import`` run (seq and message continuity, prev_hash, each hash, counts, scope).
    """
    from chatledger import Ledger
    from chatledger.admin import verify

    report = await verify(Ledger(database))
    assert report.ok, report.problems


async def start_workers(module: str, configs: list[dict[str, Any]], *, time_limit: float) -> list[Any]:
    """Start one ``python -m module CONFIG_JSON`` process per config, wait for each to print
    ``ready``, then fire the start gun (``go`` on stdin) for all at once.

    The processes are killed if any of them fails to get ready within ``time_limit``.
    """
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            json.dumps(cfg),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for cfg in configs
    ]
    try:
        async with asyncio.timeout(time_limit):
            for proc in procs:
                assert proc.stdout is not None
                assert (await proc.stdout.readline()).strip() == b"ready"
    except BaseException:
        await _kill(procs)
        raise
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
    return procs


async def finish_workers(procs: list[Any], *, time_limit: float) -> list[Any]:
    """Wait for the workers (killed after ``time_limit``) and return each one's last JSON line."""
    try:
        async with asyncio.timeout(time_limit):
            outputs = await asyncio.gather(*(p.communicate() for p in procs))
    finally:
        await _kill(procs)
    assert [p.returncode for p in procs] == [0] * len(procs), "a worker process failed"
    return [json.loads(out.splitlines()[-1]) for out, _ in outputs]


async def _kill(procs: list[Any]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
