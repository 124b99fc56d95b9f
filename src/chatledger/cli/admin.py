"""The operators' commands of ``chatledger``.

threads, show, tree, export, import, verify, heads, retention, hold, erase, stats.

Each command is a thin Typer wrapper around an async *body* that takes a database
handle and two rich consoles (results on stdout, progress and messages on stderr) and
returns the exit status, so tests can run a body against any database tier directly.

Exit status: 0 success; 1 verification failed or something was left undone; 2 bad
arguments (nothing was changed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from chatledger.admin import (
    Anchor,
    RemovalReport,
    RetentionPolicy,
    ThreadFilter,
    collect_stats,
    export_jsonl,
    head_anchors,
    import_jsonl,
    parse_duration,
    release_hold,
    run_erasure,
    run_retention,
    set_hold,
    verify,
)
from chatledger.admin.catalog import ThreadActivity, activity, as_ledger, load_forest
from chatledger.cli.app import app
from chatledger.cli.connection import DEFAULT_DATABASE, DatabaseOption, MongoUriOption, open_database
from chatledger.errors import ChatLedgerError, InvalidInputError, UnknownThreadError
from chatledger.models import Cursor

__all__ = [
    "erase_body",
    "export_body",
    "heads_body",
    "hold_body",
    "import_body",
    "retention_body",
    "show_body",
    "stats_body",
    "threads_body",
    "tree_body",
    "verify_body",
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's threads.")]
UserOption = Annotated[str | None, typer.Option("--user", help="Only this user's threads.")]
ApplyOption = Annotated[bool, typer.Option("--apply", help="Really remove. Without it: a dry run.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who acts, for the receipts (default user@host).")]


# --------------------------------------------------------------------------- plumbing


def _emit_json(out: Console, data: Any) -> None:
    # Plain text, not rich markup: scripts parse this.
    out.file.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@contextmanager
def _progress(err: Console, label: str, total: int | None) -> Iterator[Callable[[Any], None]]:
    """Yield a callback that advances a progress bar on stderr (drawn only on a terminal)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda _item: bar.advance(task)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _admin(uri: str | None, database: str, body: Callable[[Any, Console, Console], Awaitable[int]]) -> None:
    """Run an admin body against the database, mapping errors to exit statuses."""
    out, err = Console(), Console(stderr=True)
    if not uri:
        err.print(
            "[red]error:[/] admin commands need a database: pass --mongodb-uri or set "
            "CHATLEDGER_MONGODB_URI (without it only the empty embedded demo database exists)"
        )
        raise typer.Exit(2)

    async def go() -> int:
        async with open_database(uri, database) as db:
            return await body(db, out, err)

    try:
        code = asyncio.run(go())
    except InvalidInputError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    except ChatLedgerError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    raise typer.Exit(code)


def _duration(value: str | None) -> timedelta | None:
    return None if value is None else parse_duration(value)


# --------------------------------------------------------------------------- threads / show / tree


async def threads_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    tenant: str | None = None,
    user: str | None = None,
    older_than: str | None = None,
    newer_than: str | None = None,
    limit: int | None = None,
    as_json: bool = False,
    now: datetime | None = None,
) -> int:
    """List threads with their counts, filtered by tenant, user and age of last activity."""
    old, new = _duration(older_than), _duration(newer_than)
    if limit is not None and limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    ledger = as_ledger(db)
    forest = await load_forest(ledger, ThreadFilter(tenant_id=tenant, user_id=user), with_family=False)
    acts = await activity(ledger, forest)
    now = now or datetime.now(UTC)
    rows: list[tuple[dict[str, Any], ThreadActivity]] = []
    for tid, doc in sorted(
        forest.docs.items(), key=lambda kv: (kv[1].get("root_id"), kv[1].get("depth"), kv[0])
    ):
        last = acts[tid].last_activity
        age = now - last if last is not None else timedelta(0)
        if (old is not None and age <= old) or (new is not None and age > new):
            continue
        rows.append((doc, acts[tid]))
    rows = rows[:limit] if limit is not None else rows
    if as_json:
        _emit_json(
            out,
            [
                {
                    "thread_id": d["_id"],
                    "root_id": d.get("root_id"),
                    "parent": d.get("parent"),
                    "depth": d.get("depth"),
                    "tenant_id": d.get("tenant_id"),
                    "user_id": d.get("user_id"),
                    "events": a.events,
                    "messages": a.messages,
                    "head_seq": a.head_seq or d.get("base_offset"),
                    "created_at": d.get("created_at"),
                    "last_activity": a.last_activity,
                    "legal_hold": bool(d.get("legal_hold")),
                }
                for d, a in rows
            ],
        )
        return 0
    table = Table(title=f"{len(rows)} threads")
    for column in (
        "thread",
        "parent@offset",
        "tenant",
        "user",
        "events",
        "messages",
        "last activity",
        "hold",
    ):
        # Ids must stay whole (operators paste them into `show`/`tree`): fold, never ellipsize.
        table.add_column(
            column,
            justify="right" if column in ("events", "messages") else "left",
            overflow="fold",
            no_wrap=column in ("events", "messages", "hold"),
        )
    for doc, act in rows:
        parent = doc.get("parent")
        table.add_row(
            str(doc["_id"]),
            f"{parent['thread_id']}@{parent['offset']}" if parent else "-",
            doc.get("tenant_id") or "-",
            doc.get("user_id") or "-",
            str(act.events),
            str(act.messages),
            _when(act.last_activity),
            "HELD" if doc.get("legal_hold") else "",
        )
    out.print(table)
    return 0


async def show_body(
    db: Any, out: Console, err: Console, *, thread: str, at: int | None = None, as_json: bool = False
) -> int:
    """Print the transcript visible at a cursor (the thread's head by default)."""
    ledger = as_ledger(db)
    if await ledger.get_thread(thread) is None:
        raise UnknownThreadError(f"no thread {thread!r}")
    cursor = await ledger.head(thread) if at is None else Cursor(thread_id=thread, offset=at)
    position = await ledger.resolve(cursor)
    messages = await ledger.read(position)
    if as_json:
        _emit_json(out, {"cursor": cursor.to_state(), "messages": [m.to_dict() for m in messages]})
        return 0
    out.print(f"[bold]{thread}[/] at offset {cursor.offset}: {len(messages)} messages")
    for index, message in enumerate(messages):
        author = f" ({message.author_name})" if getattr(message, "author_name", None) else ""
        out.print(f"[dim]{index:>4}[/] [bold]{message.role}[/]{author}: ", end="")
        out.print(message.text or "[dim](no text)[/]", markup=False, highlight=False)
    return 0


async def tree_body(db: Any, out: Console, err: Console, *, thread: str, as_json: bool = False) -> int:
    """Print the branches of the conversation that ``thread`` belongs to."""
    ledger = as_ledger(db)
    record = await ledger.get_thread(thread)
    if record is None:
        raise UnknownThreadError(f"no thread {thread!r}")
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
            "legal_hold": bool(doc.get("legal_hold")),
            "branches": [node(c) for c in sorted(forest.children.get(tid, ()))],
        }

    roots = [node(r) for r in forest.roots()]
    if as_json:
        _emit_json(out, roots[0] if len(roots) == 1 else roots)
        return 0

    def label(n: dict[str, Any]) -> str:
        where = (
            f" forked at seq {n['forked_at']} (message {n['forked_at_message']})"
            if n["forked_at"] is not None
            else ""
        )
        held = " [red]HELD[/]" if n["legal_hold"] else ""
        return (
            f"[bold]{n['thread_id']}[/]{where}: {n['own_events']} events, {n['length_messages']} messages "
            f"long, last activity {_when(n['last_activity'])}{held}"
        )

    def grow(parent: Tree, n: dict[str, Any]) -> None:
        for child in n["branches"]:
            grow(parent.add(label(child)), child)

    for root in roots:
        tree = Tree(label(root))
        grow(tree, root)
        out.print(tree)
    return 0


# --------------------------------------------------------------------------- export / import


async def export_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    path: str,
    thread: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
) -> int:
    """Write threads as JSON Lines to ``path`` (``-`` for stdout)."""
    scope = ThreadFilter(thread_id=thread, tenant_id=tenant, user_id=user)
    ledger = as_ledger(db)
    if thread is not None and await ledger.get_thread(thread) is None:
        raise UnknownThreadError(f"no thread {thread!r}")
    with _progress(err, "exporting", None) as tick:
        if path == "-":
            summary = await export_jsonl(ledger, sys.stdout, scope, on_thread=tick)
        else:
            # A CLI run does nothing else concurrently, so a blocking file is fine here.
            with Path(path).open("w", encoding="utf-8") as stream:  # noqa: ASYNC230
                summary = await export_jsonl(ledger, stream, scope, on_thread=tick)
    err.print(f"exported {summary.threads} threads, {summary.events} events")
    return 0


async def import_body(db: Any, out: Console, err: Console, *, path: str, as_json: bool = False) -> int:
    """Restore a JSON Lines export; the file is checked whole before anything is written."""
    with _progress(err, "importing", None) as tick:
        summary = await import_jsonl(db, path, on_thread=tick)
    if as_json:
        _emit_json(
            out,
            {
                "threads": summary.threads,
                "events": summary.events,
                "threads_present": summary.threads_present,
                "events_present": summary.events_present,
            },
        )
    else:
        out.print(
            f"imported {summary.threads} threads and {summary.events} events "
            f"({summary.threads_present} threads, {summary.events_present} events were already present)"
        )
    return 0


# --------------------------------------------------------------------------- verify / heads


def _read_anchors(path: str) -> list[Anchor]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InvalidInputError(f"cannot read anchors {path!r}: {e}") from e
    try:
        return [Anchor.from_dict(json.loads(line)) for line in lines if line.strip()]
    except ValueError as e:
        raise InvalidInputError(f"{path}: not a file of head anchors: {e}") from e


async def verify_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    thread: str | None = None,
    tenant: str | None = None,
    anchors: str | None = None,
    as_json: bool = False,
) -> int:
    """Recompute the hash chains; exit status 1 when anything fails."""
    pinned = _read_anchors(anchors) if anchors else []
    total = (
        None
        if thread
        else await as_ledger(db).threads.count_documents({"tenant_id": tenant} if tenant else {})
    )
    with _progress(err, "verifying", total) as tick:
        report = await verify(db, thread_id=thread, tenant_id=tenant, anchors=pinned, on_thread=tick)
    if as_json:
        _emit_json(out, report.to_dict())
        return 0 if report.ok else 1
    for problem in report.problems:
        at = f" seq {problem.seq}" if problem.seq is not None else ""
        eid = f" (event {problem.event_id})" if problem.event_id else ""
        out.print(f"[red]FAIL[/] thread {problem.thread_id}{at}{eid}: {problem.reason}", highlight=False)
    verdict = "[green]OK[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]"
    out.print(
        f"{verdict}: {report.threads} threads, {report.events} events, {report.anchors} anchors checked"
    )
    return 0 if report.ok else 1


async def heads_body(db: Any, out: Console, err: Console, *, tenant: str | None = None) -> int:
    """Print every thread's head hash as JSON Lines, to keep outside the database for ``verify --anchors``."""
    for anchor in await head_anchors(db, ThreadFilter(tenant_id=tenant)):
        _emit_json(
            out, {"thread_id": anchor.thread_id, "head_seq": anchor.head_seq, "head_hash": anchor.head_hash}
        )
    return 0


# --------------------------------------------------------------------------- retention / erase / hold


def _print_removal(out: Console, report: RemovalReport, as_json: bool) -> None:
    if as_json:
        _emit_json(out, report.to_dict())
        return
    verb = "would remove" if report.dry_run else "removed"
    table = Table(title=f"{report.action}: {verb} {len(report.planned)} lineages ({report.threads} threads)")
    for column in ("thread", "threads", "events", "messages", "tenant", "user", "last activity"):
        table.add_column(column)
    for r in report.planned:
        table.add_row(
            r.thread_id,
            str(len(r.thread_ids)),
            str(r.events),
            str(r.messages),
            r.tenant_id or "-",
            r.user_id or "-",
            _when(r.last_activity),
        )
    out.print(table)
    for skipped in report.skipped:
        out.print(f"[yellow]kept[/] {skipped.thread_id}: {skipped.reason}", highlight=False)
    if report.resumed:
        what = "would finish" if report.dry_run else "finished"
        out.print(f"{what} {len(report.resumed)} interrupted removal(s): {', '.join(report.resumed)}")
    if report.dry_run:
        out.print("[bold]dry run[/]: nothing was changed; pass --apply to remove.")
    else:
        out.print(f"{len(report.removed)} receipt(s) written to the audit collection.")


async def retention_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    older_than: str | None = None,
    tenant: str | None = None,
    policy_file: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "retention policy",
    as_json: bool = False,
) -> int:
    """Plan (or, with ``apply``, carry out) a retention policy."""
    if (older_than is None) == (policy_file is None):
        raise InvalidInputError("give either --older-than AGE (with an optional --tenant) or --policy FILE")
    if policy_file is not None:
        if tenant is not None:
            raise InvalidInputError("--tenant goes with --older-than; a policy file names its tenants")
        policy = RetentionPolicy.load(policy_file)
    elif tenant is not None:
        policy = RetentionPolicy(tenants={tenant: parse_duration(older_than)})
    else:
        policy = RetentionPolicy(default=parse_duration(older_than))
    with _progress(err, "removing", None) as tick:
        report = await run_retention(db, policy, apply=apply, by=by, reason=reason, on_removal=tick)
    _print_removal(out, report, as_json)
    return 0


async def erase_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    user: str | None = None,
    tenant: str | None = None,
    apply: bool = False,
    by: str | None = None,
    reason: str = "erasure request",
    as_json: bool = False,
) -> int:
    """Plan (or, with ``apply``, carry out) the erasure of a user's or tenant's threads."""
    with _progress(err, "erasing", None) as tick:
        report = await run_erasure(
            db, user_id=user, tenant_id=tenant, apply=apply, by=by, reason=reason, on_removal=tick
        )
    _print_removal(out, report, as_json)
    if report.skipped:
        err.print("[yellow]not everything could be erased: lineages under legal hold were kept[/]")
        return 1
    return 0


async def hold_body(
    db: Any,
    out: Console,
    err: Console,
    *,
    action: str,
    thread: str,
    reason: str,
    by: str | None = None,
    as_json: bool = False,
) -> int:
    """Set or release a legal hold."""
    if action == "set":
        hold = await set_hold(db, thread, reason=reason, by=by)
        result = {"thread_id": thread, "held": True, **hold}
    else:
        was_held = await release_hold(db, thread, reason=reason, by=by)
        result = {"thread_id": thread, "held": False, "was_held": was_held}
    if as_json:
        _emit_json(out, result)
    elif action == "set":
        out.print(f"thread {thread} is under legal hold: {reason}", highlight=False)
    else:
        out.print(
            f"thread {thread}: hold released" if result["was_held"] else f"thread {thread} was not held"
        )
    return 0


async def stats_body(
    db: Any, out: Console, err: Console, *, tenant: str | None = None, as_json: bool = False
) -> int:
    """Print totals."""
    stats = await collect_stats(db, tenant_id=tenant)
    if as_json:
        _emit_json(out, stats.to_dict())
        return 0
    table = Table(title="chatledger stats" + (f" (tenant {tenant})" if tenant else ""), show_header=False)
    for key, value in stats.to_dict().items():
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    out.print(table)
    return 0


# --------------------------------------------------------------------------- Typer commands


@app.command()
def threads(
    tenant: TenantOption = None,
    user: UserOption = None,
    older_than: Annotated[str | None, typer.Option(help="Idle for longer than AGE (e.g. 90d).")] = None,
    newer_than: Annotated[str | None, typer.Option(help="Active within AGE (e.g. 12h).")] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most N threads.")] = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """List threads with counts, filtered by tenant, user and age of last activity."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: threads_body(
            db,
            o,
            e,
            tenant=tenant,
            user=user,
            older_than=older_than,
            newer_than=newer_than,
            limit=limit,
            as_json=as_json,
        ),
    )


@app.command()
def show(
    thread: Annotated[str, typer.Argument(help="Thread id.")],
    at: Annotated[
        int | None, typer.Option("--at", min=0, help="Cursor offset (event seq); default head.")
    ] = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Print a thread's transcript as of any cursor."""
    _admin(mongodb_uri, database, lambda db, o, e: show_body(db, o, e, thread=thread, at=at, as_json=as_json))


@app.command()
def tree(
    thread: Annotated[str, typer.Argument(help="The root (or any thread) of the conversation.")],
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Show the branches of a conversation: where each forked and how long it is."""
    _admin(mongodb_uri, database, lambda db, o, e: tree_body(db, o, e, thread=thread, as_json=as_json))


@app.command("export")
def export_(
    path: Annotated[str, typer.Option("--output", "-o", help="File to write; - for stdout.")] = "-",
    thread: Annotated[
        str | None, typer.Option("--thread", help="One thread (with ancestors and branches).")
    ] = None,
    tenant: TenantOption = None,
    user: UserOption = None,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Export threads as JSON Lines: one thread, a tenant's or user's, or all."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: export_body(db, o, e, path=path, thread=thread, tenant=tenant, user=user),
    )


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(help="A file written by 'chatledger export'.")],
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Restore an export exactly (re-running it changes nothing)."""
    _admin(mongodb_uri, database, lambda db, o, e: import_body(db, o, e, path=path, as_json=as_json))


@app.command("verify")
def verify_(
    thread: Annotated[str | None, typer.Option("--thread", help="Only this thread.")] = None,
    tenant: TenantOption = None,
    anchors: Annotated[
        str | None, typer.Option(help="JSON Lines of head hashes from 'chatledger heads'.")
    ] = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Recompute hash chains; name the first failing event of each thread; exit 1 on failure."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: verify_body(
            db, o, e, thread=thread, tenant=tenant, anchors=anchors, as_json=as_json
        ),
    )


@app.command()
def heads(
    tenant: TenantOption = None,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Print each thread's head hash (JSON Lines) to store outside MongoDB for 'verify --anchors'."""
    _admin(mongodb_uri, database, lambda db, o, e: heads_body(db, o, e, tenant=tenant))


@app.command()
def retention(
    older_than: Annotated[
        str | None, typer.Option(help="Remove lineages idle for longer than AGE (e.g. 365d).")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Apply --older-than to this tenant only.")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="JSON/TOML policy file instead of --older-than.")] = None,
    apply: ApplyOption = False,
    by: ByOption = None,
    reason: Annotated[str, typer.Option(help="Recorded in the receipts.")] = "retention policy",
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Remove lineages idle longer than a policy allows (dry run unless --apply)."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: retention_body(
            db,
            o,
            e,
            older_than=older_than,
            tenant=tenant,
            policy_file=policy,
            apply=apply,
            by=by,
            reason=reason,
            as_json=as_json,
        ),
    )


@app.command()
def erase(
    user: UserOption = None,
    tenant: TenantOption = None,
    apply: ApplyOption = False,
    by: ByOption = None,
    reason: Annotated[str, typer.Option(help="E.g. the request's ticket; recorded in the receipts.")] = (
        "erasure request"
    ),
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Remove a data subject's (a user's or a tenant's) conversations (dry run unless --apply)."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: erase_body(
            db, o, e, user=user, tenant=tenant, apply=apply, by=by, reason=reason, as_json=as_json
        ),
    )


@app.command()
def stats(
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Totals: threads, branches, events, messages, bytes, oldest and newest activity."""
    _admin(mongodb_uri, database, lambda db, o, e: stats_body(db, o, e, tenant=tenant, as_json=as_json))


hold_app = typer.Typer(
    help="Legal holds: held lineages cannot be removed by retention or erasure.", no_args_is_help=True
)
app.add_typer(hold_app, name="hold")

ReasonOption = Annotated[str, typer.Option("--reason", help="Why (case or ticket number); required.")]


@hold_app.command("set")
def hold_set(
    thread: Annotated[str, typer.Argument(help="Thread id.")],
    reason: ReasonOption,
    by: ByOption = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Put a thread (and so its whole lineage) under legal hold."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: hold_body(
            db, o, e, action="set", thread=thread, reason=reason, by=by, as_json=as_json
        ),
    )


@hold_app.command("release")
def hold_release(
    thread: Annotated[str, typer.Argument(help="Thread id.")],
    reason: ReasonOption,
    by: ByOption = None,
    as_json: JsonOption = False,
    mongodb_uri: MongoUriOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Release a thread's legal hold."""
    _admin(
        mongodb_uri,
        database,
        lambda db, o, e: hold_body(
            db, o, e, action="release", thread=thread, reason=reason, by=by, as_json=as_json
        ),
    )
