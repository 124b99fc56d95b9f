"""``chatledger keys list | rotate``: the data keys of sealed content (never their material)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger.admin.cli_support import describe_key
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.render import JSON_SCHEMA, Renderer, iso, to_jsonable
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
        ui.line(f"re-wrapped {report.rewrapped} keys under {new.kek_id} ({report.already} already were)")
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
) -> int:
    """List data keys, streamed in key id order (memory stays bounded however many there are).

    The JSON document is written as it streams, in the one shape every command prints:
    ``{"schema": 1, "command": "keys list", "keys": [...], "count": N}``.
    """
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInputError("--limit must be at least 1")
    async with keys.opened(db) as store:
        return await _list_keys(store, ui, limit)


async def _list_keys(store: Any, ui: Renderer, limit: int | None) -> int:
    count = 0
    if ui.as_json:
        out = ui.out.file
        # Streamed: the envelope by hand, each key through the renderer's one date rule.
        out.write(json.dumps({"schema": JSON_SCHEMA, "command": "keys list"})[:-1] + ', "keys": [')
        async for doc in store.all(limit=limit):
            out.write(
                (", " if count else "") + json.dumps(to_jsonable(describe_key(doc)), ensure_ascii=False)
            )
            count += 1
        out.write(f'], "count": {count}}}\n')
        out.flush()
        return 0
    async for doc in store.all(limit=limit):
        row = describe_key(doc)
        ui.line(
            (row["key_id"], "bold"),
            f"  {row['kind'] or '-'}  ",
            (row["state"], "red" if row["state"] == "destroyed" else "green"),
            f"  created {iso(row['created_at']) or '-'}",
            f"  destroyed {iso(row['destroyed_at'])}" if row["destroyed_at"] else "",
            f"  kek {row['kek_id']}" if row["kek_id"] else "",
            f"  fp {row['fingerprint']}" if row["fingerprint"] else "",
        )
        count += 1
    ui.note(f"{count} keys" + (f" (--limit {limit})" if limit is not None and count == limit else ""))
    return 0


def register(app: typer.Typer) -> None:
    """Add ``keys list`` and ``keys rotate`` to ``app``."""
    keys = typer.Typer(help="Sealed-content data keys (see docs/sealing.md).", no_args_is_help=True)

    @keys.command("list")
    @shared(keys=True)
    def list_keys(
        connection: Connection,
        limit: Annotated[int | None, typer.Option(min=1, help="Show at most N keys.")] = None,
    ) -> None:
        """List data keys: id, subject kind, active or destroyed, when, KEK id (never key material)."""
        connection.run(lambda db, ui: list_body(db, ui, keys=connection.keys, limit=limit))

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
