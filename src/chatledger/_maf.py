"""The one place that knows which Agent Framework generation is installed.

ChatLedger runs on current agent-framework-core (1.x, ``Message``) and on the old
previews (1.0.0b251001 … 1.0.0b260130, ``ChatMessage``) that the seed notebook used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_framework import Message
else:
    try:
        # agent-framework-core <= 1.0.0b260130 also exports an unrelated ``Message`` (the
        # workflow runner's envelope), so the old chat message class must be tried first.
        from agent_framework import ChatMessage as Message
    except ImportError:
        from agent_framework import Message

__all__ = ["MESSAGE_TYPE", "Message"]

#: The ``type`` tag this framework generation writes into ``Message.to_dict()``.
MESSAGE_TYPE: str = "chat_message" if Message.__name__ == "ChatMessage" else "message"
