"""Thread metadata as every engine stores it alike: checked, and its BSON size measured, before any write.

It lives in storage/ because its size limit is the driver's encoding (``bson``), and only
storage/ talks to the driver; the ledger and the adapters check metadata through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import bson
import bson.errors

from chatledger.errors import InvalidInputError

__all__ = ["MAX_METADATA_BYTES", "MAX_METADATA_DEPTH", "validate_metadata"]

#: Largest thread metadata accepted (BSON bytes). Every branch copies its parent's metadata.
MAX_METADATA_BYTES = 64 * 1024
#: Deepest nesting of mappings and lists accepted in thread metadata (MongoDB allows 100).
MAX_METADATA_DEPTH = 20


def validate_metadata(value: object) -> dict[str, Any] | None:
    """Return thread metadata as plain JSON data (``None`` when empty) if every engine stores it alike.

    Metadata is stored on the thread document and hashed into its digest, so what is
    read back must be exactly what was hashed: values are JSON values (``str``, finite
    numbers within 64 bits, ``bool``, ``None``, lists and mappings; tuples become lists),
    not datetimes or bytes, which BSON gives back changed (milliseconds, UTC, types).
    Keys are ``str`` that no engine reads as an operator or a path (no leading ``$``, no
    ``.``, no NUL), nesting is at most :data:`MAX_METADATA_DEPTH` deep, and the encoded
    document at most :data:`MAX_METADATA_BYTES`. MongoDB and FerretDB disagree about
    such keys (one may store what the other refuses), so they are refused here, before
    any write.

    Raises:
        InvalidInputError: ``value`` is not such a mapping (nothing is written).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, got {type(value).__name__}")
    _check_json_tree(value)
    try:
        # A JSON round trip gives the plain data both the digest and the engine see.
        out = json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False))
        size = len(bson.encode(out))
    except (bson.errors.BSONError, TypeError, ValueError, OverflowError) as e:
        raise InvalidInputError(f"metadata cannot be stored: {e}") from e
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata is {size} bytes encoded; at most {MAX_METADATA_BYTES} are accepted"
        )
    return out or None


def _check_json_tree(value: Mapping[Any, Any]) -> None:
    """Check every key and value of a metadata tree, iteratively (no recursion to exhaust)."""
    stack: list[tuple[object, str, int]] = [(value, "metadata", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, Mapping):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where}: metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            for key, child in item.items():
                if type(key) is not str or not key or key.startswith("$") or "." in key or "\x00" in key:
                    raise InvalidInputError(
                        f"{where}: key {key!r} cannot be stored (keys must be non-empty str without a "
                        "leading '$', '.' or NUL)"
                    )
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list | tuple):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where}: metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        elif item is not None and not isinstance(item, str | int | float):
            raise InvalidInputError(
                f"{where}: a {type(item).__name__} is not a JSON value (store datetimes as ISO-8601 "
                "strings): metadata is hashed, and BSON would give it back changed"
            )
