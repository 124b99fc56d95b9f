"""What a history provider loads into a run: the compacted view, windowed to ``max_messages``.

The view is the newest compaction summary followed by the messages after the range it
replaced (or, with no summary, the whole line); ``max_messages`` keeps only its newest
messages without ever starting inside a tool exchange. Only what the window needs is
read, and what is read is remembered for the save that follows the run.
"""

from __future__ import annotations

from typing import Final

from agent_framework import Message

from chatledger.adapters.line_cache import LineCache
from chatledger.adapters.window import window, window_fetch_size
from chatledger.errors import InvalidCursorError
from chatledger.ledger import Binding, Position
from chatledger.ledger.compaction import compacted_view
from chatledger.telemetry import span

__all__ = ["load_history", "read_transcript", "service_managed"]

#: The conversation id agent-framework-core 1.26 gives model calls whose history lives in
#: the local providers (its ``LOCAL_HISTORY_CONVERSATION_ID``; not exported, so restated).
_LOCAL_HISTORY_CONVERSATION_ID: Final = "agent_framework_local_history_persistence"


def service_managed(session: object, context: object) -> bool:
    """Return whether the service keeps this run's conversation (then nothing is loaded for it).

    A session with a ``service_session_id`` (the Responses API, a hosted agent ...), or a
    run given a ``conversation_id`` option, has its conversation on the service, which
    adds it to every request itself.
    """
    options = getattr(context, "options", None) or {}
    conversation_id = options.get("conversation_id")
    if conversation_id == _LOCAL_HISTORY_CONVERSATION_ID:
        # Not a service's conversation: 1.26's per-service-call persistence
        # (require_per_service_call_history_persistence) marks calls whose history
        # the providers keep with this id, and loads them before each call.
        conversation_id = None
    return getattr(session, "service_session_id", None) is not None or bool(conversation_id)


async def read_transcript(
    binding: Binding, position: Position, *, compacted: bool, offset: int | None
) -> list[Message]:
    """Return the line at ``position`` (or as it stood at event ``offset``): compacted, or every original.

    Raises:
        InvalidCursorError: ``offset`` lies past the line.
    """
    if offset is not None:
        if type(offset) is not int or not 0 <= offset <= position.offset:
            raise InvalidCursorError(f"offset must be an int in 0..{position.offset}, not {offset!r}")
        position = await binding.at(position.thread_id, offset)
    if not compacted:
        return await binding.read(position)
    return await compacted_view(binding, position)


async def load_history(
    cache: LineCache, position: Position, max_messages: int | None, *, source_id: str
) -> list[Message]:
    """Return the messages a run at ``position`` sees, oldest first."""
    binding = cache.binding
    with span("read", source_id=source_id, thread_id=position.thread_id) as recorder:
        compacted = await cache.newest_compaction(position) if position.messages else None
        if (
            compacted is not None
            and max_messages is not None
            and position.messages - compacted.through_message >= window_fetch_size(max_messages)
        ):
            compacted = None  # the window lies wholly after the summary: the tail read below
        if compacted is not None:
            # The compacted view: the newest summary, then what follows its range.
            after = await binding.read(position, offset=compacted.through_message)
            cache.remember_tail(position, after)
            view = [*compacted.summary, *after]
            loaded = view if max_messages is None else window(view, max_messages)
            recorder.set(messages_read=len(view), messages_loaded=len(loaded))
            return loaded
        if position.messages == 0 or max_messages == 0:
            recorder.set(messages_read=0, messages_loaded=0)
            return []
        if max_messages is None:
            messages = await binding.read(position)
            cache.remember_tail(position, messages)
            recorder.set(messages_read=len(messages), messages_loaded=len(messages))
            return messages
        fetch = window_fetch_size(max_messages)
        newest = await binding.read(position, offset=-fetch)
        cache.remember_tail(position, newest)
        loaded = window(newest, max_messages, complete=fetch >= position.messages)
        recorder.set(messages_read=len(newest), messages_loaded=len(loaded))
        return loaded
