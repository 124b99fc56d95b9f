"""The newest N messages of a history, never starting inside a tool exchange.

A chat API rejects a history that opens with a tool result whose call it never saw, and
reasoning models reject a call separated from the reasoning that produced it. Agent
Framework's own reducers therefore drop history in whole *groups*
(``agent_framework/_compaction.py``: ``group_messages`` builds the groups,
``TruncationStrategy`` and ``SlidingWindowStrategy`` exclude whole groups, "never
partial tool-call groups"). A group is:

- a system, user, or plain assistant message on its own;
- a tool exchange: an assistant message with a tool call (``function_call``,
  ``computer_tool_call``, ``mcp_server_tool_call``, ``code_interpreter_tool_call``,
  ``shell_tool_call``, ``image_generation_tool_call``), the reasoning-only assistant
  messages right before and after it, and the ``tool`` messages that follow;
- a run of ``tool`` messages nobody called (an orphan).

``group_messages`` then links a result to its call across groups (``_link_tool_call_
result_spans``); :func:`window` gets the same effect by refusing any start that leaves
a result without its call inside the window.

Deliberate differences from ``TruncationStrategy(max_n=N, compact_to=N)``, which is
what ``max_messages`` means:

- the window is a contiguous suffix (the framework may keep a linked call far before an
  excluded stretch; a suffix is what a ledger reads cheaply, and a model sees no gap);
- it never exceeds N: when the newest group alone is larger, the window is empty (the
  framework keeps that group and overshoots);
- it never opens with an orphan tool result (the framework keeps an orphan group).

Bounded reads: grouping from any *anchor* (a message that is never absorbed into an
earlier group: any role but ``tool``, and for ``assistant`` only messages that are
neither tool calls nor reasoning-only) gives the same groups as grouping the whole
history. So a store reads the newest ``N + WINDOW_LOOKBEHIND`` messages and passes them
with ``complete`` saying whether that is the whole history. A start that cannot be
proven right from what was read is never used, so a short read can only make the
window smaller, never wrong; it is exact whenever an anchor precedes the start within
the read (a user turn nearly always does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from agent_framework import Message

from chatledger.errors import InvalidInputError

__all__ = ["WINDOW_LOOKBEHIND", "group_starts", "is_anchor", "window", "window_fetch_size"]

#: Extra messages to read before the newest ``max_messages`` so the window's start can
#: be checked against the framework's grouping. One anchor in it suffices; a tool loop
#: longer than this only makes the window smaller, never invalid.
WINDOW_LOOKBEHIND: Final = 16

# agent_framework/_compaction.py: _TOOL_CALL_CONTENT_TYPES
_TOOL_CALL_TYPES: Final = frozenset(
    {
        "function_call",
        "computer_tool_call",
        "mcp_server_tool_call",
        "code_interpreter_tool_call",
        "shell_tool_call",
        "image_generation_tool_call",
    }
)
# The results that must not appear without their call (the pairs _compaction.py links).
_RESULT_TO_CALL: Final = {"function_result": "function_call", "computer_tool_result": "computer_tool_call"}


def _is_tool_call_assistant(message: Message) -> bool:
    return message.role == "assistant" and any(c.type in _TOOL_CALL_TYPES for c in message.contents)


def _is_reasoning_only_assistant(message: Message) -> bool:
    return (
        message.role == "assistant"
        and bool(message.contents)
        and all(c.type == "text_reasoning" for c in message.contents)
    )


def is_anchor(message: Message) -> bool:
    """Return whether ``message`` always starts a group, whatever precedes it."""
    if message.role == "tool":
        return False
    return not (_is_tool_call_assistant(message) or _is_reasoning_only_assistant(message))


def _past(messages: Sequence[Message], k: int, *, reasoning: bool) -> int:
    """Return the index from ``k`` past reasoning-only assistants (if ``reasoning``), then tool results."""
    while reasoning and k < len(messages) and _is_reasoning_only_assistant(messages[k]):
        k += 1
    while k < len(messages) and messages[k].role == "tool":
        k += 1
    return k


def _group_end(messages: Sequence[Message], i: int) -> int:
    """Return the index just past the group starting at ``i`` (``group_messages``'s scan)."""
    current = messages[i]
    if current.role in ("system", "user"):
        return i + 1
    if _is_reasoning_only_assistant(current):
        j = i
        while j < len(messages) and _is_reasoning_only_assistant(messages[j]):
            j += 1
        if j < len(messages) and _is_tool_call_assistant(messages[j]):
            return _past(messages, j + 1, reasoning=True)
        return i + 1
    if _is_tool_call_assistant(current):
        return _past(messages, i + 1, reasoning=True)
    if current.role == "tool":
        return _past(messages, i + 1, reasoning=False)
    return i + 1


def group_starts(messages: Sequence[Message], *, complete: bool = True) -> list[int]:
    """Return the indexes at which the framework's grouping starts a group.

    Args:
        messages: Consecutive messages of a history, oldest first.
        complete: Whether ``messages`` starts at the beginning of the history. If not,
            grouping starts at the first anchor, and nothing before it is reported.

    Returns:
        Ascending indexes; each is the first message of a group.
    """
    i = 0 if complete else next((n for n, m in enumerate(messages) if is_anchor(m)), len(messages))
    starts: list[int] = []
    while i < len(messages):
        starts.append(i)
        i = _group_end(messages, i)
    return starts


def _calls_complete_from(messages: Sequence[Message]) -> list[bool]:
    """For each index ``c``: does every tool result in ``messages[c:]`` follow its call there?"""
    ok = [True] * (len(messages) + 1)
    # Walking backwards, track results still waiting for their call.
    waiting: dict[tuple[str, str], int] = {}
    for c in range(len(messages) - 1, -1, -1):
        message = messages[c]
        for content in reversed(message.contents):
            call_type = _RESULT_TO_CALL.get(content.type or "")
            if call_type is not None:
                key = (call_type, content.call_id or "")
                waiting[key] = waiting.get(key, 0) + 1
            elif content.type in _RESULT_TO_CALL.values() and message.role == "assistant":
                key = (content.type, content.call_id or "")
                if waiting.get(key):
                    waiting[key] -= 1
                    if not waiting[key]:
                        del waiting[key]
        ok[c] = not waiting
    return ok


def window(messages: Sequence[Message], max_messages: int, *, complete: bool = True) -> list[Message]:
    """Return the newest at most ``max_messages`` messages, starting at a group boundary.

    The window never starts with a tool result, never separates a call from its
    results or from the reasoning before it, and is as long as it can be under those
    rules (given what ``messages`` shows).

    Args:
        messages: The newest messages of a history, oldest first: the whole history
            (``complete=True``) or a read of ``max_messages + WINDOW_LOOKBEHIND``.
        max_messages: The most messages to return (0 gives ``[]``).
        complete: Whether ``messages`` is the whole history.

    Returns:
        A suffix of ``messages`` (the same objects, not copies).

    Raises:
        InvalidInputError: ``max_messages`` is not a non-negative int.
    """
    if type(max_messages) is not int or max_messages < 0:
        raise InvalidInputError("max_messages must be a non-negative int")
    earliest = max(0, len(messages) - max_messages)
    calls_ok = _calls_complete_from(messages)
    for start in group_starts(messages, complete=complete):
        if start >= earliest and messages[start].role != "tool" and calls_ok[start]:
            return list(messages[start:])
    return []


def window_fetch_size(max_messages: int) -> int:
    """Return how many of the newest messages a store should read to build a window."""
    return max_messages + WINDOW_LOOKBEHIND
