"""The checkpoint encoding ``FileCheckpointStorage`` writes, without the framework's private module.

agent-framework-core encodes a checkpoint as JSON: JSON values as they are, plain dicts
and lists recursed, anything else pickled into ``{"__pickled__": base64, "__type__":
"module:qualname"}``. Its encoder and decoder are private (``_checkpoint_encoding``)
and absent or different in other releases, so they are written again here, producing
and reading exactly that format: a checkpoint file the framework wrote loads here
identically, and a record written here is what the file storage would write.

Decoding never unpickles freely. It applies the framework's allow-list rule: Python's
common value types, classes of ``agent_framework``, ``agent_framework_orchestrations``
and ``openai.types``, and the storage's ``allowed_checkpoint_types``; never a metaclass
or a member-less enum (both construct new classes), ``type`` only in its one-argument
form on a value, ``getattr`` only to reach an allowed nested class or an enum member.
Types registered with ``agent_framework.register_checkpoint_type`` are not seen: that
registry is private to the framework (pass them in ``allowed_checkpoint_types``).
"""

from __future__ import annotations

import base64
import io
import pickle
from collections.abc import Set as AbstractSet
from enum import EnumMeta
from typing import Any, Final

from agent_framework import WorkflowCheckpointException

__all__ = ["PICKLED_KEY", "decode_checkpoint_value", "encode_checkpoint_value"]

#: The key of a pickled value's envelope: an encoding without it holds no pickled value.
PICKLED_KEY: Final = "__pickled__"
_PICKLED: Final = PICKLED_KEY
_TYPE: Final = "__type__"
_RESERVED: Final = frozenset({_PICKLED, _TYPE})
_JSON_NATIVE: Final = (str, int, float, bool, type(None))
_ALLOWED_PREFIXES: Final = ("agent_framework.", "agent_framework_orchestrations.", "openai.types.")

#: Globals pickle resolves for common value types (the framework's built-in safe set).
_SAFE_GLOBALS: Final = frozenset(
    {
        *(
            f"builtins:{name}"
            for name in ("object", "complex", "range", "slice", "int", "float", "str", "bytes")
        ),
        *(f"builtins:{name}" for name in ("bytearray", "bool", "set", "frozenset", "list", "dict", "tuple")),
        "copyreg:_reconstructor",
        "datetime:datetime",
        "datetime:date",
        "datetime:time",
        "datetime:timedelta",
        "datetime:timezone",
        "uuid:UUID",
        "decimal:Decimal",
        "collections:OrderedDict",
        "collections:defaultdict",
        "collections:deque",
        "collections:Counter",
    }
)
# Protocol 2 pickles spell builtins "__builtin__".
_GETATTR: Final = frozenset({"builtins:getattr", "__builtin__:getattr"})
_TYPE_CALL: Final = frozenset({"builtins:type", "__builtin__:type"})


def _key(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode_checkpoint_value(value: Any, pickles: list[dict[str, str]] | None = None) -> Any:
    """Return ``value`` encoded as the framework encodes checkpoint values (JSON-serializable).

    Args:
        value: The value.
        pickles: If given, every pickled value's envelope is appended to it (the only
            parts whose decoding can fail).
    """
    cls = type(value)
    if cls is str or cls is int or cls is float or cls is bool or value is None:
        return value  # the common leaves, without isinstance's walk of the MRO
    if cls is dict and all(type(k) is str for k in value):
        # str keys (the common case) stay as they are and cannot collide.
        if _PICKLED in value or _TYPE in value:
            return _pickled(value, pickles)
        return {k: encode_checkpoint_value(v, pickles) for k, v in value.items()}
    if isinstance(value, _JSON_NATIVE):
        return value
    if cls is dict:
        items = [(str(k), v) for k, v in value.items()]
        keys = {k for k, _ in items}
        # A reserved key, or keys that collide once stringified, cannot round-trip as a
        # JSON object: the whole mapping is pickled instead (as the framework does).
        if keys & _RESERVED or len(keys) != len(items):
            return _pickled(value, pickles)
        return {k: encode_checkpoint_value(v, pickles) for k, v in items}
    if cls is list:
        return [encode_checkpoint_value(item, pickles) for item in value]
    return _pickled(value, pickles)


def _pickled(value: Any, pickles: list[dict[str, str]] | None) -> dict[str, str]:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    envelope = {_PICKLED: base64.b64encode(data).decode("ascii"), _TYPE: _key(type(value))}
    if pickles is not None:
        pickles.append(envelope)
    return envelope


def decode_checkpoint_value(value: Any, *, allowed_types: AbstractSet[str]) -> Any:
    """Return the value :func:`encode_checkpoint_value` encoded, restoring only allowed types.

    Args:
        value: A JSON value as stored.
        allowed_types: ``"module:qualname"`` of the classes allowed beyond the safe set.

    Raises:
        WorkflowCheckpointException: a pickled value is malformed, names a class that is
            not allowed, or is not of its recorded type.
    """
    if isinstance(value, dict):
        if _PICKLED in value and _TYPE in value:
            restored = _unpickle(value[_PICKLED], frozenset(allowed_types))
            if _key(type(restored)) != value[_TYPE]:
                raise WorkflowCheckpointException(
                    f"Type mismatch during checkpoint decoding: expected {value[_TYPE]!r}, got "
                    f"{_key(type(restored))!r}; the checkpoint may be corrupted or tampered with"
                )
            return restored
        return {k: decode_checkpoint_value(v, allowed_types=allowed_types) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_checkpoint_value(item, allowed_types=allowed_types) for item in value]
    return value


def _unpickle(encoded: object, allowed: frozenset[str]) -> Any:
    try:
        if not isinstance(encoded, str):
            raise TypeError("the pickled value is not a string")
        data = base64.b64decode(encoded.encode("ascii"), validate=True)
        return _RestrictedUnpickler(data, allowed).load()
    except Exception as e:  # an allowed class's own constructor may raise anything
        raise WorkflowCheckpointException(f"Failed to decode pickled checkpoint data: {e}") from e


def _harmless_class(found: object) -> bool:
    """Return whether ``found`` is a class that cannot build classes or unpickle further."""
    if not isinstance(found, type):
        return False
    # A metaclass builds new classes when called; so does a member-less enum's functional
    # API. Either would let stored data invent a class that passes any later type check.
    if issubclass(found, type) or (isinstance(found, EnumMeta) and len(found) == 0):
        return False
    return not issubclass(found, pickle.Unpickler)


def _one_argument_type(*args: Any, **kwargs: Any) -> Any:
    """``type`` restricted to ``type(value)`` of a non-class value (never a class factory)."""
    if len(args) != 1 or kwargs or isinstance(args[0], type):
        raise pickle.UnpicklingError("checkpoint data may call type() only on a value, to name its class")
    return type(args[0])


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: frozenset[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def _is_allowed(self, cls: type[Any]) -> bool:
        if not _harmless_class(cls):
            return False
        key = _key(cls)
        return key in _SAFE_GLOBALS or key in self._allowed or cls.__module__.startswith(_ALLOWED_PREFIXES)

    def _getattr(self, owner: Any, name: Any) -> Any:
        # Pickle reaches nested classes and enum members (by name) through getattr.
        if not isinstance(owner, type) or not isinstance(name, str):
            raise pickle.UnpicklingError("checkpoint data may use getattr only on a class")
        found = getattr(owner, name)
        if isinstance(found, type) and self._is_allowed(found):
            return found
        if isinstance(owner, EnumMeta) and self._is_allowed(owner) and owner.__members__.get(name) is found:
            return found
        raise pickle.UnpicklingError(f"checkpoint data may not reach {_key(owner)}.{name}")

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}:{name}"
        if key in _GETATTR:
            return self._getattr
        if key in _TYPE_CALL:
            return _one_argument_type
        if key in _SAFE_GLOBALS:
            return super().find_class(module, name)
        listed = key in self._allowed
        # Under the allowed prefixes only top-level classes: a dotted name would walk
        # module attributes to helpers that are not classes.
        if listed or (module.startswith(_ALLOWED_PREFIXES) and "." not in name):
            found = super().find_class(module, name)
            if _harmless_class(found):
                return found
        raise pickle.UnpicklingError(
            f"Checkpoint deserialization blocked for type {key!r}: pass it in the storage's "
            f"allowed_checkpoint_types (e.g. allowed_checkpoint_types=[{key!r}])"
        )
