"""Which messages of a save are new: Agent Framework 1.23's de-duplication rule, on fingerprints.

Since agent-framework-core 1.23 every history provider of the framework stores only the
messages it has not stored before: ``InMemoryHistoryProvider.save_messages`` and
``FileHistoryProvider.save_messages`` (``agent_framework/_sessions.py``) both call
``filter_new_messages(existing, incoming)`` (same file), the one shared rule the
maintainers asked every provider to use (microsoft/agent-framework PR #7242, issue #7211).

The rule compares message *identities* (the framework's private ``get_message_identity``,
same file, which :func:`message_identity` restates so that no private name is imported:
it is absent from older 1.x releases such as 1.13.0): the ``message_id`` when the message
has one, else its role plus its JSON-serialized contents. Object identity plays no part,
and neither do ``author_name`` nor ``additional_properties``. One deliberate difference:
framework fields holding an empty or false default are left out of the contents, because
releases add such defaults on a round trip (a bare ``function_approval_response`` gains
``approved: False`` on 1.26, a ``function_call`` gains ``hosted: False``), and a message
must keep its identity across releases. What the caller or a tool wrote (arguments,
results) is compared as written, so two calls the framework tells apart are never one.
Then:

1. if the whole stored history occurs, in order, inside the incoming batch (a re-sent
   transcript, or an audit provider handed the loaded context back), only what follows
   its first occurrence is new;
2. otherwise the longest suffix of the stored history that is a prefix of the batch is
   dropped (the batch repeats the end of the history, then continues);
3. otherwise everything is new.

One exception keeps a real repeated turn: a history that is a single user message
without an id, matched at the very start of the batch, does not count (the user may
simply have said the same thing twice); nor does a one-message overlap whose stored
message is a user message without an id.

What this needs from the store (:func:`unseen`): only the fingerprints of the newest
``min(stored_count, len(incoming))`` stored messages along the cursor's lineage, plus
``stored_count`` itself (which the cursor position already knows). Step 1 can only
match when the batch is at least as long as the history, and then that tail *is* the
whole history; step 2 never looks further back than the batch is long. So one bounded
tail read per save, however long the conversation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

from agent_framework import Message

from chatledger.errors import InvalidInputError

__all__ = ["FINGERPRINT_VERSION", "message_fingerprint", "message_identity", "stored_tail_length", "unseen"]

#: Changes whenever :func:`message_fingerprint` would give a different value for the same
#: message, so fingerprints stored in events can be recognised as stale.
FINGERPRINT_VERSION: Final = 3

# A fingerprint starts with one letter that keeps the only facts the rule needs beyond
# equality: whether the message had an id, and, if not, whether it is a user message.
_BY_ID: Final = "i"
_USER_CONTENT: Final = "u"
_OTHER_CONTENT: Final = "c"


#: Content fields that hold what the caller or a tool wrote, not the framework's own
#: structure: their values are compared verbatim (``set_heater(on=False)`` is not
#: ``set_heater()``, a tool that returned ``[]`` did not return ``{}``). Only a field
#: that is empty as a whole counts as a default (1.26 writes ``result: ""`` and
#: ``additional_properties: {}`` where older releases wrote nothing).
_VERBATIM: Final = frozenset({"arguments", "result", "additional_properties", "data", "exception"})


def _without_defaults(value: Any) -> Any:
    """Return ``value`` with every framework field that holds an empty or false default left out.

    ``None``, ``False``, ``""``, ``[]`` and ``{}`` are the values a release may start (or
    stop) writing for a field the message never set (1.26 adds ``approved: False`` and
    ``hosted: False``); dropping them keeps an identity equal across releases. Numbers are
    kept: ``0`` can be meaningful (an index, a count). The caller's own values
    (:data:`_VERBATIM`) are never rewritten: leaving a false argument out would make two
    different tool calls one message, and the de-duplication would drop the second.
    """
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in _VERBATIM:
                if not (item is None or (isinstance(item, (str, list, dict)) and not item)):
                    kept[key] = item
                continue
            item = _without_defaults(item)
            if not _is_default(item):
                kept[key] = item
        return kept
    if isinstance(value, list):
        return [_without_defaults(item) for item in value]
    return value


def _is_default(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def message_identity(message: Message) -> tuple[str, ...]:
    """Return what makes two messages the same message: its id, else its role and contents.

    The framework's de-duplication identity, restated (``("id", message_id)``, else
    ``("content", role, contents as sorted JSON)``), except that empty and false defaults
    are left out of the contents so an identity survives a round trip through another
    framework release.
    """
    message_id = getattr(message, "message_id", None)
    if message_id is not None:
        return ("id", str(message_id))
    contents = [_without_defaults(content.to_dict()) for content in message.contents or ()]
    try:
        serialized = json.dumps(contents, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        # A content the framework itself cannot serialize: its text form, as the framework does.
        serialized = str(message.contents)
    return ("content", str(message.role), serialized)


def message_fingerprint(message: Message) -> str:
    """Return a short string equal for two messages exactly when they are the same message.

    The string is a one-letter kind (``i``: has a ``message_id``; ``u``: a user message
    without one; ``c``: any other message without one), ``:``, and the SHA-256 of
    :func:`message_identity`, so it can be stored next to the message and compared without decoding anything.
    """
    identity = message_identity(message)
    if identity[0] == "id":
        kind = _BY_ID
    elif str(message.role) == "user":
        kind = _USER_CONTENT
    else:
        kind = _OTHER_CONTENT
    digest = hashlib.sha256(json.dumps(list(identity), ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"{kind}:{digest}"


def stored_tail_length(stored_count: int, incoming_count: int) -> int:
    """Return how many of the newest stored fingerprints :func:`unseen` needs for a batch."""
    return min(stored_count, incoming_count)


def unseen(
    incoming: Sequence[Message],
    stored_tail: Sequence[str],
    *,
    stored_count: int,
) -> list[Message]:
    """Return the messages of ``incoming`` that the framework would store: those not already stored.

    Equivalent to ``agent_framework._sessions.filter_new_messages(history, incoming)``
    where ``history`` is everything stored along the cursor's lineage, given only its
    tail.

    Args:
        incoming: The batch ``save_messages`` received, in order.
        stored_tail: :func:`message_fingerprint` of the newest
            :func:`stored_tail_length` (``min(stored_count, len(incoming))``) stored
            messages, oldest first. More is accepted; only that many are used.
        stored_count: How many messages are stored in all (0 for a new session).

    Returns:
        The suffix of ``incoming`` to append (possibly all of it, possibly empty).

    Raises:
        InvalidInputError: ``stored_tail`` holds fewer fingerprints than needed, or
            ``stored_count`` is negative.
    """
    if type(stored_count) is not int or stored_count < 0:
        raise InvalidInputError("stored_count must be a non-negative int")
    need = stored_tail_length(stored_count, len(incoming))
    if len(stored_tail) < need:
        raise InvalidInputError(
            f"unseen() needs the newest {need} stored fingerprints, got {len(stored_tail)}"
        )
    if stored_count == 0:
        return list(incoming)
    tail = list(stored_tail[len(stored_tail) - need :])
    batch = [message_fingerprint(m) for m in incoming]
    last_is_anonymous_user = tail[-1].startswith(_USER_CONTENT) if tail else False

    # Step 1: the whole history occurs inside the batch (only possible when it fits, and
    # then ``tail`` is the whole history).
    if need == stored_count:
        for start in range(len(batch) - stored_count + 1):
            if batch[start : start + stored_count] == tail:
                if start == 0 and stored_count == 1 and last_is_anonymous_user:
                    break  # a repeated input without an id is kept, as the framework does
                return list(incoming[start + stored_count :])

    # Step 2: the batch begins with the end of the history.
    for overlap in range(need, 0, -1):
        if tail[-overlap:] != batch[:overlap]:
            continue
        if overlap == 1 and last_is_anonymous_user:
            continue
        return list(incoming[overlap:])
    return list(incoming)
