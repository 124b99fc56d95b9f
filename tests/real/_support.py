"""Shared helpers for the real-server tests (tests/real)."""

from __future__ import annotations

from typing import Any

from chatledger.hashing import GENESIS_HASH, event_hash


def make_client(driver: str, uri: str, **options: Any) -> Any:
    """A PyMongo async or Motor client (tz-aware, like the suite's)."""
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient(uri, tz_aware=True, **options)
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(uri, tz_aware=True, **options)


def assert_chain_intact(events: list[dict[str, Any]]) -> None:
    """One thread's events, in seq order, form an unbroken, untampered hash chain."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "gap or repeat in seq"
    prev = GENESIS_HASH
    next_message = 0
    for e in events:
        assert e["prev_hash"] == prev, f"seq {e['seq']} does not chain to its predecessor"
        assert e["hash"] == event_hash(prev, e), f"seq {e['seq']} does not match its own hash"
        assert e["count"] == len(e["messages"]) > 0, f"seq {e['seq']} is torn"
        assert e["first_message"] == next_message
        prev, next_message = e["hash"], next_message + e["count"]
