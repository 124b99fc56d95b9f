"""``MongoHistoryProvider``: an Agent Framework 1.x ``HistoryProvider`` on the ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agent_framework import HistoryProvider, Message

from chatledger.codec import encode_messages
from chatledger.errors import InvalidCursorError, InvalidInputError
from chatledger.ledger import Ledger, PendingAppend, Position, new_thread_id
from chatledger.models import DEFAULT_SOURCE_ID
from chatledger.storage.driver import close_client

__all__ = ["MongoHistoryProvider"]

_PENDING_KEY = "unconfirmed"


class MongoHistoryProvider(HistoryProvider):
    """Keeps an agent session's history in MongoDB; the session itself carries only a cursor.

    The cursor lives in ``session.state[source_id]`` as ``{"thread_id", "offset", "v"}``,
    so ``session.to_dict()`` stays small however long the conversation grows.
    Restoring an older session dict and running the agent again branches the
    conversation from that point; the newer line is kept untouched.

    A session with no saved cursor starts on the thread named by its session id (or a
    fresh random id) at that thread's current head, so re-creating a session with the
    same id continues its conversation instead of overwriting it.

    Args:
        database: A PyMongo ``AsyncDatabase`` (primary), a Motor database, or a
            mongomock-motor database; or an existing :class:`~chatledger.ledger.Ledger`.
        source_id: Key of this provider's state in ``session.state``, and part of the scope
            of its threads: providers with different source ids never share a thread.
        max_messages: Load only the newest N messages into the model context
            (``None``: all). Storage is unaffected; nothing is ever dropped.
        load_messages: Whether to load history before each run.
        store_inputs: Whether to store the run's input messages.
        store_context_messages: Whether to store context messages of other providers.
        store_context_from: If set, only store context messages from these source ids.
        store_outputs: Whether to store the agent's response messages.
        tenant_id: The tenant the provider is bound to: it sees no other tenant's threads.
        user_id: The user the provider is bound to: it sees no other user's threads.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when the session's cursor is behind its thread's head.
        client: A client to close in :meth:`aclose` (e.g. the one ``database`` came from).
        **ledger_options: Passed to :class:`~chatledger.ledger.Ledger`.
    """

    DEFAULT_SOURCE_ID: ClassVar[str] = DEFAULT_SOURCE_ID

    def __init__(
        self,
        database: Any,
        *,
        source_id: str = DEFAULT_SOURCE_ID,
        max_messages: int | None = None,
        load_messages: bool = True,
        store_inputs: bool = True,
        store_context_messages: bool = False,
        store_context_from: set[str] | None = None,
        store_outputs: bool = True,
        tenant_id: str | None = None,
        user_id: str | None = None,
        strict: bool = False,
        client: Any = None,
        **ledger_options: Any,
    ) -> None:
        if max_messages is not None and (type(max_messages) is not int or max_messages < 0):
            raise InvalidInputError("max_messages must be a non-negative int or None")
        super().__init__(
            source_id,
            load_messages=load_messages,
            store_inputs=store_inputs,
            store_context_messages=store_context_messages,
            store_context_from=store_context_from,
            store_outputs=store_outputs,
        )
        self.ledger = Ledger.of(database, **ledger_options)
        # Scope is part of a thread's identity: two providers with different source ids
        # (or tenants, or users) on one session write two separate threads.
        self.binding = self.ledger.bind(tenant_id=tenant_id, user_id=user_id, source_id=source_id)
        self.max_messages = max_messages
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.strict = strict
        self._client = client

    async def _position(self, session_id: str | None, state: Mapping[str, Any] | None) -> Position:
        cursor = {k: v for k, v in (state or {}).items() if k != _PENDING_KEY}
        if "thread_id" in cursor:
            return await self.binding.resolve(cursor)
        if cursor:
            raise InvalidCursorError(
                f"session state for {self.source_id!r} holds no cursor: {sorted(cursor)!r}"
            )
        if session_id:
            return await self.binding.open(session_id)
        return self.binding.empty(new_thread_id())

    async def get_messages(
        self, session_id: str | None, *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Message]:
        """Return the session's history as of its cursor (the newest ``max_messages`` if set).

        Raises:
            InvalidCursorError: the session state holds a malformed, forged or unknown cursor.
            IntegrityError: a stored event is missing or malformed.
        """
        position = await self._position(session_id, state)
        if position.offset == 0 or self.max_messages == 0:
            return []
        if self.max_messages is None:
            return await self.binding.read(position)
        return await self.binding.read(position, offset=-self.max_messages)

    async def save_messages(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        *,
        state: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append the run's messages as one event and move the session's cursor past it.

        Raises:
            InvalidMessageError: a message cannot be stored (nothing is written).
            ConcurrencyError: ``strict`` and the thread moved on since the cursor.
            StorageUnavailableError: the database could not be reached; the session keeps
                what it needs to make a retry safe.
        """
        if not messages:
            return
        stored = encode_messages(messages)  # validates every message before any I/O
        position = await self._position(session_id, state)
        previous = PendingAppend.from_state(state.get(_PENDING_KEY)) if state is not None else None

        def remember(pending: PendingAppend | None) -> None:
            # Kept in the session until the write is confirmed: if its outcome is lost,
            # saving the same batch again reuses the id and cannot duplicate the event.
            if state is None:
                return
            if pending is None:
                state.pop(_PENDING_KEY, None)
            else:
                state[_PENDING_KEY] = pending.to_state()

        result = await self.binding.save(
            position, stored, previous=previous, remember=remember, strict=self.strict
        )
        if state is not None:
            for key in ("thread_id", "offset", "v", "mac"):
                state.pop(key, None)
            state.update(self.binding.state(result.position))

    async def aclose(self) -> None:
        """Close the client passed as ``client`` (if any)."""
        if self._client is not None:
            await close_client(self._client)
            self._client = None
