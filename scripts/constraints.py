#!/usr/bin/env python3
"""The lowest dependency versions pyproject.toml allows, as a pip constraints file.

``make test-oldest`` installs ChatLedger with these constraints, so the suite runs against
the lower bound of every range: a lower bound that no longer works fails there, not on a
user's machine. Stdlib only (it runs before any virtualenv exists)::

    python scripts/constraints.py lowest [--extras cli,demo] [--exclude NAME] [-o FILE]
    python scripts/constraints.py installed     # the versions this interpreter resolved

``lowest`` takes ``[project.dependencies]`` and the extras (default: every extra but
``test``, whose tools are not what users install), following ``chatledger[...]``
self-references, and writes ``name==lower-bound`` per requirement, markers kept. A
requirement without a lower bound is an error: every range must say where it starts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name, [extras], specifiers, ;marker: the forms pyproject uses (PEP 508 without URLs).
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
    r"\s*(?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$"
)
# The operators that name a version the range includes (">" and "!=" do not).
_LOWER = re.compile(r"^(?:>=|==|~=)\s*(?P<version>[0-9][^\s,]*)$")


class ConstraintError(ValueError):
    """pyproject.toml holds a requirement this script cannot turn into a lowest version."""


def normalize(name: str) -> str:
    """Return the PEP 503 form of a project name (``Typing_Extensions`` -> ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse(requirement: str) -> tuple[str, list[str], str, str | None]:
    found = _REQUIREMENT.match(requirement)
    if found is None:
        raise ConstraintError(f"cannot read the requirement {requirement!r}")
    extras = [e.strip() for e in (found["extras"] or "").split(",") if e.strip()]
    return found["name"], extras, found["specs"], found["marker"]


def _lower_bound(requirement: str, specs: str) -> str:
    for spec in (s.strip() for s in specs.split(",")):
        lower = _LOWER.match(spec)
        if lower:
            return lower["version"]
    raise ConstraintError(f"{requirement!r} has no lower bound (>=, == or ~=): say where the range starts")


def requirements(project: dict[str, object], extras: list[str]) -> list[str]:
    """Return the requirements of the project plus ``extras``, self-references expanded, in order."""
    name = normalize(str(project["name"]))
    optional = project.get("optional-dependencies", {})
    assert isinstance(optional, dict)
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(items: object) -> None:
        assert isinstance(items, list)
        for item in items:
            req_name, req_extras, _, _ = _parse(str(item))
            if normalize(req_name) == name:
                expand(req_extras)
            elif item not in out:
                out.append(str(item))

    def expand(names: list[str]) -> None:
        for extra in names:
            if extra in seen_extras:
                continue
            if extra not in optional:
                raise ConstraintError(f"no extra named {extra!r} in pyproject.toml")
            seen_extras.add(extra)
            add(optional[extra])

    add(project.get("dependencies", []))
    expand(extras)
    return out


def lowest(pyproject: Path, extras: list[str] | None = None, exclude: frozenset[str] = frozenset()) -> str:
    """Return the constraints file text: ``name==lower`` for every requirement, markers kept.

    Args:
        pyproject: The pyproject.toml to read.
        extras: The extras to include; ``None`` means every extra except ``test``.
        exclude: Project names left unconstrained (another job tests their range).

    Raises:
        ConstraintError: A requirement has no lower bound, is unreadable, or names an unknown extra.
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    if extras is None:
        extras = [e for e in project.get("optional-dependencies", {}) if e != "test"]
    excluded = {normalize(n) for n in exclude}
    lines = [f"# The lowest versions {pyproject.name} allows (scripts/constraints.py lowest); do not edit."]
    for requirement in requirements(project, extras):
        name, _, specs, marker = _parse(requirement)
        if normalize(name) in excluded:
            continue
        pin = f"{normalize(name)}=={_lower_bound(requirement, specs)}"
        lines.append(f"{pin}; {marker}" if marker else pin)
    return "\n".join(lines) + "\n"


def installed(pyproject: Path) -> str:
    """Return one line naming the installed version of every dependency (all extras but ``test``)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = [e for e in project.get("optional-dependencies", {}) if e != "test"]
    names = sorted({normalize(_parse(r)[0]) for r in requirements(project, extras)})
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"Python {python}: " + ", ".join(versions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    commands = parser.add_subparsers(dest="command", required=True)
    low = commands.add_parser("lowest", help="write the lowest versions as a pip constraints file")
    low.add_argument("--extras", help="comma-separated extras (default: every extra but test)")
    low.add_argument("--exclude", action="append", default=[], help="leave this project unconstrained")
    low.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    commands.add_parser("installed", help="print the installed version of every dependency")
    args = parser.parse_args(argv)
    try:
        if args.command == "installed":
            print(installed(args.pyproject))
            return 0
        extras = None if args.extras is None else [e.strip() for e in args.extras.split(",") if e.strip()]
        text = lowest(args.pyproject, extras, frozenset(args.exclude))
    except (ConstraintError, OSError, KeyError, tomllib.TOMLDecodeError) as e:
        print(f"constraints: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
