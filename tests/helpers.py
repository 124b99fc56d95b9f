"""Small builders shared by the behavioural suite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from agent_framework import Content, Message
from pymongo import monitoring


def msg(text: str, role: str = "user") -> Message:
    """A plain text message."""
    return Message(role, [text])


def texts(messages: list[Message]) -> list[str]:
    """The text of each message, in order."""
    return [m.text for m in messages]


def tricky_message() -> Message:
    """A message exercising everything the codec must preserve exactly."""
    return Message(
        "assistant",
        [
            "héllo 🌍 — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0000 nul",
            Content.from_data(bytes(range(256)), "application/octet-stream"),
        ],
        author_name="Jöker",
        message_id="msg-1",
        additional_properties={
            "a.b": 1,
            "$where": "x",
            "nested": [[1, [2, [3]]], [], {"$k": [[]]}],
            "big": 2**100,
            "neg": -(2**70),
            "float": 0.1,
            "none": None,
        },
    )


async def raw_docs(collection: Any) -> list[dict[str, Any]]:
    """Every document of a collection, as stored."""
    docs: list[dict[str, Any]] = await collection.find({}).to_list(None)
    return docs


async def append(ledger: Any, at: Any, messages: list[Message], **options: Any) -> Any:
    """Append through a binding of the default scope (or ``tenant_id``/``user_id`` given)."""
    from chatledger.ledger import Position

    binding = ledger.bind(tenant_id=options.pop("tenant_id", None), user_id=options.pop("user_id", None))
    position = at if isinstance(at, Position) else await binding.resolve(at)
    return await binding.append(position, messages, **options)


async def read(ledger: Any, at: Any, **options: Any) -> list[Message]:
    """Read the messages at a cursor or position, in the default scope."""
    from chatledger.ledger import Position

    binding = ledger.bind()
    position = at if isinstance(at, Position) else await binding.resolve(at)
    result: list[Message] = await binding.read(position, **options)
    return result


async def compact_prefix(binding: Any, at: Any, last_seq: int, summary: str | None = None) -> Any:
    """Compact ``at``'s line from seq 1 through ``last_seq`` (hashes read from the line); return the head."""
    from chatledger.ledger.compaction import compact, event_at

    first, last = await event_at(binding, at, 1), await event_at(binding, at, last_seq)
    return await compact(
        binding,
        at,
        first_seq=1,
        first_hash=first["hash"],
        last_seq=last_seq,
        last_hash=last["hash"],
        summary=[msg(summary or f"summary through seq {last_seq}", "assistant")],
        strategy="test",
    )


class Listener(monitoring.CommandListener):
    """A PyMongo command listener that only looks at commands as they start (override ``started``)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@asynccontextmanager
async def monitored(backend: Any, listener: monitoring.CommandListener) -> AsyncIterator[Any]:
    """Yield a fresh database on the real server of ``backend``, its commands sent to ``listener``.

    Command monitoring is PyMongo's, so the test is skipped on other drivers (one run per
    server suffices). The database is dropped and the client closed afterwards.
    """
    if backend.driver != "pymongo":
        pytest.skip("command monitoring is PyMongo's; one run per server suffices")
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(backend.uri, event_listeners=[listener], tz_aware=True)
    database = client[f"t_{uuid.uuid4().hex[:12]}"]
    try:
        yield database
    finally:
        await client.drop_database(database.name)
        await client.close()
