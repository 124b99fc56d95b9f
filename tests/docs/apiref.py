"""Generate the API reference (docs/api.md) from the public API's docstrings.

    python -m tests.docs.apiref > docs/api.md      # or: make api-docs

The public API is what ``chatledger`` and ``chatledger.admin`` export in ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

MODULES = ("chatledger", "chatledger.admin")


def _signature(obj: Any) -> str:
    try:
        # A validator's repr carries its memory address: drop it, so the file is the same every run.
        return re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return ""


def _doc(obj: Any) -> str:
    return inspect.getdoc(obj) or ""


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_") or not (
            inspect.isfunction(member) or isinstance(member, classmethod | property)
        ):
            continue
        out.append((name, member))
    return out


def missing_docstrings() -> list[str]:
    """Return the public names (and their public methods) that have no docstring."""
    missing = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if not _doc(obj):
                    missing.append(f"{module_name}.{name}")
                if inspect.isclass(obj):
                    for member_name, member in _members(obj):
                        target = member.__func__ if isinstance(member, classmethod) else member
                        if not inspect.getdoc(target):
                            missing.append(f"{module_name}.{name}.{member_name}")
    return missing


def render() -> str:
    """Return the reference as Markdown."""
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `make api-docs` (`python -m tests.docs.apiref`);",
        "do not edit by hand. The command line is documented in [cli.md](cli.md).",
        "",
    ]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", "```text", _doc(module), "```", ""]
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### {kind} `{name}{_signature(obj)}`", ""]
            if _doc(obj):
                lines += ["```text", _doc(obj), "```", ""]
            if inspect.isclass(obj):
                for member_name, member in _members(obj):
                    target = member.__func__ if isinstance(member, classmethod) else member
                    sig = "" if isinstance(member, property) else _signature(target)
                    lines += [f"#### `{name}.{member_name}{sig}`", ""]
                    if inspect.getdoc(target):
                        lines += ["```text", inspect.getdoc(target) or "", "```", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
