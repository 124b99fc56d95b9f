"""The admin CLI: command bodies on every tier, and the real command line as an operator types it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from chatledger import InvalidInputError, Ledger
from chatledger.cli import admin as cli
from tests.admin.conftest import Clock, branch, talk

REPO = Path(__file__).resolve().parents[2]


def consoles() -> tuple[Console, Console, Callable[[], str]]:
    buffer = io.StringIO()
    out = Console(file=buffer, width=200, color_system=None)
    return out, Console(file=io.StringIO(), width=200), buffer.getvalue


async def _story(database: Any) -> str:
    ledger = Ledger(database)
    await talk(ledger, "root", 3, tenant_id="acme", user_id="alice")
    b = await branch(ledger, "root", 2, turns=2)
    await talk(ledger, "other", 1, tenant_id="bank", user_id="bob")
    return b


async def test_threads_show_tree_stats(database: Any) -> None:
    b = await _story(database)
    out, err, text = consoles()
    assert await cli.threads_body(database, out, err, tenant="acme", as_json=True) == 0
    rows = json.loads(text())
    assert [(r["thread_id"], r["events"], r["messages"]) for r in rows] == [("root", 3, 6), (b, 2, 3)]

    out, err, text = consoles()
    assert await cli.show_body(database, out, err, thread=b, at=3, as_json=True) == 0
    shown = json.loads(text())
    assert [m["contents"][0]["text"] for m in shown["messages"]] == [
        "root q0",
        "root a0",
        "root q1",
        "root a1",
        "edit and retry",
    ]

    out, err, text = consoles()
    await cli.show_body(database, out, err, thread="root")
    assert "root a2" in text()

    out, err, text = consoles()
    await cli.tree_body(database, out, err, thread=b, as_json=True)
    tree = json.loads(text())
    assert tree["thread_id"] == "root"
    assert [(c["thread_id"], c["forked_at"], c["length_messages"]) for c in tree["branches"]] == [(b, 2, 7)]
    out, err, text = consoles()
    await cli.tree_body(database, out, err, thread="root")
    assert f"{b} forked at seq 2" in text()

    out, err, text = consoles()
    await cli.stats_body(database, out, err, as_json=True)
    stats = json.loads(text())
    assert (stats["threads"], stats["roots"], stats["branches"], stats["events"], stats["messages"]) == (
        3,
        2,
        1,
        6,
        11,
    )
    assert stats["bytes"] > 0
    assert stats["oldest_activity"] <= stats["newest_activity"]


async def test_threads_by_age(database: Any, clock: Clock) -> None:
    ledger = Ledger(database)
    await talk(ledger, "old", 1)
    clock.advance(days=100)
    await talk(ledger, "new", 1)
    out, err, text = consoles()
    await cli.threads_body(database, out, err, older_than="30d", as_json=True, now=clock.now)
    assert [r["thread_id"] for r in json.loads(text())] == ["old"]
    out, err, text = consoles()
    await cli.threads_body(database, out, err, newer_than="1d", as_json=True, now=clock.now)
    assert [r["thread_id"] for r in json.loads(text())] == ["new"]


async def test_verify_exit_status(database: Any) -> None:
    await _story(database)
    out, err, text = consoles()
    assert await cli.verify_body(database, out, err) == 0
    assert "OK" in text()
    await database["events"].update_one({"thread_id": "root", "seq": 2}, {"$set": {"count": 3}})
    out, err, text = consoles()
    assert await cli.verify_body(database, out, err) == 1
    assert "FAIL thread root seq 2" in text()


async def test_retention_and_erase_bodies(database: Any, clock: Clock) -> None:
    await _story(database)
    clock.advance(days=40)
    out, err, text = consoles()
    assert await cli.retention_body(database, out, err, older_than="30d", tenant="bank", as_json=True) == 0
    assert json.loads(text())["planned"][0]["thread_id"] == "other"
    assert await database["threads"].count_documents({}) == 3
    await cli.hold_body(database, *consoles()[:2], action="set", thread="root", reason="case 1")
    out, err, text = consoles()
    assert await cli.erase_body(database, out, err, user="alice", apply=True) == 1  # held: kept
    assert "legal hold" in text()
    assert await database["threads"].count_documents({}) == 3


BAD_ARGUMENTS: list[tuple[Any, dict[str, Any]]] = [
    (cli.retention_body, {}),
    (cli.retention_body, {"older_than": "soon"}),
    (cli.retention_body, {"older_than": "30d", "policy_file": "p.json"}),
    (cli.retention_body, {"policy_file": "/nonexistent/policy.json"}),
    (cli.erase_body, {"apply": True}),
    (cli.erase_body, {"user": "alice", "tenant": "acme", "apply": True}),
    (cli.hold_body, {"action": "set", "thread": "root", "reason": ""}),
    (cli.hold_body, {"action": "set", "thread": "nope", "reason": "x"}),
    (cli.show_body, {"thread": "nope"}),
    (cli.show_body, {"thread": "root", "at": 99}),
    (cli.verify_body, {"thread": "root", "tenant": "acme"}),
    (cli.threads_body, {"older_than": "-3d"}),
    (cli.import_body, {"path": "/nonexistent.jsonl"}),
]


@pytest.mark.parametrize(("body", "kwargs"), BAD_ARGUMENTS)
async def test_bad_arguments_change_nothing(database: Any, body: Any, kwargs: dict[str, Any]) -> None:
    await _story(database)
    before = [await database[c].count_documents({}) for c in ("threads", "events", "audit")]
    with pytest.raises(InvalidInputError):
        await body(database, *consoles()[:2], **kwargs)
    assert [await database[c].count_documents({}) for c in ("threads", "events", "audit")] == before


# --------------------------------------------------------------------------- the real command line


def chatledger(
    *args: str, uri: str | None, database: str = "", check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    argv = [sys.executable, "-m", "chatledger", *args]
    if uri is not None:
        argv += ["--mongodb-uri", uri, "--database", database]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    if check is not None:
        assert done.returncode == check, (args, done.stdout, done.stderr)
    return done


def test_admin_commands_need_a_uri() -> None:
    done = chatledger("stats", uri=None, check=2)
    assert "--mongodb-uri" in done.stderr


async def test_operator_session(real_backend: Any, database: Any, tmp_path: Path) -> None:
    # An operator's day, typed at a terminal against a real server.
    b = await _story(database)
    uri, name = real_backend.uri, database.name
    run = lambda *a, check=0: chatledger(*a, uri=uri, database=name, check=check)  # noqa: E731

    assert json.loads(run("stats", "--json").stdout)["threads"] == 3
    assert "root" in run("threads", "--tenant", "acme").stdout
    assert "root a2" in run("show", "root").stdout
    assert b in run("tree", "root").stdout
    assert json.loads(run("verify", "--json").stdout)["ok"]

    anchors = tmp_path / "heads.jsonl"
    anchors.write_text(run("heads").stdout)
    assert "OK" in run("verify", "--anchors", str(anchors)).stdout

    export = tmp_path / "all.jsonl"
    run("export", "-o", str(export))
    run("hold", "set", "root", "--reason", "case 7")
    dry = json.loads(run("erase", "--user", "bob", "--json").stdout)
    assert dry["dry_run"]
    assert dry["planned"][0]["thread_id"] == "other"
    assert json.loads(run("stats", "--json").stdout)["threads"] == 3
    run("erase", "--user", "bob", "--apply", "--reason", "GDPR 1")
    assert json.loads(run("stats", "--json").stdout)["threads"] == 2
    # The retention dry run sees nothing (everything is fresh) and the held lineage stays.
    assert json.loads(run("retention", "--older-than", "1s", "--json").stdout)["skipped"]
    run("hold", "release", "root", "--reason", "case closed")

    # Bad arguments: clear message, exit 2, nothing changed.
    for args in (
        ["retention"],
        ["retention", "--older-than", "soon"],
        ["erase"],
        ["show", "nope"],
        ["hold", "set", "root", "--reason", " "],
        ["show", "root", "--at", "-1"],
    ):
        done = run(*args, check=2)
        assert done.stderr.strip(), args
    assert json.loads(run("stats", "--json").stdout)["threads"] == 2

    # Restore into a fresh database, and verify.
    fresh = f"t_{uuid.uuid4().hex[:16]}"
    try:
        assert "imported 3 threads" in chatledger("import", str(export), uri=uri, database=fresh).stdout
        assert json.loads(chatledger("verify", "--json", uri=uri, database=fresh).stdout)["ok"]
    finally:
        await database.client.drop_database(fresh)

    # Tampering makes verify exit 1.
    await database["events"].update_one({"thread_id": "root", "seq": 1}, {"$set": {"event_id": "x"}})
    done = run("verify", check=1)
    assert "FAIL thread root seq 1" in done.stdout
