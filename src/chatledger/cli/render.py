r"""The one renderer of the command line: tables, trees, JSON, progress, errors.

Stored data (thread ids, user ids, author names, message text) comes from whoever wrote
to the database, so it is never interpreted: no rich markup (``[/]`` in an id is just
text), and control or escape characters are shown visibly (``\\x1b``), never sent raw
to the operator's terminal. Every string from the database reaches the terminal through
:func:`visible`, inside a :class:`rich.text.Text`, on consoles created with markup off.

JSON goes to stdout as one document per command, ``{"schema": 1, "command": ..., ...}``,
with dates as ISO-8601 UTC (``2026-11-25T13:24:06.326Z``); see docs/cli.md.
"""

from __future__ import annotations

import json
import textwrap
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from chatledger.cli.connection import redact

__all__ = ["JSON_SCHEMA", "Renderer", "Ticker", "counted", "iso", "to_jsonable", "visible"]

#: Version of every command's ``--json`` shape; bumped only on an incompatible change.
JSON_SCHEMA: Final = 1

#: Line width when stdout (or stderr) is not a terminal (a pipe, a file): lines are as long
#: as their content, so an id is never split across lines (``chatledger threads | grep ID``).
PIPE_WIDTH: Final = 100_000

#: Kept as they are in message text (a transcript has lines and indents); escaped elsewhere.
_LAYOUT: Final = frozenset("\n\t")


def visible(value: object, *, multiline: bool = False) -> str:
    r"""Return ``value`` as text in which every control or format character is escaped.

    ``"\x1b[2J"`` becomes ``"\\x1b[2J"``; a right-to-left override becomes ``"\\u202e"``.

    Args:
        value: Anything; ``None`` becomes ``"-"``.
        multiline: Keep newlines and tabs (message text); otherwise escape them too (ids).
    """
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    for char in text:
        if multiline and char in _LAYOUT:
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(char)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
        else:
            out.append(char)
    return "".join(out)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """Return ``n`` with its noun in the right number: ``1 thread``, ``2 threads``, ``0 threads``.

    Args:
        n: How many.
        noun: The singular (``"thread"``, ``"key tombstone"``).
        plural: The plural when it is not the singular plus ``s`` (``"lineages"`` is, ``"data keys"`` is).
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def iso(value: datetime | None) -> str | None:
    """Return ``value`` as ISO-8601 UTC with milliseconds (``2026-11-25T13:24:06.326Z``).

    A naive datetime is taken as UTC (FerretDB and PyMongo without ``tz_aware`` return them).
    """
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def to_jsonable(value: Any) -> Any:
    """Return ``value`` with datetimes as ISO-8601 UTC strings and other non-JSON types as text."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # ObjectId, Decimal128, bytes: their text form


class _Count(ProgressColumn):
    """``done/total`` when the total is known, else just ``done`` (never ``42/?``)."""

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        return Text(f"{done}/{int(task.total)}" if task.total is not None else str(done))


class Ticker:
    """A handle on one progress bar: call it to advance by one; the bar shows a known total.

    Called with any arguments (a thread id, a removal) it advances by one, so it can be
    passed as any ``on_thread``/``on_removal`` callback of the admin functions.
    """

    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar = bar
        self._task = task
        self._label = ""  # set by stage(): the phase the bar shows

    def __call__(self, *_: object) -> None:
        """Advance by one."""
        self.advance(1)

    def advance(self, steps: int = 1) -> None:
        """Advance by ``steps``; a total found too small grows (progress never shows 12/10)."""
        task = self._bar.tasks[self._task]
        done = task.completed + steps
        if task.total is not None and done > task.total:
            self._bar.update(self._task, total=done)
        self._bar.update(self._task, completed=done)

    def to(self, done: int) -> None:
        """Set how much is done (for callbacks that report a running count)."""
        self.advance(done - int(self._bar.tasks[self._task].completed))

    def stage(self, label: str, total: int | None = None) -> None:
        """Start the next phase on the same bar: a new label and total, nothing done yet."""
        self._label = label
        self._bar.reset(self._task, total=total, description=label, completed=0)

    def phase(self, label: str, total: int | None = None) -> Callable[..., None]:
        """Return a one-step callback (``on_thread``) for phase ``label``; its first call starts the phase.

        For a run with phases the command cannot see begin (``verify`` reads the events,
        then walks the threads): each phase's callback moves the bar to its own label.
        """

        def step(*_: object) -> None:
            if self._label != label:
                self.stage(label, total)
            self.advance(1)

        return step

    def counting(self, label: str) -> Callable[[int, int | None], None]:
        """Return an ``on_progress(done, total)`` callback for phase ``label`` (a running count)."""

        def count(done: int, total: int | None) -> None:
            if self._label != label:
                self.stage(label, total)
            elif total is not None and self._bar.tasks[self._task].total != total:
                self._bar.update(self._task, total=total)
            self.to(done)

        return count


class Renderer:
    """Where a command's output goes: results on ``out``, progress and errors on ``err``.

    Args:
        out: Stream for results; stdout by default.
        err: Stream for progress and messages; stderr by default.
        as_json: The command was asked for ``--json``: results are one JSON document.
        width: Fixed width (tests); the terminal's by default.
        tsv: ``--tsv``: tables are printed as tab-separated values, a header line first.
        quiet: ``--quiet``: no informational lines on stderr (warnings and errors stay).
    """

    def __init__(
        self,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        *,
        as_json: bool = False,
        width: int | None = None,
        tsv: bool = False,
        quiet: bool = False,
    ) -> None:
        # markup/emoji/highlight off: nothing in a string we print is ever interpreted.
        plain = {"markup": False, "emoji": False, "highlight": False, "width": width}
        self.out = Console(file=out, **plain)  # type: ignore[arg-type]
        if width is None and not self.out.is_terminal:
            self.out = Console(file=out, **{**plain, "width": PIPE_WIDTH})  # type: ignore[arg-type]
        self.err = Console(file=err, stderr=err is None, **plain)  # type: ignore[arg-type]
        if width is None and not self.err.is_terminal:
            # A log file or a pipe: a message is one line however long (``grep`` finds it whole).
            self.err = Console(file=err, stderr=err is None, **{**plain, "width": PIPE_WIDTH})  # type: ignore[arg-type]
        self.as_json = as_json
        self.tsv = tsv
        self.quiet = quiet

    # ------------------------------------------------------------------ results

    def json(self, command: str, data: Mapping[str, Any]) -> None:
        """Print the one JSON document of ``command`` on stdout."""
        document = {"schema": JSON_SCHEMA, "command": command, **to_jsonable(data)}
        # Written raw, not through rich: scripts parse this, and JSON escapes control characters.
        self.out.file.write(json.dumps(document, ensure_ascii=False) + "\n")
        self.out.file.flush()

    def json_line(self, data: Mapping[str, Any]) -> None:
        """Print one JSON Lines record on stdout (``heads``' anchor format)."""
        self.out.file.write(json.dumps(to_jsonable(data), ensure_ascii=False) + "\n")

    def line(self, *parts: object | tuple[object, str], file: str = "out") -> None:
        """Print one line made of parts: values or ``(value, style)`` pairs, each made visible.

        Newlines inside a value are escaped too (an id must not fake a line of its own);
        pass a :class:`rich.text.Text` built with ``visible(..., multiline=True)`` for
        message text that may span lines.
        """
        text = Text()
        for part in parts:
            if isinstance(part, Text):
                text.append_text(part)
                continue
            value, style = part if isinstance(part, tuple) else (part, "")
            text.append(visible(value), style=style)
        (self.err if file == "err" else self.out).print(text)

    def document(self, value: Any, *, indent: int = 4) -> None:
        """Print a stored JSON value readably (a session snapshot): indented, every string made visible."""
        text = json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)
        self.out.print(Text(visible(textwrap.indent(text, " " * indent), multiline=True)), soft_wrap=True)

    def table(
        self, title: str, columns: Iterable[str], rows: Iterable[Iterable[object]], **opts: Any
    ) -> None:
        """Print a table; ids stay whole (operators paste them): cells fold, never ellipsize.

        With ``--tsv``: a header line, then one line per row, tab-separated, no title.
        """
        if self.tsv:
            self.tsv_row(columns)
            for row in rows:
                self.tsv_row(row)
            return
        numeric = set(opts.pop("numeric", ()))
        table = Table(title=visible(title), show_header=opts.pop("show_header", True))
        for column in columns:
            table.add_column(
                column,
                justify="right" if column in numeric else "left",
                overflow="fold",
                no_wrap=column in numeric,
            )
        for row in rows:
            table.add_row(*(Text(visible(cell)) for cell in row))
        self.out.print(table)

    def tsv_row(self, cells: Iterable[object]) -> None:
        r"""Print one tab-separated line; a tab or newline inside a cell is escaped (``\x09``, ``\x0a``)."""
        # Written raw, not through rich: no width, no wrapping, no styling, whatever stdout is.
        self.out.file.write("\t".join(visible(cell) for cell in cells) + "\n")

    def tree(self, roots: Iterable[Mapping[str, Any]], label: Callable[[Mapping[str, Any]], Text]) -> None:
        """Print nested ``{"branches": [...]}`` nodes as trees, each node's label built by ``label``."""

        def grow(parent: Tree, node: Mapping[str, Any]) -> None:
            for child in node.get("branches", ()):
                grow(parent.add(label(child)), child)

        for root in roots:
            top = Tree(label(root))
            grow(top, root)
            self.out.print(top)

    # ------------------------------------------------------------------ messages

    def note(self, message: str) -> None:
        """Print an informational line on stderr (nothing with ``--quiet``)."""
        if self.quiet:
            return
        self.err.print(Text(visible(redact(message), multiline=True)), soft_wrap=True)

    def warn(self, message: str) -> None:
        """Print a warning on stderr."""
        self.err.print(
            Text.assemble(("warning: ", "yellow"), visible(redact(message), multiline=True)), soft_wrap=True
        )

    def error(self, message: str) -> None:
        """Print an error on stderr (credentials redacted, control characters escaped)."""
        self.err.print(
            Text.assemble(("error: ", "bold red"), visible(redact(message), multiline=True)), soft_wrap=True
        )

    # ------------------------------------------------------------------ progress

    @contextmanager
    def progress(self, label: str, total: int | None = None) -> Iterator[Ticker]:
        """Yield a :class:`Ticker` that advances a progress bar on stderr (drawn only on a terminal).

        With a ``total`` the bar shows ``done/total``; without one, a count and a spinner.
        A command with several phases (plan, then remove) moves the same bar on with
        :meth:`Ticker.stage`.
        """
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _Count(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=not self.err.is_terminal,
        ) as bar:
            yield Ticker(bar, bar.add_task(label, total=total))

    @contextmanager
    def working(self, label: str) -> Iterator[None]:
        """Show a spinner on stderr (on a terminal) while a read of unknown length runs."""
        if not self.err.is_terminal:
            yield
            return
        with self.err.status(Text(label)):
            yield
