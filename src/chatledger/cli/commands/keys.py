"""``chatledger keys list | rotate``: the data keys of sealed content (never their material)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger.admin.cli_support import describe_key
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.render import JSON_SCHEMA, Renderer, counted, iso, to_jsonable
from chatledger.cli.shared import Connection, shared
from chatledger.errors import InvalidInputError

__all__ = ["list_body", "register", "rotate_body"]


async def rotate_body(
    db: Any,
    ui: Renderer,
    *,
    old_kek: Path,
    new_kek: Path,
    keys: KeyStoreLocation = KeyStoreLocation(),  # noqa: B008 - frozen, never mutated
) -> int:
    """Re-wrap every live data key from the old KEK to the new one; exit 1 if any key could not be."""
    from chatledger.sealing import LocalKeyProvider, rewrap

    old, new = LocalKeyProvider.from_file(old_kek), LocalKeyProvider.from_file(new_kek)
    async with keys.opened(db) as store:
        with ui.working("re-wrapping data keys"):
            report = await rewrap(store, old, new)
    result = {
        "rewrapped": report.rewrapped,
        "already": report.already,
        "failed": [{"key_id": key_id, "why": why} for key_id, why in report.failed],
        "new_kek_id": new.kek_id,
    }
    if ui.as_json:
        ui.json("keys rotate", result)
    else:
        ui.line(
            f"re-wrapped {counted(report.rewrapped, 'key')} under {new.kek_id} "
            f"({report.already} already were)"
        )
        for key_id, why in report.failed:
            ui.line(("FAIL ", "red"), f"key {key_id}: {why}")
        if not report.failed:
            ui.line("no failures: destroy the old KEK once the backup window has passed (docs/sealing.md)")
    return 1 if report.failed else 0


async def list_body(
    db: Any,
    ui: Renderer,
    *,
    keys: KeyStoreLocation = KeyStoreLocation(),  # noqa: B008 - frozen, never mutated
    limit: int | None = None,
    user: str | None = None,
    tenant: str | None = None,
) -> int:
    """List data keys, streamed in key id order (memory stays bounded however many there are).

    The JSON document is written as it streams, in the one shape every command prints:
    ``{"schema": 1, "command": "keys list", "keys": [...], "count": N}``. With ``user``
    and/or ``tenant``, only that subject's keys (in every ledger of the store) and its
    erased mark (this ledger's key tombstone), if any; a subject with neither is an error
    (exit 1, "no such subject"), as for ``erase``.
    """
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInputError("--limit must be at least 1")
    for option, value in (("--user", user), ("--tenant", tenant)):
        if value is not None and not value:
            raise InvalidInputError(f"{option}: give a non-empty id")
    async with keys.opened(db) as store:
        if user is None and tenant is None:
            return await _list_keys(store.all(limit=limit), ui, limit)
        return await _list_keys(_of_subject(db, store, user, tenant, limit), ui, limit)


async def _of_subject(
    db: Any, store: Any, user: str | None, tenant: str | None, limit: int | None
) -> AsyncIterator[dict[str, Any]]:
    """Yield the subject's key documents in key id order; raise if it has none."""
    from chatledger.admin.catalog import as_ledger
    from chatledger.admin.erasure import NoSuchSubjectError, subject_tombstone

    found = {str(doc["_id"]): doc for doc in await store.of_subject(user_id=user, tenant_id=tenant)}
    mark, doc = await subject_tombstone(
        store, user_id=user, tenant_id=tenant, ledger_id=as_ledger(db).ledger_id
    )
    if mark is not None and doc is not None:
        found[mark] = doc
    if not found:
        who = " in ".join(
            f"{label} {value!r}" for label, value in (("user", user), ("tenant", tenant)) if value is not None
        )
        raise NoSuchSubjectError(
            f"no such subject: {who} has no data key and no erased mark in this key store (never sealed for, "
            "or a typo?)"
        )
    for key_id in sorted(found)[:limit]:
        yield found[key_id]


#: ``keys list``'s fields, in the order ``--tsv`` and ``--json`` give them.
_KEY_FIELDS = ("key_id", "kind", "state", "created_at", "destroyed_at", "kek_id", "fingerprint", "receipt_id")


async def _list_keys(docs: AsyncIterator[dict[str, Any]], ui: Renderer, limit: int | None) -> int:
    count = 0
    if ui.as_json:
        out = ui.out.file
        # Streamed: the envelope by hand, each key through the renderer's one date rule. The
        # envelope follows the first read: a subject that is not there prints no half document.
        head = json.dumps({"schema": JSON_SCHEMA, "command": "keys list"})[:-1] + ', "keys": ['
        async for doc in docs:
            out.write(
                (", " if count else head) + json.dumps(to_jsonable(describe_key(doc)), ensure_ascii=False)
            )
            count += 1
        if not count:
            out.write(head)
        out.write(f'], "count": {count}}}\n')
        out.flush()
        return 0
    if ui.tsv:
        ui.tsv_row(_KEY_FIELDS)
    async for doc in docs:
        row = describe_key(doc)
        count += 1
        if ui.tsv:
            ui.tsv_row(iso(row[f]) if f.endswith("_at") else row[f] for f in _KEY_FIELDS)
            continue
        ui.line(
            (row["key_id"], "bold"),
            f"  {row['kind'] or '-'}  ",
            (row["state"], "red" if row["state"] == "destroyed" else "green"),
            f"  created {iso(row['created_at']) or '-'}",
            f"  destroyed {iso(row['destroyed_at'])}" if row["destroyed_at"] else "",
            f"  kek {row['kek_id']}" if row["kek_id"] else "",
            f"  fp {row['fingerprint']}" if row["fingerprint"] else "",
        )
    ui.note(
        f"{count} key{'' if count == 1 else 's'}"
        + (f" (--limit {limit})" if limit is not None and count == limit else "")
    )
    return 0


def register(app: typer.Typer) -> None:
    """Add ``keys list`` and ``keys rotate`` to ``app``."""
    keys = typer.Typer(help="Sealed-content data keys (see docs/sealing.md).", no_args_is_help=True)

    @keys.command("list")
    @shared(keys=True, tsv=True, quiet=True)
    def list_keys(
        connection: Connection,
        limit: Annotated[int | None, typer.Option(min=1, help="Show at most N keys.")] = None,
        user: Annotated[
            str | None, typer.Option("--user", help="Only this user's keys (and erased mark).")
        ] = None,
        tenant: Annotated[
            str | None,
            typer.Option("--tenant", help="Only this tenant's keys (with --user: that user's there)."),
        ] = None,
    ) -> None:
        """List data keys: id, kind, state, when, KEK id (never key material).

        --user and --tenant narrow the list to one subject's keys and its erased mark;
        a subject with neither exits 1 ("no such subject"), as erase does.
        """
        connection.run(
            lambda db, ui: list_body(db, ui, keys=connection.keys, limit=limit, user=user, tenant=tenant)
        )

    @keys.command("rotate")
    @shared(keys=True)
    def rotate(
        connection: Connection,
        old_kek_file: Annotated[
            Path,
            typer.Option(
                "--old-kek-file", help="The KEK the keys are wrapped with now (32 bytes, hex or base64)."
            ),
        ],
        new_kek_file: Annotated[
            Path, typer.Option("--new-kek-file", help="The KEK to wrap them with from now on.")
        ],
    ) -> None:
        """Re-wrap every data key under a new KEK; events are not touched. Exit 1 if a key failed."""
        connection.run(
            lambda db, ui: rotate_body(
                db, ui, old_kek=old_kek_file, new_kek=new_kek_file, keys=connection.keys
            )
        )

    app.add_typer(keys, name="keys")
