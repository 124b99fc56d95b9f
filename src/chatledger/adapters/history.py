"""``MongoHistoryProvider``: an Agent Framework 1.x ``HistoryProvider`` on the ledger."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Final, cast

from agent_framework import (
    AgentSession,
    HistoryProvider,
    Message,
    SecretString,
    SessionContext,
    SupportsAgentRun,
)

from chatledger.adapters.connection import MongoConnection, check_source_id, connect
from chatledger.adapters.dedup import message_fingerprint, stored_tail_length, unseen
from chatledger.adapters.sources import LedgerOwner
from chatledger.adapters.window import window, window_fetch_size
from chatledger.codec import encode_messages, stored_digest
from chatledger.errors import ConcurrencyError, InvalidCursorError, InvalidInputError, InvalidMessageError
from chatledger.ledger import MAX_EVENT_BYTES, Ledger, PendingAppend, Position, new_thread_id, storage_of
from chatledger.ledger.compaction import Compaction, compacted_view, event_at, newest_compaction
from chatledger.ledger.compaction import compact as append_compaction
from chatledger.models import DEFAULT_SOURCE_ID
from chatledger.telemetry import logger, span

__all__ = ["MongoHistoryProvider"]

#: Session-state key of an append whose outcome is not known yet.
_PENDING_KEY: Final = "unconfirmed"
#: Session-state key, after :meth:`MongoHistoryProvider.clear`, of the line that was cleared
#: (recorded on the new line's thread when its first event is written, then dropped).
_CLEARED_FROM_KEY: Final = "cleared_from"
_CURSOR_KEYS: Final = ("thread_id", "offset", "v", "mac")
#: The conversation id agent-framework-core 1.26 gives model calls whose history lives in
#: the local providers (its ``LOCAL_HISTORY_CONVERSATION_ID``; not exported, so restated).
_LOCAL_HISTORY_CONVERSATION_ID: Final = "agent_framework_local_history_persistence"
#: The old protocol's (and ``InMemoryHistoryProvider``'s) state shape: messages themselves.
_MESSAGES_KEY: Final = "messages"

# Saves in progress per session: by the id of its state dict (a dict cannot be weakly
# referenced), or, for a session saved without one, by its scope and session id.
# Runs that share one AgentSession are one conversation: their saves take turns, and
# each reads the session's cursor only once it holds the turn, so every turn lands on
# the session's line in the order the saves commit instead of on a branch.
_TURNS: dict[Hashable, tuple[asyncio.Lock, int]] = {}
#: Attempts of a save without state that another writer keeps beating to the head.
_HEAD_ATTEMPTS: Final = 8


@asynccontextmanager
async def _session_turn(key: Hashable | None) -> AsyncIterator[None]:
    """Hold the turn of the session ``key`` names (see :data:`_TURNS`), until the block ends."""
    if key is None:
        yield
        return
    lock, users = _TURNS.get(key, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    _TURNS[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _TURNS[key]
        if users == 1:
            del _TURNS[key]  # the entry never outlives its users, so an id is never reused stale
        else:
            _TURNS[key] = (lock, users - 1)


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


#: Fingerprints kept per position read (a save de-duplicates against at most its batch size).
_TAIL_KEPT: Final = 256
#: Positions whose tails are kept; a provider serves many sessions.
_TAILS_CACHED: Final = 1024
#: "Not remembered" in the compaction cache (where ``None`` means "no summary").
_UNKNOWN: Final = object()


class MongoHistoryProvider(LedgerOwner, HistoryProvider):
    """Keeps an agent session's history in MongoDB; the session itself carries only a cursor.

    The cursor lives in ``session.state[source_id]`` as ``{"thread_id", "offset", "v"}``
    (plus ``"mac"`` on a signing ledger), so ``session.to_dict()`` stays small however
    long the conversation grows.

    It behaves like the framework's ``InMemoryHistoryProvider`` in every configuration
    the framework supports, with the history in the database instead of the session:

    - a session without a cursor (a new session, or a snapshot taken before the first
      run) starts a fresh, empty history, exactly as an empty ``state["messages"]``
      does; continuing the thread a session id names is an explicit choice
      (``resume_by_session_id=True``);
    - a save stores only the messages not stored before (the framework's
      ``filter_new_messages`` rule), so a re-sent transcript or
      ``store_context_messages=True`` never doubles the history; only a bounded tail is
      read to decide;
    - restoring an older session snapshot and running again continues from that point,
      on a new branch: the newer line is kept untouched (the in-memory provider just
      forgets it);
    - ``max_messages`` loads the newest messages without ever starting inside a tool
      exchange (a result without its call is rejected by chat APIs).

    Construction follows the framework's plug-ins: ``source_id`` first, then keyword
    options; the database comes from ``database`` (a database handle or a
    :class:`~chatledger.ledger.Ledger`), a borrowed ``client`` (never closed here), or a
    connection string / ``MONGODB_URI`` (a client created here, closed by
    :meth:`aclose` and ``async with``).

    Args:
        source_id: Key of this provider's state in ``session.state``, and part of the
            scope of its threads: providers with different source ids never share one.
        database: A PyMongo ``AsyncDatabase``, a Motor or mongomock-motor database, or a
            :class:`~chatledger.ledger.Ledger` (then no ``ledger_options``).
        client: A borrowed asynchronous client (with ``database_name``); never closed.
        connection_string: A MongoDB URI for a client this provider creates and closes
            (``MONGODB_URI`` when no source is given).
        database_name: The database on ``client`` or the connection string
            (``MONGODB_DATABASE_NAME``, then the URI's own, then ``"chatledger"``).
        app_name: Application name shown in the server's logs (``MONGODB_APP_NAME``).
        env_file_path: A ``.env`` file read for ``MONGODB_*`` settings.
        env_file_encoding: Its encoding.
        load_messages: Whether to load history before each run.
        store_inputs: Whether to store the run's input messages.
        store_context_messages: Whether to store context messages of other providers.
        store_context_from: If set, only store context messages from these source ids.
        store_outputs: Whether to store the agent's response messages.
        max_messages: Load only the newest N messages (fewer if the N-th would split a
            tool exchange); ``None``: all. Storage is unaffected; nothing is dropped.
        resume_by_session_id: A session without a cursor continues the thread its
            session id names (in this scope) instead of starting empty.
        tenant_id: The tenant the provider is bound to: it sees no other tenant's threads.
        user_id: The user the provider is bound to: it sees no other user's threads.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when the session's cursor is behind its thread's head.
        **ledger_options: Passed to :class:`~chatledger.ledger.Ledger`.

    Raises:
        InvalidInputError: an argument of the wrong kind (a database as ``source_id``, a
            synchronous PyMongo database, a client where a database belongs ...),
            arguments that exclude each other, or no database at all.
    """

    DEFAULT_SOURCE_ID: ClassVar[str] = DEFAULT_SOURCE_ID

    def __init__(
        self,
        source_id: str = DEFAULT_SOURCE_ID,
        *,
        database: Any = None,
        client: Any = None,
        connection_string: str | SecretString | None = None,
        database_name: str | None = None,
        app_name: str | None = None,
        env_file_path: str | None = None,
        env_file_encoding: str | None = None,
        load_messages: bool = True,
        store_inputs: bool = True,
        store_context_messages: bool = False,
        store_context_from: set[str] | None = None,
        store_outputs: bool = True,
        max_messages: int | None = None,
        resume_by_session_id: bool = False,
        tenant_id: str | None = None,
        user_id: str | None = None,
        strict: bool = False,
        **ledger_options: Any,
    ) -> None:
        source_id = check_source_id(source_id)
        if max_messages is not None and (type(max_messages) is not int or max_messages < 0):
            raise InvalidInputError("max_messages must be a non-negative int or None")
        for label, flag in (("resume_by_session_id", resume_by_session_id), ("strict", strict)):
            if type(flag) is not bool:
                raise InvalidInputError(f"{label} must be a bool, got {type(flag).__name__}")
        super().__init__(
            source_id,
            load_messages=load_messages,
            store_inputs=store_inputs,
            store_context_messages=store_context_messages,
            store_context_from=store_context_from,
            store_outputs=store_outputs,
        )
        self._connection: MongoConnection | None = None
        if isinstance(database, Ledger):
            given = [
                k
                for k, v in {
                    "client": client,
                    "connection_string": connection_string,
                    "database_name": database_name,
                    "app_name": app_name,
                    "env_file_path": env_file_path,
                }.items()
                if v is not None
            ]
            if given:
                raise InvalidInputError(f"a Ledger cannot be combined with {', '.join(given)}")
            self.ledger = Ledger.of(database, **ledger_options)
        else:
            connection = connect(
                database=database,
                client=client,
                connection_string=connection_string,
                database_name=database_name,
                app_name=app_name,
                env_file_path=env_file_path,
                env_file_encoding=env_file_encoding,
            )
            # An AsyncMongoClient connects on first use, so one dropped here (a bad
            # ledger option) holds no socket and needs no close.
            self.ledger = Ledger(connection.database, **ledger_options)
            self._connection = connection
        # Scope is part of a thread's identity: two providers with different source ids
        # (or tenants, or users) on one session write two separate threads.
        self.binding = self.ledger.bind(tenant_id=tenant_id, user_id=user_id, source_id=source_id)
        # Fingerprints of the newest messages get_messages read, by position: a run loads
        # the history and then saves at that same position, so de-duplicating the save
        # needs no second read. Positions are immutable, so an entry never goes stale.
        self._tails: OrderedDict[tuple[str, int], list[str]] = OrderedDict()
        # The newest compaction summary visible at a position. A position names an
        # immutable line (its events and thread documents never change), so the answer
        # never goes stale; this provider's own appends carry it forward, so a turn
        # costs no extra query for it (bounded like the tails).
        self._compactions: OrderedDict[tuple[str, int], Compaction | None] = OrderedDict()
        self.max_messages = max_messages
        self.resume_by_session_id = resume_by_session_id
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.strict = strict

    # ------------------------------------------------------------------ positions

    async def _position(self, session_id: str | None, state: dict[str, Any] | None) -> Position:
        """Return where the session stands: its cursor, else a fresh line (or, if asked, its named thread).

        Only this provider's keys are read: the framework (1.26 writes
        ``_agent_framework_service_history_coverage``) and applications may keep their own
        keys in the same dict, and those are left alone.
        """
        cursor = {k: state[k] for k in _CURSOR_KEYS if state is not None and k in state}
        if "thread_id" in cursor:
            with span("resolve", source_id=self.source_id) as recorder:
                position = await self.binding.resolve(cursor)
                recorder.set(thread_id=position.thread_id, offset=position.offset, messages=position.messages)
                return position
        if cursor:
            raise InvalidCursorError(
                f"session state for {self.source_id!r} holds a cursor without a thread_id: {sorted(cursor)!r}"
            )
        if session_id and (self.resume_by_session_id or state is None):
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

    async def _import_messages(self, session_id: str | None, state: dict[str, Any] | None) -> None:
        """Turn a state seeded with the old ``{"messages": [...]}`` shape into a stored line and a cursor.

        ``MongoChatMessageStore`` accepts that shape, and so does ``InMemoryHistoryProvider``
        (it is its own); the messages become the start of the session's history, once.
        A seed too large for one event is stored as several, in order; the seed stays in
        the state until all are written, so an interrupted import resumes where it stopped.
        """
        if state is None or _MESSAGES_KEY not in state:
            return
        seeded = state[_MESSAGES_KEY]
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
            state.pop(_MESSAGES_KEY, None)
            return
        encoded = encode_messages(restored)
        position = await self._position(session_id, state)
        if "thread_id" not in state:
            self._store_position(state, position)
        # Against what is stored already (an interrupted import's first events); never
        # between the seed's own parts: a conversation may repeat itself across them.
        new = await self._unseen(position, restored)
        for part in _parts(encoded[len(encoded) - len(new) :]):
            result = await self.binding.save(
                position,
                part,
                previous=None,
                remember=lambda pending: None,
                strict=self.strict,
                metadata=self._metadata(session_id, state),
            )
            state.pop(_CLEARED_FROM_KEY, None)
            position = result.position
            self._store_position(state, position)
        state.pop(_MESSAGES_KEY, None)

    def _metadata(self, session_id: str | None, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """Return what a thread this save may create records: its session id, the line it replaced."""
        metadata: dict[str, Any] = {}
        if session_id:
            metadata["session_id"] = session_id
        cleared_from = state.get(_CLEARED_FROM_KEY) if state is not None else None
        if isinstance(cleared_from, str):
            metadata["cleared_from"] = cleared_from
        return metadata or None

    def _remember_tail(self, position: Position, newest: Sequence[Message]) -> None:
        """Keep the fingerprints of the newest messages read at ``position`` (bounded)."""
        kept = newest[-_TAIL_KEPT:]
        self._tails[(position.thread_id, position.offset)] = [message_fingerprint(m) for m in kept]
        self._tails.move_to_end((position.thread_id, position.offset))
        while len(self._tails) > _TAILS_CACHED:
            self._tails.popitem(last=False)

    def _remember_compaction(self, position: Position, compaction: Compaction | None) -> None:
        self._compactions[(position.thread_id, position.offset)] = compaction
        self._compactions.move_to_end((position.thread_id, position.offset))
        while len(self._compactions) > _TAILS_CACHED:
            self._compactions.popitem(last=False)

    async def _newest_compaction(self, position: Position) -> Compaction | None:
        """The newest summary visible at ``position``: remembered, else one indexed query."""
        key = (position.thread_id, position.offset)
        if key in self._compactions:
            self._compactions.move_to_end(key)
            return self._compactions[key]
        found = await newest_compaction(self.binding, position)
        self._remember_compaction(position, found)
        return found

    async def _unseen(self, position: Position, messages: Sequence[Message]) -> list[Message]:
        """Return the messages of a batch not stored at ``position``, reading only the tail needed."""
        need = stored_tail_length(position.messages, len(messages))
        cached = self._tails.get((position.thread_id, position.offset))
        if need and cached is not None and len(cached) >= need:
            tail = cached[len(cached) - need :]
        else:
            read = await self.binding.read(position, offset=-need) if need else []
            tail = [message_fingerprint(m) for m in read]
        return unseen(messages, tail, stored_count=position.messages)

    def _store_position(self, state: dict[str, Any] | None, position: Position) -> None:
        if state is None:
            return
        for key in _CURSOR_KEYS:
            state.pop(key, None)
        state.update(self.binding.state(position))

    def _check_state(self, state: Any, *, required: bool = False) -> None:
        """Refuse a session state that is not a dict (``None`` too, where the framework passes one)."""
        if isinstance(state, dict) or (state is None and not required):
            return
        raise InvalidCursorError(
            f"session.state[{self.source_id!r}] must be a dict (this provider's cursor), got "
            f"{type(state).__name__}; remove the key to start the session's history afresh"
        )

    @staticmethod
    def _check_session_id(session_id: Any) -> None:
        """Refuse a session id that is not a str (it names a thread and is recorded on one)."""
        if session_id is not None and not isinstance(session_id, str):
            raise InvalidInputError(f"session_id must be a str or None, got {type(session_id).__name__}")

    def _turn_key(self, session_id: str | None, state: dict[str, Any] | None) -> Hashable | None:
        """Return what names the session for :func:`_session_turn`: its state dict, else its session id."""
        if state is not None:
            return id(state)
        if session_id:
            return ("session_id", self.source_id, self.tenant_id, self.user_id, session_id)
        return None

    # ------------------------------------------------------------------ HistoryProvider

    async def before_run(
        self,
        *,
        agent: SupportsAgentRun,
        session: AgentSession,
        context: SessionContext,
        state: dict[str, Any],
    ) -> None:
        """Load the session's history into the run, unless the service keeps the conversation.

        A session with a ``service_session_id`` (the Responses API, a hosted agent ...), or
        a run given a ``conversation_id`` option, has its conversation on the service,
        which adds it to every request itself: loading it here too would hand the model
        every earlier turn twice. The framework skips local history for such runs (it
        adds no ``InMemoryHistoryProvider`` to them), so this provider loads nothing for
        them and keeps storing each run's messages, a complete copy of the conversation
        in the ledger.
        """
        self._check_state(state, required=True)
        options = getattr(context, "options", None) or {}
        conversation_id = options.get("conversation_id")
        if conversation_id == _LOCAL_HISTORY_CONVERSATION_ID:
            # Not a service's conversation: 1.26's per-service-call persistence
            # (require_per_service_call_history_persistence) marks calls whose history
            # the providers keep with this id, and loads them before each call.
            conversation_id = None
        if getattr(session, "service_session_id", None) is not None or conversation_id:
            logger.debug(
                "session %s is service-managed: its history is not loaded from the ledger", context.session_id
            )
            return
        await super().before_run(agent=agent, session=session, context=context, state=state)

    async def after_run(
        self,
        *,
        agent: SupportsAgentRun,
        session: AgentSession,
        context: SessionContext,
        state: dict[str, Any],
    ) -> None:
        """Store the run's messages per the flags (the framework's own ``after_run``), state checked first."""
        # The framework's after_run edits the state before it calls save_messages: a
        # corrupted state must fail here, with ChatLedger's error, and nothing written.
        self._check_state(state, required=True)
        await super().after_run(agent=agent, session=session, context=context, state=state)

    async def get_messages(
        self, session_id: str | None, *, state: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Message]:
        """Return the session's history as of its cursor (a tool-safe window of ``max_messages`` if set).

        Args:
            session_id: The session's id (used only with ``resume_by_session_id``).
            state: ``session.state[source_id]``: the cursor.
            **kwargs: Ignored (the framework's extensibility arguments).

        Returns:
            The messages, oldest first.

        Raises:
            InvalidCursorError: the session state holds a malformed, forged or unknown cursor.
            IntegrityError: a stored event is missing or malformed.
        """
        self._check_state(state)
        self._check_session_id(session_id)
        if state is not None and _MESSAGES_KEY in state:
            async with _session_turn(id(state)):
                await self._import_messages(session_id, state)
        position = await self._position(session_id, state)
        with span("read", source_id=self.source_id, thread_id=position.thread_id) as recorder:
            compacted = await self._newest_compaction(position) if position.messages else None
            if (
                compacted is not None
                and self.max_messages is not None
                and position.messages - compacted.through_message >= window_fetch_size(self.max_messages)
            ):
                compacted = None  # the window lies wholly after the summary: the tail read below
            if compacted is not None:
                # The compacted view: the newest summary, then what follows its range.
                after = await self.binding.read(position, offset=compacted.through_message)
                self._remember_tail(position, after)
                view = [*compacted.summary, *after]
                loaded = view if self.max_messages is None else window(view, self.max_messages)
                recorder.set(messages_read=len(view), messages_loaded=len(loaded))
                return loaded
            if position.messages == 0 or self.max_messages == 0:
                recorder.set(messages_read=0, messages_loaded=0)
                return []
            if self.max_messages is None:
                messages = await self.binding.read(position)
                self._remember_tail(position, messages)
                recorder.set(messages_read=len(messages), messages_loaded=len(messages))
                return messages
            fetch = window_fetch_size(self.max_messages)
            newest = await self.binding.read(position, offset=-fetch)
            self._remember_tail(position, newest)
            loaded = window(newest, self.max_messages, complete=fetch >= position.messages)
            recorder.set(messages_read=len(newest), messages_loaded=len(loaded))
            return loaded

    async def save_messages(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        *,
        state: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append the messages not stored before as one event and move the session's cursor past it.

        Which messages are new follows the framework's own rule (``filter_new_messages``):
        a batch that repeats what the session already holds stores only what follows.
        A batch with nothing new writes nothing.

        Args:
            session_id: The session's id (recorded on a thread this call creates).
            messages: The run's messages (context, inputs, outputs, per the flags).
            state: ``session.state[source_id]``: the cursor, updated in place.
            **kwargs: Ignored (the framework's extensibility arguments).

        Raises:
            InvalidMessageError: a message cannot be stored (nothing is written).
            ConcurrencyError: ``strict`` and the thread moved on since the cursor; or, saved
                without ``state``, other writers kept moving the session id's thread on.
            StorageUnavailableError: the database could not be reached; the session keeps
                what it needs to make a retry safe.
            InvalidInputError: neither ``state`` nor ``session_id`` is given (nothing
                could ever read the messages back), or ``state`` is not a dict.
        """
        self._check_state(state)
        self._check_session_id(session_id)
        if not messages:
            return
        encoded = encode_messages(messages)  # validates every message before any I/O
        if state is None and not session_id:
            raise InvalidInputError(
                "save_messages() needs the session's state (or at least its session id): without "
                "either, nothing could ever read these messages back"
            )
        async with _session_turn(self._turn_key(session_id, state)):
            # Read the session's cursor only now, holding its turn: a run that overlapped
            # this one on the same session may have moved it since this run loaded.
            if state is not None:
                await self._import_messages(session_id, state)
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

    async def _save(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        encoded: list[dict[str, Any]],
        state: dict[str, Any] | None,
    ) -> None:
        """Append what is new in ``messages`` at the session's position (the caller holds its turn)."""
        position = await self._position(session_id, state)
        if state is not None and "thread_id" not in state:
            # Kept before writing: if the write's outcome is lost, the retry must look for
            # it on this same new thread, not start yet another one.
            self._store_position(state, position)
        previous = PendingAppend.from_state(state.get(_PENDING_KEY)) if state is not None else None
        new = await self._unseen(position, messages)
        # What is new is always a suffix of the batch (the rule only drops a prefix).
        stored = encoded[len(encoded) - len(new) :]
        if previous is not None and stored and stored_digest(stored) != previous.digest:
            # A different batch than the one whose outcome was lost: settle that one first
            # and de-duplicate against it, or re-sending it inside a transcript would
            # store it twice. (The same batch again is a plain retry: ``save`` reuses its
            # event id, so it cannot be written twice.)
            logger.warning(
                "settling an append of unknown outcome (event %s) on thread %s",
                previous.event_id,
                position.thread_id,
            )
            settled = await self.binding.settle(position, previous)
            if settled.cursor != position.cursor:
                logger.warning(
                    "the append of unknown outcome (event %s) had committed; continuing after it on "
                    "thread %s",
                    previous.event_id,
                    settled.thread_id,
                )
                position, previous = settled, None
                if state is not None:
                    state.pop(_PENDING_KEY, None)
                self._store_position(state, position)
                new = await self._unseen(position, messages)
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
                state.pop(_PENDING_KEY, None)
            else:
                state[_PENDING_KEY] = pending.to_state()

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
                strict=self.strict or state is None,
                metadata=self._metadata(session_id, state),
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
        known = self._compactions.get((position.thread_id, position.offset), _UNKNOWN)
        if known is not _UNKNOWN and result.position.offset == position.offset + 1:
            # The event went right after ``position`` (on its thread, or on a branch forked
            # there), and it is a batch of messages, not a summary: the same newest summary.
            self._remember_compaction(result.position, cast("Compaction | None", known))
        if state is not None:
            state.pop(_CLEARED_FROM_KEY, None)
        self._store_position(state, result.position)

    # ------------------------------------------------------------------ compaction

    def _state_of(self, session: AgentSession) -> dict[str, Any]:
        if not isinstance(session, AgentSession):
            raise InvalidInputError(f"session must be an AgentSession, got {type(session).__name__}")
        state: dict[str, Any] = session.state.setdefault(self.source_id, {})
        return state

    async def transcript(
        self, session: AgentSession, *, compacted: bool = True, offset: int | None = None
    ) -> list[Message]:
        """Return the session's conversation: its compacted view, or every original message.

        Args:
            session: The session whose line is read.
            compacted: ``True`` (the default, what the agent sees): the newest compaction
                summary followed by the messages after the range it replaced. ``False``:
                the full transcript, every original message and no summary.
            offset: Read the line as it stood at this event ``seq`` (a point in time;
                a summary appended later is not applied). ``None``: at the session's cursor.

        Raises:
            InvalidInputError: ``session`` is not an AgentSession.
            InvalidCursorError: ``offset`` lies past the session's line.
        """
        position = await self._position(session.session_id, self._state_of(session))
        if offset is not None:
            if type(offset) is not int or not 0 <= offset <= position.offset:
                raise InvalidCursorError(f"offset must be an int in 0..{position.offset}, not {offset!r}")
            position = await self.binding.at(position.thread_id, offset)
        if not compacted:
            return await self.binding.read(position)
        return await compacted_view(self.binding, position)

    async def compact(self, session: AgentSession, strategy: Any, *, tokenizer: Any = None) -> bool:
        """Run an Agent Framework compaction strategy over the session and store its result as an event.

        The strategy sees the compacted view, as ``CompactionProvider`` hands stored
        history to it. The originals before the first one it keeps are replaced by
        what it put before that one (its summary, and any earlier summary it kept):
        that is appended as a new event committing to the replaced range (first and
        last event and their hashes, the strategy's class name). No original message
        is changed or removed; :meth:`transcript` with ``compacted=False``, ``verify``
        and export still see them all.

        Only a prefix is stored: exclusions after the first kept message (a strategy
        that drops tool results in the middle) are not, and a range that would end
        inside a stored batch (one ``save_messages`` call) ends at the batch before it.

        Args:
            session: The session to compact (its cursor must be at its thread's head).
            strategy: A ``CompactionStrategy`` (for example ``SummarizationStrategy``).
            tokenizer: A ``TokenizerProtocol`` for token-aware strategies (as ``apply_compaction``'s).

        Returns:
            Whether a summary event was written (``False``: nothing to compact).

        Raises:
            ConcurrencyError: another process appended to or compacted the line meanwhile.
            InvalidInputError: the session is not an AgentSession, the ledger seals
                messages (not supported for summaries yet), or the installed framework
                release has no compaction strategies.
        """
        try:
            # Imported here: releases without compaction strategies still load the provider.
            from agent_framework import annotate_message_groups, apply_compaction
        except ImportError as e:
            raise InvalidInputError(
                "compact() needs an agent-framework-core release with compaction strategies "
                "(apply_compaction); this one has none"
            ) from e

        state = self._state_of(session)
        position = await self._position(session.session_id, state)
        if position.messages == 0:
            return False
        previous = await newest_compaction(self.binding, position)
        base = previous.through_message if previous is not None else 0
        shown = len(previous.summary) if previous is not None else 0
        view = [
            *(previous.summary if previous is not None else ()),
            *await self.binding.read(position, offset=base),
        ]
        # The framework names id-less messages by their place in the list it is handed
        # (msg_<i>) and records those names in a summary's provenance; named by their
        # index in the full transcript instead, they mean the same message in every
        # later compaction (and to an auditor).
        for index, message in enumerate(view[shown:], start=base):
            if not message.message_id:
                message.message_id = f"msg_{index}"
        # SummarizationStrategy names its summary summary_<len(list)>; a view is short, so
        # an earlier summary may bear the very name the new one will get: renamed after
        # the event that stored it, the two never merge into one group.
        for index, message in enumerate(view[:shown]):
            message.message_id = f"summary_{previous.seq if previous is not None else 0}_{index}"
        # A stored summary keeps the group annotation it had when it was written; grouped
        # afresh, it cannot collide with the groups of the messages that now follow it.
        annotate_message_groups(view, force_reannotate=True)
        projected = await apply_compaction(list(view), strategy=strategy, tokenizer=tokenizer)
        # The first original message the strategy kept: everything before it in the
        # projection (new summaries, and earlier summaries it chose to keep) is the new
        # summary; every original before it is replaced.
        at_projection = {id(m): i for i, m in enumerate(projected)}
        k = next((i for i in range(shown, len(view)) if id(view[i]) in at_projection), len(view))
        summary = projected[: at_projection[id(view[k])]] if k < len(view) else projected
        through = base + k - shown  # messages [0, through) of the transcript are replaced
        last = await self._batch_ending_by(position, through)
        if last is None or last[2] <= base:
            return False
        first = await event_at(self.binding, position, 1)
        head = await append_compaction(
            self.binding,
            position,
            first_seq=1,
            first_hash=first["hash"],
            last_seq=last[0],
            last_hash=last[1],
            summary=summary,
            strategy=type(strategy).__name__,
        )
        self._store_position(state, head)
        return True

    async def _batch_ending_by(self, position: Position, through: int) -> tuple[int, str, int] | None:
        """Return (seq, hash, end) of the last stored batch that ends at or before message ``through``."""
        if through <= 0:
            return None
        storage = storage_of(self.ledger).events
        for segment in reversed(position.segments()):
            if segment.lo_message >= through:
                continue
            # The batch holding message through-1, and its end.
            docs = await storage.page(segment.thread_id, through - 1, through)
            for doc in docs:
                end = doc["first_message"] + doc["count"]
                if end == through:
                    return doc["seq"], doc["hash"], end
                if doc["first_message"] > 0:
                    return await self._batch_ending_by(position, doc["first_message"])
            return None
        return None

    # ------------------------------------------------------------------ sessions

    async def clear(self, session_id: str | None, *, state: dict[str, Any] | None = None) -> None:
        """Start the session over on a fresh, empty line; nothing stored is deleted.

        The ledger is append-only: the old line stays in the database, reachable by its
        thread id for audit (the new line's thread records it as ``cleared_from``). The
        next run of the session sees no history.

        Args:
            session_id: The session's id.
            state: ``session.state[source_id]``, updated in place (required: the session's
                position lives there).

        Raises:
            InvalidInputError: no ``state`` was given. Without it a session has nothing a
                ledger can move: with ``resume_by_session_id`` the session id names its
                thread for good, and an append-only ledger cannot re-point the name.
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
        async with _session_turn(id(state)):
            old = state.get("thread_id")
            for key in (*_CURSOR_KEYS, _PENDING_KEY, _CLEARED_FROM_KEY, _MESSAGES_KEY):
                state.pop(key, None)
            # An explicit cursor at the start of a new thread (not merely no cursor): with
            # resume_by_session_id, no cursor would mean the session id's old thread again.
            self._store_position(state, self.binding.empty(new_thread_id()))
            if isinstance(old, str):
                state[_CLEARED_FROM_KEY] = old
        logger.info(
            "session %s cleared: thread %s is kept; the session continues on a new line", session_id, old
        )

    async def list_sessions(self) -> list[str]:
        """Return the ids of the sessions with stored history in this provider's scope, sorted.

        A session is listed once it has saved at least one message (its id is recorded
        on the thread it starts). Threads written before session ids were recorded, or
        written through :class:`~chatledger.MongoChatMessageStore`, are not listed.
        """
        with span("list_sessions", source_id=self.source_id) as recorder:
            found = await storage_of(self.ledger).threads.session_ids(self.binding.scope)
            recorder.set(sessions=len(found))
        return sorted(found)
