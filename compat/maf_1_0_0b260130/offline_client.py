"""An offline chat client for agent-framework-core==1.0.0b260130 (the old ChatAgent API).

``EchoJokerClient`` needs no network and no model. Its reply depends on the history it was
given, so a test can prove that a message store handed the whole conversation back:

    "reply #<n>: I received <m> messages; you said <last user text!r>; I last said <last assistant text!r>"

where ``n`` is the number of assistant messages received plus one and ``m`` the number of
messages received. ``calls`` records the message lists of every call.

In this version ``BaseChatClient`` has two abstract coroutines: ``_inner_get_response``
(``async def``, keyword-only ``messages`` and ``options``, returns ``ChatResponse``) and
``_inner_get_streaming_response`` (an async generator of ``ChatResponseUpdate``); both must
exist or the class cannot be instantiated. ChatAgent passes ``thread=...`` (and other run
kwargs) through ``**kwargs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, MutableSequence
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMessage,
    ChatResponse,
    ChatResponseUpdate,
    Role,
    use_chat_middleware,
    use_function_invocation,
)


def _text(message: ChatMessage) -> str:
    return message.text or ""


def reply_for(messages: MutableSequence[ChatMessage] | list[ChatMessage]) -> str:
    """The deterministic reply for a given history (also used by tests to predict it)."""
    assistants = [m for m in messages if m.role == Role.ASSISTANT]
    users = [m for m in messages if m.role == Role.USER]
    last_user = _text(users[-1]) if users else ""
    last_assistant = _text(assistants[-1]) if assistants else ""
    quoted = f"I last said {last_assistant!r}" if assistants else "I have said nothing yet"
    return (
        f"reply #{len(assistants) + 1}: I received {len(messages)} messages; you said {last_user!r}; {quoted}"
    )


@use_function_invocation  # as the shipped clients do; also silences ChatAgent's "does not support
@use_chat_middleware  # function invoking" warning
class EchoJokerClient(BaseChatClient):
    """Offline, deterministic chat client; replies describe the history it received."""

    OTEL_PROVIDER_NAME = "chatledger-offline"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[list[ChatMessage]] = []

    async def _inner_get_response(
        self,
        *,
        messages: MutableSequence[ChatMessage],
        options: dict[str, Any],
        **kwargs: Any,
    ) -> ChatResponse:
        self.calls.append(list(messages))
        text = reply_for(messages)
        return ChatResponse(
            messages=[ChatMessage(role=Role.ASSISTANT, text=text)],
            response_id=f"echo-joker-{len(self.calls)}",
            model_id="echo-joker",
        )

    async def _inner_get_streaming_response(
        self,
        *,
        messages: MutableSequence[ChatMessage],
        options: dict[str, Any],
        **kwargs: Any,
    ) -> AsyncIterable[ChatResponseUpdate]:
        self.calls.append(list(messages))
        yield ChatResponseUpdate(
            role=Role.ASSISTANT,
            text=reply_for(messages),
            response_id=f"echo-joker-{len(self.calls)}",
            model_id="echo-joker",
        )
