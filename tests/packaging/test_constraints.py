"""scripts/constraints.py: the lowest versions pyproject allows, which `make test-oldest` installs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import REPO, load_script

PYPROJECT = """
[project]
name = "Chat_Ledger"
dependencies = ["pymongo>=4.13,<5", "orjson ~= 3.10", "tomli>=2 ; python_version < '3.11'"]

[project.optional-dependencies]
cli = ["typer>=0.15.4,<1", "Rich>=13"]
demo = ["chat-ledger[cli]", "mongomock-motor>=0.0.36,<0.1"]
seal = ["cryptography>=42"]
test = ["chat_ledger[demo,seal]", "pytest>=8"]
"""


def _write(tmp_path: Path, text: str = PYPROJECT) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_every_lower_bound_of_the_library_and_its_extras_is_pinned(tmp_path: Path) -> None:
    text = load_script("constraints").lowest(_write(tmp_path))
    # Self-references are followed (demo -> cli), markers kept, test tools left free.
    assert _pins(text) == [
        "pymongo==4.13",
        "orjson==3.10",
        "tomli==2; python_version < '3.11'",
        "typer==0.15.4",
        "rich==13",
        "mongomock-motor==0.0.36",
        "cryptography==42",
    ]


def test_chosen_extras_and_exclusions(tmp_path: Path) -> None:
    text = load_script("constraints").lowest(_write(tmp_path), ["seal"], frozenset({"PyMongo"}))
    assert _pins(text) == ["orjson==3.10", "tomli==2; python_version < '3.11'", "cryptography==42"]


@pytest.mark.parametrize(
    ("requirement", "message"),
    [("cryptography", "no lower bound"), ("cryptography<47", "no lower bound"), ("x>1", "no lower bound")],
)
def test_a_range_that_does_not_say_where_it_starts_is_refused(
    tmp_path: Path, requirement: str, message: str
) -> None:
    path = _write(tmp_path, f'[project]\nname = "c"\ndependencies = ["{requirement}"]\n')
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "constraints.py"), "--pyproject", str(path), "lowest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_an_unknown_extra_is_refused(tmp_path: Path) -> None:
    constraints = load_script("constraints")
    with pytest.raises(constraints.ConstraintError, match="no extra named 'gui'"):
        constraints.lowest(_write(tmp_path), ["gui"])


def test_the_projects_own_ranges_all_have_lower_bounds(tmp_path: Path) -> None:
    out = tmp_path / "constraints.txt"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "constraints.py"), "lowest", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pinned = {line.split("==")[0] for line in _pins(out.read_text(encoding="utf-8"))}
    assert {"pymongo", "pydantic", "orjson", "typer", "rich", "motor", "cryptography"} <= pinned
