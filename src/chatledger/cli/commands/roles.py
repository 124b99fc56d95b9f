"""``chatledger roles create``: least-privilege MongoDB roles (prints the commands unless ``--apply``).

Roles, in the ChatLedger database:

- ``chatledger_app``: ``find`` and ``insert`` on ``threads`` and ``events`` (plus
  ``createIndex``, which ``Ledger.ensure_indexes`` needs and which changes no data). No
  ``update``, no ``remove``: for the application the ledger is append-only.
- ``chatledger_operator``: the same, plus ``remove`` on ``threads`` and ``events``
  (import clean-up), ``update`` on ``events`` (removals hollow events in place) and on
  ``threads`` (removal claims, tombstones, legal holds: MongoDB cannot narrow an
  update privilege to one field, so ``chatledger verify`` checks thread documents), and
  ``find``/``insert`` on ``audit``. Nobody gets ``update`` or ``remove`` on ``audit``.
  The operator also gets ``find``/``insert`` on the Merkle log's two collections
  (``log_entries``, ``log_tree``: ``<events>_log_entries`` etc. for another events
  collection), which ``chatledger checkpoint`` writes; nobody may update or remove them.

With ``--sealed`` (the application seals content, docs/sealing.md) both roles also cover
the key store's collection (``keys`` unless ``--keys-collection``) in the same database:
the application ``find``/``insert`` (a subject's first write creates its data key), the
operator also ``update`` (``erase`` tombstones keys, ``keys rotate`` re-wraps them). Nobody
gets ``remove`` on it: a tombstone is what keeps an erased subject erased. A key store in
another database or cluster needs its roles made there (MongoDB roles are per database).

Grant them with ``db.grantRolesToUser(...)`` or ``createUser``; ChatLedger does not
create users or handle passwords.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

import typer
from rich.text import Text

from chatledger.admin.cli_support import command as run_command
from chatledger.admin.cli_support import log_collections
from chatledger.cli.connection import open_database
from chatledger.cli.render import Renderer
from chatledger.cli.shared import Connection, shared
from chatledger.errors import InvalidInputError, StorageError

__all__ = ["APP_ROLE", "OPERATOR_ROLE", "register", "role_commands", "role_definitions"]

RolesUriOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-uri",
        envvar="CHATLEDGER_MONGODB_URI",
        help="Connection string of a user allowed to manage roles; needed only with --apply "
        "(prefer the environment variable or --mongodb-uri-file). Never printed.",
        show_default=False,
    ),
]

APP_ROLE: Final = "chatledger_app"
OPERATOR_ROLE: Final = "chatledger_operator"


def _privilege(database: str, collection: str, actions: list[str]) -> dict[str, Any]:
    return {"resource": {"db": database, "collection": collection}, "actions": actions}


def role_definitions(
    database: str,
    threads: str = "threads",
    events: str = "events",
    audit: str = "audit",
    keys: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Return the privileges of each role (``keys``: the key store's collection, when content is sealed)."""
    append_only = ["find", "insert", "createIndex"]
    sealed_app = [_privilege(database, keys, append_only)] if keys else []
    # update: erase replaces a key by its tombstone (an upsert), keys rotate re-wraps it.
    sealed_operator = [_privilege(database, keys, [*append_only, "update"])] if keys else []
    return {
        APP_ROLE: [
            _privilege(database, threads, append_only),
            _privilege(database, events, append_only),
            *sealed_app,
        ],
        OPERATOR_ROLE: [
            _privilege(database, threads, [*append_only, "remove", "update"]),
            # update: a removal hollows events in place (their positions stay taken).
            _privilege(database, events, [*append_only, "remove", "update"]),
            _privilege(database, audit, ["find", "insert", "createIndex"]),
            # The Merkle log is insert-only too: a sequencer never updates or removes a leaf.
            *(_privilege(database, c, ["find", "insert", "createIndex"]) for c in log_collections(events)),
            *sealed_operator,
        ],
    }


def role_commands(database: str, existing: set[str], **collections: Any) -> list[dict[str, Any]]:
    """Return the database commands that create (or bring up to date) each role."""
    return [
        {"updateRole" if role in existing else "createRole": role, "privileges": privileges, "roles": []}
        for role, privileges in role_definitions(database, **collections).items()
    ]


async def roles_body(
    db: Any, ui: Renderer, *, database: str, apply: bool, collections: dict[str, str | None]
) -> int:
    """Print the role commands, or (``apply``, with ``db``) run them."""
    if not apply:
        commands = role_commands(database, set(), **collections)
        if ui.as_json:
            ui.json("roles", {"database": database, "applied": False, "commands": commands})
            return 0
        ui.line(f"// dry run: run these in mongosh (use {database}), or pass --apply")
        for command in commands:
            # Our own JSON, over several lines (json.dumps escapes any control character).
            ui.line(Text(f"db.runCommand({json.dumps(command, indent=2)})"))
        return 0
    try:
        info = await run_command(db, {"rolesInfo": [APP_ROLE, OPERATOR_ROLE]})
        commands = role_commands(database, {r["role"] for r in info.get("roles", [])}, **collections)
        for each in commands:
            await run_command(db, each)
    except StorageError as e:
        raise StorageError(f"the server refused to manage roles (does this user have userAdmin?): {e}") from e
    if ui.as_json:
        ui.json("roles", {"database": database, "applied": True, "commands": commands})
    else:
        for command in commands:
            verb = next(iter(command))
            ui.line(f"{verb} {command[verb]}: ok")
    return 0


def register(app: typer.Typer) -> None:
    """Add the ``roles`` group to ``app``."""
    roles = typer.Typer(
        help="Least-privilege MongoDB roles for the application and operators.", no_args_is_help=True
    )
    app.add_typer(roles, name="roles")

    @roles.command("create")
    @shared(uri=RolesUriOption, names=False)
    def create(
        connection: Connection,
        apply: Annotated[
            bool, typer.Option("--apply", help="Run the commands (default: print them).")
        ] = False,
        threads_collection: Annotated[str, typer.Option(help="Name of the threads collection.")] = "threads",
        events_collection: Annotated[str, typer.Option(help="Name of the events collection.")] = "events",
        audit_collection: Annotated[str, typer.Option(help="Name of the audit collection.")] = "audit",
        sealed: Annotated[
            bool,
            typer.Option(
                "--sealed",
                help="The application seals content: cover the key store's collection too "
                "(in this database; find/insert, and update for the operator; never remove).",
            ),
        ] = False,
        keys_collection: Annotated[
            str,
            typer.Option(
                "--keys-collection",
                envvar="CHATLEDGER_KEYS_COLLECTION",
                help="Name of the key store's collection (with --sealed).",
            ),
        ] = "keys",
    ) -> None:
        """Create or update the chatledger_app and chatledger_operator roles.

        A dry run (the commands printed) unless --apply; --sealed covers the key store too.
        """
        ui, database = connection.ui, connection.database
        names: dict[str, str | None] = {
            "threads": threads_collection,
            "events": events_collection,
            "audit": audit_collection,
            "keys": keys_collection if sealed else None,
        }

        async def go() -> int:
            for value in (database, *(n for n in names.values() if n is not None)):
                if not value or "$" in value or "\x00" in value:
                    raise InvalidInputError(f"invalid database or collection name {value!r}")
            if not apply:
                return await roles_body(None, ui, database=database, apply=False, collections=names)
            uri = connection.server_uri()
            if not uri:
                raise InvalidInputError("--apply needs --mongodb-uri (a user allowed to manage roles)")
            async with open_database(uri, database) as db:
                return await roles_body(db, ui, database=database, apply=True, collections=names)

        connection.work(go)
