"""``chatledger demo``: the seed notebook's story, offline, on an embedded or a real database."""

from __future__ import annotations

import io
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from chatledger.admin.cli_support import holds_ledger_data
from chatledger.cli.connection import describe_uri, open_database, open_embedded
from chatledger.cli.shared import Connection, shared
from chatledger.errors import ChatLedgerError

__all__ = ["register"]

DemoUriOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-uri",
        envvar="CHATLEDGER_MONGODB_URI",
        help="MongoDB connection string. Without it (and without --mongodb-uri-file) the demo uses an "
        "embedded in-process database (the 'demo' extra); nothing is written to disk.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""

    # The collection names and --ledger-id are accepted (docs/cli.md: every command that
    # reaches a server takes them); the story writes the default collections.
    @app.command()
    @shared(uri=DemoUriOption)
    def demo(
        connection: Connection,
        force: Annotated[
            bool,
            typer.Option(
                "--force",
                help="Write the story into a database that already holds ChatLedger data "
                "(without it: exit 1, nothing written).",
            ),
        ] = False,
    ) -> None:
        """Replay the Joker story offline: save, resume and branch a conversation.

        Without --mongodb-uri on an embedded in-process database. On a server, a database
        already holding ChatLedger data (threads or events; an earlier demo's too: its
        threads look like anyone's) is left alone unless --force.
        """
        ui, as_json = connection.ui, connection.ui.as_json

        async def go() -> int:
            from chatledger.demo.story import run_demo

            uri = connection.server_uri()
            database, option = connection.database_of(uri) if uri else (connection.database, "--database")
            where = (
                f"MongoDB at {describe_uri(uri)}, database {database!r} (collections threads, events)"
                if uri
                else "an embedded in-process database (mongomock-motor; nothing is written to disk). "
                "Pass --mongodb-uri or set CHATLEDGER_MONGODB_URI to use a real server."
            )
            console = Console(file=io.StringIO()) if as_json else None
            opened = open_database(uri, database, option=option) if uri else open_embedded(database)
            async with opened as db:
                if uri and not force and await holds_ledger_data(db):
                    raise ChatLedgerError(
                        f"database {database!r} already holds ChatLedger data (collections threads, events): "
                        "the demo writes nothing there unless asked; pass --force to add the story anyway, "
                        "or --database NAME for an empty database"
                    )
                # The story prints with markup; the URI is ours to escape (e.g. [::1] hosts).
                result = await run_demo(db, console=console, where=escape(where))
            if as_json:
                ui.json(
                    "demo",
                    {
                        "database": "embedded" if not uri else describe_uri(uri),
                        "snapshot": result.snapshot,
                        "main_line": [{"role": r, "text": t} for r, t in result.main_line],
                        "branch_line": [{"role": r, "text": t} for r, t in result.branch_line],
                        "main_cursor": result.main_cursor.to_state(),
                        "branch_cursor": result.branch_cursor.to_state(),
                    },
                )
            return 0

        connection.work(go)
