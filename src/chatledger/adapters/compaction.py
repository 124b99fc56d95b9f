"""``LedgerCompactionProvider``: the framework's ``CompactionProvider``, storing summaries as events.

The framework's provider compacts what a history provider keeps in
``session.state[...]["messages"]`` (the in-memory provider's list) and nothing else; a
database-backed provider keeps a cursor there, so its ``after_strategy`` would do
nothing. This subclass hands the strategy to :meth:`MongoHistoryProvider.compact`
instead: the summary becomes an event committing to the range it replaces.
"""

from __future__ import annotations

from typing import Any

from agent_framework import CompactionProvider

from chatledger.adapters.history import MongoHistoryProvider
from chatledger.errors import InvalidInputError

__all__ = ["LedgerCompactionProvider"]


class LedgerCompactionProvider(CompactionProvider):
    """A ``CompactionProvider`` whose ``after_strategy`` compacts a :class:`MongoHistoryProvider`'s ledger.

    List it *before* the history provider (``context_providers=[compaction, history]``):
    the framework runs ``after_run`` in reverse order, so the run's messages are stored
    first and the compaction sees them. ``before_strategy`` works as in the framework
    (it compacts what a run sends, not what is stored).

    Args:
        history: The provider whose sessions are compacted.
        before_strategy: As ``CompactionProvider``'s: applied to a run's context.
        after_strategy: Applied after each user turn; its summary is stored as an event.
        tokenizer: As ``CompactionProvider``'s, for token-aware strategies.
        source_id: This provider's source id.

    Raises:
        InvalidInputError: ``history`` is not a MongoHistoryProvider.
    """

    def __init__(
        self,
        history: MongoHistoryProvider,
        *,
        before_strategy: Any = None,
        after_strategy: Any = None,
        tokenizer: Any = None,
        source_id: str = "compaction",
    ) -> None:
        """Compact ``history``'s sessions with the framework's strategies (arguments: see the class)."""
        if not isinstance(history, MongoHistoryProvider):
            raise InvalidInputError(f"history must be a MongoHistoryProvider, got {type(history).__name__}")
        super().__init__(
            before_strategy=before_strategy,
            after_strategy=after_strategy,
            tokenizer=tokenizer,
            source_id=source_id,
            history_source_id=history.source_id,
        )
        self.history = history

    async def after_run(self, *, agent: Any, session: Any, context: Any, state: dict[str, Any]) -> None:
        """Compact the session's stored history with ``after_strategy`` (stored as a summary event)."""
        if self.after_strategy is None or session is None:
            return
        await self.history.compact(session, self.after_strategy, tokenizer=self.tokenizer)
