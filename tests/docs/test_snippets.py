"""Every code block in README.md and docs/*.md does what it says, as written.

- ```python blocks run unchanged, each in its own interpreter. Blocks that need a database
  follow one convention, stated in the README: they connect to ``CHATLEDGER_MONGODB_URI``
  (default ``mongodb://127.0.0.1:27017``). Here that variable points at the real-server
  tier (the session's throw-away FerretDB, or ``MONGODB_URI``); without one the block is
  skipped (never with ``CI=true``). Blocks that need a model use the offline
  ``chatledger.demo.joker.JokerChatClient``.
- Shell lines that call ``chatledger`` (in fenced or indented blocks) are checked, not run:
  the command exists and every ``--option`` on the line is one it accepts. Other shell
  lines (``pip``, ``make``, ``docker``, cron's schedule) are not run by the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, IN_CI

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
GROUPS = {"hold", "roles", "keys"}
#: Shell lines that mention chatledger but do not call it.
NOT_CHATLEDGER = {"pip", "python", "python3", "make", "docker", "export", "sh"}
#: Blocks fenced as python that are reference listings, not programs, in files whose owners
#: have yet to re-fence them as ```text. Strict: fixing the fence retires the entry.
NOT_CODE: dict[str, str] = {}


def _python_params() -> list[object]:
    return [
        pytest.param(
            where,
            code,
            id=where,
            marks=[pytest.mark.xfail(strict=True, reason=NOT_CODE[where])] if where in NOT_CODE else [],
        )
        for where, code in _python_blocks()
    ]


def _python_blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCUMENTS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group("lang") == "python":
                line = text[: match.start()].count("\n") + 1
                found.append((f"{doc.relative_to(REPO)}:{line}", match.group("body")))
    return found


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCUMENTS:
        text = doc.read_text(encoding="utf-8")
        blocks = [m.group("body") for m in FENCE.finditer(text) if m.group("lang") in ("bash", "sh", "")]
        indented = re.findall(r"(?:^(?: {4}|\t).*\n?)+", FENCE.sub("", text), re.MULTILINE)
        for block in [*blocks, *indented]:
            # Continuation lines belong to the command they continue.
            for raw in block.replace("\\\n", " ").splitlines():
                words = raw.split("#")[0].split()
                if "chatledger" in words and words[0] not in NOT_CHATLEDGER and "=" not in words[0]:
                    found.append((f"{doc.relative_to(REPO)}", " ".join(words)))
    return found


def _real_server_uri() -> str | None:
    for backend in BACKENDS:
        if backend.real_server and backend.driver == "pymongo":
            return backend.started().uri
    return None


@pytest.mark.parametrize(("where", "code"), _python_params())
def test_python_block_runs(where: str, code: str, tmp_path: Path) -> None:
    uri = _real_server_uri()
    needs_server = "CHATLEDGER_MONGODB_URI" in code
    if needs_server and uri is None:
        assert not IN_CI, "CI=true: the documentation's database examples must run on a real server"
        pytest.skip("no real server tier (FerretDB or MONGODB_URI) to run this block against")
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    if uri is not None:
        env["CHATLEDGER_MONGODB_URI"] = uri
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"


@cache
def _help(path: tuple[str, ...]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "chatledger", *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (path, done.stderr)
    return done.stdout


@pytest.mark.parametrize(("where", "line"), _command_lines(), ids=[l for _, l in _command_lines()])  # noqa: E741
def test_chatledger_command_line_parses(where: str, line: str) -> None:
    words = line.split()
    # The program, not a database or user of that name (cron: "... chatledger chatledger retention").
    start = next(
        i for i, w in enumerate(words) if w == "chatledger" and words[i + 1 : i + 2] != ["chatledger"]
    )
    args = [w.strip("[]()|`") for w in words[start + 1 :]]
    if not args or args[0].startswith("-"):
        path: tuple[str, ...] = ()
    elif args[0] in GROUPS:
        path = (args[0], args[1])
    else:
        path = (args[0],)
    if path and path[0] in ("COMMAND",):
        return
    text = _help(path)
    for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
        assert option in text, f"{where}: `{line}` uses {option}, which `chatledger {' '.join(path)}` lacks"
