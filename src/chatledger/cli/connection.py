"""How CLI commands find their database: ``--mongodb-uri`` / ``CHATLEDGER_MONGODB_URI``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer

from chatledger.storage.driver import close_client

__all__ = ["DEFAULT_DATABASE", "DatabaseOption", "MongoUriOption", "open_database"]

#: Database used when ``--database`` / ``CHATLEDGER_DATABASE`` is not given.
DEFAULT_DATABASE = "chatledger"

MongoUriOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-uri",
        envvar="CHATLEDGER_MONGODB_URI",
        help="MongoDB connection string. Without it, an embedded in-process database is used.",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str,
    typer.Option("--database", "-d", envvar="CHATLEDGER_DATABASE", help="Database name."),
]


@asynccontextmanager
async def open_database(uri: str | None, name: str, *, timeout_ms: int = 5000) -> AsyncIterator[Any]:
    """Yield a database handle: a real server's (PyMongo async) or an embedded one.

    Args:
        uri: MongoDB connection string; ``None`` for the embedded mongomock-motor engine.
        name: Database name.
        timeout_ms: Server selection timeout, so a wrong URI fails fast with a clear error.
    """
    client: Any
    if uri:
        from pymongo import AsyncMongoClient

        client = AsyncMongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    else:
        from mongomock_motor import AsyncMongoMockClient

        client = AsyncMongoMockClient(tz_aware=True)
    try:
        yield client[name]
    finally:
        await close_client(client)
