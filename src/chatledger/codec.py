"""Message ⇄ document codec: lossless, yet readable by an admin in mongosh.

Every stored message carries plain fields an operator can read and query without decoding
anything: ``role``, ``text`` and, where present, ``author_name`` and ``message_id``. What
else it carries depends on the message, so that the text is stored once:

* **plain text** (one text content, no extra properties — most of a conversation): nothing
  else. ``{"role", "text", "author_name"?, "message_id"?}`` *is* the lossless form: the
  exact ``Message.to_dict()`` is rebuilt from these fields.
* **one text content plus anything else** (properties, other content kinds): ``rest``, the
  canonical JSON of ``to_dict()`` with that text content's ``text`` left out (it is the
  readable ``text`` field and is put back on decode).
* **anything else** (no text, or several text contents whose joined ``text`` cannot be split
  back): ``payload``, the canonical JSON of the whole ``to_dict()``. This is also the form
  every message had before ``rest`` existed, so events already in a database still decode.

Why JSON strings at all: a JSON string is the one representation that survives every engine
we target unchanged. Keys with ``.`` or a leading ``$``, nested lists, integers past 64 bits
and non-BMP unicode are legal inside it, whereas FerretDB and older MongoDB reject such keys
and nested arrays in BSON. No stored document ever has such a key or a nested array.

Canonical JSON is produced by ``orjson`` when its bytes are provably the ones
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes (strings,
64-bit integers, booleans, null), and by :mod:`json` otherwise (floats, integers beyond 64
bits, subclasses of builtins): the hash chain and old payloads depend on those exact bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, NamedTuple

import orjson

from chatledger._maf import MESSAGE_TYPE, Message
from chatledger.errors import InvalidMessageError

__all__ = [
    "canonical_json",
    "check_stored",
    "decode_message",
    "encode_message",
    "encode_messages",
    "stored_digest",
]

# --------------------------------------------------------------------------- canonical JSON

# Subclasses of builtins (e.g. bson.Int64, str enums), datetimes and dataclasses go to
# ``default``, which refuses them, so they take the json path and keep today's behaviour.
_ORJSON_OPTS: Final = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _refuse(value: Any) -> Any:
    raise TypeError(f"type {type(value).__name__} takes the json path")


def _needs_json_path(out: bytes) -> bool:
    """Whether orjson's output may differ from json's: it holds a float (or a NaN as null).

    orjson writes floats in another notation than ``float.__repr__`` (``0.00001`` vs
    ``1e-05``) and NaN/Infinity as ``null``; strings, 64-bit integers and booleans are
    byte-identical. The check strips string literals (escapes first, so every remaining
    quote delimits one) and looks at what is left; all of it runs in C.
    """
    if b"\\" in out:
        out = out.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = b"".join(out.split(b'"')[::2])
    return b"." in rest or b"null" in rest or rest.count(b"e") != rest.count(b"true") + rest.count(b"false")


def _check_json_value(value: Any) -> None:
    """Refuse, with a clear error, what json would accept but could not give back exactly."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidMessageError(f"message holds a string that is not valid unicode: {e}") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
            if not isinstance(key, str):
                raise InvalidMessageError(
                    f"message holds a mapping key {key!r} of type {type(key).__name__}: keys must be str "  # pyright: ignore[reportUnknownArgumentType]
                    "(JSON would turn it into a string and it would not come back as stored)"
                )
            _check_json_value(key)
            _check_json_value(item)
    elif isinstance(value, (list, tuple)):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            _check_json_value(item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMessageError(f"message holds {value!r}, which JSON cannot represent")


def _json_path(value: Any) -> bytes:
    try:
        _check_json_value(value)
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InvalidMessageError("message is nested too deeply (or refers to itself)") from None
    except (TypeError, ValueError) as e:
        raise InvalidMessageError(f"message cannot be stored losslessly as JSON: {e}") from e
    return text.encode("utf-8")


def canonical_json_bytes(value: Any) -> bytes:
    """Return the UTF-8 bytes of :func:`canonical_json` of ``value`` (without a decode/encode).

    Raises:
        InvalidMessageError: ``value`` holds something JSON cannot represent exactly.
    """
    try:
        out = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTS)
    except TypeError:  # orjson.JSONEncodeError too: big ints, bad unicode, non-str keys, depth
        return _json_path(value)
    return _json_path(value) if _needs_json_path(out) else out


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value``: sorted keys, no whitespace, UTF-8 as is.

    The same text as ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, allow_nan=False)``, except that what would not come back as given
    is refused instead of altered.

    Raises:
        InvalidMessageError: ``value`` holds something JSON cannot represent exactly: NaN or
            Infinity, a mapping key that is not a str, a lone surrogate, a non-JSON type.
    """
    return canonical_json_bytes(value).decode("utf-8")


def str_fields_json_bytes(docs: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Canonical JSON bytes of a list of flat ``{str: str}`` documents, or None if not that shape.

    Stored messages have that shape; for it orjson's bytes are json's, so no output check
    is needed (a lone surrogate still makes orjson fail, and the caller takes the slow path).
    """
    for doc in docs:
        if type(doc) is not dict:
            return None
        for value in doc.values():  # pyright: ignore[reportUnknownVariableType]
            if type(value) is not str:
                return None
    try:
        return orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


_LONG_DIGITS: Final = re.compile(rb"\d{19}")


def _loads(text: str) -> Any:
    # orjson reads integers past 64 bits as floats (silently); any run of 19 digits takes
    # the json path, which keeps them exact. Anything orjson refuses goes there too.
    raw = text.encode("utf-8")
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# --------------------------------------------------------------------------- plain-text fast path

_MESSAGE_CLASS: Final = Message
_MESSAGE_FIELDS: Final = (
    "role",
    "contents",
    "author_name",
    "message_id",
    "additional_properties",
    "raw_representation",
)


class _Shape(NamedTuple):
    """What a plain-text message looks like inside, learnt from the installed framework."""

    content_class: Any
    content_template: dict[str, Any]
    constants: Callable[[Mapping[str, Any]], Any]
    constant_values: Any
    message_field_count: int
    content_field_count: int


def _plain_dict(role: str, text: str, author_name: str | None, message_id: str | None) -> dict[str, Any]:
    """The exact ``to_dict()`` of a plain-text message (same keys, same order)."""
    data: dict[str, Any] = {
        "type": MESSAGE_TYPE,
        "role": role,
        "contents": [{"type": "text", "text": text, "additional_properties": {}}],
    }
    if author_name is not None:
        data["author_name"] = author_name
    if message_id is not None:
        data["message_id"] = message_id
    data["additional_properties"] = {}
    return data


def _calibrate() -> _Shape | None:
    """Learn, from the installed framework itself, what a plain-text message looks like inside.

    Returns None (fast path off, general path always) if this framework generation builds
    messages in a way the fast path does not reproduce exactly.
    """
    try:
        built = Message.from_dict(_plain_dict("user", "x", "a", "m"))
        content = built.contents[0]
        msg_fields = dict(vars(built))
        content_fields = dict(vars(content))
    except Exception:  # pragma: no cover - an unknown framework generation
        return None
    if (
        tuple(msg_fields) != _MESSAGE_FIELDS
        or msg_fields["additional_properties"] != {}
        or content_fields.get("type") != "text"
        or content_fields.get("text") != "x"
        or content_fields.get("additional_properties") != {}
        or "raw_representation" not in content_fields
    ):
        return None  # pragma: no cover - an unknown framework generation
    others = [k for k in content_fields if k not in ("text", "additional_properties", "raw_representation")]
    # Every other field must be an immutable constant, so instances can share it.
    if any(type(content_fields[k]) not in (type(None), bool, int, str) for k in others):
        return None  # pragma: no cover
    # What the fast decoder builds must serialize exactly like what from_dict builds.
    if built.to_dict() != _plain_dict("user", "x", "a", "m"):
        return None  # pragma: no cover
    getter = itemgetter(*others)
    return _Shape(
        type(content), content_fields, getter, getter(content_fields), len(msg_fields), len(content_fields)
    )


_SHAPE: Final = _calibrate()


def _valid_unicode(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_parts(message: Any) -> tuple[str, str, str | None, str | None] | None:
    """``(role, text, author_name, message_id)`` if ``to_dict()`` would be a plain-text dict.

    Reads the instance's fields directly (that is the point: ``to_dict()`` costs ~13 µs a
    message); anything unexpected — a subclass, an extra or private attribute, a non-default
    content field, a non-str role — answers None and the general path decides.
    """
    shape = _SHAPE
    if shape is None or type(message) is not _MESSAGE_CLASS:
        return None
    fields = vars(message)
    if len(fields) != shape.message_field_count:
        return None
    role = fields.get("role")
    contents = fields.get("contents")
    author_name = fields.get("author_name")
    message_id = fields.get("message_id")
    props = fields.get("additional_properties")
    if (
        type(role) is not str
        or type(contents) is not list
        or len(contents) != 1  # pyright: ignore[reportUnknownArgumentType]
        or type(props) is not dict
        or props
        or not (author_name is None or type(author_name) is str)
        or not (message_id is None or type(message_id) is str)
        or "raw_representation" not in fields
    ):
        return None
    content = contents[0]  # pyright: ignore[reportUnknownVariableType]
    if type(content) is not shape.content_class:  # pyright: ignore[reportUnknownArgumentType]
        return None
    cfields = vars(content)  # pyright: ignore[reportUnknownArgumentType]
    if len(cfields) != shape.content_field_count:
        return None
    try:
        if shape.constants(cfields) != shape.constant_values:
            return None
    except KeyError:
        return None
    text = cfields.get("text")
    cprops = cfields.get("additional_properties")
    if type(text) is not str or type(cprops) is not dict or cprops:
        return None
    if "raw_representation" not in cfields:
        return None
    return role, text, author_name, message_id


def _plain_from_dict(data: Mapping[str, Any]) -> tuple[str, str, str | None, str | None] | None:
    """``(role, text, author_name, message_id)`` if ``data`` is exactly a plain-text ``to_dict()``."""
    role = data.get("role")
    text: Any = None
    contents = data.get("contents")
    if type(contents) is list and len(contents) == 1:  # pyright: ignore[reportUnknownArgumentType]
        only = contents[0]  # pyright: ignore[reportUnknownVariableType]
        if (
            type(only) is dict
            and len(only) == 3  # pyright: ignore[reportUnknownArgumentType]
            and only.get("type") == "text"  # pyright: ignore[reportUnknownMemberType]
            and only.get("additional_properties") == {}  # pyright: ignore[reportUnknownMemberType]
        ):
            text = only.get("text")  # pyright: ignore[reportUnknownMemberType]
    author_name = data.get("author_name")
    message_id = data.get("message_id")
    if (
        data.get("type") != MESSAGE_TYPE
        or type(role) is not str
        or type(text) is not str
        or not (author_name is None or type(author_name) is str)
        or not (message_id is None or type(message_id) is str)
        or data.get("additional_properties") != {}
        or type(data.get("additional_properties")) is not dict
        or len(data) != 4 + ("author_name" in data) + ("message_id" in data)
    ):
        return None
    return role, text, author_name, message_id


def _plain_document(role: str, text: str, author_name: str | None, message_id: str | None) -> dict[str, Any]:
    for value in (role, text, author_name, message_id):
        if value is not None and not _valid_unicode(value):
            raise InvalidMessageError("message holds a string that is not valid unicode (a lone surrogate)")
    doc: dict[str, Any] = {"role": role, "text": text}
    if author_name is not None:
        doc["author_name"] = author_name
    if message_id is not None:
        doc["message_id"] = message_id
    return doc


def _plain_message(role: str, text: str, author_name: str | None, message_id: str | None) -> Message:
    """The message ``Message.from_dict`` would build from a plain-text dict, built directly."""
    shape = _SHAPE
    if shape is None:
        return Message.from_dict(_plain_dict(role, text, author_name, message_id))
    content = shape.content_class.__new__(shape.content_class)
    fields = dict(shape.content_template)
    fields["text"] = text
    fields["additional_properties"] = {}
    # The built dicts become the instances' own (same keys, same order as ``update`` into
    # the empty ones would give): a content holds ~46 fields, copying them twice showed.
    content.__dict__ = fields
    message = _MESSAGE_CLASS.__new__(_MESSAGE_CLASS)
    message.__dict__ = {
        "role": role,
        "contents": [content],
        "author_name": author_name,
        "message_id": message_id,
        "additional_properties": {},
        "raw_representation": None,
    }
    return message


# --------------------------------------------------------------------------- encode / decode


def _role_name(role: Any) -> str:
    # Old MAF used a Role object ({"type": "role", "value": "user"}); current MAF uses str.
    if isinstance(role, Mapping):
        return str(role.get("value", ""))  # pyright: ignore[reportUnknownArgumentType]
    return str(getattr(role, "value", role))


def _encode_general(message: Any) -> dict[str, Any]:
    # Only the framework's own class: an object that merely has a to_dict() would be
    # stored, and every later read of the (append-only) thread would fail to rebuild it.
    if not isinstance(message, _MESSAGE_CLASS):
        raise InvalidMessageError(
            f"expected an agent_framework {_MESSAGE_CLASS.__name__}, got {type(message).__name__}"
        )
    to_dict = message.to_dict
    props = getattr(message, "additional_properties", None)
    if isinstance(props, Mapping):
        # to_dict() turns the top-level keys of additional_properties into strings: an int
        # key would come back as a str. Refuse it rather than store something else.
        for key in props:  # pyright: ignore[reportUnknownVariableType]
            if not isinstance(key, str):
                raise InvalidMessageError(
                    f"additional_properties key {key!r} is a {type(key).__name__}; keys must be str"  # pyright: ignore[reportUnknownArgumentType]
                )
    try:
        as_dict = to_dict()
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidMessageError(f"{type(message).__name__}.to_dict() failed: {e}") from e
    if (
        not isinstance(as_dict, dict)
        or as_dict.get("type") != MESSAGE_TYPE  # pyright: ignore[reportUnknownMemberType]
        or not isinstance(as_dict.get("contents"), list)  # pyright: ignore[reportUnknownMemberType]
    ):
        # A subclass's own to_dict(): what is stored must be what Message.from_dict reads.
        raise InvalidMessageError(
            f"{type(message).__name__}.to_dict() did not return a {_MESSAGE_CLASS.__name__}'s dict "
            f"(type {MESSAGE_TYPE!r} and a contents list)"
        )
    if type(message) is not _MESSAGE_CLASS:
        # A subclass may override to_dict(): prove now that a read can rebuild it (the
        # framework's own class needs no proof, and pays nothing).
        try:
            _MESSAGE_CLASS.from_dict(copy.deepcopy(as_dict))
        except Exception as e:  # whatever from_dict raises, the batch is refused, not stored
            raise InvalidMessageError(
                f"{type(message).__name__}.to_dict() cannot be read back as a {_MESSAGE_CLASS.__name__}: "
                f"{type(e).__name__}"
            ) from e
    plain = _plain_from_dict(as_dict)  # pyright: ignore[reportUnknownArgumentType]
    if plain is not None:
        return _plain_document(*plain)
    contents: Any = as_dict.get("contents")  # pyright: ignore[reportUnknownMemberType]
    text_items: list[int] = []
    if isinstance(contents, list):
        text_items = [
            i
            for i, c in enumerate(contents)  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]
            if isinstance(c, dict) and c.get("type") == "text"  # pyright: ignore[reportUnknownMemberType]
        ]
    doc: dict[str, Any] = {"role": _role_name(as_dict.get("role"))}  # pyright: ignore[reportUnknownMemberType]
    only = contents[text_items[0]] if len(text_items) == 1 else None
    if only is not None and type(only.get("text")) is str:
        # One text content: store its text once, as the readable field, and leave it out of
        # the JSON; decode puts it back into that same (only) text content.
        text: str = only["text"]
        if not _valid_unicode(text):
            raise InvalidMessageError("message text is not valid unicode (a lone surrogate)")
        rest_contents = list(contents)
        rest_contents[text_items[0]] = {k: v for k, v in only.items() if k != "text"}
        rest = dict(as_dict)  # pyright: ignore[reportUnknownArgumentType]
        rest["contents"] = rest_contents
        doc["text"] = text
        body_key, body = "rest", canonical_json(rest)
    else:
        body_key, body = "payload", canonical_json(as_dict)
        try:
            doc["text"] = str(getattr(message, "text", "") or "")
        except TypeError as e:  # the framework's ``text`` joins the text contents: one is not a str
            raise InvalidMessageError(f"a text content's text must be a str: {e}") from e
    for key in ("author_name", "message_id"):
        value = getattr(message, key, None)
        if value is not None:
            doc[key] = str(value)
    doc[body_key] = body
    return doc


def encode_message(message: Any) -> dict[str, Any]:
    """Return the stored form of one Agent Framework message.

    Args:
        message: An ``agent_framework`` ``Message`` (``ChatMessage`` on old versions).

    Returns:
        ``{"role", "text", "author_name"?, "message_id"?}`` for a plain-text message, plus
        ``"rest"`` or ``"payload"`` (canonical JSON) for any other (see the module docs).

    Raises:
        InvalidMessageError: ``message`` is not a message, or cannot be stored losslessly
            (NaN or Infinity, a non-str mapping key, a lone surrogate, a non-JSON value).
    """
    plain = _plain_parts(message)
    if plain is not None:
        return _plain_document(*plain)
    return _encode_general(message)


def encode_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Return the stored form of a batch, refusing a bare string or mapping as a "batch".

    Raises:
        InvalidMessageError: the batch or one of its messages cannot be stored.
    """
    # A list first: the abstract-class checks cost more than encoding a short batch.
    if type(messages) is not list and (
        isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence)
    ):
        raise InvalidMessageError(f"expected a sequence of messages, got {type(messages).__name__}")
    return [encode_message(m) for m in messages]


def _from_data(data: dict[str, Any]) -> Message:
    # A thread written by the other framework generation ("chat_message" vs "message",
    # role object vs string) still replays: translate the envelope, keep the content.
    if data.get("type") != MESSAGE_TYPE and data.get("type") in ("message", "chat_message"):
        data["type"] = MESSAGE_TYPE
        role = data.get("role")
        if MESSAGE_TYPE == "message" and isinstance(role, Mapping):
            data["role"] = _role_name(role)
    return Message.from_dict(data)


def decode_message(doc: Mapping[str, Any]) -> Message:
    """Return the ``Message`` stored in ``doc`` exactly as it was given to ``encode_message``.

    Reads every stored form: plain, ``rest`` and ``payload`` (the only form before
    ``rest`` existed).
    """
    payload = doc.get("payload")
    if payload is not None:
        return _from_data(_loads(payload))
    rest = doc.get("rest")
    if rest is not None:
        data: dict[str, Any] = _loads(rest)
        for content in data["contents"]:
            if isinstance(content, dict) and content.get("type") == "text":  # pyright: ignore[reportUnknownMemberType]
                content["text"] = doc["text"]
                break
        return _from_data(data)
    role, text, author_name, message_id = (
        doc["role"],
        doc["text"],
        doc.get("author_name"),
        doc.get("message_id"),
    )
    if (
        type(role) is not str
        or type(text) is not str
        or not (
            (author_name is None or type(author_name) is str)
            and (message_id is None or type(message_id) is str)
        )
    ):
        # A stored document of another shape (not written by encode_message): refuse it
        # rather than build a message that silently lacks its text. A TypeError, as a
        # missing field's KeyError: readers name the event (IntegrityError, verify problem).
        raise TypeError("a stored message's role, text, author_name or message_id is not a str")
    return _plain_message(role, text, author_name, message_id)


#: The fields a stored message may hold (what :func:`encode_message` makes): ``role`` and
#: ``text`` always, ``author_name`` and ``message_id`` if set, ``rest`` or ``payload``.
_STORED_FIELDS: Final = frozenset({"role", "text", "author_name", "message_id", "rest", "payload"})


def check_stored(stored: object) -> list[dict[str, Any]]:
    """Return a batch given already encoded, checked to have the shape :func:`encode_messages` makes.

    A list of dicts, each with a str ``role`` and ``text``, and otherwise only
    ``author_name``, ``message_id`` and one of ``rest``/``payload``, every value a valid
    unicode str. (A field of a sealed form, a null id, a missing role would be stored,
    and no reader could ever decode the event.) The JSON of ``rest``/``payload`` is the
    caller's: it is not parsed again here.

    Raises:
        InvalidMessageError: it does not.
    """
    if type(stored) is not list:
        raise InvalidMessageError(f"stored must be a list of encoded messages, got {type(stored).__name__}")
    for index, doc in enumerate(stored):
        if type(doc) is not dict or "role" not in doc or "text" not in doc:
            raise InvalidMessageError(
                f"stored message {index} is not an encoded message (a dict with role and text)"
            )
        if not doc.keys() <= _STORED_FIELDS or ("rest" in doc and "payload" in doc):
            extra = sorted(str(k) for k in doc.keys() - _STORED_FIELDS) or ["rest and payload"]
            raise InvalidMessageError(
                f"stored message {index} holds fields encode_messages never makes: {extra}"
            )
        for name, value in doc.items():
            if type(value) is not str or not _valid_unicode(value):
                raise InvalidMessageError(f"stored message {index}: {name} is not a valid unicode str")
    return stored


def stored_digest(stored: Sequence[Mapping[str, Any]]) -> str:
    """Return a short digest of an encoded batch, to recognise the same batch being saved again."""
    raw = str_fields_json_bytes(stored)
    if raw is None:
        raw = canonical_json_bytes(list(stored))
    return hashlib.sha256(raw).hexdigest()[:32]
