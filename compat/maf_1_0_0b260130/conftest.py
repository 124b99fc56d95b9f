"""Fixtures for the old-framework tests (run ONLY with the old venv).

Command::

    .venv-maf-old/bin/python -m pytest compat/maf_1_0_0b260130 -p no:cacheprovider

A real FerretDB is used: ``CHATLEDGER_TEST_FERRETDB_URI`` if set, else one started here
through scripts/ferretdb.py (127.0.0.1 only, telemetry off) and stopped at the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # offline_client.py
sys.path.insert(0, str(HERE.parents[1]))  # the repo root: tests.scripts

from tests.scripts import start_ferretdb  # noqa: E402  (needs the path above)


@pytest.fixture(scope="session")
def ferretdb_uri() -> Iterator[str]:
    """URI of a real FerretDB for the whole session."""
    if os.environ.get("CHATLEDGER_TEST_FERRETDB_URI"):
        yield os.environ["CHATLEDGER_TEST_FERRETDB_URI"]
        return
    # Started only through FerretDBServer: 127.0.0.1, --telemetry=disable, DO_NOT_TRACK=1.
    server = start_ferretdb()
    if server is None:
        pytest.skip("FerretDB is not available (no Go toolchain, no cached binary)")
    try:
        yield str(server.uri)
    finally:
        server.close()


@pytest.fixture
async def db(ferretdb_uri: str) -> AsyncIterator[Any]:
    """A fresh database on the real server (PyMongo async), dropped afterwards."""
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(ferretdb_uri, serverSelectionTimeoutMS=10_000, tz_aware=True)
    database = client[f"old_{uuid.uuid4().hex[:12]}"]
    try:
        yield database
    finally:
        await client.drop_database(database.name)
        await client.close()
