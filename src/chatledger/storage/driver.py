"""The small differences between PyMongo async, Motor and mongomock-motor, in one place.

- PyMongo's ``aggregate`` is a coroutine; Motor's and mongomock-motor's are not.
- ``AsyncMongoClient.close()`` is a coroutine; Motor's and mongomock-motor's are plain calls.
- Cursors: all three offer ``to_list``; PyMongo refuses ``to_list(0)``, so we pass ``None``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["aggregate_list", "close_client", "cursor_list", "is_mongomock"]


async def cursor_list(cursor: Any) -> list[dict[str, Any]]:
    """Return every document a find/aggregate cursor yields."""
    docs: list[dict[str, Any]] = await cursor.to_list(None)
    return docs


async def aggregate_list(collection: Any, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the result of an aggregation pipeline, whichever driver ``collection`` comes from."""
    cursor = collection.aggregate(pipeline)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    return await cursor_list(cursor)


async def close_client(client: Any) -> None:
    """Close a client of any of the three drivers."""
    result = client.close()
    if inspect.isawaitable(result):
        await result


def is_mongomock(database: Any) -> bool:
    """Return whether ``database`` is the embedded mongomock-motor engine (no real server)."""
    # mongomock-motor masquerades as Motor's classes, but its own classes stay in the MRO.
    return any(klass.__module__.startswith("mongomock") for klass in type(database).__mro__)
