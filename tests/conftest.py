"""Binds the one behavioural suite to every database tier this machine offers.

Every test that takes the ``database`` fixture runs once per tier:

- ``mongomock``: mongomock-motor, in process, always;
- ``ferretdb-pymongo`` / ``ferretdb-motor``: a FerretDB v1.24.2 server on 127.0.0.1,
  started for the session (``CHATLEDGER_TEST_FERRETDB_URI`` reuses a running one);
- ``documentdb-pymongo``: DocumentDB (PostgreSQL) behind FerretDB v2, a server with real
  indexes, built by ``make documentdb`` (``scripts/documentdb.py``; root on Debian) and
  started for the session (``CHATLEDGER_TEST_DOCUMENTDB_URI`` reuses a running one);
- ``mongodb-pymongo`` / ``mongodb-motor``: a real MongoDB at ``MONGODB_URI``.

Binding a new server is one entry in :func:`_backends`. Where an engine differs, the
difference is a capability flag on :class:`Backend`, never a weaker assertion.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.scripts import REPO, documentdb_unavailable, start_documentdb, start_ferretdb

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
    #: Concurrent tasks really interleave at every database call. mongomock-motor runs
    #: each call synchronously, so a test of a race (e.g. a lock) cannot fail there.
    interleaves: bool = False
    #: The server plans with the indexes a ``hint`` names, and refuses a hint naming a
    #: missing one (MongoDB, DocumentDB); FerretDB v1 and mongomock ignore hints.
    honours_hints: bool = False
    #: What ``explain`` returns: "mongodb" (queryPlanner/executionStats), "documentdb" (a
    #: PostgreSQL plan) or None (no usable plan: mongomock, FerretDB v1 scans).
    explain_format: str | None = None
    #: Starts the session's server on first use and returns its URI (when ``uri`` is None).
    launch: Callable[[], str] | None = None
    #: Test modules (name prefixes) not run on this tier, because nothing they check
    #: depends on the engine beyond what the tier's other tests already cover.
    skips_modules: tuple[str, ...] = ()

    def started(self) -> Backend:
        """This tier with its URI, its server started on first use."""
        if self.uri is None and self.launch is not None:
            return dataclasses.replace(self, uri=self.launch())
        return self

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


def _ferretdb_available() -> bool:
    """Whether the FerretDB tier runs in this session (it is started only when a test needs it)."""
    if os.environ.get("CHATLEDGER_TEST_FERRETDB_URI"):
        return True
    if os.environ.get("CHATLEDGER_SKIP_FERRETDB") and not IN_CI:
        return False
    if shutil.which("go") is None and not (REPO / ".cache" / "bin" / "ferretdb").exists():
        if IN_CI:
            raise RuntimeError("CI=true: the real-server tier is mandatory, but Go is missing (FerretDB)")
        _FERRETDB["why"] = "Go is not installed, so FerretDB cannot be built"
        return False
    return True


def _ferretdb_uri() -> str:
    """Return the URI of the session's FerretDB, starting it on first use."""
    if os.environ.get("CHATLEDGER_TEST_FERRETDB_URI"):
        return os.environ["CHATLEDGER_TEST_FERRETDB_URI"]
    if "uri" in _FERRETDB:
        return str(_FERRETDB["uri"])
    server = start_ferretdb()
    if server is None:
        pytest.skip("Go is not installed, so FerretDB cannot be built")
    _FERRETDB["server"] = server
    _FERRETDB["uri"] = server.uri
    return str(server.uri)


_DOCUMENTDB: dict[str, Any] = {}


def _documentdb_available() -> bool:
    """Whether the DocumentDB tier runs in this session (mandatory with CI=true where it can)."""
    if os.environ.get("CHATLEDGER_TEST_DOCUMENTDB_URI"):
        return True
    if os.environ.get("CHATLEDGER_SKIP_DOCUMENTDB") and not IN_CI:
        _DOCUMENTDB["why"] = "CHATLEDGER_SKIP_DOCUMENTDB is set"
        return False
    why = documentdb_unavailable()
    if why is not None:
        _DOCUMENTDB["why"] = why
        return False
    return True


def _documentdb_uri() -> str:
    """Return the URI of the session's DocumentDB, starting it on first use."""
    if os.environ.get("CHATLEDGER_TEST_DOCUMENTDB_URI"):
        return os.environ["CHATLEDGER_TEST_DOCUMENTDB_URI"]
    if "server" not in _DOCUMENTDB:
        _DOCUMENTDB["server"] = start_documentdb()
    return str(_DOCUMENTDB["server"].uri)


def _backends() -> list[Backend]:
    backends = [Backend("mongomock", "mongomock")]
    if _ferretdb_available():
        for driver in ("pymongo", "motor"):
            # uri=None: the server is started when the first test on this tier runs, so
            # `-k mongomock` never starts it.
            tier = Backend(f"ferretdb-{driver}", driver, None, real_server=True, interleaves=True)
            backends.append(dataclasses.replace(tier, accepts_dotted_keys=False, launch=_ferretdb_uri))
    if _documentdb_available():
        # One driver: what DocumentDB adds is the engine (indexes, hints, plans); the
        # drivers' differences are covered on FerretDB.
        backends.append(
            Backend(
                "documentdb-pymongo",
                "pymongo",
                None,
                real_server=True,
                interleaves=True,
                honours_hints=True,
                explain_format="documentdb",
                launch=_documentdb_uri,
                # The CLI tests drive the admin API through subprocesses (argument parsing,
                # rendering, exit codes: 55% of this tier's time); the API's work on the
                # engine is tested in process here (tests/admin/test_export.py, ...).
                skips_modules=("tests.admin.test_cli",),
            )
        )
    mongodb = os.environ.get("MONGODB_URI")
    if mongodb:
        for driver in ("pymongo", "motor"):
            tier = Backend(f"mongodb-{driver}", driver, mongodb, real_server=True, interleaves=True)
            backends.append(dataclasses.replace(tier, honours_hints=True, explain_format="mongodb"))
    return backends


BACKENDS: list[Backend] = []


def pytest_configure(config: pytest.Config) -> None:
    BACKENDS.extend(_backends())


def pytest_unconfigure(config: pytest.Config) -> None:
    for started in (_FERRETDB, _DOCUMENTDB):
        server = started.pop("server", None)
        if server is not None:
            server.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = ["chatledger tiers: " + ", ".join(b.name for b in BACKENDS)]
    for b in BACKENDS:
        if b.skips_modules:
            lines.append(f"chatledger: {b.name} does not run {', '.join(m + '*' for m in b.skips_modules)}")
    if "why" in _FERRETDB:
        lines.append(f"chatledger: FerretDB tier skipped: {_FERRETDB['why']}")
    if "why" in _DOCUMENTDB:
        lines.append(f"chatledger: DocumentDB tier skipped: {_DOCUMENTDB['why']}")
    if not os.environ.get("MONGODB_URI"):
        lines.append("chatledger: real MongoDB tier skipped: MONGODB_URI is not set")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        module = metafunc.module.__name__
        tiers = [b for b in BACKENDS if not module.startswith(b.skips_modules)]
        metafunc.parametrize("backend", tiers, ids=[b.name for b in tiers], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The tier the current test runs on."""
    chosen = request.param
    assert isinstance(chosen, Backend)
    return chosen.started()


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
def interleaving_backend(backend: Backend) -> Backend:
    """The current tier, skipping the test where concurrent tasks cannot interleave."""
    if not backend.interleaves:
        pytest.skip("tasks do not interleave on this tier, so the race cannot happen")
    return backend


@pytest.fixture
def real_backend(backend: Backend) -> Backend:
    """The current tier, skipping the test on tiers without a real server."""
    if not backend.real_server:
        pytest.skip("needs a real wire-protocol server")
    return backend
