"""Which threads an admin operation acts on, and the one place that turns that into queries.

Admin code says *which* threads with a :class:`ThreadFilter` (typed, validated values);
only this module turns a filter into the filter documents of the ``threads`` and
``events`` collections, so a value can never widen a query (``{"$ne": None}`` is not a
thread id), and a new field is added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from chatledger.models import validate_name, validate_thread_id
from chatledger.storage.documents import HOLD_FIELDS

__all__ = ["THREAD_VIEWS", "ThreadFilter", "ThreadView", "events_match", "threads_query"]

#: Which fields of a thread document a read returns: ``"all"``; ``"plan"``, everything a
#: removal plan judges (holds, lineage, scope) without the metadata; ``"holds"``, the parent
#: link and the legal holds (totals); ``"selection"``, what choosing an export's threads needs
#: (the filter's fields and the parent link); ``"ids"``.
ThreadView = Literal["all", "plan", "holds", "selection", "ids"]
THREAD_VIEWS: Final[Mapping[str, Mapping[str, Any] | None]] = {
    "all": None,
    "plan": {"metadata": 0},
    "holds": {"parent": 1, **dict.fromkeys(HOLD_FIELDS, 1)},
    "selection": {"_id": 1, "root_id": 1, "tenant_id": 1, "user_id": 1, "parent": 1, "depth": 1},
    "ids": {"_id": 1},
}


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Which threads an admin command acts on; all fields ``None`` means every thread.

    Raises:
        InvalidThreadIdError: ``thread_id`` or ``root_id`` is not a usable thread id.
        InvalidInputError: ``tenant_id`` or ``user_id`` is not a plain non-empty string.
    """

    thread_id: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    root_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("thread_id", "root_id"):
            value = getattr(self, name)
            if value is not None:
                validate_thread_id(value)
        if self.tenant_id is not None:
            validate_name("tenant id", self.tenant_id)
        if self.user_id is not None:
            validate_name("user id", self.user_id)

    @property
    def everything(self) -> bool:
        """Whether the filter selects every thread (no field set)."""
        return not self.describe()

    def describe(self) -> dict[str, str]:
        """Return the non-empty fields, for receipts and reports."""
        return {
            k: v
            for k, v in (
                ("thread_id", self.thread_id),
                ("tenant_id", self.tenant_id),
                ("user_id", self.user_id),
                ("root_id", self.root_id),
            )
            if v is not None
        }

    def query(self) -> dict[str, Any]:
        """Return the ``threads`` query of this filter (storage's; kept for callers not yet moved)."""
        return threads_query(self)


def threads_query(
    thread_filter: ThreadFilter | None, *, created_before: datetime | None = None
) -> dict[str, Any]:
    """Return the ``threads`` filter document selecting the matching thread documents.

    Args:
        thread_filter: Which threads (``None``: all).
        created_before: Only threads created before this time (an activity is never older
            than its thread, so an age filter can skip younger threads on the server).
    """
    described = thread_filter.describe() if thread_filter is not None else {}
    query: dict[str, Any] = {("_id" if k == "thread_id" else k): v for k, v in described.items()}
    if created_before is not None:
        query["created_at"] = {"$lt": created_before}
    return query


def events_match(thread_filter: ThreadFilter | None) -> dict[str, Any]:
    """Return the ``events`` filter document selecting the events the matching threads' scope carries.

    Events carry their thread's id, root and scope, so an event whose thread document is
    gone is still selected (``verify`` names those).
    """
    return dict(thread_filter.describe()) if thread_filter is not None else {}
