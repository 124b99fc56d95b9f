"""The ledger's indexes missing in a real deployment (events restored without them, or dropped).

Reads hint their index, and MongoDB and DocumentDB refuse a hint naming a missing index.
A read then creates the ledger's indexes, as the first append does, and answers; if they
cannot be created it fails with a ``StorageError`` that names the index and how to create
it. Servers that ignore hints (mongomock, FerretDB v1) answer without them.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatledger import Ledger, StorageError
from chatledger.admin import verify
from tests.conftest import Backend
from tests.helpers import msg, texts

LEDGER_INDEXES = {"thread_seq_unique", "thread_first_message", "event_id", "root_id", "user_id"}


async def _thread_without_indexes(database: Any) -> tuple[Any, list[str]]:
    """A 30-message thread whose events collection then loses every index but ``_id``."""
    book = Ledger(database).bind()
    position = book.empty("t")
    for n in range(10):
        position = (await book.append(position, [msg(f"m{n}.{i}") for i in range(3)])).position
    await database["events"].drop_indexes()
    assert set(await database["events"].index_information()) == {"_id_"}
    return position, [f"m{n}.{i}" for n in range(10) for i in range(3)]


async def test_reads_recreate_missing_indexes(backend: Backend, database: Any) -> None:
    position, written = await _thread_without_indexes(database)
    # A fresh process: nothing cached, no append that would create the indexes first.
    book = Ledger(database).bind()
    assert texts(await book.read(position)) == written
    assert texts(await book.read(position, offset=-5)) == written[-5:]
    assert texts(await book.read(position, offset=7, limit=4)) == written[7:11]
    report = await verify(Ledger(database))
    assert report.ok, report
    indexes = set(await database["events"].index_information())
    if backend.honours_hints:
        assert indexes >= LEDGER_INDEXES
    else:
        assert indexes == {"_id_"}  # the hint was ignored, so nothing needed creating


async def test_appending_after_indexes_were_dropped_recreates_them(database: Any) -> None:
    position, written = await _thread_without_indexes(database)
    book = Ledger(database).bind()
    position = (await book.append(position, [msg("after")])).position
    assert texts(await book.read(position)) == [*written, "after"]
    assert set(await database["events"].index_information()) >= LEDGER_INDEXES


async def test_a_read_that_cannot_create_its_index_names_it_and_the_fix(
    backend: Backend, database: Any
) -> None:
    position, written = await _thread_without_indexes(database)
    # An operator's index on the same keys under another name: the ledger's own cannot be
    # created next to it.
    await database["events"].create_index([("thread_id", 1), ("seq", 1)], name="by_position", unique=True)
    book = Ledger(database).bind()
    if not backend.honours_hints:
        assert texts(await book.read(position)) == written
        return
    with pytest.raises(StorageError) as caught:
        await book.read(position)
    message = str(caught.value)
    assert "'thread_first_message'" in message
    assert "Ledger.ensure_indexes()" in message
    assert "chatledger roles create" in message
    assert set(await database["events"].index_information()) == {"_id_", "by_position"}
