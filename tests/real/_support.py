"""Shared helpers for the real-server tests (tests/real)."""

from __future__ import annotations

from typing import Any


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
