"""Reading any thread as an operator: the transcript at a cursor, whatever the thread's scope.

Sealed content the operator cannot open is shown as a placeholder, message by message,
with its role and id still there, instead of failing the whole read: the library
itself refuses such reads (an agent resuming an erased session must fail clearly), but
an operator looking at a restored backup or a thread without its KEK needs to see the
thread's shape. Read through a ledger whose sealer is :func:`placeholder_sealer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from chatledger._maf import Message
from chatledger.admin.catalog import as_ledger
from chatledger.admin.verify import sealed_messages_problem
from chatledger.errors import ContentErasedError, IntegrityError, KeyUnavailableError, UnknownThreadError
from chatledger.ledger.compaction import newest_compaction
from chatledger.models import Cursor, Scope, ThreadRecord

if TYPE_CHECKING:
    from chatledger.sealing.sealer import Reader

__all__ = [
    "ERASED_TEXT",
    "NO_KEY_TEXT",
    "Transcript",
    "Unreadable",
    "get_thread",
    "placeholder_sealer",
    "read_transcript",
]

#: What a message whose key was destroyed (erased content) shows instead of its text.
ERASED_TEXT: Final = "[content erased]"
#: What a sealed message shows when its key cannot be used (no KEK, wrong KEK, other key store).
NO_KEY_TEXT: Final = "[sealed: no key]"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why a transcript's message is a placeholder: ``"erased"`` or ``"no key"``, and the library's reason."""

    why: str
    detail: str


@dataclass(frozen=True, slots=True)
class Transcript:
    """The messages visible at a cursor of one thread."""

    thread: ThreadRecord
    cursor: Cursor
    messages: list[Message]
    #: Index in ``messages`` -> why that message is a placeholder (read with a placeholder sealer).
    unreadable: Mapping[int, Unreadable] = field(default_factory=dict)


# The placeholders of the read in progress, by absolute message index: a context variable,
# so concurrent reads through one sealer never mix their placeholders.
_PLACEHOLDERS: ContextVar[dict[int, Unreadable] | None] = ContextVar("chatledger_placeholders", default=None)


class _NoKek:
    """A provider for reading without a KEK: every unwrap fails, so keys show as ``no key``."""

    kek_id = None

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        raise KeyUnavailableError("no KEK was given: nothing can be sealed")

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        raise KeyUnavailableError(f"key {key_id!r} is live, but no KEK was given to unwrap it")


def placeholder_sealer(key_store: Any, provider: Any = None) -> Any:
    """Return a sealer that opens what it can and turns the rest into placeholders (operators' reads).

    Args:
        key_store: The :class:`~chatledger.storage.keys.KeyStore`: even without a KEK it
            tells erased content (a tombstone) from content whose key is merely unusable.
        provider: The KEK provider; ``None``: nothing is opened, everything sealed is a
            placeholder (``erased`` or ``no key``).

    An altered or moved ciphertext still raises :class:`~chatledger.errors.IntegrityError`:
    tampering is never shown as a placeholder. Without a usable key, a sealed message
    malformed in itself (:func:`~chatledger.sealing.sealed_problem`) raises it too.
    """
    from chatledger.sealing import Sealer

    class PlaceholderSealer(Sealer):
        async def open_messages(self, doc: Mapping[str, Any], reader: Reader | None = None) -> Any:
            try:
                return await super().open_messages(doc, reader)
            except (ContentErasedError, KeyUnavailableError) as e:
                # What is malformed without a key (a ciphertext not even hex, a cl2 layout
                # broken) is tampering, whatever the key's state: never a placeholder.
                messages = doc.get("messages")
                why = sealed_messages_problem(messages) if type(messages) is list else None
                if why is not None:
                    raise IntegrityError(f"event {doc.get('_id')!r}: {why}") from e
                # One event is sealed under one key: every sealed message of it shares the verdict.
                erased = isinstance(e, ContentErasedError)
                verdict = Unreadable("erased" if erased else "no key", str(e))
                return _placeholders(doc, verdict, ERASED_TEXT if erased else NO_KEY_TEXT)

    return PlaceholderSealer(key_store, provider if provider is not None else _NoKek())


def _placeholders(doc: Mapping[str, Any], verdict: Unreadable, text: str) -> list[Any]:
    from chatledger.sealing import is_sealed

    found = _PLACEHOLDERS.get()
    first = doc.get("first_message")
    out: list[Any] = []
    for index, item in enumerate(doc.get("messages") or ()):
        if not isinstance(item, Mapping) or not is_sealed(item):
            out.append(item)
            continue
        stand_in = {"role": item.get("role"), "text": text}
        if "message_id" in item:
            stand_in["message_id"] = item["message_id"]
        out.append(stand_in)
        if found is not None and type(first) is int:
            found[first + index] = verdict
    return out


async def get_thread(target: Any, thread_id: str) -> ThreadRecord | None:
    """Return a thread record of any scope, or ``None``.

    Raises:
        InvalidThreadIdError: ``thread_id`` is malformed.
        IntegrityError: the stored document is malformed.
    """
    return await as_ledger(target).thread(thread_id, None)


async def read_transcript(
    target: Any,
    thread_id: str,
    *,
    at: int | None = None,
    offset: int = 0,
    limit: int | None = None,
    compacted: bool = False,
) -> Transcript:
    """Return the messages of a thread at offset ``at`` (its head by default), of any scope.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        thread_id: The thread.
        at: The event offset to read at; ``None`` for the head.
        offset: Index of the first message to return (negative counts from the end).
        limit: Most messages to return.
        compacted: Read the compacted view: the newest compaction summary visible at
            ``at``, then the messages after the range it replaced (``offset`` and
            ``limit`` then apply to those messages). ``False``: every original message.

    Raises:
        UnknownThreadError: there is no such thread.
        InvalidCursorError: ``at`` is past the thread's head.
        IntegrityError: a stored event is missing or malformed (it is named).
        ContentErasedError: a message is sealed under a destroyed key (a ledger without
            a :func:`placeholder_sealer`).
        KeyUnavailableError: a message is sealed and its key cannot be used (idem).
    """
    ledger = as_ledger(target)
    record = await ledger.thread(thread_id, None)
    if record is None:
        raise UnknownThreadError(f"no thread {thread_id!r}")
    # The operator reads the thread through a binding of the thread's own scope.
    binding = ledger.bind(Scope.of(record))
    position = await binding.head(thread_id) if at is None else await binding.at(thread_id, at)
    # A sealed summary's placeholders are numbered from 0: it leads the view.
    unreadable: dict[int, Unreadable] = {}
    token = _PLACEHOLDERS.set(unreadable)
    try:
        newest = await newest_compaction(binding, position) if compacted else None
    finally:
        _PLACEHOLDERS.reset(token)
    lead = newest.summary if newest is not None else []
    if newest is not None and offset >= 0:
        offset += newest.through_message
    found: dict[int, Unreadable] = {}
    token = _PLACEHOLDERS.set(found)
    try:
        messages = await binding.read(position, offset=offset, limit=limit)
    finally:
        _PLACEHOLDERS.reset(token)
    start = slice(offset, None).indices(position.messages)[0]
    unreadable.update({i - start + len(lead): v for i, v in found.items() if 0 <= i - start < len(messages)})
    return Transcript(record, position.cursor, [*lead, *messages], unreadable)
