"""Queries the framework stores need beyond the ledger's: records by event id, runs by workflow.

Workflow checkpoints are ledger events whose ``event_id`` is the checkpoint id, on
threads whose ``metadata.workflow_name`` names the workflow. Every query here is
bounded by the caller's scope (tenant, user and source id, each matched exactly: an
absent field matches only documents without it), as every other storage query is.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from pymongo import ASCENDING

from chatledger.models import Scope
from chatledger.storage import Storage
from chatledger.storage.documents import check_event
from chatledger.storage.driver import cursor_list
from chatledger.storage.events import CHUNK

__all__ = ["events_of_threads", "metadata_values", "scoped_event", "scoped_events", "threads_with_metadata"]

#: Records per reply batch: a checkpoint event may hold up to a few MiB, and FerretDB
#: refuses replies over 48 MB.
_RECORDS_PER_BATCH: Final = 8


def _scope_query(scope: Scope) -> dict[str, Any]:
    return {"source_id": scope.source_id, "tenant_id": scope.tenant_id, "user_id": scope.user_id}


async def scoped_event(storage: Storage, event_id: str, scope: Scope) -> dict[str, Any] | None:
    """Return the live event of ``scope`` carrying ``event_id`` (the oldest, if several), or ``None``.

    Raises:
        IntegrityError: the stored event is malformed.
    """
    return (await scoped_events(storage, [event_id], scope)).get(event_id)


async def scoped_events(
    storage: Storage, event_ids: Sequence[str], scope: Scope
) -> dict[str, dict[str, Any]]:
    """Return the live events of ``scope`` carrying these (few) ids, by id, in one query.

    Raises:
        IntegrityError: a stored event is malformed.
    """
    wanted = sorted(set(event_ids))
    query = {"event_id": wanted[0] if len(wanted) == 1 else {"$in": wanted}, **_scope_query(scope)}
    query["removed"] = {"$exists": False}
    cursor = storage.events.collection.find(query).hint("event_id").limit(8 * len(wanted))
    found: dict[str, dict[str, Any]] = {}
    for doc in await storage.gate.call("read event", cursor_list(cursor)):
        # Two events with one id happen only when two writers saved it concurrently at two
        # places; the first one written is the one every reader agrees on.
        event_id = str(doc.get("event_id"))
        other = found.get(event_id)
        if other is None or _written_order(doc) < _written_order(other):
            found[event_id] = doc
    return {event_id: check_event(doc) for event_id, doc in found.items()}


def _written_order(doc: dict[str, Any]) -> tuple[bool, Any, Any]:
    return (doc.get("created_at") is None, doc.get("created_at"), doc["_id"])


async def threads_with_metadata(storage: Storage, scope: Scope, key: str, value: str) -> list[str]:
    """Return the ids of the live threads of ``scope`` whose ``metadata[key]`` equals ``value``."""
    query = {f"metadata.{key}": value, **_scope_query(scope)}
    return [str(doc["_id"]) async for doc in storage.threads.select(query, projection={"_id": 1})]


async def metadata_values(storage: Storage, scope: Scope, key: str) -> set[str]:
    """Return the string values of ``metadata[key]`` on the live root threads of ``scope``."""
    query = {f"metadata.{key}": {"$exists": True}, "parent": None, **_scope_query(scope)}
    found: set[str] = set()
    async for doc in storage.threads.select(query, projection={"metadata": 1}):
        metadata = doc.get("metadata")
        value = metadata.get(key) if isinstance(metadata, dict) else None
        if isinstance(value, str):
            found.add(value)
    return found


async def events_of_threads(
    storage: Storage, thread_ids: Sequence[str], *, skip_prefix: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield the live events of these threads, thread by thread in ``seq`` order, in bounded batches.

    Events whose ``event_id`` starts with ``skip_prefix`` are left on the server.

    Raises:
        IntegrityError: a stored event is malformed.
    """
    ids = sorted(set(thread_ids))
    for start in range(0, len(ids), CHUNK):
        query: dict[str, Any] = {"thread_id": {"$in": ids[start : start + CHUNK]}}
        query["removed"] = {"$exists": False}
        if skip_prefix is not None:
            query["event_id"] = {"$not": {"$regex": "^" + re.escape(skip_prefix)}}
        cursor = (
            storage.events.collection.find(query)
            .sort([("thread_id", ASCENDING), ("seq", ASCENDING)])
            .batch_size(_RECORDS_PER_BATCH)
        )
        async with storage.gate.translated("read events"):
            async for doc in cursor:
                yield check_event(doc)
