"""A history provider's session line: where the session stands, and how its saves are appended.

Everything the provider keeps in ``session.state[source_id]`` is read and written here:
the cursor (``thread_id``, ``offset``, ``v``, ``mac``), an append whose outcome is not
known yet, the line a :meth:`~MongoHistoryProvider.clear` left, and the old protocol's
``{"messages": [...]}`` seed, imported once. Only these keys are touched: the framework
(1.26 writes ``_agent_framework_service_history_coverage``) and applications may keep
their own keys in the same dict.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Final, Protocol

from agent_framework import AgentSession, Message

from chatledger.adapters.line_cache import LineCache
from chatledger.adapters.turns import session_turn
from chatledger.codec import encode_messages, stored_digest
from chatledger.errors import ConcurrencyError, InvalidCursorError, InvalidInputError, InvalidMessageError
from chatledger.ledger import MAX_EVENT_BYTES, Binding, PendingAppend, Position, new_thread_id
from chatledger.telemetry import logger, span

__all__ = [
    "CLEARED_FROM_KEY",
    "CURSOR_KEYS",
    "MESSAGES_KEY",
    "PENDING_KEY",
    "LineSettings",
    "SessionLine",
    "check_options",
    "check_session_id",
    "check_state",
    "state_of",
]

#: Session-state key of an append whose outcome is not known yet.
PENDING_KEY: Final = "unconfirmed"
#: Session-state key, after a clear, of the line that was cleared (recorded on the new
#: line's thread when its first event is written, then dropped).
CLEARED_FROM_KEY: Final = "cleared_from"
CURSOR_KEYS: Final = ("thread_id", "offset", "v", "mac")
#: The old protocol's (and ``InMemoryHistoryProvider``'s) state shape: messages themselves.
MESSAGES_KEY: Final = "messages"
#: Attempts of a save without state that another writer keeps beating to the head.
_HEAD_ATTEMPTS: Final = 8
#: Estimated bytes of one event written by an import (half the document limit: the
#: estimate is an upper bound, and the event's own fields need room too).
_PART_BYTES: Final = MAX_EVENT_BYTES // 2


def _parts(encoded: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split encoded messages, in order, into batches that each fit in one event."""
    parts: list[list[dict[str, Any]]] = []
    size = 0
    for doc in encoded:
        # The ledger's own bound: BSON spends at most four bytes per character, plus framing.
        weight = sum(4 * len(value) + 64 for value in doc.values())
        if not parts or size + weight > _PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(doc)
        size += weight
    return parts


def check_state(source_id: str, state: Any, *, required: bool = False) -> None:
    """Refuse a session state that is not a dict (``None`` too, where the framework passes one)."""
    if isinstance(state, dict) or (state is None and not required):
        return
    raise InvalidCursorError(
        f"session.state[{source_id!r}] must be a dict (this provider's cursor), got "
        f"{type(state).__name__}; remove the key to start the session's history afresh"
    )


def check_options(max_messages: object, *, resume_by_session_id: object, strict: object) -> None:
    """Refuse a provider option of the wrong kind (before anything is opened)."""
    if max_messages is not None and (type(max_messages) is not int or max_messages < 0):
        raise InvalidInputError("max_messages must be a non-negative int or None")
    for label, flag in (("resume_by_session_id", resume_by_session_id), ("strict", strict)):
        if type(flag) is not bool:
            raise InvalidInputError(f"{label} must be a bool, got {type(flag).__name__}")


def state_of(session: object, source_id: str) -> dict[str, Any]:
    """Return ``session.state[source_id]`` (created empty if absent).

    Raises:
        InvalidInputError: ``session`` is not an AgentSession.
    """
    if not isinstance(session, AgentSession):
        raise InvalidInputError(f"session must be an AgentSession, got {type(session).__name__}")
    state: dict[str, Any] = session.state.setdefault(source_id, {})
    return state


def check_session_id(session_id: Any) -> None:
    """Refuse a session id that is not a str (it names a thread and is recorded on one)."""
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidInputError(f"session_id must be a str or None, got {type(session_id).__name__}")


def _metadata(session_id: str | None, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return what a thread this save may create records: its session id, the line it replaced."""
    metadata: dict[str, Any] = {}
    if session_id:
        metadata["session_id"] = session_id
    cleared_from = state.get(CLEARED_FROM_KEY) if state is not None else None
    if isinstance(cleared_from, str):
        metadata["cleared_from"] = cleared_from
    return metadata or None


class LineSettings(Protocol):
    """The provider's options a line reads at each call (they are public attributes, so may change)."""

    #: A session without a cursor continues the thread its session id names.
    resume_by_session_id: bool
    #: Raise instead of branching when the cursor is behind its thread's head.
    strict: bool


class SessionLine:
    """Resolves a session's position from its state, and appends its saves there (de-duplicated).

    Args:
        binding: The provider's scoped binding.
        cache: The provider's memory of the lines it read.
        settings: The provider, whose options are read at each call.
    """

    def __init__(self, binding: Binding, cache: LineCache, settings: LineSettings) -> None:
        self.binding = binding
        self.cache = cache
        self.settings = settings
        self.source_id = binding.scope.source_id

    async def position(self, session_id: str | None, state: dict[str, Any] | None) -> Position:
        """Return where the session stands: its cursor, else a fresh line (or, if asked, its named thread)."""
        cursor = {k: state[k] for k in CURSOR_KEYS if state is not None and k in state}
        if "thread_id" in cursor:
            with span("resolve", source_id=self.source_id) as recorder:
                position = await self.binding.resolve(cursor)
                recorder.set(thread_id=position.thread_id, offset=position.offset, messages=position.messages)
                return position
        if cursor:
            raise InvalidCursorError(
                f"session state for {self.source_id!r} holds a cursor without a thread_id: {sorted(cursor)!r}"
            )
        if session_id and (self.settings.resume_by_session_id or state is None):
            # Without a state dict there is nowhere to keep a cursor: the session id is
            # the only name that can find the history again (as the Redis provider keys it).
            with span("resolve", source_id=self.source_id, by_session_id=True) as recorder:
                position = await self.binding.open(session_id)
                recorder.set(thread_id=position.thread_id, offset=position.offset, messages=position.messages)
                return position
        # Like InMemoryHistoryProvider's empty state["messages"]: no cursor, no history.
        # A random thread, so a restored pre-run snapshot can never reach what was
        # written after it was taken.
        return self.binding.empty(new_thread_id())

    def store_position(self, state: dict[str, Any] | None, position: Position) -> None:
        """Write ``position`` into the session's state as its cursor (nothing without a state)."""
        if state is None:
            return
        for key in CURSOR_KEYS:
            state.pop(key, None)
        state.update(self.binding.state(position))

    def turn_key(self, session_id: str | None, state: dict[str, Any] | None) -> Hashable | None:
        """Return what names the session for :func:`session_turn`: its state dict, else its session id."""
        if state is not None:
            return id(state)
        if session_id:
            scope = self.binding.scope
            return ("session_id", self.source_id, scope.tenant_id, scope.user_id, session_id)
        return None

    async def import_seed(self, session_id: str | None, state: dict[str, Any] | None) -> None:
        """Import an old-shape seed (see :meth:`import_messages`), holding the session's turn."""
        if state is not None and MESSAGES_KEY in state:
            async with session_turn(id(state)):
                await self.import_messages(session_id, state)

    async def import_messages(self, session_id: str | None, state: dict[str, Any] | None) -> None:
        """Turn a state seeded with the old ``{"messages": [...]}`` shape into a stored line and a cursor.

        ``MongoChatMessageStore`` accepts that shape, and so does ``InMemoryHistoryProvider``
        (it is its own); the messages become the start of the session's history, once.
        A seed too large for one event is stored as several, in order; the seed stays in
        the state until all are written, so an interrupted import resumes where it stopped.
        """
        if state is None or MESSAGES_KEY not in state:
            return
        seeded = state[MESSAGES_KEY]
        if not isinstance(seeded, list):
            raise InvalidCursorError(
                f"session state for {self.source_id!r}: 'messages' must be a list of messages, "
                f"got {type(seeded).__name__}"
            )
        try:
            restored = [m if isinstance(m, Message) else Message.from_dict(m) for m in seeded]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidMessageError(f"session state's 'messages' holds one that cannot be read: {e}") from e
        if not restored:
            state.pop(MESSAGES_KEY, None)
            return
        encoded = encode_messages(restored)
        position = await self.position(session_id, state)
        if "thread_id" not in state:
            self.store_position(state, position)
        # Against what is stored already (an interrupted import's first events); never
        # between the seed's own parts: a conversation may repeat itself across them.
        new = await self.cache.unseen(position, restored)
        for part in _parts(encoded[len(encoded) - len(new) :]):
            result = await self.binding.save(
                position,
                part,
                previous=None,
                remember=lambda pending: None,
                strict=self.settings.strict,
                metadata=_metadata(session_id, state),
            )
            state.pop(CLEARED_FROM_KEY, None)
            position = result.position
            self.store_position(state, position)
        state.pop(MESSAGES_KEY, None)

    async def save_messages(
        self, session_id: str | None, messages: Sequence[Message], state: dict[str, Any] | None
    ) -> None:
        """Append what is new in ``messages`` at the session's position, holding the session's turn."""
        encoded = encode_messages(messages)  # validates every message before any I/O
        if state is None and not session_id:
            raise InvalidInputError(
                "save_messages() needs the session's state (or at least its session id): without "
                "either, nothing could ever read these messages back"
            )
        async with session_turn(self.turn_key(session_id, state)):
            # Read the session's cursor only now, holding its turn: a run that overlapped
            # this one on the same session may have moved it since this run loaded.
            if state is not None:
                await self.import_messages(session_id, state)
                await self._save(session_id, messages, encoded, state)
                return
            # Without a state the session id is the history's only name, and a branch
            # would be unreachable by it: append at the thread's head, re-reading it when
            # another process got there first (nothing is written by a refused attempt).
            for attempt in range(1, _HEAD_ATTEMPTS + 1):
                try:
                    await self._save(session_id, messages, encoded, None)
                    return
                except ConcurrencyError:
                    if attempt == _HEAD_ATTEMPTS:
                        raise
                    logger.debug("thread of session %s moved on; appending at its new head", session_id)

    async def _settle(
        self, position: Position, previous: PendingAppend, state: dict[str, Any] | None
    ) -> Position | None:
        """Settle an append whose outcome was lost; return the position after it if it had committed."""
        logger.warning(
            "settling an append of unknown outcome (event %s) on thread %s",
            previous.event_id,
            position.thread_id,
        )
        settled = await self.binding.settle(position, previous)
        if settled.cursor == position.cursor:
            return None
        logger.warning(
            "the append of unknown outcome (event %s) had committed; continuing after it on thread %s",
            previous.event_id,
            settled.thread_id,
        )
        if state is not None:
            state.pop(PENDING_KEY, None)
        self.store_position(state, settled)
        return settled

    async def _save(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        encoded: list[dict[str, Any]],
        state: dict[str, Any] | None,
    ) -> None:
        """Append what is new in ``messages`` at the session's position (the caller holds its turn)."""
        position = await self.position(session_id, state)
        if state is not None and "thread_id" not in state:
            # Kept before writing: if the write's outcome is lost, the retry must look for
            # it on this same new thread, not start yet another one.
            self.store_position(state, position)
        previous = PendingAppend.from_state(state.get(PENDING_KEY)) if state is not None else None
        new = await self.cache.unseen(position, messages)
        # What is new is always a suffix of the batch (the rule only drops a prefix).
        stored = encoded[len(encoded) - len(new) :]
        if previous is not None and stored and stored_digest(stored) != previous.digest:
            # A different batch than the one whose outcome was lost: settle that one first
            # and de-duplicate against it, or re-sending it inside a transcript would
            # store it twice. (The same batch again is a plain retry: ``save`` reuses its
            # event id, so it cannot be written twice.)
            settled = await self._settle(position, previous, state)
            if settled is not None:
                position, previous = settled, None
                new = await self.cache.unseen(position, messages)
                stored = encoded[len(encoded) - len(new) :]
        if not new:
            logger.debug(
                "nothing new to store for thread %s (%d messages seen)", position.thread_id, len(messages)
            )
            return

        def remember(pending: PendingAppend | None) -> None:
            # Kept in the session until the write is confirmed: if its outcome is lost,
            # saving the same batch again reuses the id and cannot duplicate the event.
            if state is None:
                return
            if pending is None:
                state.pop(PENDING_KEY, None)
            else:
                state[PENDING_KEY] = pending.to_state()

        with span(
            "append",
            source_id=self.source_id,
            thread_id=position.thread_id,
            messages=len(new),
            skipped=len(messages) - len(new),
        ) as recorder:
            result = await self.binding.save(
                position,
                stored,
                previous=previous,
                remember=remember,
                strict=self.settings.strict or state is None,
                metadata=_metadata(session_id, state),
            )
            recorder.set(
                result_thread_id=result.position.thread_id,
                offset=result.position.offset,
                branched=result.branched,
                replayed=result.replayed,
            )
        if result.branched and not result.replayed:
            logger.info(
                "thread %s had moved on past the session's cursor (offset %d): the new messages went "
                "to branch %s; the other line is kept",
                position.thread_id,
                position.offset,
                result.position.thread_id,
            )
        elif result.replayed:
            logger.warning(
                "event %s had already been committed (its reply was lost); not written again",
                result.event_id,
            )
        self.cache.carry_compaction(position, result.position)
        if state is not None:
            state.pop(CLEARED_FROM_KEY, None)
        self.store_position(state, result.position)

    async def clear(self, state: object) -> object:
        """Put the session on a fresh, empty line; return the thread id it was on (if any).

        Raises:
            InvalidInputError: ``state`` is not the session's state dict.
        """
        if state is None:
            raise InvalidInputError(
                "clear() needs the session's state: provider.clear(session.session_id, "
                f"state=session.state.setdefault({self.source_id!r}, {{}})); an append-only ledger "
                "cannot empty the thread a session id names"
            )
        if not isinstance(state, dict):
            raise InvalidInputError(f"state must be the session's state dict, got {type(state).__name__}")
        # After any save of this session in progress: that save would otherwise write its
        # cursor on the old line over the cleared one when it finishes, undoing the clear.
        async with session_turn(id(state)):
            old = state.get("thread_id")
            for key in (*CURSOR_KEYS, PENDING_KEY, CLEARED_FROM_KEY, MESSAGES_KEY):
                state.pop(key, None)
            # An explicit cursor at the start of a new thread (not merely no cursor): with
            # resume_by_session_id, no cursor would mean the session id's old thread again.
            self.store_position(state, self.binding.empty(new_thread_id()))
            if isinstance(old, str):
                state[CLEARED_FROM_KEY] = old
        return old
