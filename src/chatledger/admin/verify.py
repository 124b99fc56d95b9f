"""Recompute hash chains and check thread structure; name the first thing that does not match.

What is checked, per live thread (tombstones of removed threads and their hollowed
events are what a removal leaves on purpose, not problems):

- the thread document: a root has no parent, lineage, depth or base; a branch's
  ``parent`` is the last lineage entry, the lineage lists all ``depth`` ancestors
  (``root_id`` first) or the nearest :data:`~chatledger.models.LINEAGE_WINDOW`,
  ``base_offset``/``base_messages`` are its fork point, and its parent exists, is live
  (a branch of a removed thread is a problem), is itself consistent, and is continued
  by this one (one level deeper, same root, its lineage plus the fork point, see
  :meth:`~chatledger.models.ThreadRecord.continues`). Each thread's verdict is computed
  once and reused by its branches; with bounded lineages the cost is linear in the
  number of threads, whatever their depth;
- the fork: the parent line's event at ``base_offset`` exists and ends at
  ``base_messages`` (so truncating a thread under a branch is caught);
- the thread's own events, streamed in ``seq`` order: each is well formed (integer
  ``seq``/``count``/``first_message``, string hashes, ``_id`` equal to
  ``"<thread_id>#<seq>"``, every message decodable as a reader would decode it, every
  sealed message well formed and well placed, which needs no key), ``seq``
  contiguous from ``base_offset + 1``, ``first_message`` continuing the previous event,
  ``count`` equal to the batch size, ``prev_hash`` equal to the previous hash (the fork
  event's, or the genesis hash), and ``hash`` recomputed from the stored event;
- the thread record (schema 2 events only): the first event's ``thread_digest`` equals
  the digest of the stored thread document (scope, lineage, fork point, metadata), and
  every event's ``tenant_id``/``user_id``/``source_id``/``root_id`` equal the thread's.
  Schema 1 events carry no digest: on threads written before schema 2 these fields are
  not protected.
- compaction summaries (schema 3, rare): ``first_hash``/``last_hash`` are the hashes of
  the original events at ``first_seq``/``last_seq`` of the summary's line (an ancestor's,
  before a fork point), ``through_message`` is where ``last_seq`` ends, and ``previous``
  is the newest summary before it on the line (read from the compaction index for the
  ancestors a run did not walk, so a branch verified alone gets the verdict its whole
  lineage gets), a summary whose range it extends. One ``_id`` read per summary, and one
  indexed read per branch's first summary when its parent was not walked; no cost per
  ordinary event.

A malformed document never stops the run: it is a :class:`Problem` naming it. After
the first broken link of a thread, the rest of its events are still checked for shape,
so every malformed document is named, but not for the chain (one break is enough).

An unkeyed hash chain cannot see a removed tail that nothing references, a deleted
whole thread, or a rewrite whose author recomputed every hash. :func:`head_anchors`
exports head hashes; passing them back as ``anchors`` closes those gaps for
everything that existed when they were taken (see ``docs/admin.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from chatledger import models
from chatledger.admin._checks import require_callback
from chatledger.admin.catalog import (
    CHUNK_THREADS,
    Forest,
    ThreadFilter,
    as_ledger,
    family_chunks,
    list_threads,
)
from chatledger.admin.receipts import CHECKPOINT_DELETED, COMPLETED, REMOVAL, pending_removals
from chatledger.codec import decode_message
from chatledger.errors import ChatLedgerError, IntegrityError, InvalidInputError, UnknownThreadError
from chatledger.hashing import BINARY_FIELD, GENESIS_HASH, HASHED_FIELDS_BY_VERSION, event_hash
from chatledger.ledger import Ledger, storage_of
from chatledger.models import DEFAULT_SOURCE_ID, ThreadRecord
from chatledger.sealing.sealer import is_sealed, sealed_problem
from chatledger.storage import Storage
from chatledger.storage.documents import record_problem
from chatledger.storage.events import WITHDRAWN, EventStore
from chatledger.storage.spool import EventSpool
from chatledger.storage.threads import ThreadStore

__all__ = ["Anchor", "Problem", "VerifyReport", "head_anchors", "verify"]

#: Scope fields every schema-2 event repeats from its thread document (inside its hash).
_SCOPE_FIELDS: Final = ("root_id", "tenant_id", "user_id", "source_id")
_COUNTS: Final = ("seq", "first_message", "count")
_HASHES: Final = ("prev_hash", "hash")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing that does not match in one thread (or one malformed document)."""

    thread_id: str
    reason: str
    #: ``seq`` of the offending event, when the problem is an event.
    seq: int | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Anchor:
    """A thread's head as it was when recorded elsewhere: later, it must still be there."""

    thread_id: str
    head_seq: int
    head_hash: str

    def __post_init__(self) -> None:
        # An anchor is evidence brought from outside: a wrong type must fail here, with
        # its name, not as an AttributeError half-way through a verification.
        if type(self.thread_id) is not str or not self.thread_id:
            raise InvalidInputError(f"an anchor's thread_id must be a non-empty str, not {self.thread_id!r}")
        if type(self.head_seq) is not int or self.head_seq < 1:
            raise InvalidInputError(f"an anchor's head_seq must be an int from 1, not {self.head_seq!r}")
        if type(self.head_hash) is not str or not self.head_hash or len(self.head_hash) > 128:
            raise InvalidInputError("an anchor's head_hash must be a non-empty str (the head event's hash)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Anchor:
        """Return the anchor in a JSON object ``{"thread_id", "head_seq", "head_hash"}``.

        Raises:
            InvalidInputError: ``data`` is not such an object (a field missing or of another type).
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"a head anchor is a JSON object, not {type(data).__name__}")
        missing = [k for k in ("thread_id", "head_seq", "head_hash") if k not in data]
        if missing:
            raise InvalidInputError(f"head anchor {_shown(data)} lacks {', '.join(missing)}")
        try:
            return cls(data["thread_id"], data["head_seq"], data["head_hash"])
        except InvalidInputError as e:
            raise InvalidInputError(f"not a head anchor: {_shown(data)}: {e}") from e

    @classmethod
    def of(cls, value: object) -> Anchor:
        """Return ``value`` if it is an anchor, else the anchor in the mapping ``value``.

        Raises:
            InvalidInputError: ``value`` is neither.
        """
        return value if isinstance(value, Anchor) else cls.from_dict(value)  # type: ignore[arg-type]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:197]}..."


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify` checked and what failed."""

    threads: int = 0
    events: int = 0
    anchors: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form of the report."""
        return {
            "ok": self.ok,
            "threads": self.threads,
            "events": self.events,
            "anchors": self.anchors,
            "problems": [asdict(p) for p in self.problems],
        }


def is_tombstone(doc: Mapping[str, Any]) -> bool:
    """Return whether a thread document is the tombstone a removal leaves (as storage judges it)."""
    return "removed" in doc


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def _str_or_none(value: Any) -> str | None:
    return value if type(value) is str else None


def _record(doc: Mapping[str, Any]) -> ThreadRecord | str:
    """Return the thread record in ``doc``, or why it is not one."""
    try:
        return ThreadRecord.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"thread document is malformed: {where}: {first['msg']}"


def _message_problem(message: Any) -> str | None:
    """Return why a reader could not decode a stored message, or ``None``."""
    if not isinstance(message, Mapping):
        return f"a message is a {type(message).__name__}, not a document"
    for name, value in message.items():
        # Stored messages hold strings; a sealed message's ciphertext field is judged by
        # sealed_problem (binary, and only where its form has one). Nothing else is written.
        if type(value) is not str and not (name == BINARY_FIELD and is_sealed(message)):
            return f"field {name!r} holds a {type(value).__name__}, not text"
    if is_sealed(message):
        # No reader decodes a sealed message (it opens it, or refuses it); a cl4 one has no
        # text to decode. Its shape and place are sealed_problem's (sealed_messages_problem).
        return None
    try:
        decode_message(message)
    # decode_message runs the framework's own parsing on whatever is stored; any
    # exception it raises is an error every read of this event would raise, which is
    # exactly what verify must report (it becomes a Problem, nothing is swallowed).
    except Exception as e:
        return f"a message cannot be decoded ({type(e).__name__}: {e})"
    return None


def shape_problem(event: Mapping[str, Any], thread_id: str) -> str | None:
    """Return why an event document is malformed (types, key, messages), or ``None``.

    Args:
        event: The event document as stored.
        thread_id: The thread whose events are being read.
    """
    for name in _COUNTS:
        value = event.get(name)
        if type(value) is not int or value < 0:
            return f"{name} is {value!r}, not a count"
    for name in _HASHES:
        value = event.get(name)
        if type(value) is not str:
            return f"{name} is {value!r}, not a hash"
    if event.get("v") not in HASHED_FIELDS_BY_VERSION:
        return f"unknown schema version {event.get('v')!r}"
    key = f"{thread_id}#{event['seq']}"
    if event.get("_id") != key:
        return f"_id is {event.get('_id')!r}, not {key!r} (the event was re-keyed)"
    messages = event.get("messages")
    if not isinstance(messages, list):
        return "messages is not a list"
    for index, message in enumerate(messages):
        why = _message_problem(message)
        if why is not None:
            return f"message {index}: {why}"
    return sealed_messages_problem(messages)


def withdrawal_mark_problem(event: Mapping[str, Any]) -> str | None:
    """Return why an event's withdrawal mark (``withdrawn``, if any) is malformed, or ``None``.

    The mark a checkpoint's ``delete`` sets names its receipt: a string. It is outside
    the hash, so nothing else vouches for it.
    """
    if WITHDRAWN not in event or type(event[WITHDRAWN]) is str:
        return None
    return f"its withdrawal mark is {_shown(event[WITHDRAWN])}, not a receipt id"


def sealed_messages_problem(messages: list[Any]) -> str | None:
    """Return why an event's sealed messages are malformed (no key needed), or ``None``.

    Every message of an event whose first message is sealed, and every sealed one, is
    judged with :func:`~chatledger.sealing.sealed_problem` at its place (shape and the
    layout of its form, ``cl4`` or ``cl3``). Whether a ciphertext opens, and matches the
    clear fields, takes the key.
    """
    if not messages:
        return None
    first = messages[0]
    sealed_first = isinstance(first, Mapping) and is_sealed(first)
    for index, message in enumerate(messages):
        if isinstance(message, Mapping) and (is_sealed(message) or (index and sealed_first)):
            why = sealed_problem(message, index, first)
            if why is not None:
                return f"message {index}: {why}"
    return None


def chain_problem(
    event: Mapping[str, Any], seq: int, message: int, prev: str, record: ThreadRecord
) -> str | None:
    """Return why a well-formed event breaks its thread at the expected position, or ``None``.

    Args:
        event: An event that passed :func:`shape_problem`.
        seq: The ``seq`` expected here.
        message: The ``first_message`` expected here.
        prev: The hash the event must chain to.
        record: The thread it belongs to (its scope and digest are checked on schema 2).
    """
    found = event["seq"]
    if found != seq:
        if found > seq:
            return f"event(s) missing: expected seq {seq}, next stored event is seq {found}"
        return f"unexpected event at seq {found!r} where seq {seq} was expected (forged or duplicated)"
    if event["prev_hash"] != prev:
        return (
            "prev_hash does not match the hash of the event before it (events inserted, removed or reordered)"
        )
    if event_hash(event["prev_hash"], event) != event["hash"]:
        return "stored event does not match its hash (its content or fields were changed)"
    if event["count"] != len(event["messages"]):
        return f"count {event['count']} but {len(event['messages'])} messages"
    if event["first_message"] != message:
        return f"first_message {event['first_message']} but the previous event ended at {message}"
    why = compaction_problem(event)
    if why is not None:
        return why
    if event["v"] in (2, 3):
        expected = {
            "root_id": record.root_id,
            "tenant_id": record.tenant_id,
            "user_id": record.user_id,
            "source_id": record.source_id or DEFAULT_SOURCE_ID,
        }
        for name in _SCOPE_FIELDS:
            value = event.get(name)
            if name == "source_id":
                value = value or DEFAULT_SOURCE_ID
            if value != expected[name]:
                return (
                    f"the event's {name} {event.get(name)!r} differs from the thread document's "
                    f"{expected[name]!r} (the thread record or the event was changed)"
                )
        if seq == record.base_offset + 1 and event.get("thread_digest") != record.digest():
            return (
                "thread_digest does not match the thread document (its scope, lineage, fork point "
                "or metadata was changed)"
            )
    return None


def compaction_problem(event: Mapping[str, Any]) -> str | None:
    """Return why an event's compaction summary (schema 3) is malformed, or ``None``.

    Only version 3 hashes ``compaction``: on an older event the field would be an
    unhashed claim that readers would follow, so its mere presence is reported.
    """
    body = event.get("compaction")
    if event["v"] != 3:
        return None if body is None else "a compaction field on an event of a version that does not hash it"
    if not isinstance(body, Mapping):
        return "a version 3 event without its compaction summary"
    ints = ("first_seq", "last_seq", "through_message", "previous")
    if any(type(body.get(name)) is not int for name in ints) or any(
        type(body.get(name)) is not str for name in ("first_hash", "last_hash", "strategy")
    ):
        return "the compaction summary's range is malformed"
    if event["count"] != 0 or not isinstance(body.get("messages"), list):
        return "a compaction summary event must hold its summary in compaction.messages, none in messages"
    why = sealed_messages_problem(body["messages"])  # a sealed summary has a batch's form
    if why is not None:
        return f"the compaction summary's {why}"
    if not 1 == body["first_seq"] <= body["last_seq"] < event["seq"] or body["previous"] >= event["seq"]:
        return "the compaction summary claims a range that is not a prefix before it"
    if body["through_message"] > event["first_message"]:
        return "the compaction summary claims messages after itself"
    return None


@dataclass(frozen=True, slots=True)
class _Verdict:
    """Whether a thread's document (and its ancestry) is consistent, and where it first is not."""

    why: str | None = None
    #: The thread where the problem lies (itself or an ancestor).
    origin: str | None = None


class _Structure:
    """Judges thread documents and their ancestry, one chunk of trees at a time."""

    def __init__(self, threads: ThreadStore, events: EventStore) -> None:
        self.threads = threads
        self.events = events
        self.forest = Forest()
        self.verdicts: dict[str, _Verdict] = {}
        self.records: dict[str, ThreadRecord] = {}
        self.fork_points: dict[tuple[str, int], tuple[str, int] | None] = {}
        self.parsed: dict[str, ThreadRecord | str] = {}

    async def _parsed(self, thread_id: str) -> ThreadRecord | None:
        record = self.parsed.get(thread_id)
        return record if isinstance(record, ThreadRecord) else None

    async def judged(self, thread_id: str) -> ThreadRecord | None:
        """Return the record of a thread judged in this chunk (its ancestors are), or ``None``."""
        return self.records.get(thread_id)

    async def begin(self, forest: Forest) -> None:
        """Start a chunk of trees: the caches below hold only this chunk's threads (bounded memory)."""
        self.forest = forest
        # Each thread's structural verdict, computed once: a branch reuses its parent's
        # instead of re-walking (and re-comparing) the whole lineage, so deep trees cost
        # linear, not quadratic, work per thread.
        self.verdicts = {}
        self.records = {}
        # Fork points are remembered while their owner's events stream past (parents are
        # checked before branches), so a branch costs no extra lookup of its fork event.
        self.fork_points = {}
        self.parsed = {}
        for tid, doc in forest.docs.items():
            if not is_tombstone(doc):
                self.parsed[tid] = _record(doc)
        for record in list(self.parsed.values()):
            if isinstance(record, ThreadRecord) and record.base_offset:
                # Only from this chunk's documents: a fork point above a thread outside it
                # is read by key when its branch is checked (fork_hash).
                owner = await record.holder_along(record.base_offset, self._parsed)
                if owner is not None:
                    self.fork_points[owner, record.base_offset] = None

    def saw(self, thread_id: str, event: Mapping[str, Any]) -> None:
        """Remember a well-formed event if a branch of this chunk forks at it."""
        if (thread_id, event["seq"]) in self.fork_points:
            self.fork_points[thread_id, event["seq"]] = event["hash"], event["first_message"] + event["count"]

    async def _thread_doc(self, thread_id: str) -> dict[str, Any] | None:
        doc = self.forest.docs.get(thread_id)
        if doc is None:
            found = await self.threads.get_raw(thread_id)
            if found is not None:
                self.forest.add(found)
                doc = self.forest.docs[thread_id]
        return doc

    async def _own(self, thread_id: str) -> tuple[_Verdict | None, ThreadRecord | None, str | None]:
        """Return (a final verdict, or the record and parent id still to be judged)."""
        doc = await self._thread_doc(thread_id)
        if doc is None:
            return _Verdict(f"ancestor thread {thread_id!r} is missing", thread_id), None, None
        if is_tombstone(doc):
            return _Verdict(f"branch of a removed thread {thread_id!r}", thread_id), None, None
        record = self.parsed.get(thread_id) or _record(doc)
        if isinstance(record, str):
            return _Verdict(record, thread_id), None, None
        self.records[thread_id] = record
        why = record_problem(record)
        if why is not None:
            return _Verdict(why, thread_id), None, None
        return None, record, record.lineage[-1].thread_id if record.lineage else None

    async def structure(self, thread_id: str) -> _Verdict:
        """Return the verdict on a thread's document and its ancestry (cached per thread)."""
        # Walk up to the nearest judged ancestor (or the root), then judge downwards.
        pending: list[tuple[str, ThreadRecord]] = []
        seen: set[str] = set()
        tid: str | None = thread_id
        verdict = _Verdict()
        while tid is not None:
            if tid in self.verdicts:
                verdict = self.verdicts[tid]
                break
            if tid in seen:
                verdict = _Verdict("the lineage loops back on itself", tid)
                break
            seen.add(tid)
            final, record, parent = await self._own(tid)
            if final is not None:
                # Cached under the thread it is about: a missing or removed ancestor, or a
                # document that contradicts itself, is reported the same way for every branch.
                self.verdicts[tid] = verdict = final
                break
            assert record is not None
            pending.append((tid, record))
            tid = parent
        for tid, record in reversed(pending):
            if verdict.why is None and record.lineage:
                why = record.continues(self.records[record.lineage[-1].thread_id])
                if why is not None:
                    verdict = _Verdict(why, tid)
            self.verdicts[tid] = verdict
        return self.verdicts.get(thread_id, verdict)

    async def fork_hash(self, record: ThreadRecord) -> tuple[str | None, str]:
        """Return (why the fork point is broken or ``None``, the hash the thread chains to)."""
        base = record.base_offset
        if base == 0:
            return None, GENESIS_HASH
        # The structure was judged first: every ancestor up to the root is in ``records``.
        owner = await record.holder_along(base, self.judged)
        if owner is None:
            return f"no ancestor holds the fork event at seq {base}", GENESIS_HASH
        seen = self.fork_points.get((owner, base))
        if seen is None:
            try:
                parent = await self.events.at(owner, base)
            except ChatLedgerError as e:
                return f"the fork event at seq {base} of thread {owner!r} cannot be read: {e}", GENESIS_HASH
            if parent is None:
                return (
                    f"the event at seq {base} of thread {owner!r}, where this branch forked, is missing "
                    "(the parent was truncated or the event deleted)"
                ), GENESIS_HASH
            seen = parent["hash"], parent["first_message"] + parent["count"]
        fork_hash, end = seen
        if end != record.base_messages:
            return (
                f"the fork event at seq {base} of thread {owner!r} ends at message {end}, "
                f"the branch expects {record.base_messages}"
            ), GENESIS_HASH
        return None, fork_hash


class _Summaries:
    """Checks compaction summaries against their line (one chunk of trees at a time)."""

    def __init__(self, structure: _Structure) -> None:
        self.structure = structure
        #: Per thread whose events were walked in this chunk, the seqs of its summaries.
        self.seen: dict[str, list[int]] = {}

    async def inherited(self, record: ThreadRecord) -> int | str:
        """Return the seq of the newest summary a branch's line holds before its fork (0: none).

        An ancestor whose events this run walked (cleanly) answers from :attr:`seen`; any
        other (a verify of the branch alone, or an ancestor whose chain broke) is asked of
        the compaction index, which visits summary events only. So a branch verified
        alone reaches the verdict a verify of its whole lineage reaches: a summary that
        claims to supersede none while its parent holds one before the fork is named.
        The ancestors are asked nearest first, :data:`~chatledger.models.LINEAGE_WINDOW`
        per query, stopping at the first that holds a summary.

        Returns:
            The seq, or why the line's summaries cannot be read (a problem to report).
        """
        unwalked: list[tuple[str, int, int]] = []
        found = 0
        while record.lineage:
            fork = record.lineage[-1]
            parent = self.structure.records.get(fork.thread_id)
            if parent is None:
                # The structure was judged first: every ancestor of a consistent thread is known.
                return f"ancestor {fork.thread_id!r} of the compaction summary's line was not read"
            seen = self.seen.get(fork.thread_id)
            if seen is None:
                unwalked.append((fork.thread_id, parent.base_offset, fork.offset))
            else:
                before = [seq for seq in seen if seq <= fork.offset]
                if before:
                    found = before[-1]
                    break
            record = parent
        # Seqs grow down the line: a summary in a nearer ancestor is newer than any further up.
        for batch in _batches(unwalked, models.LINEAGE_WINDOW):
            try:
                doc = await self.structure.events.newest_compaction(batch)
            except ChatLedgerError as e:
                return f"the summaries its line holds before the fork cannot be read: {e}"
            if doc is not None:
                return int(doc["seq"])
        return found

    async def range_problem(self, record: ThreadRecord, event: Mapping[str, Any], newest: int) -> str | None:
        """Return why a well-formed summary's range claims do not match its line, or ``None``.

        A summary commits to the events at ``first_seq`` and ``last_seq`` of its own line
        (an ancestor's, before the fork point), and names the summary it supersedes. The
        chain alone cannot vouch for those claims: one who forged them and re-hashed the
        chain after would pass it. Summaries are rare: one ``_id`` read each, of at most
        three positions.

        Args:
            record: The summary's thread (judged consistent: its ancestors are known).
            event: The summary event, which passed :func:`chain_problem`.
            newest: The seq of the newest summary before it on its line (0: none).
        """
        body = event["compaction"]
        previous = body["previous"]
        if previous != newest:
            return (
                f"the compaction summary names seq {previous} as the summary it supersedes, but the "
                f"newest summary before it on its line is seq {newest}"
            )
        owners: dict[int, str] = {}
        for pos in sorted({body["first_seq"], body["last_seq"], previous} - {0}):
            owner = await record.holder_along(pos, self.structure.judged)
            if owner is None:
                return f"no thread of the line holds seq {pos}, which the compaction summary names"
            owners[pos] = owner
        try:
            found = await self.structure.events.positions([(t, pos) for pos, t in owners.items()])
        except ChatLedgerError as e:
            return f"the events the compaction summary names cannot be read: {e}"
        for pos, owner in owners.items():
            doc = found.get((owner, pos))
            if doc is None or doc.get("removed"):
                return (
                    f"the event at seq {pos} of thread {owner!r}, named by the compaction summary, is missing"
                )
        for pos, name in (
            (body["first_seq"], "first_hash"),
            (body["last_seq"], "last_hash"),
        ):
            doc = found[owners[pos], pos]
            if "compaction" in doc:
                return f"the compaction summary's range ends on seq {pos}, a summary, not an original event"
            if doc.get("hash") != body[name]:
                return (
                    f"the compaction summary's {name} is not the hash of the event at seq {pos} of its line "
                    f"(thread {owners[pos]!r}): the range was forged or belongs to another line"
                )
        last = found[owners[body["last_seq"]], body["last_seq"]]
        start, count = last.get("first_message"), last.get("count")
        if type(start) is not int or type(count) is not int or start + count != body["through_message"]:
            return (
                f"the compaction summary claims its range ends before message {body['through_message']}, "
                f"but the event at seq {body['last_seq']} ends elsewhere"
            )
        if previous:
            earlier = found[owners[previous], previous].get("compaction")
            reach = earlier.get("last_seq") if isinstance(earlier, Mapping) else None
            if type(reach) is not int:
                return f"the compaction summary supersedes seq {previous}, which is not a summary of its line"
            if reach >= body["last_seq"]:
                return (
                    f"the compaction summary's range (through seq {body['last_seq']}) does not reach past "
                    f"the summary it supersedes (seq {previous}, through seq {reach})"
                )
        return None


class _Verifier:
    """Walks threads' events against their judged documents; checks orphans and anchors."""

    def __init__(self, storage: Storage, spool: EventSpool | None = None) -> None:
        self.threads = storage.threads
        self.events = storage.events
        self.tallies = storage.tallies
        self.receipts = storage.receipts
        #: Every event, read in one ordered pass (a whole-database run); ``None``: read per thread.
        self.spool = spool
        self.report = VerifyReport()
        self.structure = _Structure(self.threads, self.events)
        self.summaries = _Summaries(self.structure)
        #: (thread, seq, hash) of each checkpoint record a deletion receipt withdraws -> the receipt's id.
        self.withdrawals: dict[tuple[str, int, str], str] = {}
        #: Deletion receipt id -> the (thread, seq, hash) it withdraws.
        self.receipted: dict[str, tuple[str, int, str]] = {}

    async def read_withdrawals(self) -> None:
        """Read what every deletion receipt withdraws: once, before any event is read.

        A delete marks its record before it writes its receipt, so each receipt read
        here has its mark in the events read after; events read first (a whole run's
        pass) would miss the mark of a delete that ran meanwhile, its receipt not.
        """
        # One query for the whole run (a query per chunk of trees is a scan of the audit
        # trail each on engines without its index); few fields per receipt. Every
        # (thread, seq, hash) named, not one hash per position: a second receipt naming
        # the same place (forged, or of another ledger) must not hide the first.
        receipts = await self.receipts.of_kind(CHECKPOINT_DELETED, fields=("thread_id", "seq", "hash"))
        for receipt in receipts:
            tid, seq, named = receipt.get("thread_id"), receipt.get("seq"), receipt.get("hash")
            if type(tid) is str and type(seq) is int and type(named) is str:
                self.withdrawals.setdefault((tid, seq, named), _shown(receipt.get("_id")))
                if type(receipt.get("_id")) is str:
                    self.receipted[receipt["_id"]] = (tid, seq, named)

    async def begin(self, forest: Forest) -> None:
        """Start a chunk of trees: only its documents and caches are held (bounded memory)."""
        self.summaries.seen = {}
        await self.structure.begin(forest)
        if self.spool is not None:
            for tid in forest.docs:
                self.spool.mark_seen(tid)

    async def thread(self, doc: dict[str, Any]) -> None:
        tid = str(doc["_id"])
        self.report.threads += 1
        verdict = await self.structure.structure(tid)
        record = self.structure.records.get(tid)
        why = verdict.why
        if why is not None and verdict.origin not in (None, tid):
            why = f"ancestor {verdict.origin!r}: {why}" if not why.startswith(("ancestor", "branch")) else why
        prev = GENESIS_HASH
        if why is None and record is not None:
            why, prev = await self.structure.fork_hash(record)
        if why is not None or record is None:
            self.report.problems.append(Problem(tid, why or "thread document is malformed"))
            return
        await self.walk(record, prev, removing=doc.get("removing") is not None)

    def _problem(self, tid: str, event: Mapping[str, Any], why: str) -> Problem:
        return Problem(
            tid,
            f"event {event.get('_id')!r}: {why}",
            seq=_int_or_none(event.get("seq")),
            event_id=_str_or_none(event.get("event_id")),
        )

    def _withdrawal_problem(self, tid: str, event: Mapping[str, Any]) -> str | None:
        """Return why a checkpoint record's withdrawal mark disagrees with its receipt, or ``None``.

        A load sees a withdrawal only as the mark on the record: a record its receipt
        withdraws but that carries no mark loads again.
        """
        if WITHDRAWN in event:
            why = withdrawal_mark_problem(event)
            named = None if why is not None else self.receipted.get(event[WITHDRAWN])
            if named is not None and named != (tid, event["seq"], event["hash"]):
                # A delete's mark names its own record's receipt. (A mark naming no receipt
                # is what a copy made without the audit trail holds, or a delete running
                # now: not a problem, though a mark set by hand looks the same.)
                why = (
                    f"its withdrawal mark names receipt {_shown(event[WITHDRAWN])}, which withdraws "
                    "another record (the mark was copied by hand)"
                )
            return why
        receipt = self.withdrawals.get((tid, event["seq"], event["hash"]))
        if receipt is not None:
            # The receipt is named: it may be the wrong one (forged, or another ledger's
            # restored with its audit trail), and then deleting again is not the answer.
            return (
                f"checkpoint.deleted receipt {receipt} withdraws this checkpoint record, but the record "
                "carries no withdrawal mark, so the checkpoint loads again (if the receipt is right, "
                "delete the checkpoint again to mark it)"
            )
        return None

    async def _stored(self, thread_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yield every stored document of a thread in ``seq`` order (from the spool if there is one)."""
        if self.spool is not None:
            for doc in self.spool.events(thread_id, after_seq=None):
                yield doc
            return
        async for doc in self.events.stream(thread_id, after_seq=None):
            yield doc

    async def walk(self, record: ThreadRecord, prev: str, *, removing: bool) -> None:
        """Walk a thread's own events: report the first break in the chain and every malformed one."""
        tid = record.id
        seq, message = record.base_offset + 1, record.base_messages
        broken = False
        # This thread's summaries so far: a later summary must name the newest as ``previous``.
        # Appended to at summaries only (rare); parents are walked before their branches.
        own = self.summaries.seen[tid] = []
        async for event in self._stored(tid):
            if event.get("seq") == -1 and "claim" in event:
                # A removal's claim (position -1), not an event: a removal is running or was
                # interrupted (reported with the pending removals), and may hollow what follows.
                removing = True
                continue
            if event.get("removed") is True:
                if not removing:
                    self.report.problems.append(
                        self._problem(tid, event, "hollowed by a removal, but its thread is live")
                    )
                # A running removal hollows events one by one: the chain ends here.
                broken = True
                continue
            self.report.events += 1
            why = shape_problem(event, tid)
            if why is None:
                self.structure.saw(tid, event)
                withdrawal = self._withdrawal_problem(tid, event)
                if withdrawal is not None:
                    self.report.problems.append(self._problem(tid, event, withdrawal))
            if why is None and not broken:
                why = chain_problem(event, seq, message, prev, record)
                if why is None and "compaction" in event:
                    newest = own[-1] if own else await self.summaries.inherited(record)
                    if isinstance(newest, str):
                        why = newest
                    else:
                        why = await self.summaries.range_problem(record, event, newest)
                    own.append(event["seq"])
                if why is None:
                    seq, message, prev = seq + 1, message + event["count"], event["hash"]
                    continue
            if why is not None:
                self.report.problems.append(self._problem(tid, event, why))
                broken = True
        if broken:
            # Summaries after the break were not collected: a branch cannot rely on the list.
            del self.summaries.seen[tid]

    async def _docs(self, thread_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Return the stored document of each thread (``None``: deleted), a chunk per query.

        Live documents come from one query per chunk; only the ids it did not return (a
        deleted thread or a tombstone, both problems or removals) are read one by one.
        """
        live = await self.threads.live_among(thread_ids)
        out: dict[str, dict[str, Any] | None] = {tid: {"_id": tid} for tid in live}
        for tid in thread_ids:
            if tid not in out:
                out[tid] = await self.threads.get_raw(tid)
        return out

    async def orphans(self, thread_ids: Iterable[str] | None) -> None:
        """Report live events whose thread document is gone or a tombstone (all threads if ``None``)."""
        if self.spool is not None:
            # The threads walked were marked on the spool: any other thread with live events
            # has no live document (rare: a deletion, a tombstone over live events).
            # Their events are counted again now: a removal that ran since the spool was
            # read has hollowed them (its tombstone is not a problem then).
            # (Events whose thread id is not even a string are tampering: counted as spooled.)
            unseen = [(tid, entry.live) for tid, entry in self.spool.unseen() if entry.live]
            odd = {str(tid): live for tid, live in unseen if type(tid) is not str}
            for batch in _batches(odd, CHUNK_THREADS):
                await self._orphans(batch, odd)
            for candidates in _batches((tid for tid, _ in unseen if type(tid) is str), CHUNK_THREADS):
                async for counts in self.tallies.live_counts(candidates):
                    for batch in _batches(counts, CHUNK_THREADS):
                        await self._orphans(batch, counts)
            return
        # Thread ids stream in chunks (never all of them at once): memory stays bounded.
        async for counts in self.tallies.live_counts(None if thread_ids is None else list(thread_ids)):
            for batch in _batches(counts, CHUNK_THREADS):
                await self._orphans(batch, counts)

    async def _orphans(self, batch: list[str], counts: Mapping[str, int]) -> None:
        docs = await self._docs(batch)
        for tid in batch:
            doc, events = docs[tid], counts[tid]
            if doc is None:
                self.report.problems.append(
                    Problem(tid, f"{events} events have no thread document (it was deleted)")
                )
            elif is_tombstone(doc):
                self.report.problems.append(
                    Problem(tid, f"{events} events with content belong to a removed thread (a tombstone)")
                )

    async def removed_heads(self) -> dict[str, set[tuple[int, str]]]:
        """Return, per thread id, the heads (seq, hash) that completed removal receipts record."""
        completions = await self.receipts.of_kind(COMPLETED)
        # Receipt ids are strings: a malformed one (a document) names nothing, and is
        # skipped rather than crashing the set.
        done = {r.get("receipt_id") for r in completions if isinstance(r.get("receipt_id"), str)}
        started = [
            r
            for r in await self.receipts.of_kind(REMOVAL)
            if isinstance(r.get("_id"), str) and r["_id"] in done
        ]
        out: dict[str, set[tuple[int, str]]] = {}
        for receipt in (*completions, *started):
            heads = receipt.get("heads")
            for head in heads if isinstance(heads, list) else ():
                if not isinstance(head, Mapping):
                    continue
                seq, digest = head.get("head_seq"), head.get("head_hash")
                if type(seq) is int and type(digest) is str:
                    out.setdefault(str(head.get("thread_id")), set()).add((seq, digest))
        return out

    async def anchors(self, anchors: Iterable[Anchor]) -> None:
        removed: dict[str, set[tuple[int, str]]] | None = None
        for batch in _batches(anchors, CHUNK_THREADS):
            docs = await self._docs(sorted({a.thread_id for a in batch}))
            for anchor in batch:
                removed = await self.anchor(anchor, docs[anchor.thread_id], removed)

    async def anchor(
        self,
        anchor: Anchor,
        doc: Mapping[str, Any] | None,
        removed: dict[str, set[tuple[int, str]]] | None,
    ) -> dict[str, set[tuple[int, str]]] | None:
        """Check one anchor against its thread's stored document; return the removal heads read so far."""
        self.report.anchors += 1
        if doc is None or is_tombstone(doc):
            if removed is None:
                removed = await self.removed_heads()
            heads = removed.get(anchor.thread_id, set())
            if (anchor.head_seq, anchor.head_hash) in heads:
                return removed
            later = sorted(seq for seq, _ in heads if seq > anchor.head_seq)
            why = "anchored thread is gone and no completed removal receipt records its head hash"
            if later:
                why += (
                    f" (a removal recorded a later head, seq {later[-1]}: that receipt cannot vouch "
                    "for this anchor; take anchors again after the thread grows)"
                )
            self.report.problems.append(Problem(anchor.thread_id, why, seq=anchor.head_seq))
            return removed
        try:
            event = await self.events.at(anchor.thread_id, anchor.head_seq)
        except ChatLedgerError:
            event = None
        if event is None or event.get("hash") != anchor.head_hash:
            what = "is missing (the thread was truncated)" if event is None else "has a different hash"
            self.report.problems.append(
                Problem(
                    anchor.thread_id, f"anchored head at seq {anchor.head_seq} {what}", seq=anchor.head_seq
                )
            )
        return removed


async def verify(
    target: Any,
    *,
    thread_id: str | None = None,
    tenant_id: str | None = None,
    anchors: Iterable[Anchor] = (),
    on_thread: Callable[[str], None] | None = None,
    chunk: int | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> VerifyReport:
    """Return the result of checking the hash chains and structure of one thread, a tenant, or all.

    Malformed documents never make it raise: each is a :class:`Problem` naming it.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: Check only this thread (and its fork point in its ancestors).
        tenant_id: Check only this tenant's threads.
        anchors: Head hashes recorded earlier (:func:`head_anchors`), as
            :class:`Anchor` or their JSON objects; each must still be present, or be
            the head a completed removal receipt recorded.
        on_thread: Called after each thread is checked (progress reporting).
        chunk: How many threads to hold at once (whole conversations, about
            :data:`~chatledger.admin.catalog.CHUNK_THREADS` by default); the threads
            stream conversation by conversation, so memory stays bounded.
        on_progress: Called while a whole-database run reads the events (one ordered
            pass, before the threads are walked) with ``(events read, estimated total)``.

    A whole-database run reads every event in one ordered pass into a local temporary
    file (see :mod:`chatledger.storage.spool`), then walks the threads from it: its cost
    grows with the events, not threads x events, on any server. A scoped run reads
    only its threads' events, one query per thread.

    Returns:
        The report: counts, and the first problem of each failing thread.

    Raises:
        InvalidInputError: both ``thread_id`` and ``tenant_id`` were given, one is malformed,
            or an anchor (or another argument) is not of its type: checked before any read.
        UnknownThreadError: ``thread_id`` names neither a live thread nor any events.
        StorageError: the database failed (a problem of the server, not of the data).
    """
    if thread_id is not None and tenant_id is not None:
        raise InvalidInputError("verify one thread or one tenant, not both")
    if isinstance(anchors, (str, bytes, Mapping)):
        raise InvalidInputError("anchors must be a list of Anchor or {thread_id, head_seq, head_hash}")
    try:
        checked = [Anchor.of(a) for a in anchors]
    except TypeError as e:  # not iterable
        raise InvalidInputError(f"anchors must be a list of anchors, not {type(anchors).__name__}") from e
    if chunk is not None and (type(chunk) is not int or chunk < 1):
        raise InvalidInputError(f"chunk must be a positive int or None, not {chunk!r}")
    require_callback(on_thread, "on_thread")
    require_callback(on_progress, "on_progress")
    ledger = as_ledger(target)
    storage = storage_of(ledger)
    scoped = thread_id is not None or tenant_id is not None
    verifier = _Verifier(storage)
    await verifier.read_withdrawals()  # before the events (see read_withdrawals)
    verifier.spool = None if scoped else await storage.tallies.spool(on_progress)
    try:
        return await _verify(ledger, verifier, thread_id, tenant_id, checked, on_thread, chunk)
    finally:
        if verifier.spool is not None:
            verifier.spool.close()


async def _verify(
    ledger: Ledger,
    verifier: _Verifier,
    thread_id: str | None,
    tenant_id: str | None,
    checked: list[Anchor],
    on_thread: Callable[[str], None] | None,
    chunk: int | None,
) -> VerifyReport:
    scope = ThreadFilter(thread_id=thread_id, tenant_id=tenant_id)
    scoped = thread_id is not None or tenant_id is not None
    # Interrupted removals are few: their thread ids are known before the threads stream,
    # so a scoped run can tell whether one of them is in its scope without keeping the scope.
    pending = await pending_removals(ledger)
    named = {str(t) for r in pending if isinstance(r.get("thread_ids"), list) for t in r["thread_ids"]}
    touched: set[str] = set()
    # One chunk of conversations at a time (a tree is never split): only its thread
    # documents and its structure and fork-point caches are held. Parents come before
    # branches within a tree, so each fork event is seen while its owner streams.
    chunks = family_chunks(ledger, scope, chunk=chunk)
    async with aclosing(chunks):
        async for families in chunks:
            forest = Forest()
            for family in families:
                forest.docs.update(family.forest.docs)
                for parent, children in family.forest.children.items():
                    forest.children.setdefault(parent, []).extend(children)
            await verifier.begin(forest)
            for family in families:
                for tid in family.matching:
                    await verifier.thread(forest.docs[tid])
                    if on_thread is not None:
                        on_thread(tid)
            # Ancestors read on the way (outside the scope) count too, as they always did.
            touched.update(t for t in forest.docs if t in named)
            await verifier.begin(Forest())
    if tenant_id is None:
        # A thread document deleted under its events is invisible from the threads side.
        await verifier.orphans([thread_id] if thread_id is not None else None)
    for receipt in pending:
        raw_ids = receipt.get("thread_ids")
        ids = [str(t) for t in raw_ids] if isinstance(raw_ids, list) else []
        if not scoped or any(t in touched for t in ids):
            verifier.report.problems.append(
                Problem(
                    ids[0] if ids else "?",
                    f"removal {receipt.get('_id')} ({receipt.get('action')}, by {receipt.get('by')}) "
                    "was interrupted; apply retention or erase again to finish it",
                )
            )
    if thread_id is not None and not verifier.report.threads and not verifier.report.problems:
        gone = await verifier.threads.get_raw(thread_id)
        if gone is not None and is_tombstone(gone):
            raise UnknownThreadError(f"thread {thread_id!r} was removed")
        raise UnknownThreadError(f"no thread {thread_id!r}")
    await verifier.anchors(checked)
    return verifier.report


async def head_anchors(
    target: Any, thread_filter: ThreadFilter | None = None, *, problems: list[Problem] | None = None
) -> list[Anchor]:
    """Return the current head of every matching live thread, to be stored outside the database.

    Kept somewhere an insider with write access to MongoDB cannot reach (a ticket, a
    WORM bucket, a signed e-mail), these let :func:`verify` detect later truncation,
    rewrites and unrecorded deletions.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_filter: Which threads; ``None`` for all.
        problems: Receives a :class:`Problem` for each damaged thread (its newest event
            is malformed, so it has no head to anchor); the others are anchored all the same.

    Raises:
        IntegrityError: a thread is damaged and no ``problems`` list was given (after
            every thread was read: the message names them).
    """
    if thread_filter is not None and not isinstance(thread_filter, ThreadFilter):
        raise InvalidInputError(f"thread_filter must be a ThreadFilter, not {type(thread_filter).__name__}")
    if problems is not None and not isinstance(problems, list):
        raise InvalidInputError("problems must be a list (it receives the damaged threads)")
    ledger = as_ledger(target)
    anchors: list[Anchor] = []
    damaged: list[Problem] = []
    async for summary in list_threads(ledger, thread_filter):
        act = summary.activity
        if act.damaged is not None:
            damaged.append(Problem(act.thread_id, act.damaged))
        elif act.head_seq > 0:
            anchors.append(Anchor(act.thread_id, act.head_seq, act.head_hash))
    if problems is not None:
        problems.extend(damaged)
    elif damaged:
        named = ", ".join(repr(p.thread_id) for p in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
        raise IntegrityError(
            f"{len(damaged)} thread(s) have no readable head ({named}): pass problems=[] to anchor "
            "the others, and run verify"
        )
    return anchors


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Yield ``items`` in lists of at most ``size``."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
