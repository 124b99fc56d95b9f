"""The demo, as a user runs it, and its story on every tier."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

from rich.console import Console

from chatledger.demo.story import run_demo


async def test_demo_story_resumes_and_branches(database: Any) -> None:
    result = await run_demo(database, console=Console(file=io.StringIO()))

    # The snapshot is a cursor, not the history.
    cursor = {"thread_id": result.main_cursor.thread_id, "offset": 1, "v": 1}
    assert result.snapshot["state"]["chatledger"] == cursor
    # The resumed agent retold the same joke: its history came back from the store.
    assert "th' pirate" in result.main_line[3][1]
    assert "I could see 2 earlier messages" in result.main_line[3][1]
    # Resuming the first snapshot again branched; the first line is untouched.
    assert result.branch_cursor.thread_id != result.main_cursor.thread_id
    assert result.branch_line[:2] == result.main_line[:2]
    assert "BEEP BOOP" in result.branch_line[3][1]


def test_demo_command_runs_offline_on_a_fresh_embedded_database() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_MONGODB_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "chatledger", "demo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "embedded in-process database" in done.stdout
    assert "Arr, why did th' pirate" in done.stdout
    assert "BEEP BOOP" in done.stdout
    assert "forked at event 1" in done.stdout
