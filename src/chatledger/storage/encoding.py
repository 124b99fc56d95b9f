"""BSON and Extended JSON, the driver's encodings, for the floors above storage.

Only storage/ imports the driver; what the admin tools and the ledger need of its
encodings (a document's stored size, the export file's Extended JSON) is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import bson
import bson.errors
from bson import json_util
from bson.json_util import JSONMode, JSONOptions

__all__ = ["dump_extended_json", "encoded_size", "load_extended_json", "storable_size"]

#: Relaxed Extended JSON with aware datetimes: what export files hold.
_JSON: Final = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)


def encoded_size(doc: Mapping[str, Any]) -> int:
    """Return the size of ``doc`` encoded as BSON (what the server stores and limits)."""
    return len(bson.encode(doc))


def storable_size(doc: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """Return ``(size, None)``, or ``(None, why)`` when ``doc`` cannot be encoded as BSON."""
    try:
        return encoded_size(doc), None
    except (bson.errors.InvalidDocument, TypeError, ValueError, OverflowError) as e:
        return None, f"cannot be stored: {e}"


def dump_extended_json(value: Any, *, sort_keys: bool = False) -> str:
    """Return ``value`` as one line of relaxed Extended JSON (non-ASCII kept as is)."""
    return json_util.dumps(value, json_options=_JSON, ensure_ascii=False, sort_keys=sort_keys)


def load_extended_json(text: str) -> Any:
    """Parse relaxed Extended JSON.

    Raises:
        ValueError: the text is not valid (Extended) JSON; the message says why in one line.
    """
    try:
        return json_util.loads(text, json_options=_JSON)
    except (ValueError, TypeError, OverflowError, ArithmeticError, bson.errors.BSONError) as e:
        # Malformed Extended JSON ({"$oid": "5f1d"}, {"$numberDecimal": "x"}, a $date out
        # of range) raises bson's and decimal's own errors: bad input all the same.
        detail = " ".join(str(e).split(" (Consider")[0].split())
        if isinstance(e, ArithmeticError):
            detail = f"a number that cannot be read (a malformed $numberDecimal?): {type(e).__name__}"
        raise ValueError(detail) from e
