"""scripts/: the cron retention script and the least-privilege roles script, run as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from chatledger import Ledger
from tests.admin.conftest import talk

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_roles_dry_run_prints_append_only_app_role() -> None:
    done = script("create_roles.py", "--database", "prod")
    assert done.returncode == 0
    commands = [json.loads(block.split(")")[0]) for block in done.stdout.split("db.runCommand(")[1:]]
    app, operator = commands
    assert app["createRole"] == "chatledger_app"
    app_actions = {a for p in app["privileges"] for a in p["actions"]}
    assert {"find", "insert"} <= app_actions
    assert not app_actions & {"remove", "update"}
    by_collection = {p["resource"]["collection"]: set(p["actions"]) for p in operator["privileges"]}
    assert "remove" in by_collection["events"]
    assert "remove" in by_collection["threads"]
    assert not by_collection["audit"] & {"remove", "update"}


def test_roles_apply_needs_a_uri() -> None:
    assert script("create_roles.py", "--apply").returncode == 2


async def test_cron_retention(real_backend: Any, database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "stale", 2)
    await asyncio.sleep(1.1)
    policy = tmp_path / "retention.toml"
    policy.write_text('default = "1s"\n', encoding="utf-8")
    receipts = tmp_path / "receipts.jsonl"
    common = [
        "--policy",
        str(policy),
        "--mongodb-uri",
        real_backend.uri,
        "--database",
        database.name,
        "--receipts",
        str(receipts),
    ]
    dry = script("retention.py", *common)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["planned"][0]["thread_id"] == "stale"
    assert await database["threads"].count_documents({}) == 1
    done = script("retention.py", *common, "--apply", "--by", "cron@test")
    assert done.returncode == 0, done.stderr
    assert await database["threads"].count_documents({}) == 0
    kinds = [json.loads(line)["kind"] for line in receipts.read_text().splitlines()]
    assert sorted(kinds) == ["removal", "removal.completed"]
    assert "stale q0" not in receipts.read_text()


def test_cron_retention_bad_policy(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text('{"default": "whenever"}', encoding="utf-8")
    done = script("retention.py", "--policy", str(policy), "--mongodb-uri", "mongodb://127.0.0.1:1")
    assert done.returncode == 2
    assert "not a positive duration" in done.stderr
