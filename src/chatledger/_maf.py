"""The one place that knows which Agent Framework generation is installed.

ChatLedger runs on current agent-framework-core (1.x, ``Message``) and on the old
previews (1.0.0b251001 … 1.0.0b260130, ``ChatMessage``) that the seed notebook used.
"""

from __future__ import annotations

try:
    from agent_framework import Message
except ImportError:  # pragma: no cover - only on agent-framework-core <= 1.0.0b260130
    from agent_framework import ChatMessage as Message  # type: ignore[attr-defined,no-redef]

__all__ = ["MESSAGE_TYPE", "Message"]

#: The ``type`` tag this framework generation writes into ``Message.to_dict()``.
MESSAGE_TYPE: str = "chat_message" if Message.__name__ == "ChatMessage" else "message"
