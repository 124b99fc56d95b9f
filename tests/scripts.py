"""Import the operators' scripts (``scripts/*.py``) in tests; stdlib only, so the old-framework
check in compat/ can use it too."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> Any:
    """Import ``scripts/<name>.py`` by path (scripts/ is not a package), once per process."""
    module_name = f"chatledger_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def start_ferretdb() -> Any | None:
    """Start a throw-away FerretDB (``scripts/ferretdb.py``), or return ``None`` if it can't be built.

    ``None`` only when neither Go nor a cached binary exists; with ``CI=true`` that is an
    error instead, because CI must run the real-server tier. The server listens on
    127.0.0.1 only, with ``--telemetry=disable`` and ``DO_NOT_TRACK=1``; ``close()`` it.
    """
    if shutil.which("go") is None and not (REPO / ".cache" / "bin" / "ferretdb").exists():
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI=true: the real-server tier is mandatory, but Go is missing (FerretDB)")
        return None
    ferretdb = load_script("ferretdb")
    server = ferretdb.FerretDBServer(ferretdb.ensure_binary(REPO))
    server.start()
    return server


def documentdb_unavailable() -> str | None:
    """Why the DocumentDB tier cannot run here, or ``None`` if it can (``scripts/documentdb.py``).

    It runs once ``make documentdb`` has built it. With ``CI=true``, a machine that can build it
    (root on Debian with Go) but has not is an error, not a skip: CI must run the tier.
    """
    documentdb = load_script("documentdb")
    if documentdb.is_built(REPO):
        return None
    why = documentdb.unsupported_reason()
    if why is None:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI=true: the DocumentDB tier is mandatory here; run `make documentdb`")
        return "not built: run `make documentdb` (root on Debian 12)"
    return str(why)


def start_documentdb() -> Any:
    """Start a throw-away DocumentDB behind FerretDB v2 on 127.0.0.1; ``close()`` it."""
    documentdb = load_script("documentdb")
    server = documentdb.DocumentDBServer(documentdb.ensure_built(REPO))
    server.start()
    return server
