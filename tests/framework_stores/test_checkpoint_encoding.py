"""Checkpoints are encoded exactly as the framework's FileCheckpointStorage writes them, and decoded safely.

ChatLedger writes that encoding itself (the framework's encoder is private): a checkpoint
file written by ``FileCheckpointStorage`` must load here identically, ChatLedger's record
must hold what the file holds, and stored data must never restore a class that is not
allowed (the framework's allow-list rule).
"""

from __future__ import annotations

import ast
import base64
import enum
import json
import os
import pickle
import uuid
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from agent_framework import (
    FileCheckpointStorage,
    WorkflowCheckpoint,
    WorkflowCheckpointException,
    WorkflowEvent,
    WorkflowMessage,
)

from chatledger import MongoCheckpointStorage
from chatledger.adapters.checkpoint_encoding import decode_checkpoint_value, encode_checkpoint_value

SRC = Path(__file__).resolve().parents[2] / "src" / "chatledger"


@dataclass
class Order:
    """An application type: allowed only when the storage lists it."""

    item: str
    count: int


class Colour(enum.Enum):
    RED = "red"


ORDER = f"{Order.__module__}:{Order.__qualname__}"
COLOUR = f"{Colour.__module__}:{Colour.__qualname__}"


def _rich_checkpoint() -> WorkflowCheckpoint:
    """A checkpoint holding every kind of value the encoding treats differently."""
    return WorkflowCheckpoint(
        workflow_name="wf",
        graph_signature_hash="h",
        timestamp="2026-12-06T10:00:00+00:00",
        messages={"exec": [WorkflowMessage(data={"n": 1}, source_id="a", target_id="b")]},
        pending_request_info_events={"req": WorkflowEvent(type="request_info", data=("q", 1))},
        state={
            "json": {"s": "ü", "i": 1, "f": 2.5, "b": True, "n": None, "l": [1, [2, {"x": "y"}]]},
            "when": datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
            "day": date(2026, 12, 6),
            "span": timedelta(hours=1),
            "id": uuid.UUID(int=7),
            "money": Decimal("1.10"),
            "tuple": (1, "two"),
            "set": {3},
            "bytes": b"\x00\xff",
            "counts": Counter("aab"),
            "ordered": OrderedDict(a=1),
            "default": defaultdict(list, {"k": [1]}),
            "queue": deque([1, 2]),
            "reserved": {"__pickled__": "not really", "__type__": "x"},
            "colliding": {1: "int key", "1": "str key"},
            "order": Order("tea", 2),
            "colour": Colour.RED,
        },
        iteration_count=4,
        metadata={"superstep": 4},
    )


def _file_storage(tmp_path: Path) -> FileCheckpointStorage:
    return FileCheckpointStorage(tmp_path, allowed_checkpoint_types=[ORDER, COLOUR])


async def test_a_checkpoint_file_the_framework_wrote_loads_identically(database: Any, tmp_path: Path) -> None:
    checkpoint = _rich_checkpoint()
    files = _file_storage(tmp_path)
    await files.save(checkpoint)
    written = json.loads((tmp_path / f"{checkpoint.checkpoint_id}.json").read_text(encoding="utf-8"))
    from_file = await files.load(checkpoint.checkpoint_id)

    # Decoding the framework's file gives what the framework's own load gives.
    decoded = WorkflowCheckpoint.from_dict(decode_checkpoint_value(written, allowed_types={ORDER, COLOUR}))
    assert encode_checkpoint_value(decoded.to_dict()) == encode_checkpoint_value(from_file.to_dict())
    assert decoded.state == checkpoint.state
    # Encoding here writes what the file holds, value for value (pickles included).
    assert encode_checkpoint_value(checkpoint.to_dict()) == written

    # Through the storage: the record holds the file's JSON, and load gives the file's checkpoint.
    storage = MongoCheckpointStorage(database=database, allowed_checkpoint_types=[ORDER, COLOUR])
    await storage.save(checkpoint)
    record = await database["events"].find_one({"event_id": checkpoint.checkpoint_id})
    assert json.loads(record["messages"][0]["text"]) == written
    loaded = await storage.load(checkpoint.checkpoint_id)
    assert loaded.state == from_file.state
    assert loaded.messages["exec"][0].data == {"n": 1}
    assert loaded.pending_request_info_events["req"].data == ("q", 1)
    assert encode_checkpoint_value(loaded.to_dict()) == encode_checkpoint_value(from_file.to_dict())

    # And the other way: what ChatLedger stored, written to a file, the framework loads.
    (tmp_path / "copy.json").write_text(record["messages"][0]["text"], encoding="utf-8")
    assert (await files.load("copy")).state == checkpoint.state


async def test_an_application_type_needs_allowed_checkpoint_types(database: Any) -> None:
    checkpoint = WorkflowCheckpoint(
        workflow_name="wf", graph_signature_hash="h", state={"o": Order("tea", 1)}
    )
    with pytest.raises(WorkflowCheckpointException, match="allowed_checkpoint_types"):
        await MongoCheckpointStorage(database=database).save(checkpoint)
    assert await database["events"].count_documents({}) == 0
    allowed = MongoCheckpointStorage(database=database, allowed_checkpoint_types=[ORDER])
    await allowed.save(checkpoint)
    assert (await allowed.load(checkpoint.checkpoint_id)).state == {"o": Order("tea", 1)}
    # A storage that does not list the type refuses to restore it.
    with pytest.raises(WorkflowCheckpointException, match="blocked"):
        await MongoCheckpointStorage(database=database).load(checkpoint.checkpoint_id)


async def test_an_envelope_spelt_with_json_escapes_is_still_decoded_under_the_allow_list(
    database: Any,
) -> None:
    # Loading skips the decoding pass when the text cannot hold a pickled value; a record
    # whose envelope key is spelt with escapes (as another JSON writer, or an attacker,
    # may spell it) must still be decoded, and so refused where the type is not allowed.
    checkpoint = WorkflowCheckpoint(
        workflow_name="wf", graph_signature_hash="h", state={"o": Order("tea", 1)}
    )
    await MongoCheckpointStorage(database=database, allowed_checkpoint_types=[ORDER]).save(checkpoint)
    event = await database["events"].find_one({"event_id": checkpoint.checkpoint_id})
    text = event["messages"][0]["text"]
    assert text.count('"__pickled__"') == 1
    escaped = text.replace('"__pickled__"', '"\\u005f_pickled__"')
    assert json.loads(escaped) == json.loads(text)
    await database["events"].update_one({"_id": event["_id"]}, {"$set": {"messages.0.text": escaped}})
    allowed = MongoCheckpointStorage(database=database, allowed_checkpoint_types=[ORDER])
    assert (await allowed.load(checkpoint.checkpoint_id)).state == {"o": Order("tea", 1)}
    with pytest.raises(WorkflowCheckpointException, match="blocked"):
        await MongoCheckpointStorage(database=database).load(checkpoint.checkpoint_id)


class _Reduces:
    """Pickles as a call of whatever ``__reduce__`` names: how hostile stored data would look."""

    def __init__(self, call: Any, args: tuple[Any, ...]) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.call, self.args


def _stored(value: Any, type_key: str = "builtins:dict") -> dict[str, str]:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return {"__pickled__": base64.b64encode(data).decode("ascii"), "__type__": type_key}


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(lambda p: _Reduces(os.makedirs, (str(p),)), id="a function outside the allow-list"),
        pytest.param(lambda p: _Reduces(type, ("Forged", (object,), {})), id="type() building a class"),
        pytest.param(lambda p: _Reduces(type, (dict,)), id="type() of a class (a metaclass)"),
        pytest.param(lambda p: _Reduces(getattr, (dict, "fromkeys")), id="getattr of a non-class"),
        pytest.param(
            lambda p: _Reduces(enum.Enum, ("Forged", "A B")), id="a member-less enum building a class"
        ),
        pytest.param(lambda p: Order("tea", 1), id="an application class not listed"),
    ],
)
def test_stored_data_never_restores_what_is_not_allowed(hostile: Any, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(WorkflowCheckpointException):
        decode_checkpoint_value({"state": _stored(hostile(target))}, allowed_types=set())
    assert not target.exists()


@pytest.mark.parametrize(
    "stored",
    [
        {"__pickled__": "not base64!", "__type__": "builtins:dict"},
        {"__pickled__": 5, "__type__": "builtins:dict"},
        _stored({"a": 1}, type_key="builtins:list"),  # not of its recorded type
    ],
)
def test_malformed_pickles_are_checkpoint_errors(stored: dict[str, Any]) -> None:
    with pytest.raises(WorkflowCheckpointException):
        decode_checkpoint_value(stored, allowed_types=set())


def test_the_framework_stores_import_no_private_framework_names_and_admin_no_adapters() -> None:
    # Private names break the import on other framework releases (issues 20, 21); and
    # admin/ stands beside adapters/, so it never imports them (docs/architecture.md).
    modules = ["adapters/checkpoints.py", "adapters/checkpoint_encoding.py", "adapters/sessions.py"]
    modules += [str(p.relative_to(SRC)) for p in sorted((SRC / "admin").glob("*.py"))]
    found = []
    for module in modules:
        for node in ast.walk(ast.parse((SRC / module).read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                private = name.startswith("agent_framework.") and any(
                    part.startswith("_") for part in name.split(".")[1:]
                )
                if private or (module.startswith("admin/") and name.startswith("chatledger.adapters")):
                    found.append((module, name))
    assert found == []
