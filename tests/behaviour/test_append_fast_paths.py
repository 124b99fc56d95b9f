"""The append path's fast paths do exactly what the general paths do.

- The documents an append inserts are byte for byte what they were before the fast
  paths (a digest of their BSON, taken with the code before them).
- ``Gate.call`` translates every driver error exactly as ``Gate.translated`` does.
- ``new_event_id`` is ``uuid.uuid4().hex``, bit for bit.
- A cursor assembled after an append is the one validation builds, and values it
  would change or refuse are validated; ``utc_now_ms`` is ``now(UTC)`` cut to milliseconds.
- An untraced span (no tracer provider configured) behaves as the non-recording span
  OpenTelemetry's proxy would hand out, and a provider installed later is used at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from agent_framework import Message
from opentelemetry import trace
from pydantic import ValidationError
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

import chatledger.ledger.documents as documents
import chatledger.ledger.pending as pending
import chatledger.ledger.positions as positions
import chatledger.models as models
from chatledger import Ledger, MongoChatMessageStore, telemetry
from chatledger.ledger import storage_of
from chatledger.ledger.pending import new_event_id
from chatledger.models import Cursor, utc_now_ms
from chatledger.storage.gate import Gate
from tests.helpers import msg, tricky_message

# --------------------------------------------------------------------------- stored bytes

#: sha256 of the BSON of the five event documents the appends below insert, as the
#: code before the append fast paths wrote them (same ids, same clock).
_GOLDEN = "acb75417bf060ab15def3f841fba7c1087f0a85c209753606e5662b5f728dde2"


class _Recorder:
    """The events collection, recording the BSON of every document handed to the driver."""

    def __init__(self, collection: Any, out: list[bytes]) -> None:
        self._collection = collection
        self._out = out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def insert_one(self, doc: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self._out.append(bson.encode(doc))
        return self._collection.insert_one(doc, *args, **kwargs)


async def test_appended_documents_are_byte_identical_to_before(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(database)
    inserted: list[bytes] = []
    storage_of(ledger).events.collection = _Recorder(storage_of(ledger).events.collection, inserted)
    store = MongoChatMessageStore(ledger, thread_id="golden", tenant_id="acme", user_id="u1")
    counter = itertools.count(1)

    def event_id() -> str:
        seed = hashlib.sha256(str(next(counter)).encode()).digest()[:16]
        return uuid.UUID(bytes=seed, version=4).hex

    fixed = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)
    monkeypatch.setattr(documents, "utc_now_ms", lambda: fixed)
    monkeypatch.setattr(pending, "new_event_id", event_id)

    await store.add_messages([msg("hello")])  # a new thread: its first event vouches for it
    await store.add_messages(
        [
            Message(
                "assistant" if i % 2 else "user",
                [f"m{i} é 🌍"],
                message_id=f"id{i}" if i % 2 else None,
                author_name="bot" if i == 3 else None,
            )
            for i in range(10)
        ]
    )
    await store.add_messages([tricky_message()])
    binding = ledger.bind()
    result = await binding.append(binding.empty("golden-b"), [msg("x")], event_id="e-1")
    await binding.append(result.position, [msg("y"), msg("z", "assistant")], event_id="e-2")

    assert len(inserted) == 5
    assert hashlib.sha256(b"".join(inserted)).hexdigest() == _GOLDEN


# --------------------------------------------------------------------------- the gate


class _Database:
    """Just enough of an async database handle for a gate."""

    name = "db"

    def get_collection(self, name: str) -> Any:  # pragma: no cover - never called here
        raise AssertionError


_ERRORS: list[BaseException] = [
    DuplicateKeyError("E11000 duplicate key"),
    ExecutionTimeout("operation exceeded time limit"),
    WTimeoutError("waiting for replication timed out"),
    TimeoutError(),
    AutoReconnect("connection closed"),
    NetworkTimeout("timed out"),
    ConnectionFailure("refused"),
    DocumentTooLarge("too large"),
    InvalidOperation("client closed"),
    OperationFailure("bad", code=2),
    PyMongoError("anything"),
    ValueError("not a driver error"),
]


async def _raise(error: BaseException) -> None:
    raise error


async def _caught(awaitable: Awaitable[Any]) -> BaseException:
    """The exception ``awaitable`` raises (whatever it is: that is what is compared)."""
    try:
        await awaitable
    except BaseException as e:
        return e
    raise AssertionError("nothing was raised")


async def _through_translated(gate: Gate, awaitable: Awaitable[Any]) -> None:
    async with gate.translated("append event"):
        await awaitable


def _outcome(error: BaseException) -> tuple[type[BaseException], str, BaseException | None]:
    return type(error), str(error), error.__cause__


@pytest.mark.parametrize("error", _ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("operation_timeout", [None, 5.0])
async def test_gate_call_translates_every_error_as_translated_does(
    error: BaseException, operation_timeout: float | None
) -> None:
    gate = Gate(_Database(), operation_timeout=operation_timeout, consistency="client")
    general = await _caught(_through_translated(gate, _raise(error)))
    fast = await _caught(gate.call("append event", _raise(error)))
    assert _outcome(fast) == _outcome(general)
    assert fast is error or fast.__cause__ is error


async def test_gate_call_timeout_is_translated() -> None:
    gate = Gate(_Database(), operation_timeout=0.01, consistency="client")
    fast = await _caught(gate.call("append event", asyncio.sleep(1)))
    general = await _caught(_through_translated(gate, asyncio.wait_for(asyncio.sleep(1), 0.01)))
    assert _outcome(fast)[:2] == _outcome(general)[:2]
    assert "operation_timeout=0.01s" in str(fast)


# --------------------------------------------------------------------------- event ids


def test_new_event_id_is_uuid4_hex_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [bytes(16), b"\xff" * 16, *(hashlib.sha256(bytes([i])).digest()[:16] for i in range(200))]
    for seed in seeds:
        monkeypatch.setattr(pending.os, "urandom", lambda n, seed=seed: seed[:n])
        assert new_event_id() == uuid.UUID(bytes=seed, version=4).hex
    monkeypatch.undo()
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).hex == i for i in ids)


# --------------------------------------------------------------------------- spans


class _Tracer(trace.NoOpTracer):
    def __init__(self, spans: list[str]) -> None:
        self.spans = spans

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        self.spans.append(name)
        return super().start_span(name, *args, **kwargs)


class _Provider(trace.NoOpTracerProvider):
    """Records the names of the spans started (a subclass: must never count as a no-op)."""

    def __init__(self) -> None:
        self.spans: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Tracer(self.spans)


@pytest.fixture
def no_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """OpenTelemetry as an application without an SDK has it: the proxy, nothing installed."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(telemetry, "_tracer_provider", None)
    monkeypatch.setattr(telemetry, "_cached", None)  # its proxy tracer may remember a real one
    yield
    telemetry._cached = None


def _run(span_fn: Any) -> tuple[bool, type[BaseException] | None, bool]:
    """What a caller of ``span`` can observe: recording?, what escaped, bad attributes refused?"""
    escaped: type[BaseException] | None = None
    recording = True
    try:
        with span_fn("append", thread_id="t", messages=1) as recorder:
            recording = recorder.recording
            recorder.set(offset=3, branched=False, replayed=None)
            raise KeyError("inside")
    except KeyError as e:
        escaped = type(e)
    refused = False
    try:
        with span_fn("read") as recorder:
            recorder.set(message=msg("secret"))
    except TypeError:
        refused = True
    return recording, escaped, refused


@pytest.mark.usefixtures("no_provider")
def test_an_untraced_span_behaves_as_the_proxys_non_recording_span(monkeypatch: pytest.MonkeyPatch) -> None:
    assert telemetry._no_op()
    untraced = _run(telemetry.span)
    with monkeypatch.context() as m:
        m.setattr(telemetry, "_no_op", lambda: False)  # the general path: OpenTelemetry's proxy
        general = _run(telemetry.span)
    assert untraced == general == (False, KeyError, True)
    with pytest.raises(TypeError):
        telemetry.span("read", message=msg("secret"))  # refused before anything runs


@pytest.mark.usefixtures("no_provider")
def test_a_provider_installed_later_is_used_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert telemetry._no_op()
    with telemetry.span("before"):
        pass
    provider = _Provider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # as trace.set_tracer_provider() does
    assert not telemetry._no_op()
    with telemetry.span("after"):
        pass
    assert provider.spans == ["chatledger.after"]


@pytest.mark.usefixtures("no_provider")
def test_only_exact_no_op_providers_skip_spans() -> None:
    telemetry.set_tracer_provider(trace.NoOpTracerProvider())
    try:
        assert telemetry._no_op()
        telemetry.set_tracer_provider(trace.ProxyTracerProvider())  # follows the (unset) global one
        assert telemetry._no_op()
        recording = _Provider()
        telemetry.set_tracer_provider(recording)
        assert not telemetry._no_op()
        with telemetry.span("append"):
            pass
        assert recording.spans == ["chatledger.append"]
    finally:
        telemetry.set_tracer_provider(None)


# --------------------------------------------------------------------------- cursors and clock


@pytest.mark.parametrize(
    ("thread_id", "seq"),
    [("t", 0), ("a#b", 7), ("é🌍" * 50, 2**40), ("x" * 200, 1)],
)
def test_an_assembled_cursor_is_the_validated_one(thread_id: str, seq: int) -> None:
    assert positions._ASSEMBLE  # on the pinned pydantic the fast path is in use
    fast = positions.trusted_cursor(thread_id, seq)
    general = Cursor(thread_id=thread_id, offset=seq)
    assert fast.__getstate__() == general.__getstate__()
    assert fast == general
    assert hash(fast) == hash(general)
    assert repr(fast) == repr(general)
    assert fast.model_dump() == general.model_dump()
    assert fast.to_state() == general.to_state()
    with pytest.raises(ValidationError):
        fast.offset = 1  # type: ignore[misc]  # frozen like the validated one


class _Str(str):
    pass


@pytest.mark.parametrize(
    ("thread_id", "seq"),
    [("", 1), ("x" * 201, 1), ("a\x00b", 1), ("t", -1), ("t", True), (_Str("t"), 1), (7, 1), ("t", "3")],
)
def test_values_validation_would_change_or_refuse_are_validated(thread_id: Any, seq: Any) -> None:
    def general() -> Any:
        return Cursor(thread_id=str(thread_id), offset=int(seq))

    try:
        expected = general()
    except Exception as e:
        with pytest.raises(type(e)):
            positions.trusted_cursor(thread_id, seq)
        return
    got = positions.trusted_cursor(thread_id, seq)
    assert got.__getstate__() == expected.__getstate__()


def _truncated(now: datetime) -> datetime:
    """What utc_now_ms returned before: now(UTC) with its microseconds cut to milliseconds."""
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def test_utc_now_ms_is_now_truncated_to_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for ns in (
        0,
        999_999,
        1_000_000,
        1_764_072_000_123_456_789,
        1_764_072_000_999_999_999,
        4_102_444_800 * 10**9,
    ):
        monkeypatch.setattr(models.time, "time_ns", lambda ns=ns: ns)
        reference = datetime.fromtimestamp(ns // 10**9, UTC).replace(microsecond=ns % 10**9 // 1000)
        got = utc_now_ms()
        assert got == _truncated(reference)
        assert got.tzinfo is UTC
        assert got.utcoffset() == timedelta(0)
    monkeypatch.undo()
    before = _truncated(datetime.now(UTC))
    got = utc_now_ms()
    after = datetime.now(UTC)
    assert before <= got <= after
    assert got.microsecond % 1000 == 0
    assert got.tzinfo is UTC
