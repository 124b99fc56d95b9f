"""Logging and OpenTelemetry spans for ChatLedger's operations, never carrying message content.

Logging goes through the standard library's ``logging.getLogger("chatledger")`` (children
such as ``chatledger.ledger`` propagate to it). The library installs only a
``NullHandler``: where records go is the application's choice.

Spans follow Agent Framework's own observability switch,
``agent_framework.observability.OBSERVABILITY_SETTINGS.ENABLED`` (on by default;
``ENABLE_INSTRUMENTATION=false`` or ``disable_instrumentation()`` turns it off), read at
every call so a later switch takes effect at once. With no OpenTelemetry SDK configured
the API hands out non-recording spans, so the cost is a few attribute assignments.

Attributes are named ``chatledger.<name>`` (``chatledger.thread_id``,
``chatledger.events_read``, ``chatledger.branched``, ``chatledger.replayed`` ...) and
must be strings, booleans, ints or floats: a message, a list or a dict is refused with a
``TypeError``, so content cannot slip into a trace by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import trace

_observability: Any
try:
    from agent_framework import observability as _observability
except ImportError:  # a framework preview older than its observability module: spans stay off
    _observability = None

__all__ = ["ATTRIBUTE_PREFIX", "SpanRecorder", "logger", "set_tracer_provider", "span"]

#: The logger every ChatLedger module logs through (or through a child of it).
logger: Final = logging.getLogger("chatledger")
logger.addHandler(logging.NullHandler())

#: Prefix of every attribute ChatLedger sets on its spans.
ATTRIBUTE_PREFIX: Final = "chatledger."

_Scalar = str | bool | int | float

_tracer_provider: trace.TracerProvider | None = None


def set_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Send ChatLedger's spans to ``provider`` instead of the global one (``None``: the global again).

    OpenTelemetry lets the global provider be set only once per process; this lets an
    application (or a test) route ChatLedger's spans without touching it.
    """
    global _tracer_provider
    _tracer_provider = provider


#: (provider it was made for, tracer): get_tracer builds a new object on every call, which
#: cost more than the rest of a span on every append.
_cached: tuple[trace.TracerProvider | None, trace.Tracer] | None = None


def _tracer() -> trace.Tracer:
    global _cached
    if _cached is None or _cached[0] is not _tracer_provider:
        from chatledger import __version__  # the package imports this module's users; import late

        _cached = (
            _tracer_provider,
            trace.get_tracer("chatledger", __version__, tracer_provider=_tracer_provider),
        )
    return _cached[1]


def _enabled() -> bool:
    # getattr: the store also runs on the seed's framework previews, whose settings differ.
    settings = getattr(_observability, "OBSERVABILITY_SETTINGS", None)
    return bool(getattr(settings, "ENABLED", False))


def _checked(attributes: dict[str, object]) -> dict[str, _Scalar]:
    checked: dict[str, _Scalar] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if not isinstance(value, str | bool | int | float):
            raise TypeError(
                f"span attribute {key!r} must be a str, bool, int or float, not {type(value).__name__}"
                " (ChatLedger never puts message content into telemetry)"
            )
        checked[ATTRIBUTE_PREFIX + key] = value
    return checked


class SpanRecorder:
    """What :func:`span` yields: adds attributes learned while the operation runs."""

    def __init__(self, otel_span: trace.Span | None) -> None:
        self._span = otel_span

    @property
    def recording(self) -> bool:
        """Whether the attributes go anywhere (a span exists and is recording)."""
        return self._span is not None and self._span.is_recording()

    def set(self, **attributes: object) -> None:
        """Set ``chatledger.<name>`` attributes on the span (``None`` values are skipped).

        Raises:
            TypeError: a value is not a str, bool, int or float (checked even when
                telemetry is off, so a mistake shows up in every test run).
        """
        checked = _checked(attributes)
        if self._span is not None:
            self._span.set_attributes(checked)


@contextmanager
def span(name: str, **attributes: object) -> Iterator[SpanRecorder]:
    """Trace the enclosed operation as ``chatledger.<name>``, unless Agent Framework's switch is off.

    An exception leaving the block is recorded on the span and marks it as an error
    (OpenTelemetry's default), then propagates unchanged.

    Args:
        name: The operation (``"append"``, ``"read"``, ``"resolve"`` ...).
        **attributes: Initial ``chatledger.<name>`` attributes; ``None`` values are skipped.

    Yields:
        A :class:`SpanRecorder` to add attributes known only later (events read, branched).

    Raises:
        TypeError: an attribute value is not a str, bool, int or float.
    """
    checked = _checked(attributes)
    if not _enabled():
        yield SpanRecorder(None)
        return
    tracer = _tracer()
    checked["db.system.name"] = "mongodb"
    with tracer.start_as_current_span(
        ATTRIBUTE_PREFIX + name, kind=trace.SpanKind.INTERNAL, attributes=checked
    ) as otel_span:
        yield SpanRecorder(otel_span)
