"""Compacting a session's line with an Agent Framework strategy: the summary event and what it replaces.

The strategy sees the compacted view (the newest summary, then the messages after the
range it replaced), as ``CompactionProvider`` hands stored history to it. Whatever it put
before the first original message it kept becomes the new summary, appended as one event
that commits to the replaced range (first and last event, their hashes, the strategy's
class name). No original message is changed or removed.
"""

from __future__ import annotations

from typing import Any

from chatledger.errors import InvalidInputError
from chatledger.ledger import Binding, Ledger, Position, storage_of
from chatledger.ledger.compaction import compact as append_compaction
from chatledger.ledger.compaction import event_at, newest_compaction

__all__ = ["compact_line"]


async def compact_line(
    ledger: Ledger, binding: Binding, position: Position, strategy: Any, tokenizer: Any
) -> Position | None:
    """Compact the line at ``position``; return the position after its summary (``None``: nothing to do).

    Raises:
        InvalidInputError: the installed framework release has no compaction strategies.
        ConcurrencyError: another process appended to or compacted the line meanwhile.
    """
    try:
        # Imported here: releases without compaction strategies still load the provider.
        from agent_framework import annotate_message_groups, apply_compaction
    except ImportError as e:
        raise InvalidInputError(
            "compact() needs an agent-framework-core release with compaction strategies "
            "(apply_compaction); this one has none"
        ) from e

    if position.messages == 0:
        return None
    previous = await newest_compaction(binding, position)
    base = previous.through_message if previous is not None else 0
    shown = len(previous.summary) if previous is not None else 0
    view = [*(previous.summary if previous is not None else ()), *await binding.read(position, offset=base)]
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
    last = await _batch_ending_by(ledger, position, through)
    if last is None or last[2] <= base:
        return None
    first = await event_at(binding, position, 1)
    return await append_compaction(
        binding,
        position,
        first_seq=1,
        first_hash=first["hash"],
        last_seq=last[0],
        last_hash=last[1],
        summary=summary,
        strategy=type(strategy).__name__,
    )


async def _batch_ending_by(ledger: Ledger, position: Position, through: int) -> tuple[int, str, int] | None:
    """Return (seq, hash, end) of the last stored batch that ends at or before message ``through``."""
    if through <= 0:
        return None
    storage = storage_of(ledger).events
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
                return await _batch_ending_by(ledger, position, doc["first_message"])
        return None
    return None
