"""Message ⇄ document codec: lossless, yet readable by an admin in mongosh.

Each stored message keeps its exact ``Message.to_dict()`` as a canonical JSON string
(``payload``). A JSON string is the one representation that survives every engine we
target unchanged: keys with ``.`` or a leading ``$``, nested lists, integers past
64 bits and non-BMP unicode are all legal inside it, whereas FerretDB and older MongoDB
reject such keys and nested arrays in BSON. Next to the payload we store plain fields
(``role``, ``text``, ``author_name``, ``message_id``) so an operator can read and query
a conversation without decoding anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatledger._maf import MESSAGE_TYPE, Message
from chatledger.errors import InvalidMessageError

__all__ = ["canonical_json", "decode_message", "encode_message", "encode_messages", "stored_digest"]


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value``: sorted keys, no whitespace, UTF-8 as is.

    Raises:
        InvalidMessageError: ``value`` holds something JSON cannot represent exactly.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidMessageError(f"message cannot be stored losslessly as JSON: {e}") from e


def _role_name(role: Any) -> str:
    # Old MAF used a Role object ({"type": "role", "value": "user"}); current MAF uses str.
    if isinstance(role, Mapping):
        return str(role.get("value", ""))  # pyright: ignore[reportUnknownArgumentType]
    return str(getattr(role, "value", role))


def encode_message(message: Any) -> dict[str, Any]:
    """Return the stored form of one Agent Framework message.

    Raises:
        InvalidMessageError: ``message`` is not a message, or cannot be stored losslessly.
    """
    to_dict = getattr(message, "to_dict", None)
    if isinstance(message, (str, bytes, Mapping)) or not callable(to_dict):
        raise InvalidMessageError(f"expected an agent_framework Message, got {type(message).__name__}")
    as_dict = to_dict()
    if not isinstance(as_dict, dict):
        raise InvalidMessageError(f"{type(message).__name__}.to_dict() did not return a dict")
    doc: dict[str, Any] = {
        "role": _role_name(as_dict.get("role")),  # pyright: ignore[reportUnknownMemberType]
        "text": str(getattr(message, "text", "") or ""),
        "payload": canonical_json(as_dict),
    }
    for key in ("author_name", "message_id"):
        value = getattr(message, key, None)
        if value is not None:
            doc[key] = str(value)
    return doc


def encode_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Return the stored form of a batch, refusing a bare string or mapping as a "batch".

    Raises:
        InvalidMessageError: the batch or one of its messages cannot be stored.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidMessageError(f"expected a sequence of messages, got {type(messages).__name__}")
    return [encode_message(m) for m in messages]


def decode_message(doc: Mapping[str, Any]) -> Message:
    """Return the ``Message`` stored in ``doc`` exactly as it was given to ``encode_message``."""
    data: dict[str, Any] = json.loads(doc["payload"])
    # A thread written by the other framework generation ("chat_message" vs "message",
    # role object vs string) still replays: translate the envelope, keep the content.
    if data.get("type") != MESSAGE_TYPE and data.get("type") in ("message", "chat_message"):
        data["type"] = MESSAGE_TYPE
        role = data.get("role")
        if MESSAGE_TYPE == "message" and isinstance(role, Mapping):
            data["role"] = _role_name(role)
    return Message.from_dict(data)


def stored_digest(stored: Sequence[Mapping[str, Any]]) -> str:
    """Return a short digest of an encoded batch, to recognise the same batch being saved again."""
    payloads = [m["payload"] for m in stored]
    return hashlib.sha256(canonical_json(payloads).encode("utf-8")).hexdigest()[:32]
