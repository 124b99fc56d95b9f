"""``MongoHistoryProvider``: an Agent Framework 1.x ``HistoryProvider`` on the ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agent_framework import HistoryProvider, Message

from chatledger.codec import encode_messages, stored_digest
from chatledger.errors import InvalidCursorError, InvalidInputError
from chatledger.ledger import Ledger, new_thread_id
from chatledger.models import Cursor, validate_thread_id
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
        source_id: Key of this provider's state in ``session.state``.
        max_messages: Load only the newest N messages into the model context
            (``None``: all). Storage is unaffected; nothing is ever dropped.
        load_messages: Whether to load history before each run.
        store_inputs: Whether to store the run's input messages.
        store_context_messages: Whether to store context messages of other providers.
        store_context_from: If set, only store context messages from these source ids.
        store_outputs: Whether to store the agent's response messages.
        tenant_id: Stored on threads this provider creates.
        user_id: Stored on threads this provider creates.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when the session's cursor is behind its thread's head.
        client: A client to close in :meth:`aclose` (e.g. the one ``database`` came from).
        **ledger_options: Passed to :class:`~chatledger.ledger.Ledger`.
    """

    DEFAULT_SOURCE_ID: ClassVar[str] = "chatledger"

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
        self.ledger = database if isinstance(database, Ledger) else Ledger(database, **ledger_options)
        self.max_messages = max_messages
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.strict = strict
        self._client = client

    async def _cursor(self, session_id: str | None, state: Mapping[str, Any] | None) -> Cursor:
        if state and "thread_id" in state:
            return Cursor.from_state({k: v for k, v in state.items() if k != _PENDING_KEY})
        if state and set(state) - {_PENDING_KEY}:
            raise InvalidCursorError(f"session state for {self.source_id!r} holds no cursor: {dict(state)!r}")
        thread_id = validate_thread_id(session_id) if session_id else new_thread_id()
        return await self.ledger.head(thread_id)

    async def get_messages(
        self, session_id: str | None, *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Message]:
        """Return the session's history as of its cursor (the newest ``max_messages`` if set).

        Raises:
            InvalidCursorError: the session state holds a malformed or unknown cursor.
        """
        cursor = await self._cursor(session_id, state)
        if cursor.offset == 0:
            return []
        position = await self.ledger.resolve(cursor)
        if self.max_messages is None:
            return await self.ledger.read(position)
        if self.max_messages == 0:
            return []
        return await self.ledger.read(position, offset=-self.max_messages)

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
            StorageUnavailableError: the database could not be reached.
        """
        if not messages:
            return
        cursor = await self._cursor(session_id, state)
        stored = encode_messages(messages)
        digest = stored_digest(stored)
        pending = state.get(_PENDING_KEY) if state is not None else None
        if isinstance(pending, dict) and pending.get("digest") == digest and pending.get("event_id"):
            event_id = str(pending["event_id"])  # pyright: ignore[reportUnknownArgumentType]
        else:
            event_id = new_thread_id()
        if state is not None:
            # Kept in the session until the write is confirmed: if its outcome is lost,
            # saving the same batch again reuses the id and cannot duplicate the event.
            state[_PENDING_KEY] = {"event_id": event_id, "digest": digest}
        result = await self.ledger.append_encoded(
            cursor,
            stored,
            event_id=event_id,
            strict=self.strict,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
        )
        if state is not None:
            state.pop(_PENDING_KEY, None)
            state.update(result.position.cursor.to_state())

    async def aclose(self) -> None:
        """Close the client passed as ``client`` (if any)."""
        if self._client is not None:
            await close_client(self._client)
            self._client = None
