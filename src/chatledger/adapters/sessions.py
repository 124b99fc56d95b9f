"""``MongoSessionStore``: the framework's ``SessionStore`` as a ledger of session snapshots.

Layout: each session id names one thread in the store's scope (source id
``"session_store"`` by default); every :meth:`~MongoSessionStore.set` appends one event
holding the snapshot (``AgentSession.to_dict()`` as JSON, one message of role
``"chatledger.session"``), so version *n* is the event at seq *n*: nothing is ever
overwritten, older versions stay readable, and the snapshots are hash-chained, sealed
when the ledger seals, verified, exported, held and erased like any thread.

A delete removes the thread through the removal protocol (receipt, refused under a
legal hold). The session id can be used again afterwards: it then names the next
*generation* of the thread (a removed thread's id is never reused).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, ClassVar, Final, Unpack

from agent_framework import AgentSession

from chatledger.adapters.connection import check_source_id
from chatledger.adapters.sources import LedgerOwner, StoreOptions, record_text
from chatledger.admin.records import SESSION_ROLE
from chatledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    ThreadRemovedError,
    VersionConflictError,
)
from chatledger.ledger import Position, storage_of

__all__ = ["SESSION_ROLE", "MongoSessionStore"]

#: Longest session id accepted (the framework's ``FileSessionStore`` limit).
MAX_SESSION_ID_LENGTH: Final = 128
#: Session ids whose current thread and last seen version this store remembers.
_SEEN_KEPT: Final = 10_000
#: Characters of stored snapshots (the newest version's event, as read) a store keeps, so
#: a ``get`` of an unchanged session reads only whether the next position is free.
_DOCS_KEPT_CHARS: Final = 16 * 1024 * 1024


def _check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise InvalidInputError("session_id must be a non-empty string")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidInputError(f"session_id must be at most {MAX_SESSION_ID_LENGTH} characters")
    return session_id


def _encode(session: object) -> str:
    if not isinstance(session, AgentSession):
        raise InvalidInputError(f"session must be an AgentSession, got {type(session).__name__}")
    try:
        return json.dumps(session.to_dict(), ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(
            f"session {session.session_id!r} cannot be stored: its state is not serializable ({e}); "
            "register custom state types with agent_framework.register_state_type"
        ) from None


def _names(doc: dict[str, Any], at: Position) -> bool:
    """Return whether ``doc`` is the event at ``at``."""
    return doc.get("seq") == at.offset and doc.get("thread_id") == at.thread_id


def _metadata(at: Position, session_id: str) -> dict[str, str] | None:
    """Return the metadata of the session's thread if an append at ``at`` creates it.

    An append uses metadata only to create a thread: on an existing one, none is passed
    (and so none is validated again).
    """
    return {"session_id": session_id} if at.thread is None else None


class MongoSessionStore(LedgerOwner):
    """Keeps Agent Framework session snapshots in MongoDB, every version of them.

    It offers the methods of the framework's ``SessionStore`` and behaves like its
    in-memory store (``get`` returns an
    independent copy or ``None``, ``delete`` of an unknown id does nothing), with three
    additions an audit log needs:

    - **versions**: each ``set`` appends version ``n + 1``; :meth:`get_version` reads
      any earlier one (time travel), :meth:`version` says which is current;
    - **compare-and-set**: a ``set`` expects the version this store last read or wrote
      for the id (or ``expected_version``); if another writer got there first it
      raises :class:`~chatledger.errors.VersionConflictError` and writes nothing;
    - **removal with receipts**: ``delete`` removes every version through the removal
      protocol (an audit receipt, refused under legal hold); erasure of the user or
      tenant and retention reach the snapshots like any thread.

    Args:
        source_id: Part of the scope of the store's threads (separate from history providers').
        deleted_by: Who deletes, as recorded in removal receipts.
        **options: Where the database is, the scope (``tenant_id``, ``user_id``) and the
            ledger's options: the keywords of :class:`MongoHistoryProvider`, documented
            there (``sealer=`` seals the snapshots).

    Raises:
        InvalidInputError: an ``options`` error, as :class:`MongoHistoryProvider` raises it.
    """

    DEFAULT_SOURCE_ID: ClassVar[str] = "session_store"

    def __init__(
        self,
        source_id: str = DEFAULT_SOURCE_ID,
        *,
        deleted_by: str = "application",
        **options: Unpack[StoreOptions],
    ) -> None:
        self.source_id = check_source_id(source_id)
        self._open(options)
        self.deleted_by = deleted_by
        # session id -> (its current thread, the version this store last read or wrote,
        # and that version's position when known: a set builds on it without a read)
        self._seen: OrderedDict[str, tuple[str, int, Position | None]] = OrderedDict()
        # session id -> (the stored event of a version it read, its size): see _keep_doc
        self._docs: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._docs_chars = 0

    @staticmethod
    def validate_session_id(session_id: str) -> None:
        """Check an id for use with this store (the framework's ``SessionStore`` API).

        Raises:
            InvalidInputError: it is not a non-empty string of at most 128 characters
                (also a ``ValueError``, what the framework's stores raise).
        """
        _check_session_id(session_id)

    # ------------------------------------------------------------------ threads

    def _thread_id(self, session_id: str, generation: int) -> str:
        # Never the bare session id: in the default scope a name is the thread id itself,
        # and a history provider's thread may already be named after the same session id.
        name = json.dumps(["session", session_id, generation], ensure_ascii=False)
        return self.binding.thread_id_for(name)

    async def _thread(self, session_id: str) -> str:
        """Return the id of the session's live thread, or of the one its next ``set`` creates."""
        generation = 0
        while True:
            thread_id = self._thread_id(session_id, generation)
            raw = await storage_of(self.ledger).threads.get_raw(thread_id)
            if raw is None or "removed" not in raw:
                return thread_id
            generation += 1  # deleted: the id names its next generation

    async def _head(self, session_id: str, *, full: bool = False) -> tuple[Position, dict[str, Any] | None]:
        """Return the newest version's position (offset 0: not stored) and, if ``full``, its event."""
        seen = self._seen.get(session_id)
        if seen is not None:
            # Only one generation is live at a time, so a thread seen live that still has
            # versions is the current one: no probe needed. (Deleted meanwhile, it reads empty.)
            at, doc = await self.binding.head_event(seen[0], full=full)
            if at.offset:
                return at, doc
        return await self.binding.head_event(await self._thread(session_id), full=full)

    def _drop_doc(self, session_id: str) -> None:
        dropped = self._docs.pop(session_id, None)
        if dropped is not None:
            self._docs_chars -= dropped[1]

    def _keep_doc(self, session_id: str, doc: dict[str, Any], size: int) -> None:
        """Keep the stored event of the session's newest version, within :data:`_DOCS_KEPT_CHARS`."""
        self._drop_doc(session_id)
        if size > _DOCS_KEPT_CHARS // 4:
            return  # one large snapshot would evict every other
        self._docs[session_id] = (doc, size)
        self._docs_chars += size
        while self._docs_chars > _DOCS_KEPT_CHARS:
            self._docs_chars -= self._docs.popitem(last=False)[1][1]

    def _remember(self, session_id: str, thread_id: str, version: int, at: Position | None = None) -> None:
        self._seen[session_id] = (thread_id, version, at)
        self._seen.move_to_end(session_id)
        while len(self._seen) > _SEEN_KEPT:
            self._seen.popitem(last=False)

    async def _read(
        self, at: Position, doc: dict[str, Any] | None = None, *, keep: str | None = None
    ) -> AgentSession:
        # A session's thread never branches (every set is strict), so the version is the
        # event at that seq of the thread itself: one read by primary key, unless the
        # head query already returned it.
        if doc is None or not _names(doc, at):
            doc = await storage_of(self.ledger).events.at(at.thread_id, at.offset, full=True)
        if doc is None:
            raise IntegrityError(f"version {at.offset} of thread {at.thread_id!r} is missing")
        # Opened on every read, never kept open: a sealed snapshot stays as unreadable here
        # as in the database once its key is destroyed.
        text = await record_text(self.ledger, doc, (SESSION_ROLE,), self.binding.scope)
        if keep is not None:
            self._keep_doc(keep, doc, len(text))
        try:
            return AgentSession.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as e:
            raise IntegrityError(
                f"the session snapshot at {at.offset} of thread {at.thread_id!r} cannot be restored: {e}"
            ) from e

    # ------------------------------------------------------------------ SessionStore

    async def get(self, session_id: str) -> AgentSession | None:
        """Return the newest snapshot of the session (an independent copy), or ``None`` when absent.

        Raises:
            InvalidInputError: ``session_id`` is not a non-empty string of at most 128 characters.
            IntegrityError: the stored snapshot is malformed.
        """
        _check_session_id(session_id)
        known = self._seen.get(session_id)
        if known is not None and known[1] > 0 and known[2] is not None:
            # The version this store last read or wrote is still the newest while the
            # position after it is free: a newer version, or a removal's closing mark
            # (written before anything is hollowed), would take it. One read of an exact
            # key (the head query is a sort, which some engines answer with a scan); the
            # event itself, immutable, is the one kept from the last read when there is one.
            events = storage_of(self.ledger).events
            if not await events.occupied(known[0], known[1] + 1):
                self._seen.move_to_end(session_id)
                kept = self._docs.get(session_id)
                doc = kept[0] if kept is not None and _names(kept[0], known[2]) else None
                return await self._read(known[2], doc, keep=session_id)
        at, doc = await self._head(session_id, full=True)
        self._remember(session_id, at.thread_id, at.offset, at)
        if at.offset == 0:
            return None
        return await self._read(at, doc, keep=session_id)

    async def set(
        self, session_id: str, session: AgentSession, *, expected_version: int | None = None
    ) -> None:
        """Store ``session`` as the session's next version; earlier versions are kept.

        Args:
            session_id: The session's id in this store.
            session: The session to store (a snapshot is taken; later changes are not stored).
            expected_version: The version the write builds on (0: the session must not
                exist). By default, the version this store last read or wrote for the id;
                for an id it never saw, the current one (a blind write).

        Raises:
            InvalidInputError: a bad id, or a session whose state cannot be serialized.
            VersionConflictError: the session moved on (or was deleted) since the expected
                version; nothing was written. Re-read it (``get``) and try again.
        """
        _check_session_id(session_id)
        if expected_version is not None and (type(expected_version) is not int or expected_version < 0):
            raise InvalidInputError("expected_version must be a non-negative int or None")
        text = _encode(session)
        stored = [{"role": SESSION_ROLE, "text": text}]
        known = self._seen.get(session_id)
        if expected_version is None and known is not None and known[2] is not None:
            # Building on the version this store last read or wrote: the strict append is
            # itself the compare-and-set (the position is taken if the session moved on,
            # sealed if it was deleted), so no read comes first. On a conflict the checks
            # below find out which, and say so.
            try:
                result = await self.binding.append(
                    known[2], stored=stored, strict=True, metadata=_metadata(known[2], session_id)
                )
            except (ConcurrencyError, ThreadRemovedError):
                pass
            else:
                self._remember(session_id, known[0], result.position.offset, result.position)
                return
        at = (await self._head(session_id))[0]
        thread_id = at.thread_id
        seen = known[:2] if known is not None else None
        if expected_version is not None:
            seen = (thread_id, expected_version)
        if seen is not None and seen != (thread_id, at.offset):
            raise VersionConflictError(
                f"session {session_id!r} is at version {at.offset}, not {seen[1]} as expected"
                + (" (it was deleted and re-created meanwhile)" if seen[0] != thread_id else "")
                + ": re-read it and try again"
            )
        try:
            result = await self.binding.append(
                at, stored=stored, strict=True, metadata=_metadata(at, session_id)
            )
        except (ConcurrencyError, ThreadRemovedError) as e:
            self._seen.pop(session_id, None)
            raise VersionConflictError(
                f"session {session_id!r} was written or deleted by someone else after version {at.offset}: "
                "re-read it and try again"
            ) from e
        self._remember(session_id, thread_id, result.position.offset, result.position)

    async def delete(self, session_id: str) -> None:
        """Remove every version of the session, with a removal receipt; an unknown id is a no-op.

        Raises:
            InvalidInputError: ``session_id`` is not a usable id.
            LegalHoldError: the session is under legal hold; nothing was removed.
        """
        from chatledger.admin.lineage import remove_lineage  # admin sits beside the adapters

        _check_session_id(session_id)
        thread_id = await self._thread(session_id)
        self._seen.pop(session_id, None)
        self._drop_doc(session_id)
        record = await self.ledger.thread(thread_id, self.binding.scope)
        if record is None:
            return
        await remove_lineage(
            self.ledger,
            thread_id,
            record.root_id,
            by=self.deleted_by,
            reason=f"session {session_id!r} deleted",
        )

    # ------------------------------------------------------------------ versions

    async def version(self, session_id: str) -> int:
        """Return the session's current version (0: no snapshot stored)."""
        _check_session_id(session_id)
        return (await self._head(session_id))[0].offset

    async def get_version(self, session_id: str, version: int) -> AgentSession:
        """Return the snapshot stored as ``version`` (1 is the first ``set``): time travel.

        Raises:
            InvalidInputError: ``version`` is not a positive int, or not stored (past the
                current version, or the session does not exist).
        """
        _check_session_id(session_id)
        if type(version) is not int or version < 1:
            raise InvalidInputError("version must be a positive int")
        head = (await self._head(session_id))[0]
        thread_id = head.thread_id
        if version > head.offset:
            raise InvalidInputError(
                f"session {session_id!r} has {head.offset} versions; version {version} does not exist"
            )
        return await self._read(await self.binding.at(thread_id, version))

    async def thread_of(self, session_id: str) -> str | None:
        """Return the id of the thread holding the session's versions (``None``: not stored)."""
        _check_session_id(session_id)
        thread_id = await self._thread(session_id)
        return thread_id if await self.ledger.thread(thread_id, self.binding.scope) is not None else None

    async def list_sessions(self) -> list[str]:
        """Return the ids of the sessions stored in this store's scope, sorted."""
        found = await storage_of(self.ledger).threads.session_ids(self.binding.scope)
        return sorted(found)
