"""Export and import conversations as JSON Lines, exactly as stored (hashes included).

The file is a header line, then each thread document followed by its own events in
``seq`` order (parents before branches), then an end line with the counts, so a
truncated file is recognised. Values use MongoDB Extended JSON (relaxed), which keeps
dates to the millisecond and ids as they were: an imported thread verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from chatledger.admin.catalog import Forest, ThreadFilter, as_ledger, iter_events, load_forest
from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.hashing import event_hash
from chatledger.ledger import Ledger
from chatledger.models import ThreadRecord, utc_now_ms

__all__ = ["FORMAT", "ExportSummary", "ImportSummary", "export_jsonl", "import_jsonl"]

#: ``format`` of the header line.
FORMAT: Final = "chatledger-export"
_VERSION: Final = 1
_JSON: Final = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)
#: Events inserted per ``insert_many``.
_BATCH: Final = 500


@dataclass(slots=True)
class ExportSummary:
    """What an export wrote."""

    threads: int = 0
    events: int = 0


@dataclass(slots=True)
class ImportSummary:
    """What an import wrote, and what was already there (an import can be re-run)."""

    threads: int = 0
    events: int = 0
    threads_present: int = 0
    events_present: int = 0
    thread_ids: list[str] = field(default_factory=list)


def _line(kind: str, **fields: Any) -> str:
    return json_util.dumps({"type": kind, **fields}, json_options=_JSON, ensure_ascii=False) + "\n"


def _selection(forest: Forest, thread_filter: ThreadFilter) -> list[str]:
    """Return the threads to export: the matches, their ancestors, and a single thread's branches."""
    wanted = {
        t for t, d in forest.docs.items() if all(d.get(k) == v for k, v in _fields(thread_filter).items())
    }
    if thread_filter.thread_id is not None and thread_filter.thread_id in forest.docs:
        wanted.update(forest.descendants(thread_filter.thread_id))
    for tid in list(wanted):
        wanted.update(a for a in forest.ancestors(tid) if a in forest.docs)
    return sorted(wanted, key=lambda t: (forest.docs[t].get("depth") or 0, t))


def _fields(thread_filter: ThreadFilter) -> dict[str, str]:
    out = thread_filter.describe()
    if "thread_id" in out:
        out["_id"] = out.pop("thread_id")
    return out


async def export_jsonl(
    target: Any,
    out: IO[str],
    thread_filter: ThreadFilter | None = None,
    *,
    on_thread: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write the matching threads, with the ancestors they need, to ``out`` as JSON Lines.

    A single thread (``thread_id``) is exported with its ancestors and all its branches.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        out: A text stream.
        thread_filter: Which threads; ``None`` for all.
        on_thread: Called after each thread is written (progress reporting).
    """
    ledger = as_ledger(target)
    thread_filter = thread_filter or ThreadFilter()
    forest = await load_forest(ledger, thread_filter)
    selected = _selection(forest, thread_filter)
    summary = ExportSummary()
    out.write(
        _line(
            "header",
            format=FORMAT,
            version=_VERSION,
            exported_at=utc_now_ms(),
            scope=thread_filter.describe(),
            threads=len(selected),
        )
    )
    for tid in selected:
        out.write(_line("thread", doc=forest.docs[tid]))
        summary.threads += 1
        async for event in iter_events(ledger, tid):
            out.write(_line("event", doc=event))
            summary.events += 1
        if on_thread is not None:
            on_thread(tid)
    out.write(_line("end", threads=summary.threads, events=summary.events))
    return summary


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, text in enumerate(lines, 1):
                if not text.strip():
                    continue
                try:
                    item = json_util.loads(text, json_options=_JSON)
                except (ValueError, TypeError) as e:
                    raise InvalidInputError(f"{path}:{number}: not JSON: {e}") from e
                if not isinstance(item, dict) or "type" not in item:
                    raise InvalidInputError(f"{path}:{number}: not an export record")
                yield number, item
    except OSError as e:
        raise InvalidInputError(f"cannot read {str(path)!r}: {e}") from e


def _check_file(path: Path) -> list[dict[str, Any]]:
    """Check a whole export file before anything is written; return its thread documents.

    Raises:
        InvalidInputError: the file is not a complete export, or an event does not match
            its own hash or does not belong to the thread before it.
    """
    threads: list[dict[str, Any]] = []
    events = 0
    current: str | None = None
    header = end = False
    for number, item in _records(path):
        kind, doc = item["type"], item.get("doc")
        where = f"{path}:{number}"
        if not header:
            if kind != "header" or item.get("format") != FORMAT or item.get("version") != _VERSION:
                raise InvalidInputError(f"{where}: not a {FORMAT} v{_VERSION} file")
            header = True
        elif end:
            raise InvalidInputError(f"{where}: data after the end line")
        elif kind == "thread" and isinstance(doc, dict):
            try:
                current = ThreadRecord.model_validate(doc).id
            except ValueError as e:
                raise InvalidInputError(f"{where}: malformed thread: {e}") from e
            threads.append(doc)
        elif kind == "event" and isinstance(doc, dict):
            if doc.get("thread_id") != current:
                raise InvalidInputError(
                    f"{where}: event of thread {doc.get('thread_id')!r} outside its thread"
                )
            if event_hash(str(doc.get("prev_hash")), doc) != doc.get("hash"):
                raise InvalidInputError(f"{where}: event seq {doc.get('seq')!r} does not match its hash")
            events += 1
        elif kind == "end":
            if (item.get("threads"), item.get("events")) != (len(threads), events):
                raise InvalidInputError(f"{where}: end line counts do not match the file")
            end = True
        else:
            raise InvalidInputError(f"{where}: unexpected {kind!r} record")
    if not end:
        raise InvalidInputError(f"{path}: no end line: the export is incomplete")
    return threads


def _same(a: Mapping[str, Any], b: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    def norm(doc: Mapping[str, Any]) -> str:
        kept = {k: v for k, v in doc.items() if k not in ignore and v is not None}
        return json_util.dumps(kept, json_options=_JSON, sort_keys=True)

    return norm(a) == norm(b)


async def _insert_events(ledger: Ledger, docs: list[dict[str, Any]], summary: ImportSummary) -> None:
    if not docs:
        return
    clashed = await ledger.storage.events.insert_many(docs)
    summary.events += len(docs) - len(clashed)
    # Some events were there already (a re-run): each must be the very same event.
    for index in clashed:
        doc = docs[index]
        found = await ledger.storage.events.at(str(doc["thread_id"]), int(doc["seq"]))
        if found is None or found.get("hash") != doc["hash"]:
            raise IntegrityError(
                f"thread {doc['thread_id']!r} already holds a different event at seq {doc['seq']}"
            )
    summary.events_present += len(clashed)


async def import_jsonl(
    target: Any, path: str | Path, *, on_thread: Callable[[str], None] | None = None
) -> ImportSummary:
    """Restore an export file exactly; re-importing the same file changes nothing.

    The whole file is checked (format, completeness, every event's hash) before the
    first write. A thread already present must be identical except for its legal hold,
    which is never changed by an import.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        path: The JSON Lines file written by :func:`export_jsonl`.
        on_thread: Called after each thread is restored (progress reporting).

    Raises:
        InvalidInputError: the file is not a complete, intact export.
        IntegrityError: the database holds a different thread or event under the same key.
    """
    ledger = as_ledger(target)
    path = Path(path)
    for doc in _check_file(path):
        existing = await ledger.storage.threads.get_raw(str(doc["_id"]))
        if existing is not None and not _same(
            existing, doc, ignore=("legal_hold", "legal_holds", "holds_rev")
        ):
            raise IntegrityError(f"a different thread {doc['_id']!r} already exists; nothing was imported")
    await ledger.ensure_indexes()
    summary = ImportSummary()
    batch: list[dict[str, Any]] = []
    current: str | None = None
    for _, item in _records(path):
        if item["type"] == "event":
            batch.append(item["doc"])
            if len(batch) >= _BATCH:
                await _insert_events(ledger, batch, summary)
                batch = []
            continue
        await _insert_events(ledger, batch, summary)
        batch = []
        if current is not None and on_thread is not None:
            on_thread(current)
        current = None
        if item["type"] == "thread":
            doc = item["doc"]
            current = str(doc["_id"])
            summary.thread_ids.append(current)
            if await ledger.storage.threads.insert_raw(doc):
                summary.threads += 1
            else:
                existing = await ledger.storage.threads.get_raw(current)
                if existing is None or not _same(
                    existing, doc, ignore=("legal_hold", "legal_holds", "holds_rev")
                ):
                    raise IntegrityError(f"a different thread {current!r} already exists")
                summary.threads_present += 1
    ledger.forget(summary.thread_ids)
    return summary
