"""The operators' command line on sessions and workflow checkpoints: listed, shown, verified, moved, removed.

Every test drives the real command line (the in-process runner of tests/admin): on a
real server through ``--mongodb-uri``, on mongomock by handing the commands the test's
database where they would connect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agent_framework import AgentSession, WorkflowCheckpoint

from chatledger import Ledger, MongoCheckpointStorage, MongoSessionStore
from chatledger.cli.render import iso
from tests.admin.conftest import Clock, clock, talk  # noqa: F401 - the clock fixture
from tests.admin.test_cli import chatledger
from tests.conftest import Backend

Run = Callable[..., Any]


@pytest.fixture
def cli(backend: Backend, database: Any, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Return ``cli(*args, check=0, db=None)``: the command line on the test's database (or ``db``)."""
    if not backend.real_server:

        @asynccontextmanager
        async def the_tests(uri: str, name: str, **_: Any) -> AsyncIterator[Any]:
            yield database.client[name]

        monkeypatch.setattr("chatledger.cli.shared.open_database", the_tests)

    def run(*args: str, check: int | None = 0, db: Any = None) -> Any:
        uri = backend.uri if backend.real_server else "mongodb://127.0.0.1:1/"
        return chatledger(*args, uri=uri, database=(db if db is not None else database).name, check=check)

    return run


def _json(done: Any) -> dict[str, Any]:
    doc = json.loads(done.stdout)
    assert doc["schema"] == 1
    return doc  # type: ignore[no-any-return]


async def _records(database: Any, user: str = "alice") -> dict[str, Any]:
    """A conversation, a session of two versions and a workflow run with a branch and a chunked checkpoint."""
    await talk(Ledger(database), f"chat-{user}", 2, tenant_id="acme", user_id=user)
    sessions = MongoSessionStore(database=database, tenant_id="acme", user_id=user)
    session = AgentSession(session_id="s")
    for turn in (1, 2):
        session.state["turn"] = turn
        await sessions.set("key", session)
    storage = MongoCheckpointStorage(database=database, tenant_id="acme", user_id=user)
    first = await storage.save(WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h"))
    second = await storage.save(
        WorkflowCheckpoint(
            workflow_name="wf",
            graph_signature_hash="h",
            previous_checkpoint_id=first,
            state={"big": "x" * 3000},
        )
    )
    # Resumed from the first checkpoint: a branch.
    third = await storage.save(
        WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h", previous_checkpoint_id=first)
    )
    return {
        "session": await sessions.thread_of("key"),
        "checkpoints": [first, second, third],
        "sessions": sessions,
        "storage": storage,
    }


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkpoint over 1000 characters is chunked: the chunked layout without 4 MiB of data.
    monkeypatch.setattr("chatledger.adapters.checkpoint_records.CHUNK_CHARS", 1000)


async def test_threads_shows_each_threads_kind_and_filters_by_it(database: Any, cli: Run) -> None:
    made = await _records(database)
    listed = _json(cli("threads", "--json"))["threads"]
    kinds = {t["thread_id"]: t["kind"] for t in listed}
    assert kinds["chat-alice"] == "conversation"
    assert kinds[made["session"]] == "session"
    runs = [t for t, k in kinds.items() if k == "workflow_run"]
    assert len(runs) == 2  # the run and its branch
    assert len(kinds) == 4

    only = _json(cli("threads", "--kind", "session", "--json"))["threads"]
    assert [t["thread_id"] for t in only] == [made["session"]]
    only = _json(cli("threads", "--kind", "workflow_run", "--limit", "1", "--json"))["threads"]
    assert [t["kind"] for t in only] == ["workflow_run"]
    assert [t["thread_id"] for t in _json(cli("threads", "--kind", "conversation", "--json"))["threads"]] == [
        "chat-alice"
    ]

    table = cli("threads").stdout
    assert "kind" in table
    assert "session" in table
    assert "workflow_run" in table
    done = cli("threads", "--kind", "sessions", check=2)
    assert "conversation, session, workflow_run" in done.stderr


async def test_show_prints_session_versions_and_run_checkpoints(database: Any, cli: Run) -> None:
    made = await _records(database)
    text = cli("show", made["session"]).stdout
    assert "session 'key'" in text
    assert text.index("version 1") < text.index("version 2")
    assert '"turn": 2' in text
    shown = _json(cli("show", made["session"], "--json"))
    assert shown["kind"] == "session"
    assert shown["session_id"] == "key"
    assert [(v["version"], v["snapshot"]["state"]) for v in shown["versions"]] == [
        (1, {"turn": 1}),
        (2, {"turn": 2}),
    ]
    assert shown["verify"] == {"ok": True, "problems": []}
    # Time travel: --at shows the versions stored up to then.
    assert [v["version"] for v in _json(cli("show", made["session"], "--at", "1", "--json"))["versions"]] == [
        1
    ]

    first, second, third = made["checkpoints"]
    runs = _json(cli("threads", "--kind", "workflow_run", "--json"))["threads"]
    [root] = [t["thread_id"] for t in runs if t["parent"] is None]
    [branch] = [t["thread_id"] for t in runs if t["parent"] is not None]
    shown = _json(cli("show", root, "--json"))
    assert shown["kind"] == "workflow_run"
    assert shown["workflow_name"] == "wf"
    listed = [
        (c["checkpoint_id"], c["previous_checkpoint_id"], c["workflow_name"]) for c in shown["checkpoints"]
    ]
    assert listed == [(first, None, "wf"), (second, first, "wf")]
    assert shown["checkpoints"][1]["chunks"] > 1  # reassembled from its chunks
    assert shown["checkpoints"][1]["size"] > 3000
    # The branch shows the run as resumed: the first checkpoint, then the third.
    on_branch = _json(cli("show", branch, "--json"))["checkpoints"]
    assert [(c["checkpoint_id"], c["previous_checkpoint_id"]) for c in on_branch] == [
        (first, None),
        (third, first),
    ]
    table = cli("show", root).stdout
    assert first in table
    assert "chunks" in table
    assert "workflow run of 'wf'" in table
    # --raw: what is stored, message by message.
    raw = cli("show", root, "--raw").stdout
    assert "chatledger.checkpoint-chunk" in raw
    assert "checkpoints" not in _json(cli("show", root, "--raw", "--json"))


async def _receipt(database: Any, checkpoint_id: str) -> dict[str, Any]:
    found = await database["audit"].find_one({"kind": "checkpoint.deleted", "checkpoint_id": checkpoint_id})
    assert found is not None
    return dict(found)


def _withdrawals(checkpoints: list[dict[str, Any]]) -> list[tuple[str | None, bool]]:
    return [(c["checkpoint_id"], c["withdrawn"]) for c in checkpoints]


async def test_show_marks_a_withdrawn_checkpoint_along_the_runs_line(database: Any, cli: Run) -> None:
    made = await _records(database)
    first, second, third = made["checkpoints"]
    runs = _json(cli("threads", "--kind", "workflow_run", "--json"))["threads"]
    [root] = [t["thread_id"] for t in runs if t["parent"] is None]
    [branch] = [t["thread_id"] for t in runs if t["parent"] is not None]
    shown = _json(cli("show", root, "--json"))["checkpoints"]
    assert _withdrawals(shown) == [(first, False), (second, False)]
    assert [c["withdrawal"] for c in shown] == [None, None]
    assert "withdrawn" not in cli("show", root).stdout.split("\n")[0]

    # The chunked checkpoint on the run's thread is withdrawn: listed still, but marked.
    assert await made["storage"].delete(second)
    assert await made["storage"].list_checkpoint_ids(workflow_name="wf") == [first, third]
    receipt = await _receipt(database, second)
    shown = _json(cli("show", root, "--json"))["checkpoints"]
    assert _withdrawals(shown) == [(first, False), (second, True)]
    assert shown[1]["withdrawal"] == {
        "receipt_id": receipt["_id"],
        "at": iso(receipt["at"]),
        "by": "application",
    }
    assert shown[1]["chunks"] > 1  # its record and chunks are still there, and still shown
    table = cli("show", root).stdout
    assert "2 checkpoints, 1 withdrawn" in table
    row = next(line for line in table.splitlines() if second[:8] in line)
    assert iso(receipt["at"])[:10] in row
    # Not on the branch's line (the run was resumed from the first checkpoint).
    assert _withdrawals(_json(cli("show", branch, "--json"))["checkpoints"]) == [
        (first, False),
        (third, False),
    ]

    # A checkpoint of the parent's, before the fork, is withdrawn on the branch's line too;
    # a cursor before a withdrawn record shows what was there then, marked the same.
    assert await made["storage"].delete(first)
    assert _withdrawals(_json(cli("show", branch, "--json"))["checkpoints"]) == [
        (first, True),
        (third, False),
    ]
    assert _withdrawals(_json(cli("show", root, "--at", "1", "--json"))["checkpoints"]) == [(first, True)]


async def test_show_marks_a_withdrawn_sealed_checkpoint_it_cannot_open(database: Any, cli: Run) -> None:
    from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer

    storage = MongoCheckpointStorage(
        database=database, user_id="alice", sealer=Sealer(KeyStore(database), LocalKeyProvider(bytes(32)))
    )
    first = await storage.save(WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h"))
    await storage.save(
        WorkflowCheckpoint(workflow_name="wf", graph_signature_hash="h", previous_checkpoint_id=first)
    )
    assert await storage.delete(first)
    [run] = [t["thread_id"] for t in _json(cli("threads", "--json"))["threads"]]
    # No KEK given: neither id can be read, yet the withdrawn one is marked (by its record's place).
    done = cli("show", run, "--json")
    shown = _json(done)["checkpoints"]
    assert _withdrawals(shown) == [(None, True), (None, False)]
    assert (await _receipt(database, first))["_id"] == shown[0]["withdrawal"]["receipt_id"]


async def test_show_warns_of_a_thread_failing_verification_and_names_removed_threads(
    database: Any, cli: Run
) -> None:
    made = await _records(database)
    event = await database["events"].find_one({"thread_id": "chat-alice", "seq": 1})
    forged = event["messages"][0]["text"] + " (forged)"
    await database["events"].update_one({"_id": event["_id"]}, {"$set": {"messages.0.text": forged}})
    done = cli("show", "chat-alice")
    assert "(forged)" in done.stdout
    assert "warning: thread chat-alice fails verification" in done.stderr
    shown = _json(cli("show", "chat-alice", "--json"))
    assert shown["verify"]["ok"] is False
    assert shown["verify"]["problems"][0]["thread_id"] == "chat-alice"

    await made["sessions"].delete("key")
    for command in ("show", "tree"):
        done = cli(command, made["session"], check=None)
        assert done.returncode == cli("verify", "--thread", made["session"], check=None).returncode == 2
        assert f"thread {made['session']!r} was removed" in done.stderr
    done = cli("show", "no-such-thread", check=None)
    assert "no thread 'no-such-thread'" in done.stderr


async def test_admin_commands_treat_sessions_and_checkpoints_like_threads(
    database: Any,
    cli: Run,
    clock: Clock,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # Bob's records are a year old; Alice's are new.
    await _records(database, "bob")
    clock.now = datetime.now(UTC)
    alice = await _records(database, "alice")

    verified = _json(cli("verify", "--json"))
    assert verified["ok"] is True
    assert verified["threads"] == 8  # per user: a conversation, a session, a run and its branch

    # Export, then import into an empty database: the sessions and runs come back, verified.
    backup = tmp_path / "backup.jsonl"
    exported = _json(cli("export", "-o", str(backup), "--json"))
    assert exported["threads"] == 8
    copy = database.client[f"{database.name}_copy"]
    try:
        imported = _json(cli("import", str(backup), "--json", db=copy))
        assert imported["threads"] == 8
        assert imported["events"] == exported["events"]
        assert _json(cli("verify", "--json", db=copy))["threads"] == 8
        restored = await MongoSessionStore(database=copy, tenant_id="acme", user_id="alice").get("key")
        assert restored is not None
        assert restored.state == {"turn": 2}
    finally:
        await database.client.drop_database(copy.name)

    # Retention removes Bob's old session and run like any old thread.
    receipts = tmp_path / "retention.jsonl"
    retained = _json(
        cli("retention", "--older-than", "90d", "--receipts", str(receipts), "--apply", "--json")
    )
    assert retained["threads"] == 4
    assert retained["receipt_ids"]
    assert receipts.read_text(encoding="utf-8").strip()
    left = _json(cli("threads", "--json"))["threads"]
    assert {t["user_id"] for t in left} == {"alice"}
    assert sorted(t["kind"] for t in left) == ["conversation", "session", "workflow_run", "workflow_run"]

    # Erasure of Alice removes her sessions and checkpoints with her conversations.
    receipts = tmp_path / "erase.jsonl"
    erased = _json(cli("erase", "--user", "alice", "--receipts", str(receipts), "--apply", "--json"))
    assert erased["threads"] == 4
    assert erased["receipt_ids"]
    assert len(receipts.read_text(encoding="utf-8").splitlines()) >= 1
    assert await alice["sessions"].get("key") is None
    assert await alice["storage"].list_checkpoints(workflow_name="wf") == []
    done = cli("show", alice["session"], check=None)
    assert "was removed" in done.stderr
