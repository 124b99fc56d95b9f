"""``MongoChatMessageStore``: the seed notebook's message-store protocol on the ledger.

It speaks both dialects of the protocol: the names the seed notebook documents
(``serialize_state`` / ``deserialize_state``) and the real methods of
agent-framework-core 1.0.0b251001 … 1.0.0b260130's ``ChatMessageStoreProtocol``
(``serialize``, classmethod ``deserialize``, ``update_from_state``), so it can be
passed as ``ChatAgent(chat_message_store_factory=...)`` on those versions.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from chatledger._maf import Message
from chatledger.adapters.compat import restores_checkpoints_without_store
from chatledger.codec import encode_messages
from chatledger.errors import InvalidCursorError, InvalidInputError, InvalidMessageError
from chatledger.ledger import (
    STREAM_BATCH_BYTES,
    STREAM_BATCH_MESSAGES,
    Ledger,
    PendingAppend,
    Position,
    check_batch,
    new_thread_id,
)
from chatledger.models import DEFAULT_SOURCE_ID, Cursor, validate_thread_id
from chatledger.storage.metadata import validate_metadata
from chatledger.telemetry import logger, span

__all__ = ["MongoChatMessageStore"]

#: Key, in a marker message's ``additional_properties``, of an authenticated cursor.
_CURSOR_MARKER = "chatledger_cursor"

#: What :meth:`MongoChatMessageStore.serialize` warns on a framework whose ``AgentExecutor``
#: restores a checkpointed thread without the agent's store factory.
LOSSY_RESTORE_WARNING: Final = (
    "agent-framework-core <= 1.0.0b260130: if this thread is checkpointed by a workflow "
    "AgentExecutor, its stock on_checkpoint_restore rebuilds the thread without the agent's "
    "chat_message_store_factory, so the history would be lost after a restore and later turns "
    "would not be stored. Override on_checkpoint_restore to rebuild the thread with "
    "`await self._agent.deserialize_thread(state['agent_thread'])` after calling super() (see the "
    "README); thread.serialize() with agent.deserialize_thread() is not affected."
)


def _marker_value(messages: Any) -> object:
    """Return what a lone message (or its dict form) carries under the marker key, else ``None``.

    Whether it is a real marker is decided by :meth:`Binding.from_marker`, which checks
    its MAC: message content can carry this key too, and is then stored like any message.
    """
    if type(messages) is not list and (
        not isinstance(messages, Sequence) or isinstance(messages, (str, bytes))
    ):
        return None
    if len(messages) != 1:
        return None
    (only,) = messages
    # A Message is no Mapping: tested first, it skips the abstract-class check.
    props: Any = (
        only.get("additional_properties")
        if type(only) is not Message and isinstance(only, Mapping)
        else getattr(only, "additional_properties", None)
    )
    if type(props) is dict:
        return props.get(_CURSOR_MARKER)
    return props.get(_CURSOR_MARKER) if isinstance(props, Mapping) else None


class MongoChatMessageStore:
    """A conversation (one line of a thread tree) stored as an append-only event ledger.

    The store holds nothing but a cursor: the thread id and the ``seq`` of the last
    event it has seen. Reading replays events up to the cursor; appending writes one
    event after it. Positioning the store at an older cursor (``deserialize_state``)
    and appending creates a branch; the original thread is never changed.

    A store is bound to a scope (tenant, user, source id): it can only open, read,
    append to and branch from threads of that scope, whatever cursor it is handed.

    Args:
        database: A PyMongo ``AsyncDatabase`` (primary), a Motor database, or a
            mongomock-motor database; or an existing :class:`~chatledger.ledger.Ledger`.
        thread_id: The thread to open at its current head (in a scoped store, the name
            of the thread: two scopes using the same name get two threads). A new
            random id is used when omitted; the thread is written with the first append.
        tenant_id: The tenant the store is bound to.
        user_id: The user the store is bound to.
        source_id: The source the store is bound to (the history provider's default,
            so a conversation saved with the old protocol resumes with the new one).
        metadata: Stored on the thread when this store creates it.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when another writer appended at this store's cursor first.
        **ledger_options: Passed to :class:`~chatledger.ledger.Ledger` (collection names,
            ``operation_timeout``, ``write_attempts``, ``signing_keys``); refused when
            ``database`` is already a ledger.

    Raises:
        InvalidThreadIdError: ``thread_id`` is not a plain bounded string.
        InvalidInputError: a scope field or a ledger option is not usable.
    """

    def __init__(
        self,
        database: Any,
        *,
        thread_id: str | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        source_id: str = DEFAULT_SOURCE_ID,
        metadata: Mapping[str, Any] | None = None,
        strict: bool = False,
        **ledger_options: Any,
    ) -> None:
        # Checked here, not at the first append: a bad store is refused where it is made.
        metadata = validate_metadata(metadata)
        self.ledger = Ledger.of(database, **ledger_options)
        self.binding = self.ledger.bind(tenant_id=tenant_id, user_id=user_id, source_id=source_id)
        self._name = validate_thread_id(thread_id) if thread_id is not None else None
        self._fresh_id = new_thread_id()
        self.metadata = metadata
        self.strict = strict
        self._position: Position | None = None
        self._lock = asyncio.Lock()
        # An append whose outcome is unknown (the database failed mid-write): re-adding
        # the same batch reuses its event id; a different batch settles it first.
        self._pending: PendingAppend | None = None

    @property
    def cursor(self) -> Cursor:
        """The store's cursor (before the first read or write, the thread's start or head)."""
        if self._position is not None:
            return self._position.cursor
        if self._name is not None:
            return Cursor(thread_id=self.binding.thread_id_for(self._name), offset=0)
        return Cursor(thread_id=self._fresh_id, offset=0)

    @property
    def thread_id(self) -> str:
        """The id of the thread the store's cursor is on (changes when an append branches)."""
        return self.cursor.thread_id

    async def _current(self) -> Position:
        if self._position is None:
            if self._name is not None:
                self._position = await self.binding.open(self._name)
            else:
                self._position = self.binding.empty(self._fresh_id)
        return self._position

    def _remember(self, pending: PendingAppend | None) -> None:
        self._pending = pending

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
        marker = _marker_value(messages)
        if marker is not None:
            position = await self.binding.from_marker(marker)
            if position is not None:
                # The old framework's serialized thread, replayed into a fresh store.
                async with self._lock:
                    self._position, self._pending = position, None
                return
        stored = encode_messages(messages)  # validates every message before any I/O
        if not stored:
            return
        async with self._lock:
            at = self._position if self._position is not None else await self._current()
            with span("append", source_id=self.binding.scope.source_id, thread_id=at.thread_id) as recorder:
                recorder.set(messages=len(stored))
                result = await self.binding.save(
                    at,
                    stored,
                    previous=self._pending,
                    remember=self._remember,
                    strict=self.strict,
                    metadata=self.metadata,
                )
                recorder.set(
                    result_thread_id=result.position.thread_id,
                    offset=result.position.offset,
                    branched=result.branched,
                    replayed=result.replayed,
                )
            self._position = result.position
        if result.branched and not result.replayed:
            logger.info(
                "thread %s had moved on past the store's cursor (offset %d): the batch went to branch %s",
                at.thread_id,
                at.offset,
                result.position.thread_id,
            )
        elif result.replayed:
            logger.warning(
                "event %s had already been committed (its reply was lost); not written again", result.event_id
            )

    async def list_messages(self, *, offset: int = 0, limit: int | None = None) -> list[Message]:
        """Return the messages as of the store's cursor, like ``all_messages[offset:][:limit]``.

        Args:
            offset: Index of the first message; negative counts from the end.
            limit: Most messages to return; ``None`` for all.

        Returns:
            Agent Framework messages, oldest first. A page costs O(page), not O(thread).

        Raises:
            InvalidInputError: ``offset`` / ``limit`` are not valid.
            IntegrityError: a stored event is missing or malformed.
        """
        at = await self._current()
        with span("read", source_id=self.binding.scope.source_id, thread_id=at.thread_id) as recorder:
            messages = await self.binding.read(at, offset=offset, limit=limit)
            recorder.set(messages_read=len(messages))
        return messages

    def stream_messages(
        self,
        *,
        offset: int = 0,
        batch_bytes: int = STREAM_BATCH_BYTES,
        batch_messages: int = STREAM_BATCH_MESSAGES,
    ) -> AsyncIterator[Message]:
        """Return an async iterator over the messages as of the store's cursor, oldest first.

        It yields what ``list_messages(offset=offset)`` returns, in the same order,
        along the same branches, but reads them in batches: memory is bounded by the
        batch (about ``batch_bytes`` of stored messages, at most ``batch_messages``
        messages; an event is read whole), not by the thread, so a thread of any size
        replays. The cursor is taken when iteration starts; messages appended later are
        not seen. Each batch is its own query (no server cursor is held between
        batches): to resume a stream cut short, call again with ``offset`` set to the
        number of messages already handled, on a store at the same cursor.

        Args:
            offset: Index of the first message; negative counts from the end.
            batch_bytes: About how many bytes of stored messages one batch reads.
            batch_messages: The most messages one batch reads.

        Returns:
            An async iterator of Agent Framework messages (``async for m in ...``).

        Raises:
            InvalidInputError: ``offset`` is not an int, or a batch bound is not a
                positive int (raised by this call, before iterating).
            IntegrityError: a stored event is missing or malformed (raised while
                iterating, by the batch that needs it).
        """
        if type(offset) is not int:
            raise InvalidInputError("offset must be an int")
        check_batch(batch_bytes, batch_messages)
        return self._stream(offset, batch_bytes, batch_messages)

    async def _stream(self, offset: int, batch_bytes: int, batch_messages: int) -> AsyncIterator[Message]:
        at = await self._current()
        pages = self.binding.pages(at, offset=offset, batch_bytes=batch_bytes, batch_messages=batch_messages)
        while True:
            with span("read", source_id=self.binding.scope.source_id, thread_id=at.thread_id) as recorder:
                page = await anext(pages, None)
                recorder.set(messages_read=len(page or ()))
            if page is None:
                return
            for message in page:
                yield message
            del page  # not held while the next batch is read

    async def serialize_state(self, **kwargs: Any) -> dict[str, Any]:
        """Return the store's state: a compact cursor ``{"thread_id", "offset", "v"}`` (plus ``"mac"``).

        Its size does not grow with the conversation. On a ledger with signing keys the
        cursor is signed for this store's scope.
        """
        return self.binding.state(await self._current())

    async def deserialize_state(self, serialized_store_state: Any, **kwargs: Any) -> None:
        """Position the store at a serialized cursor.

        ``list_messages`` then shows the history as of that cursor; appending at the
        head continues the thread, appending behind it creates a branch. ``None``, an
        empty dict or the protocol's empty ``{"messages": []}`` leave the store where it
        is. The protocol's ``{"messages": [...]}`` without a cursor is imported: the
        messages become the start of this store's thread.

        Raises:
            InvalidCursorError: the state is malformed, or points past its thread's head.
            UnknownThreadError: the state names no thread of this store's scope.
            InvalidThreadIdError: the thread id is not a plain bounded string.
        """
        state = serialized_store_state
        if state is None or state == {}:
            return
        if not isinstance(state, Mapping):
            raise InvalidCursorError(f"serialized store state must be a dict, got {type(state).__name__}")
        if "thread_id" not in state:
            await self._restore_messages(state.get("messages"))
            return
        with span("resolve", source_id=self.binding.scope.source_id) as recorder:
            position = await self.binding.resolve({k: v for k, v in state.items() if k != "messages"})
            recorder.set(thread_id=position.thread_id, offset=position.offset, messages=position.messages)
        async with self._lock:
            self._position, self._pending = position, None

    async def _restore_messages(self, messages: object) -> None:
        """Handle the protocol's own state shape ``{"messages": [...]}``."""
        if not isinstance(messages, list):
            raise InvalidCursorError("serialized store state holds neither a cursor nor a list of messages")
        if not messages:
            return
        position = await self.binding.from_marker(_marker_value(messages))
        if position is not None:
            async with self._lock:
                self._position, self._pending = position, None
            return
        try:
            restored = [m if isinstance(m, Message) else Message.from_dict(m) for m in messages]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidMessageError(
                f"serialized store state holds a message that cannot be read: {e}"
            ) from e
        await self.add_messages(restored)

    # ------------------------------------------------ agent-framework 1.0.0b251001..b260130

    async def serialize(self, **kwargs: Any) -> dict[str, Any]:
        """Return the cursor in the shape the old ``AgentThread.serialize()`` keeps.

        agent-framework-core 1.0.0b260130 re-parses a store's state into
        ``{"messages": [...]}`` and drops every other key, then replays those messages
        into a fresh store with ``add_messages``. So the cursor also travels as one small
        marker message, authenticated by a MAC that message content cannot forge;
        :meth:`add_messages` recognises it and repositions the store instead of
        appending. The serialized thread stays compact.

        Warns:
            UserWarning: on that framework, whose workflow ``AgentExecutor`` restores a
                checkpointed thread without the agent's store factory (the history would
                be lost after such a restore). Who calls is not looked up (ChatLedger does
                not read the call stack), and the restore itself never reaches ChatLedger,
                so the warning names the fix wherever a thread is serialized there.
        """
        if restores_checkpoints_without_store():
            warnings.warn(LOSSY_RESTORE_WARNING, UserWarning, stacklevel=2)
        position = await self._current()
        state = self.binding.state(position)
        marker = Message(
            "system", contents=[], additional_properties={_CURSOR_MARKER: await self.binding.marker(position)}
        )
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
