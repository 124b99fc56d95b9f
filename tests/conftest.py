"""Binds the one behavioural suite to every database tier this machine offers.

Every test that takes the ``database`` fixture runs once per tier:

- ``mongomock``: mongomock-motor, in process, always;
- ``ferretdb-pymongo`` / ``ferretdb-motor``: a FerretDB v1.24.2 server on 127.0.0.1,
  started for the session (``CHATLEDGER_TEST_FERRETDB_URI`` reuses a running one);
- ``mongodb-pymongo`` / ``mongodb-motor``: a real MongoDB at ``MONGODB_URI``.

Binding a new server is one entry in :func:`_backends`. Where an engine differs, the
difference is a capability flag on :class:`Backend`, never a weaker assertion.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.scripts import start_ferretdb

IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Backend:
    """A database tier, and what it can and cannot do."""

    name: str
    driver: str  # "mongomock", "pymongo" or "motor"
    uri: str | None = None
    #: A real wire-protocol server (real duplicate-key errors, ms dates, batching).
    real_server: bool = False
    #: The server stores keys with "." / "$" and nested arrays (FerretDB refuses them;
    #: ChatLedger never writes them, tests use this to prove that).
    accepts_dotted_keys: bool = True

    async def open(self) -> tuple[Any, Any]:
        """Return (client, database) on a fresh, uniquely named database."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        if self.driver == "mongomock":
            from mongomock_motor import AsyncMongoMockClient

            client: Any = AsyncMongoMockClient(tz_aware=True)
        elif self.driver == "pymongo":
            from pymongo import AsyncMongoClient

            client = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)
        else:
            from motor.motor_asyncio import AsyncIOMotorClient

            client = AsyncIOMotorClient(self.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)
        return client, client[name]


_FERRETDB: dict[str, Any] = {}


def _ferretdb_uri() -> str | None:
    """Return the URI of the session's FerretDB, starting it if we can."""
    if os.environ.get("CHATLEDGER_TEST_FERRETDB_URI"):
        return os.environ["CHATLEDGER_TEST_FERRETDB_URI"]
    if os.environ.get("CHATLEDGER_SKIP_FERRETDB") and not IN_CI:
        return None
    if "uri" in _FERRETDB:
        return str(_FERRETDB["uri"])
    server = start_ferretdb()
    if server is None:
        _FERRETDB["why"] = "Go is not installed, so FerretDB cannot be built"
        return None
    _FERRETDB["server"] = server
    _FERRETDB["uri"] = server.uri
    return str(server.uri)


def _backends() -> list[Backend]:
    backends = [Backend("mongomock", "mongomock")]
    ferret = _ferretdb_uri()
    if ferret:
        for driver in ("pymongo", "motor"):
            backends.append(
                Backend(f"ferretdb-{driver}", driver, ferret, real_server=True, accepts_dotted_keys=False)
            )
    mongodb = os.environ.get("MONGODB_URI")
    if mongodb:
        for driver in ("pymongo", "motor"):
            backends.append(Backend(f"mongodb-{driver}", driver, mongodb, real_server=True))
    return backends


BACKENDS: list[Backend] = []


def pytest_configure(config: pytest.Config) -> None:
    BACKENDS.extend(_backends())


def pytest_unconfigure(config: pytest.Config) -> None:
    server = _FERRETDB.pop("server", None)
    if server is not None:
        server.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = ["chatledger tiers: " + ", ".join(b.name for b in BACKENDS)]
    if "why" in _FERRETDB:
        lines.append(f"chatledger: FerretDB tier skipped: {_FERRETDB['why']}")
    if not os.environ.get("MONGODB_URI"):
        lines.append("chatledger: real MongoDB tier skipped: MONGODB_URI is not set")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The tier the current test runs on."""
    assert isinstance(request.param, Backend)
    return request.param


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Any]:
    """A fresh, empty database on the current tier; dropped afterwards."""
    client, db = await backend.open()
    try:
        yield db
    finally:
        if backend.real_server:
            await client.drop_database(db.name)
        from chatledger.storage.driver import close_client

        await close_client(client)


@pytest.fixture
def real_backend(backend: Backend) -> Backend:
    """The current tier, skipping the test on tiers without a real server."""
    if not backend.real_server:
        pytest.skip("needs a real wire-protocol server")
    return backend
