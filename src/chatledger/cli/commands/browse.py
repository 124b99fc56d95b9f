"""``chatledger threads | show | tree``: looking at conversations, sessions and workflow runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from chatledger.admin import ThreadFilter, ThreadSummary, count_threads, list_threads
from chatledger.admin.browse import get_thread, placeholder_sealer, read_transcript
from chatledger.admin.catalog import activity, as_ledger, hold_cases, load_forest
from chatledger.admin.cli_support import with_sealer
from chatledger.admin.records import (
    CONVERSATION,
    SESSION,
    SESSION_KEY,
    WORKFLOW_KEY,
    WORKFLOW_RUN,
    checkpoints_of,
    missing_thread,
    sessions_of,
    thread_kind,
    with_kinds,
    withdrawn_checkpoints,
)
from chatledger.admin.verify import verify
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.options import AllowEmptyOption, TenantOption, UserOption, duration
from chatledger.cli.render import Renderer, counted, iso, visible
from chatledger.cli.run import require_ledger_data
from chatledger.cli.shared import Connection, shared
from chatledger.errors import InvalidInputError

__all__ = ["register", "show_body", "threads_body", "tree_body"]


def _row(summary: ThreadSummary, kind: str) -> dict[str, Any]:
    doc, act = summary.doc, summary.activity
    return {
        "thread_id": summary.thread_id,
        "kind": kind,
        "root_id": doc.get("root_id"),
        "parent": doc.get("parent"),
        "depth": doc.get("depth"),
        "tenant_id": doc.get("tenant_id"),
        "user_id": doc.get("user_id"),
        "events": act.events,
        "messages": act.messages,
        "head_seq": act.head_seq or doc.get("base_offset") or 0,
        "created_at": doc.get("created_at"),
        "last_activity": act.last_activity,
        "legal_hold": summary.held,
        "legal_holds": hold_cases(doc),
        "held_by": summary.held_by,
    }


async def threads_body(
    db: Any,
    ui: Renderer,
    *,
    tenant: str | None = None,
    user: str | None = None,
    older_than: str | None = None,
    newer_than: str | None = None,
    limit: int | None = None,
    kind: str | None = None,
    now: datetime | None = None,
    allow_empty: bool = False,
) -> int:
    """List threads with their kind and counts, filtered by tenant, user, kind and age of last activity.

    Threads are streamed grouped by conversation, parents before branches; ``limit``
    and the filters go into the query, so ``--limit 8`` reads 8 threads, not all
    (with ``kind``, threads are read until ``limit`` of that kind were found).

    A database without ChatLedger data is an error (exit 1) unless ``allow_empty``: a
    misspelled name must not list as "0 threads" (``threads | grep ID`` finding nothing).
    """
    old, new = duration(older_than, "--older-than"), duration(newer_than, "--newer-than")
    if limit is not None and limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    ledger = as_ledger(db)
    await require_ledger_data(ledger, allow_empty)
    scope = ThreadFilter(tenant_id=tenant, user_id=user)
    rows: list[dict[str, Any]] = []
    with ui.progress("reading threads") as tick:
        total = await count_threads(ledger, scope)
        # With an age filter, threads are examined until enough pass: the total is the
        # number that may be examined; without one, exactly min(limit, matching).
        aged = old is not None or new is not None or kind is not None
        tick.stage("reading threads", total if limit is None or aged else min(limit, total))
        listed = list_threads(
            ledger,
            scope,
            older_than=old,
            newer_than=new,
            limit=None if kind else limit,
            now=now,
            on_thread=tick,
            whole=True,  # a hold on a thread the filter leaves out still protects its lineage
        )
        async for summary, found in with_kinds(ledger, listed, kind=kind, limit=limit):
            rows.append(_row(summary, found))
    if ui.as_json:
        ui.json("threads", {"threads": rows})
        return 0
    ui.table(
        counted(len(rows), "thread"),
        ("thread", "kind", "parent@offset", "tenant", "user", "events", "messages", "last activity", "hold"),
        (
            (
                r["thread_id"],
                r["kind"],
                f"{r['parent']['thread_id']}@{r['parent']['offset']}" if r["parent"] else "-",
                r["tenant_id"],
                r["user_id"],
                r["events"],
                r["messages"],
                iso(r["last_activity"]),
                _hold_cell(r),
            )
            for r in rows
        ),
        numeric=("events", "messages"),
    )
    return 0


def _hold_cell(row: dict[str, Any]) -> str:
    """The ``hold`` column: the thread's own cases, else ``via ID`` for a hold on its lineage."""
    if row["legal_hold"]:
        return ", ".join(row["legal_holds"])
    return f"via {row['held_by']}" if row["held_by"] else ""


async def show_body(
    db: Any,
    ui: Renderer,
    *,
    thread: str,
    at: int | None = None,
    keys: KeyStoreLocation = KeyStoreLocation(),  # noqa: B008 - frozen, never mutated
    kek: Any = None,
    raw: bool = False,
) -> int:
    """Print the transcript visible at a cursor (the thread's head by default).

    By default the compacted view (the newest compaction summary, then what follows its
    range); ``raw`` prints every original message instead. A session's thread shows its
    snapshots (version by version, newest last), a workflow run's its checkpoints;
    ``raw`` shows their messages as stored.

    The thread is verified first: if it fails, a warning says why (``verify`` in the
    JSON). A removed thread is an error that says it was removed.

    Sealed messages are opened with ``kek`` (a KEK provider); those that cannot be
    (erased, or no usable key) are shown as placeholders with their role and id, and
    listed under ``unreadable`` in the JSON. A tampered ciphertext still fails (exit 1).
    """
    kind = await thread_kind(db, thread)
    report = await verify(db, thread_id=thread)
    if not report.ok:
        first = report.problems[0]
        where = f"#{first.seq}" if first.seq is not None else ""
        ui.warn(
            f"thread {thread} fails verification ({counted(len(report.problems), 'problem')}): "
            f"{first.thread_id}{where}: {first.reason} (run chatledger verify)"
        )
    async with keys.opened(db) as store:
        # A Ledger on renamed collections or with a ledger id: the same one, with the sealer.
        reader = with_sealer(db, placeholder_sealer(store, kek))
        transcript = await read_transcript(reader, thread, at=at, compacted=not raw and kind == CONVERSATION)
    cursor, messages, unreadable = transcript.cursor, transcript.messages, transcript.unreadable
    metadata = transcript.thread.metadata or {}
    texts = [(m.text or "", i not in unreadable) for i, m in enumerate(messages)]
    versions = sessions_of(texts) if kind == SESSION and not raw else None
    checkpoints = None
    if kind == WORKFLOW_RUN and not raw:
        # Withdrawn ones (MongoCheckpointStorage.delete) stay in the chain: listed, but marked.
        withdrawn = await withdrawn_checkpoints(db, thread, cursor.offset)
        roles = [(str(m.role), text, ok) for m, (text, ok) in zip(messages, texts, strict=True)]
        checkpoints = checkpoints_of(roles, withdrawn)
    if ui.as_json:
        document: dict[str, Any] = {
            "kind": kind,
            "cursor": cursor.to_state(),
            "messages": [m.to_dict() for m in messages],
            "unreadable": [{"index": i, "why": u.why} for i, u in sorted(unreadable.items())],
            "verify": {"ok": report.ok, "problems": [asdict(p) for p in report.problems]},
        }
        if versions is not None:
            document["session_id"] = metadata.get(SESSION_KEY)
            document["versions"] = [v.to_dict() for v in versions]
        if checkpoints is not None:
            document["workflow_name"] = metadata.get(WORKFLOW_KEY)
            document["checkpoints"] = [c.to_dict() for c in checkpoints]
        ui.json("show", document)
    elif versions is not None:
        ui.line(
            (thread, "bold"),
            f" (session {metadata.get(SESSION_KEY)!r}) at offset {cursor.offset}: {len(versions)} versions",
        )
        for version in versions:
            ui.line((f"version {version.version}", "bold"), f" ({version.size} bytes)")
            if version.snapshot is not None:
                ui.document(version.snapshot)
            else:
                ui.line(("    ", ""), (messages[version.version - 1].text, "yellow"))
    elif checkpoints is not None:
        gone = sum(c.withdrawn is not None for c in checkpoints)
        ui.table(
            f"{thread} (workflow run of {metadata.get(WORKFLOW_KEY)!r}) at offset {cursor.offset}: "
            f"{len(checkpoints)} checkpoints" + (f", {gone} withdrawn" if gone else ""),
            ("checkpoint", "parent", "workflow", "time", "size", "withdrawn"),
            (
                (
                    c.checkpoint_id or "[sealed]",
                    c.previous_checkpoint_id or "-",
                    c.workflow_name or "-",
                    c.timestamp or "-",
                    f"{c.size}" + (f" ({c.chunks} chunks)" if c.chunks else ""),
                    "-" if c.withdrawn is None else (iso(c.withdrawn.at) or "yes"),
                )
                for c in checkpoints
            ),
            numeric=("size",),
        )
    else:
        ui.line((thread, "bold"), f" at offset {cursor.offset}: {len(messages)} messages")
        for index, message in enumerate(messages):
            author = getattr(message, "author_name", None)
            mid = getattr(message, "message_id", None)
            ui.line(
                (f"{index:>4} ", "dim"),
                (str(message.role), "bold"),
                f" ({author})" if author else "",
                f" [{mid}]" if mid and index in unreadable else "",
                ": ",
                (message.text, "yellow")
                if index in unreadable
                else Text(visible(message.text, multiline=True))
                if message.text
                else ("(no text)", "dim"),
            )
    if unreadable:
        # Say why once (e.g. no KEK given, wrong KEK, erased): the reason names keys, never content.
        first_unreadable = unreadable[min(unreadable)]
        ui.warn(
            f"{counted(len(unreadable), 'sealed message')} shown as placeholders: {first_unreadable.detail}"
        )
    return 0


async def tree_body(db: Any, ui: Renderer, *, thread: str) -> int:
    """Print the branches of the conversation that ``thread`` belongs to."""
    ledger = as_ledger(db)
    record = await get_thread(ledger, thread)
    if record is None:
        raise await missing_thread(ledger, thread)
    with ui.working("reading the conversation"):
        forest = await load_forest(ledger, ThreadFilter(root_id=record.root_id), with_family=False)
        acts = await activity(ledger, forest)

    def node(tid: str) -> dict[str, Any]:
        doc, act = forest.docs[tid], acts[tid]
        return {
            "thread_id": tid,
            "forked_at": (doc.get("parent") or {}).get("offset"),
            "forked_at_message": doc.get("base_messages") if doc.get("parent") else None,
            "own_events": act.events,
            "own_messages": act.messages,
            "length_messages": int(doc.get("base_messages") or 0) + act.messages,
            "last_activity": act.last_activity,
            "legal_hold": forest.held(tid),
            "legal_holds": hold_cases(doc),
            "held_by": forest.hold_blocks(tid),
            "branches": [node(c) for c in sorted(forest.children.get(tid, ()))],
        }

    roots = [node(r) for r in forest.roots()]
    if ui.as_json:
        ui.json("tree", {"roots": roots})
        return 0

    def label(n: Any) -> Text:
        where = (
            f" forked at seq {n['forked_at']} (message {n['forked_at_message']})"
            if n["forked_at"] is not None
            else ""
        )
        return Text.assemble(
            (visible(n["thread_id"]), "bold"),
            f"{where}: {counted(n['own_events'], 'event')}, {counted(n['length_messages'], 'message')} long, "
            f"last activity {iso(n['last_activity']) or '-'}",
            (" HELD", "red") if n["legal_hold"] else "",
            (f" protected by the hold on {visible(n['held_by'])}", "yellow")
            if n["held_by"] and not n["legal_hold"]
            else "",
        )

    ui.tree(roots, label)
    return 0


ThreadArgument = Annotated[str, typer.Argument(help="Thread id.")]


def register(app: typer.Typer) -> None:
    """Add ``threads``, ``show`` and ``tree`` to ``app``."""

    @app.command()
    @shared(tsv=True)
    def threads(
        connection: Connection,
        tenant: TenantOption = None,
        user: UserOption = None,
        older_than: Annotated[str | None, typer.Option(help="Idle for longer than AGE (e.g. 90d).")] = None,
        newer_than: Annotated[str | None, typer.Option(help="Active within AGE (e.g. 12h).")] = None,
        limit: Annotated[int | None, typer.Option(min=1, help="Show at most N threads.")] = None,
        kind: Annotated[
            str | None,
            typer.Option(
                help="Only threads of this kind: conversation, session (MongoSessionStore) or "
                "workflow_run (MongoCheckpointStorage)."
            ),
        ] = None,
        allow_empty: AllowEmptyOption = False,
    ) -> None:
        """List threads with their kind and counts, filtered by tenant, user, kind and age."""
        connection.run(
            lambda db, ui: threads_body(
                db,
                ui,
                tenant=tenant,
                user=user,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                kind=kind,
                allow_empty=allow_empty,
            )
        )

    @app.command()
    @shared(kek=True, keys=True)
    def show(
        connection: Connection,
        thread: ThreadArgument,
        at: Annotated[
            int | None, typer.Option("--at", min=0, help="Cursor offset (event seq); default head.")
        ] = None,
        raw: Annotated[
            bool, typer.Option("--raw", help="Every original message, not the compacted view.")
        ] = False,
    ) -> None:
        """Print a thread's transcript as of any cursor (control characters shown escaped).

        After a compaction it prints the compacted view (the summary, then what follows
        the range it replaced); --raw prints every original message. A session shows its
        snapshots, version by version; a workflow run its checkpoints (--raw: as stored).
        A thread that fails verification is shown with a warning.

        Sealed messages open with --kek-file/--kek-env; without a usable key they show as
        [sealed: no key], and as [content erased] once their key was destroyed.
        """

        async def body(db: Any, ui: Renderer) -> int:
            # Read inside the run: a bad KEK file is a clean exit 2, never a traceback.
            return await show_body(
                db, ui, thread=thread, at=at, keys=connection.keys, kek=connection.kek(), raw=raw
            )

        connection.run(body)

    @app.command()
    @shared()
    def tree(
        connection: Connection,
        thread: Annotated[str, typer.Argument(help="The root (or any thread) of the conversation.")],
    ) -> None:
        """Show the branches of a conversation: where each forked and how long it is."""
        connection.run(lambda db, ui: tree_body(db, ui, thread=thread))
