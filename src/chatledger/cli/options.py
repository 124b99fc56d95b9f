"""Options shared by several commands, and the validation of their values."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated

import typer

from chatledger.admin import parse_duration
from chatledger.errors import InvalidInputError

__all__ = [
    "AllowEmptyOption",
    "ApplyOption",
    "ByOption",
    "JsonOption",
    "TenantOption",
    "UserOption",
    "duration",
    "open_for_writing",
]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (shapes: docs/cli.md).")
]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's threads.")]
UserOption = Annotated[str | None, typer.Option("--user", help="Only this user's threads.")]
ApplyOption = Annotated[bool, typer.Option("--apply", help="Really remove. Without it: a dry run.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who acts, for the receipts (default user@host).")]
AllowEmptyOption = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Accept a database (or collection set) holding no ChatLedger data; "
        "without it that is an error (exit 1): a misspelled name is not a clean result.",
    ),
]


def duration(value: str | None, option: str) -> timedelta | None:
    """Return the positive duration ``value`` (``90d``, ``12h``…) given for ``option``, or ``None``.

    Raises:
        InvalidInputError: not a positive duration, or one so large no date is that old.
    """
    if value is None:
        return None
    try:
        age = parse_duration(value)
        datetime.now(UTC) - age
    except InvalidInputError as e:
        raise InvalidInputError(f"{option}: {e}") from e
    except (OverflowError, ValueError) as e:
        raise InvalidInputError(
            f"{option}: {value!r} is longer than the calendar (at most ~9999 years)"
        ) from e
    return age


def open_for_writing(path: str, option: str, *, append: bool = False) -> IO[str]:
    """Open ``path`` for writing now, so a bad path fails before any work is done.

    Raises:
        InvalidInputError: the file cannot be created or written (missing folder, permissions).
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise InvalidInputError(f"{option}: folder {str(target.parent)!r} does not exist")
    try:
        return target.open("a" if append else "w", encoding="utf-8")
    except OSError as e:
        raise InvalidInputError(f"{option}: cannot write {path!r}: {e.strerror or e}") from e


def check_writable(path: str, option: str) -> None:
    """Fail now, without touching it, if ``path`` could not be written later.

    Unlike :func:`open_for_writing`, an existing file keeps its content: a command that
    may still fail (a refused checkpoint) must not have emptied the copy kept there.

    Raises:
        InvalidInputError: the folder is missing, or the file or folder is not writable.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise InvalidInputError(f"{option}: folder {str(target.parent)!r} does not exist")
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        raise InvalidInputError(f"{option}: cannot write {path!r}: permission denied")


def write_whole(path: str, option: str, text: str) -> None:
    """Write ``text`` to ``path`` all at once: the old file or the whole new one, never a fragment.

    Raises:
        InvalidInputError: the file cannot be written.
    """
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open_for_writing(str(partial), option) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(target)
    except OSError as e:
        raise InvalidInputError(f"{option}: cannot write {path!r}: {e.strerror or e}") from e
    finally:
        partial.unlink(missing_ok=True)
