"""Events read in one ordered pass and kept on local disk, thread by thread.

Admin tools that walk every thread (verify, export) used to read each thread's events
with its own query: on a server that scans (FerretDB v1 serves nothing but an exact
``_id`` from an index) that costs threads x events. An :class:`EventSpool` is filled
from one query sorted on ``(thread_id, seq)`` (the unique index serves it), so each
thread's events arrive together and in order; they are written, as BSON, to an
anonymous temporary file, and only their place in it is kept in memory. The tools then
read any thread's events back in whatever order they walk the threads (trees, parents
before branches), at local-disk speed. Memory holds one entry per thread, never events.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, Final

import bson
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128

__all__ = ["EventSpool", "SpooledThread"]

_LENGTH: Final = struct.Struct("<i")


@dataclass(slots=True)
class SpooledThread:
    """Where one thread's events lie in the spool, and what an admin tool asks of them."""

    #: ``(offset, bytes)`` runs of the file holding the thread's documents, in ``seq`` order.
    runs: list[tuple[int, int]] = field(default_factory=list)
    #: Documents that are not hollowed positions or removal claims (``removed`` is not true).
    live: int = 0
    #: Whether a tool met the thread's (live) document while walking the threads.
    seen: bool = False


def _thread_key(value: Any) -> Any:
    """Return a dict key for a stored ``thread_id`` (tampered ones may be unhashable)."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _after(seq: Any, after_seq: int) -> bool:
    """Return whether ``seq`` matches ``{"seq": {"$gt": after_seq}}`` as the server judges it.

    Only numbers compare with a number (BSON brackets types): a ``seq`` stored as a
    string, a boolean or a document never matches.
    """
    if isinstance(seq, bool):
        return False
    if isinstance(seq, (int, float)):
        return seq > after_seq
    if isinstance(seq, Decimal128):
        value = seq.to_decimal()
        return value.is_finite() and value > Decimal(after_seq)
    return False


class EventSpool:
    """Events of many threads, read once in ``(thread_id, seq)`` order, kept on disk by thread.

    Args:
        codec_options: How the collection decodes documents, so what is read back is
            exactly what a query would have returned (aware datetimes, integer widths).
    """

    def __init__(self, codec_options: Any = None) -> None:
        self._codec: CodecOptions[Any] = (
            codec_options
            if isinstance(codec_options, CodecOptions)
            # mongomock has a look-alike class of its own: keep what it decides about dates.
            else CodecOptions(tz_aware=bool(getattr(codec_options, "tz_aware", False)))
        )
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="chatledger-spool-")  # noqa: SIM115 - closed by close()
        self._size = 0
        self._threads: dict[Any, SpooledThread] = {}
        self._last: SpooledThread | None = None
        #: Documents spooled.
        self.documents = 0

    def add(self, doc: dict[str, Any]) -> None:
        """Append one stored event (documents of a thread arrive together, in ``seq`` order)."""
        data = bson.encode(doc, codec_options=self._codec)
        key = _thread_key(doc.get("thread_id"))
        entry = self._threads.get(key)
        if entry is None:
            entry = self._threads[key] = SpooledThread()
        if entry is self._last:
            offset, size = entry.runs[-1]
            entry.runs[-1] = (offset, size + len(data))
        else:
            # A thread met again after others (only if the order was not kept): a new run.
            entry.runs.append((self._size, len(data)))
        self._last = entry
        if doc.get("removed") is not True:
            entry.live += 1
        self._file.seek(self._size)
        self._file.write(data)
        self._size += len(data)
        self.documents += 1

    def thread(self, thread_id: Any) -> SpooledThread | None:
        """Return what the spool holds of a thread, or ``None`` if it has no stored documents."""
        return self._threads.get(_thread_key(thread_id))

    def mark_seen(self, thread_id: str) -> None:
        """Record that a tool met this thread's live document (what is left unseen is orphaned)."""
        entry = self._threads.get(thread_id)
        if entry is not None:
            entry.seen = True

    def unseen(self) -> Iterator[tuple[Any, SpooledThread]]:
        """Yield ``(thread_id, entry)`` of every spooled thread no tool marked seen, in spool order."""
        return ((k, v) for k, v in self._threads.items() if not v.seen)

    def events(self, thread_id: str, *, after_seq: int | None = 0) -> Iterator[dict[str, Any]]:
        """Yield a thread's stored documents in ``seq`` order, as the server would return them.

        Args:
            thread_id: The thread.
            after_seq: Only documents whose ``seq`` is a number above this (as a range
                query matches); ``None``: every document of the thread.
        """
        entry = self._threads.get(thread_id)
        for offset, size in entry.runs if entry is not None else ():
            for doc in self._read(offset, size):
                if after_seq is None or _after(doc.get("seq"), after_seq):
                    yield doc

    def _read(self, offset: int, size: int) -> Iterator[dict[str, Any]]:
        end = offset + size
        while offset < end:
            # Re-seek each time: another thread's read may have moved the file position.
            self._file.seek(offset)
            (length,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
            self._file.seek(offset)
            doc: dict[str, Any] = bson.decode(self._file.read(length), codec_options=self._codec)
            offset += length
            yield doc

    def close(self) -> None:
        """Delete the spool file."""
        self._file.close()

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
