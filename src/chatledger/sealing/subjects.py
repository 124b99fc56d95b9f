"""Key ids: whose key seals content written in a scope, and the marks that say a subject was erased.

The data subject is the user when the scope has one, else the tenant, else the root
thread; its key id is a digest of the subject (deterministic: two writers creating a
subject's first key at once agree on one key, and a destroyed key's id stays taken).
With per-lineage keys each conversation tree of a user or tenant has its own key
(subject and root thread), so retention can shred one conversation; the subject's own
key id then stays the subject's "erased" mark (:func:`subject_mark`).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

__all__ = ["blocking_marks", "subject_key", "subject_mark"]


@lru_cache(maxsize=4096)
def subject_key(
    tenant_id: str | None,
    user_id: str | None,
    root_id: str,
    per_lineage: bool = False,
    ledger_id: str | None = None,
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Return (key id, subject fields) of the data subject of content written in a scope.

    The subject is the user (within its tenant, if any), else the tenant, else the root
    thread. The key id is a digest: it names the subject's key without spelling out the
    user or tenant id in every ciphertext. With ``per_lineage``, a user's or tenant's
    key is also per conversation tree (``root_id`` joins the subject fields); a
    thread-subject key is per tree anyway.

    With ``ledger_id`` (what every ledger passes: :attr:`Ledger.ledger_id
    <chatledger.ledger.Ledger.ledger_id>`) the subject is *in that ledger*: the id is
    ``k2-…`` and the key document records the ledger, so ledgers sharing one key store
    never share a key (their "support" threads or "alice" users are different subjects).
    Without it, the ``k1-…`` ids written before key ids named their ledger.
    """
    version = "k1" if ledger_id is None else "k2"
    scoped: tuple[tuple[str, str], ...] = () if ledger_id is None else (("ledger_id", ledger_id),)
    # A k2 digest covers the ledger id too: a 4- or 5-item list, never a k1 one.
    tail: list[str | None] = [] if ledger_id is None else [ledger_id]
    if user_id is not None:
        kind, fields = (
            "user",
            (("user_id", user_id),) + ((("tenant_id", tenant_id),) if tenant_id is not None else ()),
        )
        ident: list[str | None] = [kind, tenant_id, user_id]
    elif tenant_id is not None:
        kind, fields, ident = "tenant", (("tenant_id", tenant_id),), ["tenant", tenant_id, None]
    else:
        # k1 wrote root-thread keys as "t" like tenant keys (distinct digests); k2 says "r".
        prefix = "t" if ledger_id is None else "r"
        return _digest_id(version, prefix, ["thread", None, root_id, *tail]), (
            ("root_id", root_id),
            *scoped,
        )
    if per_lineage:
        # Its own id space ("l" and a longer digest): never a subject key's id.
        return _digest_id(version, f"l{kind[0]}", [*ident, root_id, *tail]), (
            *fields,
            ("root_id", root_id),
            *scoped,
        )
    return _digest_id(version, kind[0], [*ident, *tail]), (*fields, *scoped)


def subject_mark(tenant_id: str | None, user_id: str | None, ledger_id: str | None = None) -> str | None:
    """Return the id of a user's or tenant's own key: its tombstone marks the subject erased.

    ``None`` for content of neither (its subject is a root thread). Erasure tombstones
    this id even when the subject only ever had per-lineage keys, and a writer checks
    the marks that cover its scope (:func:`blocking_marks`) before and after creating a
    key, so no key is created for an erased subject.
    """
    if user_id is None and tenant_id is None:
        return None
    return subject_key(tenant_id, user_id, "", False, ledger_id)[0]


def blocking_marks(tenant_id: str | None, user_id: str | None, ledger_id: str | None) -> list[str]:
    """Return the erased marks that forbid a new key in this scope, any of them tombstoned.

    A user's erasure covers the user in every tenant (its mark has no tenant) unless the
    operator scoped it to one tenant (the mark of that user in that tenant); a tenant's
    erasure covers every user of the tenant. The ``k1`` marks, written before key ids
    named their ledger (and by :func:`~chatledger.sealing.destroy_subject_keys` without
    a ledger: every ledger of the key store), count in every ledger.
    """
    subjects = [(tenant_id, user_id)]
    if user_id is not None and tenant_id is not None:
        subjects += [(None, user_id), (tenant_id, None)]
    return [
        mark
        for lid in dict.fromkeys((ledger_id, None))
        for tenant, user in subjects
        if (mark := subject_mark(tenant, user, lid)) is not None
    ]


def _digest_id(version: str, prefix: str, ident: list[str | None]) -> str:
    digest = hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode("utf-8")).hexdigest()[:40]
    return f"{version}-{prefix}{digest}"
