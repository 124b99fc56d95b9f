"""``MongoChatMessageStore``: the seed notebook's message-store protocol on the ledger.

It speaks both dialects of the protocol: the names the seed notebook documents
(``serialize_state`` / ``deserialize_state``) and the real methods of
agent-framework-core 1.0.0b251001 … 1.0.0b260130's ``ChatMessageStoreProtocol``
(``serialize``, classmethod ``deserialize``, ``update_from_state``), so it can be
passed as ``ChatAgent(chat_message_store_factory=...)`` on those versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from chatledger._maf import Message
from chatledger.codec import encode_messages, stored_digest
from chatledger.errors import InvalidCursorError, InvalidInputError
from chatledger.ledger import Ledger, Position, new_thread_id
from chatledger.models import Cursor, validate_thread_id

__all__ = ["MongoChatMessageStore"]

#: Key, in a marker message's ``additional_properties``, of a serialized cursor.
_CURSOR_MARKER = "chatledger_cursor"


def _marker_cursor(messages: Any) -> dict[str, Any] | None:
    """Return the cursor carried by a lone marker message (or its dict form), else ``None``."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or len(messages) != 1:
        return None
    (only,) = messages
    props: Any = (
        only.get("additional_properties")
        if isinstance(only, Mapping)
        else getattr(only, "additional_properties", None)
    )
    if isinstance(props, Mapping) and isinstance(props.get(_CURSOR_MARKER), Mapping):
        return dict(props[_CURSOR_MARKER])
    return None


class MongoChatMessageStore:
    """A conversation (one line of a thread tree) stored as an append-only event ledger.

    The store holds nothing but a cursor: the thread id and the ``seq`` of the last
    event it has seen. Reading replays events up to the cursor; appending writes one
    event after it. Positioning the store at an older cursor (``deserialize_state``)
    and appending creates a branch; the original thread is never changed.

    Args:
        database: A PyMongo ``AsyncDatabase`` (primary), a Motor database, or a
            mongomock-motor database; or an existing :class:`~chatledger.ledger.Ledger`.
        thread_id: The thread to open at its current head. A new random id is used when
            omitted; the thread document is written with the first append.
        tenant_id: Stored on the thread when this store creates it.
        user_id: Stored on the thread when this store creates it.
        metadata: Stored on the thread when this store creates it.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when another writer appended at this store's cursor first.
        **ledger_options: Passed to :class:`~chatledger.ledger.Ledger` (collection names,
            ``operation_timeout``, ``write_attempts``).

    Raises:
        InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
    """

    def __init__(
        self,
        database: Any,
        *,
        thread_id: str | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        strict: bool = False,
        **ledger_options: Any,
    ) -> None:
        self.ledger = database if isinstance(database, Ledger) else Ledger(database, **ledger_options)
        self._open_at_head = thread_id is not None
        self._thread_id = validate_thread_id(thread_id) if thread_id is not None else new_thread_id()
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.metadata = dict(metadata) if metadata else None
        self.strict = strict
        self._position: Position | None = None
        self._lock = asyncio.Lock()
        # The event id of an append whose outcome is unknown (the database failed
        # mid-write). Re-adding the same batch reuses it, so a caller's retry can never
        # duplicate an event that did commit.
        self._unconfirmed: tuple[str, str] | None = None

    @property
    def cursor(self) -> Cursor:
        """The store's cursor (before the first read or write, the thread's start or head)."""
        if self._position is not None:
            return self._position.cursor
        return Cursor(thread_id=self._thread_id, offset=0)

    @property
    def thread_id(self) -> str:
        """The id of the thread the store's cursor is on (changes when an append branches)."""
        return self.cursor.thread_id

    async def _current(self) -> Position:
        if self._position is None:
            cursor = await self.ledger.head(self._thread_id) if self._open_at_head else self.cursor
            self._position = await self.ledger.resolve(cursor)
        return self._position

    async def add_messages(self, messages: Sequence[Message]) -> None:
        """Append the batch as one immutable event after the store's cursor.

        An empty batch writes nothing. If another writer appended at this cursor first,
        the batch goes to a new branch (or, with ``strict``, raises).

        Raises:
            InvalidMessageError: a message cannot be stored (nothing is written).
            BatchTooLargeError: the batch does not fit in one document (nothing is written).
            ConcurrencyError: ``strict`` and the thread moved on.
            StorageUnavailableError: the database could not be reached; calling again
                with the same batch is safe.
        """
        cursor = _marker_cursor(messages)
        if cursor is not None:
            await self.deserialize_state(cursor)
            return
        stored = encode_messages(messages)  # validates every message before any I/O
        if not stored:
            return
        digest = stored_digest(stored)
        async with self._lock:
            at = await self._current()
            if self._unconfirmed is not None and self._unconfirmed[0] == digest:
                event_id = self._unconfirmed[1]
            else:
                event_id = new_thread_id()
            self._unconfirmed = (digest, event_id)
            result = await self.ledger.append_encoded(
                at,
                stored,
                event_id=event_id,
                strict=self.strict,
                tenant_id=self.tenant_id,
                user_id=self.user_id,
                metadata=self.metadata,
            )
            self._unconfirmed = None
            self._position = result.position

    async def list_messages(self, *, offset: int = 0, limit: int | None = None) -> list[Message]:
        """Return the messages as of the store's cursor, like ``all_messages[offset:][:limit]``.

        Args:
            offset: Index of the first message; negative counts from the end.
            limit: Most messages to return; ``None`` for all.

        Returns:
            Agent Framework messages, oldest first. A page costs O(page), not O(thread).

        Raises:
            InvalidInputError: ``offset`` / ``limit`` are not valid.
        """
        return await self.ledger.read(await self._current(), offset=offset, limit=limit)

    async def serialize_state(self, **kwargs: Any) -> dict[str, Any]:
        """Return the store's state: a compact cursor ``{"thread_id", "offset", "v"}``.

        Its size does not grow with the conversation.
        """
        return (await self._current()).cursor.to_state()

    async def deserialize_state(self, serialized_store_state: Any, **kwargs: Any) -> None:
        """Position the store at a serialized cursor.

        ``list_messages`` then shows the history as of that cursor; appending at the
        head continues the thread, appending behind it creates a branch. ``None`` or an
        empty dict leaves the store where it is (a thread that was never saved).

        Raises:
            InvalidCursorError: the state is malformed or points past its thread's head.
            UnknownThreadError: the state names a thread that does not exist.
            InvalidThreadIdError: the thread id is not a plain bounded string.
        """
        if serialized_store_state is None or serialized_store_state == {}:
            return
        if isinstance(serialized_store_state, Mapping) and "thread_id" not in serialized_store_state:
            # The old AgentThread shape: {"messages": [<cursor marker>]}.
            marker = _marker_cursor(serialized_store_state.get("messages") or [])
            if marker is not None:
                serialized_store_state = marker
        elif isinstance(serialized_store_state, Mapping):
            serialized_store_state = {k: v for k, v in serialized_store_state.items() if k != "messages"}
        if not isinstance(serialized_store_state, Mapping):
            raise InvalidCursorError(
                f"serialized store state must be a dict, got {type(serialized_store_state).__name__}"
            )
        position = await self.ledger.resolve(dict(serialized_store_state))  # pyright: ignore[reportUnknownArgumentType]
        async with self._lock:
            self._position = position
            self._thread_id = position.thread_id
            self._unconfirmed = None

    # ------------------------------------------------ agent-framework 1.0.0b251001..b260130

    async def serialize(self, **kwargs: Any) -> dict[str, Any]:
        """Return the cursor in the shape the old ``AgentThread.serialize()`` keeps.

        agent-framework-core 1.0.0b260130 re-parses a store's state into
        ``{"messages": [...]}`` and drops every other key, then replays those messages
        into a fresh store with ``add_messages``. So the cursor also travels as one small
        marker message; :meth:`add_messages` recognises it and repositions the store
        instead of appending. The serialized thread stays compact.
        """
        state = await self.serialize_state(**kwargs)
        marker = Message("system", contents=[], additional_properties={_CURSOR_MARKER: state})
        return {**state, "messages": [marker.to_dict()]}

    async def update_from_state(self, serialized_store_state: Any, **kwargs: Any) -> None:
        """Old-protocol name of :meth:`deserialize_state`."""
        await self.deserialize_state(serialized_store_state, **kwargs)

    @classmethod
    async def deserialize(
        cls, serialized_store_state: Any, *, database: Any = None, **kwargs: Any
    ) -> MongoChatMessageStore:
        """Return a new store positioned at a serialized cursor (old-protocol classmethod).

        Args:
            serialized_store_state: What :meth:`serialize` returned.
            database: The database (or :class:`~chatledger.ledger.Ledger`) to read from.
            **kwargs: Passed to the constructor.

        Raises:
            InvalidInputError: no ``database`` was given.
        """
        if database is None:
            raise InvalidInputError("MongoChatMessageStore.deserialize needs database=...")
        store = cls(database, **kwargs)
        await store.deserialize_state(serialized_store_state)
        return store
