"""An offline chat client whose replies visibly depend on the history it is given.

The demo and the tests need a model that works with no network and no API key, yet
proves that history really came back from the store: the Joker can only retell "the
same joke" if the earlier turn is in the messages it receives, and it says how many
earlier messages it could see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
)

__all__ = ["JOKES", "JokerChatClient", "joker_reply"]

#: Topic → (setup, punchline).
JOKES: dict[str, tuple[str, str]] = {
    "pirate": ("Why did the pirate go to the gym?", "To improve his plank!"),
    "robot": ("Why did the robot go on holiday?", "It needed to recharge its batteries."),
    "database": ("Why did the database administrator leave his wife?", "She had one-to-many relationships."),
    "cat": ("Why did the cat sit on the computer?", "To keep an eye on the mouse."),
}

_NO_MEMORY = "I don't remember telling you any joke - I can't see one in our conversation."


def _text(message: Message) -> str:
    return message.text or ""


def _last_joke(history: Sequence[Message]) -> str | None:
    """Return the setup+punchline of the newest joke the Joker told in ``history``."""
    for message in reversed(history):
        if message.role != "assistant":
            continue
        for setup, punchline in JOKES.values():
            if setup in _text(message):
                return f"{setup} {punchline}"
    return None


def _pirate(joke: str) -> str:
    swaps = {"the ": "th' ", "his ": "'is ", "Why ": "Arr, why ", "to ": "t' "}
    for plain, pirate in swaps.items():
        joke = joke.replace(plain, pirate)
    return f"🏴‍☠️ {joke} ⚓🦜 Yo-ho-ho!"


def _robot(joke: str) -> str:
    return f"🤖 BEEP BOOP. {joke.upper()} *WHIRR* 🔋"


def joker_reply(messages: Sequence[Message]) -> str:
    """Return the Joker's reply to a conversation (the last user message, with its history)."""
    history = [m for m in messages if m.role in ("user", "assistant")]
    if not history or history[-1].role != "user":
        return "Ask me for a joke!"
    earlier = len(history) - 1
    ask = _text(history[-1]).lower()
    if any(word in ask for word in ("same joke", "again", "retell", "that joke")):
        joke = _last_joke(history[:-1])
        if joke is None:
            reply = _NO_MEMORY
        elif "pirate" in ask:
            reply = _pirate(joke)
        elif "robot" in ask:
            reply = _robot(joke)
        else:
            reply = f"As I said: {joke}"
    else:
        topic = next((t for t in JOKES if t in ask), "database")
        setup, punchline = JOKES[topic]
        reply = f"{setup} {punchline}"
    return f"{reply} [I could see {earlier} earlier message{'s' if earlier != 1 else ''}.]"


class JokerChatClient(FunctionInvocationLayer[Any], ChatMiddlewareLayer[Any], BaseChatClient[Any]):
    """A deterministic, offline Agent Framework chat client that tells jokes.

    Its replies depend on the whole message list it receives, so a resumed
    conversation visibly remembers (or forgets) what came before.
    """

    OTEL_PROVIDER_NAME = "chatledger-joker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: How many messages each call received (tests use it to check ``max_messages``).
        self.seen: list[int] = []

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        self.seen.append(len(messages))
        text = joker_reply(messages)
        if stream:

            async def updates() -> Any:
                yield ChatResponseUpdate(role="assistant", contents=[Content.from_text(text)])

            return self._build_response_stream(updates())

        async def respond() -> ChatResponse:
            return ChatResponse(messages=[Message("assistant", [text])])

        return respond()
