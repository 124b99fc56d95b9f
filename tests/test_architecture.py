"""The floors of docs/architecture.md, checked on the source.

No import runs up the floors, and only storage/ talks to the driver.

Each rule has a list of known exceptions, by module and target; they are debt (issue 20),
and the test fails when a new one appears, and also when a listed one is gone (so the list
only shrinks and never hides a fixed exception).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "chatledger"

#: Floor of each top-level part of the package (docs/architecture.md). Same number above 0:
#: siblings, which may not import each other either.
FLOORS: dict[str, int] = {
    "errors": 0,
    "_maf": 0,
    "codec": 0,
    "hashing": 0,
    "models": 0,
    "telemetry": 0,
    "proofs": 0,  # the offline verifier: standard library and cryptography only
    "storage": 1,
    "sealing": 2,
    "ledger": 3,
    # The framework stores' delete is an admin removal (receipts, holds): adapters sit on admin.
    "admin": 4,
    "adapters": 5,
    "demo": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 8,
}

#: Known upward (or sideways) imports: (importing module, imported part). Debt, to be removed.
KNOWN_UPWARD: set[tuple[str, str]] = set()

#: Driver packages that only storage/ may import.
DRIVER = ("pymongo", "bson", "motor", "mongomock", "mongomock_motor")

#: Known driver imports outside storage/: (module, package). Debt, to be removed.
KNOWN_DRIVER: set[tuple[str, str]] = {
    ("adapters.connection", "pymongo"),
    ("cli.connection", "pymongo"),
    ("cli.connection", "mongomock_motor"),
    # models (floor 0, below storage) checks a document's BSON size itself.
    ("models", "bson"),
    ("cli.run", "pymongo"),
    ("cli.commands.roles", "pymongo"),
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


def _imports(tree: ast.Module) -> set[str]:
    """Every absolute module name imported anywhere in the module (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _part(module: str) -> str:
    return module.split(".")[0]


MODULES = _modules()


def test_every_part_of_the_package_has_a_floor() -> None:
    assert {_part(m) for m in MODULES} <= set(FLOORS), "a new top-level part needs a floor in FLOORS"


def test_no_import_runs_up_the_floors() -> None:
    found = set()
    for module, tree in MODULES.items():
        mine = _part(module)
        for name in _imports(tree):
            if not name.startswith("chatledger."):
                continue
            theirs = _part(name.removeprefix("chatledger."))
            if theirs == mine or theirs not in FLOORS:
                continue
            # Floor 0 is a set of leaf modules that may use each other; above it, a floor
            # uses only what is strictly below.
            if FLOORS[theirs] > FLOORS[mine] or (FLOORS[theirs] == FLOORS[mine] and FLOORS[mine] > 0):
                found.add((module, theirs))
    assert found - KNOWN_UPWARD == set(), "imports that run up the floors (docs/architecture.md)"
    assert KNOWN_UPWARD - found == set(), "a known exception is gone: remove it from KNOWN_UPWARD"


@pytest.mark.parametrize("package", DRIVER)
def test_only_storage_imports_the_driver(package: str) -> None:
    found = {
        (module, package)
        for module, tree in MODULES.items()
        if _part(module) != "storage"
        and any(name == package or name.startswith(package + ".") for name in _imports(tree))
    }
    known = {pair for pair in KNOWN_DRIVER if pair[1] == package}
    assert found - known == set(), "driver imports outside storage/ (docs/architecture.md)"
    assert known - found == set(), "a known exception is gone: remove it from KNOWN_DRIVER"


#: Collection methods of the driver: calling one is talking to the database.
_DRIVER_OPS = frozenset(
    {
        "find",
        "find_one",
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "delete_one",
        "delete_many",
        "aggregate",
        "count_documents",
        "create_index",
        "drop_indexes",
        "find_one_and_update",
        "bulk_write",
        "distinct",
    }
)


def _on_a_collection(node: ast.expr) -> bool:
    """``x.collection`` / ``x.collection_name`` / ``db[name]``: what a driver call is made on."""
    if isinstance(node, ast.Attribute):
        return node.attr == "collection" or node.attr.endswith("_collection")
    return isinstance(node, ast.Subscript)


def test_no_query_is_made_outside_storage() -> None:
    found = sorted(
        f"{module}:{node.lineno}"
        for module, tree in MODULES.items()
        if _part(module) != "storage"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _DRIVER_OPS
        and _on_a_collection(node.func.value)
    )
    assert found == [], "driver calls outside storage/ (docs/architecture.md: storage/ owns every query)"
