"""Logging and OpenTelemetry spans for ChatLedger's operations, never carrying message content.

Logging goes through the standard library's ``logging.getLogger("chatledger")`` (children
such as ``chatledger.ledger`` propagate to it). The library installs only a
``NullHandler``: where records go is the application's choice.

Spans follow Agent Framework's own observability switch,
``agent_framework.observability.OBSERVABILITY_SETTINGS.ENABLED`` (on by default;
``ENABLE_INSTRUMENTATION=false`` or ``disable_instrumentation()`` turns it off), read at
every call so a later switch takes effect at once. With no tracer provider configured
(OpenTelemetry's proxy or no-op provider), no span is started at all: it could record
nothing, so the cost is checking the attributes.

Attributes are named ``chatledger.<name>`` (``chatledger.thread_id``,
``chatledger.events_read``, ``chatledger.branched``, ``chatledger.replayed`` ...) and
must be strings, booleans, ints or floats: a message, a list or a dict is refused with a
``TypeError``, so content cannot slip into a trace by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, cast

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


_SCALAR_TYPES: Final = (str, bool, int, float)
_NO_OP_PROVIDERS: Final = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_UNKNOWN: Final = object()
#: Whether the global provider named by the environment (``OTEL_PYTHON_TRACER_PROVIDER``)
#: has been loaded: OpenTelemetry loads it on the first ``get_tracer_provider()`` call.
_environment_read = False


def _no_op() -> bool:
    """Whether every span would be a non-recording no-op: no tracer provider is configured.

    That is OpenTelemetry's state until an application installs an SDK: the global
    provider is still the proxy (whose tracers hand out non-recording spans) or an
    explicit no-op provider. Starting such a span costs more than the rest of an
    append's own work, and nothing can observe it, so :func:`span` skips it. Checked
    at every call: a provider installed later takes effect at once.
    """
    provider = _tracer_provider
    if provider is None or type(provider) is trace.ProxyTracerProvider:
        # What a proxy's tracers delegate to: the global provider. Read as they read it
        # (the public getter looks the environment up on every call while it is unset,
        # which cost more than the rest of the check); the environment's provider was
        # loaded on the first call, as the first span used to load it.
        global _environment_read
        if not _environment_read:
            trace.get_tracer_provider()
            _environment_read = True
        current: object = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
        if current is None:
            return True
        # An API without that global: ask the public getter.
        provider = trace.get_tracer_provider() if current is _UNKNOWN else cast(trace.TracerProvider, current)
    # Exact types: a subclass may well record.
    return type(provider) in _NO_OP_PROVIDERS


def _check(attributes: dict[str, object]) -> None:
    for key, value in attributes.items():
        # The exact-type test settles every value ChatLedger sets; isinstance admits subclasses.
        if value is not None and type(value) not in _SCALAR_TYPES and not isinstance(value, _SCALAR_TYPES):
            raise TypeError(
                f"span attribute {key!r} must be a str, bool, int or float, not {type(value).__name__}"
                " (ChatLedger never puts message content into telemetry)"
            )


def _checked(attributes: dict[str, object]) -> dict[str, _Scalar]:
    _check(attributes)
    return {
        ATTRIBUTE_PREFIX + key: cast(_Scalar, value) for key, value in attributes.items() if value is not None
    }


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
        if self._span is None:
            _check(attributes)
        else:
            self._span.set_attributes(_checked(attributes))


class _Untraced:
    """What :func:`span` returns when no span is started: yields a recorder that records nowhere."""

    __slots__ = ()

    def __enter__(self) -> SpanRecorder:
        return _UNRECORDED

    def __exit__(self, *exc_info: object) -> None:
        return None  # an exception propagates unchanged


_UNRECORDED: Final = SpanRecorder(None)
#: Returned instead of a generator-based context manager: building one per call cost more
#: than the rest of an untraced span.
_UNTRACED: Final = _Untraced()


def span(name: str, **attributes: object) -> AbstractContextManager[SpanRecorder]:
    """Trace the enclosed operation as ``chatledger.<name>``, unless Agent Framework's switch is off.

    An exception leaving the block is recorded on the span and marks it as an error
    (OpenTelemetry's default), then propagates unchanged.

    Args:
        name: The operation (``"append"``, ``"read"``, ``"resolve"`` ...).
        **attributes: Initial ``chatledger.<name>`` attributes; ``None`` values are skipped.

    Returns:
        A context manager yielding a :class:`SpanRecorder` to add attributes known only
        later (events read, branched).

    Raises:
        TypeError: an attribute value is not a str, bool, int or float.
    """
    if not _enabled() or _no_op():
        _check(attributes)
        return _UNTRACED
    return _traced(name, _checked(attributes))


@contextmanager
def _traced(name: str, checked: dict[str, _Scalar]) -> Iterator[SpanRecorder]:
    tracer = _tracer()
    checked["db.system.name"] = "mongodb"
    with tracer.start_as_current_span(
        ATTRIBUTE_PREFIX + name, kind=trace.SpanKind.INTERNAL, attributes=checked
    ) as otel_span:
        yield SpanRecorder(otel_span)
