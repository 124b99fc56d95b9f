"""The codec: exact round trips, the fast paths' identity with the general path, refusals."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from agent_framework import Content, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import codec
from chatledger.codec import canonical_json, decode_message, encode_message, encode_messages, stored_digest
from chatledger.errors import InvalidMessageError
from chatledger.hashing import HASHED_FIELDS, HASHED_FIELDS_BY_VERSION, epoch_ms, event_hash
from tests.helpers import msg, tricky_message


def _json_dumps(value: Any) -> str:
    """The canonical JSON every stored payload and hash was written with before orjson."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _general(message: Message) -> dict[str, Any]:
    """The general (to_dict) encoder, bypassing the plain-text fast path."""
    return codec._encode_general(message)  # pyright: ignore[reportPrivateUsage]


def _decode_general(doc: dict[str, Any]) -> Message:
    """Decode a plain document through ``Message.from_dict``, bypassing the fast builder."""
    if "payload" in doc or "rest" in doc:
        return decode_message(doc)
    return Message.from_dict(
        codec._plain_dict(doc["role"], doc["text"], doc.get("author_name"), doc.get("message_id"))  # pyright: ignore[reportPrivateUsage]
    )


def _old_form(message: Message) -> dict[str, Any]:
    """The stored form every event had before this codec (``role``, ``text``, ``payload``)."""
    doc: dict[str, Any] = {
        "role": str(message.role),
        "text": message.text,
        "payload": _json_dumps(message.to_dict()),
    }
    for key in ("author_name", "message_id"):
        value = getattr(message, key)
        if value is not None:
            doc[key] = value
    return doc


def _no_dots_dollars_or_nested_arrays(value: Any, *, in_array: bool = False) -> bool:
    if isinstance(value, dict):
        return all(
            "." not in k and not k.startswith("$") and _no_dots_dollars_or_nested_arrays(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return not in_array and all(_no_dots_dollars_or_nested_arrays(v, in_array=True) for v in value)
    return True


# ----------------------------------------------------------------------------- strategies

_text = st.text(max_size=40)  # hypothesis leaves out lone surrogates: they are a refusal case
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_props = st.dictionaries(
    st.sampled_from(["a.b", "$where", "k", "é", "nested", "n"]) | _text, _json, max_size=3
)
_content = st.one_of(
    _text,
    _text.map(lambda t: Content.from_text(t)),
    st.builds(lambda t, p: Content("text", text=t, additional_properties=p), _text, _props),
    st.binary(max_size=30).map(lambda b: Content.from_data(b, "application/octet-stream")),
    st.builds(
        lambda n, a: Content.from_function_call(call_id="c1", name=n, arguments=a),
        _text,
        st.dictionaries(_text, _json, max_size=3),
    ),
    st.builds(lambda r: Content.from_function_result(call_id="c1", result=r), _text),
    st.just(Content.from_uri("https://example.com/a.png", media_type="image/png")),
)
_messages = st.builds(
    lambda role, contents, author, mid, props: Message(
        role, contents, author_name=author, message_id=mid, additional_properties=props
    ),
    st.sampled_from(["user", "assistant", "system", "tool"]) | _text,
    st.lists(_content, max_size=3),
    st.none() | _text,
    st.none() | _text,
    st.none() | _props,
)
_plain_messages = st.builds(
    lambda role, text, author, mid: Message(role, [text], author_name=author, message_id=mid),
    st.sampled_from(["user", "assistant"]) | _text,
    _text,
    st.none() | _text,
    st.none() | _text,
)
_any_message = st.one_of(_plain_messages, _messages, st.just(tricky_message()), st.just(msg("hi")))


# ----------------------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_message)
def test_fast_encoder_equals_the_general_encoder_and_round_trips(message: Message) -> None:
    stored = encode_message(message)
    assert stored == _general(message)
    back = decode_message(stored)
    assert back.to_dict() == message.to_dict()
    assert canonical_json(back.to_dict()) == canonical_json(message.to_dict())
    # The fast decoder builds what Message.from_dict builds, field for field.
    general = _decode_general(stored)
    assert back.to_dict() == general.to_dict()
    assert vars(back).keys() == vars(general).keys()
    assert [vars(c) for c in back.contents] == [vars(c) for c in general.contents]
    # Readable, stored once, engine-neutral.
    assert stored["role"] == str(message.role)
    assert stored["text"] == message.text
    assert _no_dots_dollars_or_nested_arrays(stored)
    assert all(type(v) is str for v in stored.values())


@settings(max_examples=200, deadline=None)
@given(_any_message)
def test_events_already_stored_in_the_old_form_still_decode(message: Message) -> None:
    assert decode_message(_old_form(message)).to_dict() == message.to_dict()


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_json_is_byte_identical_to_json_dumps(value: Any) -> None:
    assert canonical_json(value) == _json_dumps(value)
    assert codec.canonical_json_bytes(value) == _json_dumps(value).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 2, 3]),
    st.none() | _text,
    st.lists(st.dictionaries(st.sampled_from(["role", "text", "rest", "payload", "k"]), _text), max_size=5),
)
def test_event_hash_and_digest_are_unchanged_by_the_orjson_path(
    version: int, tenant: str | None, messages: list[dict[str, str]]
) -> None:
    event = {
        "v": version,
        "thread_id": "t-é",
        "seq": 3,
        "first_message": 7,
        "count": len(messages),
        "messages": messages,
        "event_id": "e1",
        "created_at": datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC),
        "root_id": "r",
        "tenant_id": tenant,
        "source_id": "s",
    }
    fields = HASHED_FIELDS_BY_VERSION.get(version, HASHED_FIELDS)
    body = {n: event.get(n) for n in fields}
    body["created_at"] = epoch_ms(event["created_at"])  # type: ignore[arg-type]
    expected = hashlib.sha256(("0" * 64 + _json_dumps(body)).encode("utf-8")).hexdigest()
    assert event_hash("0" * 64, event) == expected
    assert stored_digest(messages) == hashlib.sha256(_json_dumps(messages).encode("utf-8")).hexdigest()[:32]


def test_event_hash_of_an_unusual_event_takes_the_general_path() -> None:
    event: dict[str, Any] = {"v": 2, "thread_id": "t", "seq": 2**80, "messages": [{"a": 1.5, "b": None}]}
    body = {n: event.get(n) for n in HASHED_FIELDS}
    expected = hashlib.sha256(("x" + _json_dumps(body)).encode("utf-8")).hexdigest()
    assert event_hash("x", event) == expected


# ----------------------------------------------------------------------------- stored forms


def test_a_plain_text_message_is_stored_as_readable_fields_only() -> None:
    stored = encode_message(Message("assistant", ["Hi there"], author_name="bot", message_id="m1"))
    assert stored == {"role": "assistant", "text": "Hi there", "author_name": "bot", "message_id": "m1"}
    assert encode_message(msg("hello")) == {"role": "user", "text": "hello"}


def test_a_rich_message_stores_its_text_once() -> None:
    message = tricky_message()
    stored = encode_message(message)
    assert set(stored) == {"role", "text", "author_name", "message_id", "rest"}
    assert stored["text"] == message.text
    assert message.text not in stored["rest"]
    assert decode_message(stored).to_dict() == message.to_dict()


def test_several_text_contents_keep_the_whole_payload() -> None:
    message = Message("assistant", ["a b", "c"])
    stored = encode_message(message)
    assert stored["text"] == "a b c"
    assert "payload" in stored
    assert [c.text for c in decode_message(stored).contents] == ["a b", "c"]


def test_exotic_values_round_trip_exactly() -> None:
    props = {
        "big": 2**100,
        "neg": -(2**64),
        "edge": 2**63,
        "tiny": 1e-7,
        "huge": 1e300,
        "z": -0.0,
        "n": [[[]]],
    }
    message = Message("user", ["x"], additional_properties=props)
    back = decode_message(encode_message(message))
    assert back.additional_properties == props
    assert math.copysign(1.0, back.additional_properties["z"]) == -1.0
    assert type(back.additional_properties["big"]) is int


async def test_stored_forms_survive_the_server_unchanged(database: Any) -> None:
    messages = [msg("hello"), tricky_message(), Message("assistant", ["a", "b"]), Message("tool", [])]
    stored = encode_messages(messages)
    await database["codec_check"].insert_one({"_id": "e1", "messages": stored})
    doc = await database["codec_check"].find_one({"_id": "e1"})
    assert [decode_message(m).to_dict() for m in doc["messages"]] == [m.to_dict() for m in messages]
    # An admin finds a message by its text in a plain query.
    assert await database["codec_check"].count_documents({"messages.text": "hello"}) == 1


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (Message("user", ["x"], additional_properties={"v": float("nan")}), "nan"),
        (Message("user", ["x"], additional_properties={"v": [float("inf")]}), "inf"),
        (Message("user", ["x"], additional_properties={1: "int key"}), "int key"),
        (Message("user", ["x"], additional_properties={"n": {2: "nested int key"}}), "nested int key"),
        (Message("user", ["x"], additional_properties={"k": "\ud800"}), "surrogate in a property"),
        (Message("user", ["lone \udc00 surrogate"]), "surrogate in plain text"),
        (Message("user", ["x"], author_name="\ud800"), "surrogate in author"),
        (
            Message("assistant", ["\ud800", Content.from_uri("https://e.x/a.png", media_type="image/png")]),
            "rich",
        ),
        (Message("assistant", ["a", "\ud800"]), "several texts"),
    ],
)
def test_what_cannot_come_back_exactly_is_refused_clearly(message: Message, why: str) -> None:
    with pytest.raises(InvalidMessageError):
        encode_messages([msg("fine"), message])


@pytest.mark.parametrize("value", [float("nan"), {"a": [float("-inf")]}, {1: 2}, "\udfff", {"k": {None: 1}}])
def test_canonical_json_refuses_instead_of_altering(value: Any) -> None:
    with pytest.raises(InvalidMessageError):
        canonical_json(value)


def test_canonical_json_refuses_self_reference_and_non_json_types() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for value in (loop, {1, 2}, datetime.now(UTC), b"bytes"):
        with pytest.raises(InvalidMessageError):
            canonical_json(value)


async def test_a_refused_message_writes_nothing(database: Any) -> None:
    from chatledger import MongoChatMessageStore

    store = MongoChatMessageStore(database)
    with pytest.raises(InvalidMessageError):
        await store.add_messages([msg("ok"), Message("user", ["x"], additional_properties={7: "seven"})])
    assert await database["events"].count_documents({}) == 0
    assert await database["threads"].count_documents({}) == 0


@pytest.mark.parametrize("batch", ["a string", b"bytes", {"role": "user"}, 42])
def test_a_batch_must_be_a_sequence_of_messages(batch: Any) -> None:
    with pytest.raises(InvalidMessageError):
        encode_messages(batch)
    with pytest.raises(InvalidMessageError):
        encode_message(batch)
