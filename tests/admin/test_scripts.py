"""Operators' cron jobs, run as cron would: `chatledger retention --policy FILE --receipts FILE`."""

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


def chatledger(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    done = subprocess.run(
        [sys.executable, "-m", "chatledger", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_operator_tools_left_scripts() -> None:
    # scripts/ keeps developer tools only; the operators' tools ship in the package.
    assert not (REPO / "scripts" / "retention.py").exists()
    assert not (REPO / "scripts" / "create_roles.py").exists()


async def test_cron_retention(real_backend: Any, database: Any, tmp_path: Path) -> None:
    await talk(Ledger(database), "stale", 2)
    await asyncio.sleep(1.1)
    policy = tmp_path / "retention.toml"
    policy.write_text('default = "1s"\n', encoding="utf-8")
    receipts = tmp_path / "receipts.jsonl"
    common = ["--policy", str(policy), "--mongodb-uri", real_backend.uri, "--database", database.name]
    common += ["--receipts", str(receipts), "--json"]
    dry = chatledger("retention", *common)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["schema"], report["command"], report["dry_run"]) == (1, "retention", True)
    assert report["planned"][0]["thread_id"] == "stale"
    assert await database["threads"].count_documents({}) == 1

    # An unwritable receipts path stops the run before anything is deleted.
    blocked = chatledger("retention", *common[:-3], "--receipts", str(tmp_path / "no" / "r.jsonl"), "--apply")
    assert blocked.returncode == 2
    assert "--receipts" in blocked.stderr
    assert await database["threads"].count_documents({}) == 1

    done = chatledger("retention", *common, "--apply", "--by", "cron@test")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["receipts_written"] == 2
    assert await database["threads"].count_documents({"removed": {"$exists": False}}) == 0
    lines = receipts.read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert sorted(kinds) == ["removal", "removal.completed"]
    assert all(json.loads(line)["at"].endswith("Z") for line in lines)
    assert "stale q0" not in receipts.read_text()


def test_cron_retention_bad_policy(tmp_path: Path) -> None:
    for text in ('{"default": "whenever"}', '{"default": "-1d"}', '{"default": "999999999999999d"}'):
        policy = tmp_path / "p.json"
        policy.write_text(text, encoding="utf-8")
        done = chatledger("retention", "--policy", str(policy), "--mongodb-uri", "mongodb://127.0.0.1:1")
        assert done.returncode == 2, (text, done.stderr)
        assert "error:" in done.stderr


def _detached_ferretdbs() -> set[int]:
    """Pids of FerretDB servers of this checkout that lead their own session (``start``'s, detached)."""
    binary = str(REPO / ".cache" / "bin" / "ferretdb").encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            if argv0 == binary and os.getsid(int(entry.name)) == int(entry.name):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def test_ferretdb_start_leaves_no_orphan_when_it_fails_after_starting(tmp_path: Path) -> None:
    if not (REPO / ".cache" / "bin" / "ferretdb").exists():
        import pytest

        pytest.skip("no FerretDB binary built (make ferretdb)")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = _detached_ferretdbs()
    # The pid file cannot be written (its folder is a file): start fails after the server runs.
    done = subprocess.run(
        [sys.executable, "scripts/ferretdb.py", "start", "--pid-file", str(blocker / "x" / "pid.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode != 0
    assert _detached_ferretdbs() <= before, "start left a FerretDB server running with no pid file"
