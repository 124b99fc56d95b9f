"""The floors of docs/architecture.md, checked on the source.

No import runs up the floors, only storage/ talks to the driver, only storage/ builds
query documents (filters, projections): the code above passes typed values, and the CLI
reaches the storage ports only through admin or ledger functions.

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

#: Known driver imports outside storage/: (module, package). Debt, to be removed; none is left.
KNOWN_DRIVER: set[tuple[str, str]] = set()


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


#: Known CLI modules that reach the storage ports (``storage_of``) or import ``chatledger.storage``:
#: (module, what). Debt, to be removed; none is left.
KNOWN_CLI_STORAGE: set[tuple[str, str]] = set()


def test_the_cli_never_reaches_storage() -> None:
    # cli/ parses, calls one admin or ledger function, renders: what it needs of the
    # storage ports is an admin function (admin/cli_support.py), never storage_of.
    found = set()
    for module, tree in MODULES.items():
        if _part(module) != "cli":
            continue
        for name in _imports(tree):
            if name == "chatledger.storage" or name.startswith("chatledger.storage."):
                found.add((module, "chatledger.storage"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Name) and node.id == "storage_of") or (
                isinstance(node, ast.Attribute) and node.attr == "storage_of"
            ):
                found.add((module, "storage_of"))
            if isinstance(node, ast.alias) and node.name == "storage_of":
                found.add((module, "storage_of"))
    assert found - KNOWN_CLI_STORAGE == set(), "the CLI reaches storage (docs/architecture.md: through admin)"
    assert KNOWN_CLI_STORAGE - found == set(), "a known exception is gone: remove it from KNOWN_CLI_STORAGE"


#: What a query document looks like from outside: one of these keyword arguments, or a
#: dict (literal, or a module constant) handed to one of these storage methods.
_QUERY_KEYWORDS = frozenset({"projection", "match", "query", "filter"})
#: Keys of MongoDB Extended JSON (a value's type in a file, not a query operator).
_EXTENDED_JSON = frozenset(
    {"$date", "$oid", "$binary", "$numberLong", "$numberInt", "$numberDouble", "$uuid"}
)
_QUERY_METHODS = frozenset({"select", "by_root", "scan", "count", "of_kind", "thread_ids", "stream"})

#: Known query documents built outside storage/: (module, what). None is left; a new one
#: is a named storage method instead.
KNOWN_QUERIES: set[tuple[str, str]] = set()


def _dict_constants(tree: ast.Module) -> set[str]:
    """Names a module binds, at its top level, to a dict literal (``_FIELDS = {"a": 1}``)."""
    out = set()
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        value = getattr(node, "value", None)
        if isinstance(value, ast.Dict):
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    return out


def _queries(tree: ast.Module) -> set[str]:
    """Return the kinds of query document a module builds (see the test below)."""
    constants = _dict_constants(tree)

    def is_document(node: ast.expr) -> bool:
        return isinstance(node, ast.Dict) or (isinstance(node, ast.Name) and node.id in constants)

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant)
            and isinstance(k.value, str)
            and k.value.startswith("$")
            and k.value not in _EXTENDED_JSON
            for k in node.keys
        ):
            found.add("a $ operator")
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg in _QUERY_KEYWORDS and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is None
            ):
                found.add(f"{keyword.arg}=")
        if not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method == "query" and not node.args and not node.keywords:
            found.add("ThreadFilter.query()")
        if method in _QUERY_METHODS and any(is_document(a) for a in node.args):
            found.add(f"a document passed to {method}()")
    return found


def test_no_query_document_is_built_outside_storage() -> None:
    """Only storage/ builds filters and projections: admin code passes typed values (a ThreadFilter)."""
    found = {
        (module, what)
        for module, tree in MODULES.items()
        if _part(module) != "storage"
        for what in _queries(tree)
    }
    assert found - KNOWN_QUERIES == set(), "query documents built outside storage/ (docs/architecture.md)"
    assert KNOWN_QUERIES - found == set(), "a known exception is gone: remove it from KNOWN_QUERIES"
