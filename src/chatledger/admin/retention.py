"""Retention: remove lineages whose last activity is older than a policy allows.

The age of a lineage is the newest activity among a thread and all its branches, so
a recent branch keeps every ancestor it replays through. A thread is removed only
together with all its branches, never while a hold protects any of them (or an
ancestor), and only when the run is applied: planning alone changes nothing.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

from chatledger.admin._checks import (
    require_callback,
    require_datetime,
    require_removal_run,
)
from chatledger.admin.catalog import (
    Forest,
    ThreadFilter,
    activity,
    as_ledger,
    count_threads,
    family_chunks,
    validate_name,
)
from chatledger.admin.receipts import operator_identity
from chatledger.admin.removal import (
    Removal,
    RemovalReport,
    execute,
    key_store_of,
    lineage_removal,
    select_lineages,
    set_aside_damaged,
)
from chatledger.errors import InvalidInputError
from chatledger.storage.keys import KeyStore

__all__ = [
    "RetentionPolicy",
    "count_retention_candidates",
    "parse_duration",
    "plan_retention",
    "run_retention",
]

_DURATION: Final = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}
#: Words a policy may use for "never remove".
_FOREVER: Final = ("forever", "never", "keep")


def parse_duration(text: object) -> timedelta:
    """Return the duration written as ``90d``, ``12h``, ``2w``, ``30m``, ``45s`` (a bare number is days).

    Raises:
        InvalidInputError: ``text`` is not such a duration, is zero, or is longer than
            a ``timedelta`` can hold (about 2.7 million years).
    """
    if type(text) is int and text > 0:
        match = _DURATION.match(str(text))
    else:
        match = _DURATION.match(text) if isinstance(text, str) and len(text) <= 100 else None
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(f"not a positive duration: {_shown(text)} (use e.g. 90d, 12h, 2w)")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except (OverflowError, ValueError) as e:
        raise InvalidInputError(f"duration {_shown(text)} is too long to be a retention age") from e


def _shown(value: object) -> str:
    # A 10**30 or a megabyte of digits is named, not printed whole, in one error line.
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _age(value: object, name: str) -> timedelta | None:
    """Return a policy age given as a ``timedelta`` (or ``None``: forever), if it is positive."""
    if value is None:
        return None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInputError(f"{name} must be a positive timedelta or None (forever), not {_shown(value)}")
    return value


def _max_age(value: object) -> timedelta | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _FOREVER):
        return None
    return parse_duration(value)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long lineages may stay inactive: a default and per-tenant overrides.

    ``None`` means keep forever. A thread without a tenant follows the default.
    """

    default: timedelta | None = None
    tenants: Mapping[str, timedelta | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Built directly too (not only from a mapping): a zero or negative age would
        # make every thread "due", so it is refused here, before any run can use it.
        _age(self.default, "the default age")
        if not isinstance(self.tenants, Mapping):
            raise InvalidInputError("tenants must map tenant ids to ages")
        for tenant, age in self.tenants.items():
            validate_name("tenant id", tenant)
            _age(age, f"the age of tenant {tenant!r}")

    def max_age(self, tenant_id: str | None) -> timedelta | None:
        """Return the longest inactivity allowed for a tenant's lineages (``None``: forever)."""
        if tenant_id is not None and tenant_id in self.tenants:
            return self.tenants[tenant_id]
        return self.default

    @classmethod
    def from_mapping(cls, data: object) -> RetentionPolicy:
        """Return the policy in ``{"default": "365d", "tenants": {"acme": "30d", "bank": "forever"}}``.

        Raises:
            InvalidInputError: the mapping is not such a policy.
        """
        if not isinstance(data, Mapping) or not set(data) <= {"default", "tenants"}:
            raise InvalidInputError('a retention policy is {"default": AGE, "tenants": {TENANT: AGE}}')
        tenants = data.get("tenants") or {}
        if not isinstance(tenants, Mapping):
            raise InvalidInputError("policy 'tenants' must map tenant ids to ages")
        policy = cls(
            _max_age(data.get("default")),
            {validate_name("tenant id", k): _max_age(v) for k, v in tenants.items()},
        )
        if policy.default is None and all(v is None for v in policy.tenants.values()):
            raise InvalidInputError("the policy removes nothing: give a default or a tenant an age")
        return policy

    @classmethod
    def load(cls, path: str | Path) -> RetentionPolicy:
        """Return the policy in a JSON or TOML file (chosen by the ``.toml`` suffix).

        Raises:
            InvalidInputError: the file cannot be read or is not a policy.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read retention policy {str(path)!r}: {e}") from e
        return cls.from_mapping(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as recorded in receipts (ages in seconds)."""

        def seconds(age: timedelta | None) -> int | None:
            return None if age is None else int(age.total_seconds())

        return {"default": seconds(self.default), "tenants": {k: seconds(v) for k, v in self.tenants.items()}}


def _scopes(policy: RetentionPolicy) -> list[ThreadFilter]:
    """Return the thread filters a policy can touch: everyone when it has a default."""
    if policy.default is not None:
        return [ThreadFilter()]
    return [ThreadFilter(tenant_id=t) for t, age in policy.tenants.items() if age is not None]


async def count_retention_candidates(target: Any, policy: RetentionPolicy) -> int:
    """Return how many threads planning ``policy`` examines (one ``count`` each scope; a progress total)."""
    if not isinstance(policy, RetentionPolicy):
        raise InvalidInputError(f"policy must be a RetentionPolicy, not {type(policy).__name__}")
    ledger = as_ledger(target)
    return sum([await count_threads(ledger, scope) for scope in _scopes(policy)])


async def plan_retention(
    target: Any,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    on_thread: Callable[[str], None] | None = None,
) -> RemovalReport:
    """Return what ``policy`` would remove now (a dry-run report); nothing is changed.

    Memory stays bounded by the plan, not by the deployment: the threads the policy
    can touch are streamed one conversation tree at a time, in chunks (one ``$group``
    counts a chunk's events; each thread's newest event is one indexed query), and
    each tree is decided and dropped before the next chunk is read.

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        policy: The retention policy.
        now: The reference time (tests pin it); the current time by default.
        on_thread: Called with each thread id examined (progress reporting; the total is
            :func:`count_retention_candidates`).
    """
    if not isinstance(policy, RetentionPolicy):
        raise InvalidInputError(f"policy must be a RetentionPolicy, not {type(policy).__name__}")
    require_datetime(now, "now")
    require_callback(on_thread, "on_thread")
    ledger = as_ledger(target)
    now = now or datetime.now(UTC)
    report = RemovalReport("retention", dry_run=True)
    for scope in _scopes(policy):
        async for chunk in family_chunks(ledger, scope, whole=True, view="plan"):
            merged = Forest()
            for family in chunk:
                merged.docs.update(family.forest.docs)
            act = await activity(ledger, merged)
            for family in chunk:
                docs = family.forest.docs
                # A lineage's last activity is the newest of its threads and all their branches.
                newest = family.forest.newest({t: a.last_activity for t, a in act.items()})
                due = set()
                for tid in family.matching:
                    age = policy.max_age(docs[tid].get("tenant_id"))
                    last = newest.get(tid)
                    if age is not None and last is not None and now - last > age:
                        due.add(tid)
                    if on_thread is not None:
                        on_thread(tid)
                due = set_aside_damaged(report, family.forest, due, act)
                select_lineages(report, family.forest, due, partial(lineage_removal, family.forest, act))
    return report


async def run_retention(
    target: Any,
    policy: RetentionPolicy,
    *,
    apply: bool = False,
    by: str | None = None,
    reason: str = "retention policy",
    now: datetime | None = None,
    on_removal: Callable[[Removal], None] | None = None,
    on_thread: Callable[[str], None] | None = None,
    on_plan: Callable[[RemovalReport], None] | None = None,
    shred_keys: bool = True,
    key_store: KeyStore | None = None,
    on_keys: Callable[[Any], None] | None = None,
) -> RemovalReport:
    """Plan retention and, only when ``apply`` is true, remove what it selects.

    Interrupted removals from earlier runs are finished first (reported, when dry).

    Args:
        target: A :class:`~chatledger.ledger.Ledger` or a database handle.
        policy: The retention policy.
        apply: Remove; without it this is a dry run that changes nothing.
        by: Who acts, for the receipts; ``user@host`` by default.
        reason: Why, for the receipts.
        now: The reference time; the current time by default.
        on_removal: Called after each lineage is handled (progress reporting).
        on_thread: Called with each thread examined while planning (progress reporting).
        on_plan: Called once with the plan (dry run), before anything is removed, so a
            caller can show how many lineages are to come.
        shred_keys: With sealing configured (``key_store``, or the ledger's sealer), also
            destroy the keys of every conversation tree removed whole (per-lineage keys,
            see ``Sealer(per_lineage=True)``), with a ``keys.destroyed`` receipt. A
            user's or tenant's own key is never destroyed by retention.
        key_store: The keys collection (default: the ledger's sealer's, if any).
        on_keys: Called with the :class:`~chatledger.sealing.ShredReport`.

    Returns:
        The report: planned lineages, receipts written, lineages skipped and why.

    Raises:
        InvalidInputError: an argument is not of its type (``policy`` must be a
            :class:`RetentionPolicy`, ``apply`` and ``shred_keys`` real bools), checked
            before anything is read or written.
    """
    apply, shred_keys = require_removal_run(
        apply=apply,
        shred_keys=shred_keys,
        by=by,
        reason=reason,
        key_store=key_store,
        callbacks={"on_removal": on_removal, "on_thread": on_thread, "on_plan": on_plan, "on_keys": on_keys},
    )
    ledger = as_ledger(target)
    report = await plan_retention(ledger, policy, now=now, on_thread=on_thread)
    report.dry_run = not apply
    if on_plan is not None:
        on_plan(report)
    by = by or operator_identity()
    scope = {"policy": policy.to_dict()}
    report = await execute(ledger, report, by=by, reason=reason, scope=scope, on_removal=on_removal)
    key_store = key_store_of(ledger, key_store)
    if shred_keys and key_store is not None:
        from chatledger.admin.shredding import shred_removed_trees

        shred = await shred_removed_trees(ledger, key_store, report, by=by, reason=reason, scope=scope)
        if on_keys is not None:
            on_keys(shred)
    return report
