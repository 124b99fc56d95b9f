"""``chatledger keys rotate``: re-wrap every sealed-content data key under a new KEK."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from chatledger.cli.connection import DEFAULT_DATABASE, DatabaseOption, MongoUriFileOption, MongoUriOption
from chatledger.cli.options import JsonOption
from chatledger.cli.render import Renderer
from chatledger.cli.run import run_admin

__all__ = ["register", "rotate_body"]


async def rotate_body(
    db: Any, ui: Renderer, *, old_kek: Path, new_kek: Path, collection: str = "keys"
) -> int:
    """Re-wrap every live data key from the old KEK to the new one; exit 1 if any key could not be."""
    from chatledger.sealing import LocalKeyProvider, rewrap
    from chatledger.storage.keys import KeyStore

    old, new = LocalKeyProvider.from_file(old_kek), LocalKeyProvider.from_file(new_kek)
    with ui.working("re-wrapping data keys"):
        report = await rewrap(KeyStore(db, collection=collection), old, new)
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


def register(app: typer.Typer) -> None:
    """Add ``keys rotate`` to ``app``."""
    keys = typer.Typer(help="Sealed-content data keys (see docs/sealing.md).", no_args_is_help=True)

    @keys.command("rotate")
    def rotate(
        old_kek_file: Annotated[
            Path,
            typer.Option(
                "--old-kek-file", help="The KEK the keys are wrapped with now (32 bytes, hex or base64)."
            ),
        ],
        new_kek_file: Annotated[
            Path, typer.Option("--new-kek-file", help="The KEK to wrap them with from now on.")
        ],
        keys_collection: Annotated[
            str, typer.Option("--keys-collection", help="The key store's collection.")
        ] = "keys",
        as_json: JsonOption = False,
        mongodb_uri: MongoUriOption = None,
        mongodb_uri_file: MongoUriFileOption = None,
        database: DatabaseOption = DEFAULT_DATABASE,
    ) -> None:
        """Re-wrap every data key under a new KEK; events are not touched. Exit 1 if a key failed."""
        run_admin(
            mongodb_uri,
            mongodb_uri_file,
            database,
            as_json,
            lambda db, ui: rotate_body(
                db, ui, old_kek=old_kek_file, new_kek=new_kek_file, collection=keys_collection
            ),
        )

    app.add_typer(keys, name="keys")
