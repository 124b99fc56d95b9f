"""``MongoHistoryProvider``: an Agent Framework 1.x ``HistoryProvider`` on the ledger.

The provider is the framework-facing shell; the work is done by its parts: the session's
position and its saves (:mod:`~chatledger.adapters.session_line`), what a run loads
(:mod:`~chatledger.adapters.history_view`), what was read and is remembered
(:mod:`~chatledger.adapters.line_cache`), and compaction (:mod:`~chatledger.adapters.summaries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Unpack

from agent_framework import (
    AgentSession,
    HistoryProvider,
    Message,
    SessionContext,
    SupportsAgentRun,
)

from chatledger.adapters.connection import check_source_id
from chatledger.adapters.history_view import load_history, read_transcript, service_managed
from chatledger.adapters.line_cache import LineCache
from chatledger.adapters.session_line import (
    SessionLine,
    check_options,
    check_session_id,
    check_state,
    state_of,
)
from chatledger.adapters.sources import LedgerOwner, StoreOptions
from chatledger.adapters.summaries import compact_line
from chatledger.ledger import storage_of
from chatledger.models import DEFAULT_SOURCE_ID
from chatledger.telemetry import logger, span

__all__ = ["MongoHistoryProvider"]


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
        load_messages: Whether to load history before each run.
        store_inputs: Whether to store the run's input messages.
        store_context_messages: Whether to store context messages of other providers.
        store_context_from: If set, only store context messages from these source ids.
        store_outputs: Whether to store the agent's response messages.
        max_messages: Load only the newest N messages (fewer if the N-th would split a
            tool exchange); ``None``: all. Storage is unaffected; nothing is dropped.
        resume_by_session_id: A session without a cursor continues the thread its
            session id names (in this scope) instead of starting empty.
        strict: Raise :class:`~chatledger.errors.ConcurrencyError` instead of branching
            when the session's cursor is behind its thread's head.
        **options: The keywords the session store and the checkpoint storage take too
            (:class:`~chatledger.adapters.sources.StoreOptions`), documented here:

            - ``database``: a PyMongo ``AsyncDatabase``, a Motor or mongomock-motor
              database, or a :class:`~chatledger.ledger.Ledger` (then no ledger options);
            - ``client``: a borrowed asynchronous client (with ``database_name``); never closed;
            - ``connection_string``: a MongoDB URI for a client this object creates and
              closes (``MONGODB_URI`` when no source is given);
            - ``database_name``: the database on ``client`` or the connection string
              (``MONGODB_DATABASE_NAME``, then the URI's own, then ``"chatledger"``);
            - ``app_name``: application name shown in the server's logs (``MONGODB_APP_NAME``);
            - ``env_file_path``: a ``.env`` file read for ``MONGODB_*`` settings;
            - ``env_file_encoding``: its encoding;
            - ``tenant_id``, ``user_id``: the tenant and user it is bound to: it sees no
              other tenant's or user's threads;
            - any other: an option of :class:`~chatledger.ledger.Ledger` (``sealer=``
              seals content, ``operation_timeout=`` ...).

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
        load_messages: bool = True,
        store_inputs: bool = True,
        store_context_messages: bool = False,
        store_context_from: set[str] | None = None,
        store_outputs: bool = True,
        max_messages: int | None = None,
        resume_by_session_id: bool = False,
        strict: bool = False,
        **options: Unpack[StoreOptions],
    ) -> None:
        source_id = check_source_id(source_id)
        check_options(max_messages, resume_by_session_id=resume_by_session_id, strict=strict)
        super().__init__(
            source_id,
            load_messages=load_messages,
            store_inputs=store_inputs,
            store_context_messages=store_context_messages,
            store_context_from=store_context_from,
            store_outputs=store_outputs,
        )
        self._open(options)
        self._cache = LineCache(self.binding)
        self._line = SessionLine(self.binding, self._cache, self)
        self.max_messages = max_messages
        self.resume_by_session_id = resume_by_session_id
        self.tenant_id = options.get("tenant_id")
        self.user_id = options.get("user_id")
        self.strict = strict

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
        check_state(self.source_id, state, required=True)
        if service_managed(session, context):
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
        check_state(self.source_id, state, required=True)
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
        check_state(self.source_id, state)
        check_session_id(session_id)
        await self._line.import_seed(session_id, state)
        position = await self._line.position(session_id, state)
        return await load_history(self._cache, position, self.max_messages, source_id=self.source_id)

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
        check_state(self.source_id, state)
        check_session_id(session_id)
        if messages:
            await self._line.save_messages(session_id, messages, state)

    # ------------------------------------------------------------------ compaction

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
        position = await self._line.position(session.session_id, state_of(session, self.source_id))
        return await read_transcript(self.binding, position, compacted=compacted, offset=offset)

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
            InvalidInputError: the session is not an AgentSession, or the installed
                framework release has no compaction strategies.
            ContentErasedError: the ledger seals messages and the subject was erased.
        """
        state = state_of(session, self.source_id)
        position = await self._line.position(session.session_id, state)
        head = await compact_line(self.ledger, self.binding, position, strategy, tokenizer)
        if head is None:
            return False
        self._line.store_position(state, head)
        return True

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
        old = await self._line.clear(state)
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
