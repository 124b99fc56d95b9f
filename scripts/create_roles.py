#!/usr/bin/env python3
"""Create least-privilege MongoDB roles for ChatLedger; a dry run (prints the commands) unless --apply.

    python scripts/create_roles.py --database chatledger                 # print mongosh commands
    python scripts/create_roles.py --database chatledger --apply \\
        --mongodb-uri mongodb://admin:...@host/?authSource=admin           # create or update them

Roles (in the ChatLedger database):

- ``chatledger_app``: ``find`` and ``insert`` on ``threads`` and ``events`` (plus
  ``createIndex``, which ``Ledger.ensure_indexes`` needs and which changes no data). No
  ``update``, no ``remove``: for the application the ledger is append-only.
- ``chatledger_operator``: the same, plus ``remove`` on ``threads`` and ``events``
  (retention, erasure), ``update`` on ``threads`` (legal holds: MongoDB cannot narrow an
  update privilege to one field, so the ledger's hash chain covers events, and thread
  documents are checked by ``chatledger verify``), and ``find``/``insert`` on ``audit``.
  Nobody gets ``update`` or ``remove`` on ``audit``.

Grant them with ``db.grantRolesToUser(...)`` or ``createUser``; the script does not
create users or handle passwords.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

APP_ROLE = "chatledger_app"
OPERATOR_ROLE = "chatledger_operator"


def _privilege(database: str, collection: str, actions: list[str]) -> dict[str, Any]:
    return {"resource": {"db": database, "collection": collection}, "actions": actions}


def role_definitions(
    database: str, threads: str = "threads", events: str = "events", audit: str = "audit"
) -> dict[str, list[dict[str, Any]]]:
    """Return the privileges of each role."""
    append_only = ["find", "insert", "createIndex"]
    return {
        APP_ROLE: [_privilege(database, threads, append_only), _privilege(database, events, append_only)],
        OPERATOR_ROLE: [
            _privilege(database, threads, [*append_only, "remove", "update"]),
            _privilege(database, events, [*append_only, "remove"]),
            _privilege(database, audit, ["find", "insert", "createIndex"]),
        ],
    }


def commands(database: str, existing: set[str], **collections: str) -> list[dict[str, Any]]:
    """Return the database commands that create (or bring up to date) each role."""
    out: list[dict[str, Any]] = []
    for role, privileges in role_definitions(database, **collections).items():
        verb = "updateRole" if role in existing else "createRole"
        out.append({verb: role, "privileges": privileges, "roles": []})
    return out


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default=os.environ.get("CHATLEDGER_DATABASE", "chatledger"))
    parser.add_argument("--mongodb-uri", default=os.environ.get("CHATLEDGER_MONGODB_URI"))
    parser.add_argument("--threads-collection", default="threads")
    parser.add_argument("--events-collection", default="events")
    parser.add_argument("--audit-collection", default="audit")
    parser.add_argument("--apply", action="store_true", help="run the commands (default: print them)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not args.database or "$" in args.database:
        print(f"error: invalid database name {args.database!r}", file=sys.stderr)
        return 2
    names = {
        "threads": args.threads_collection,
        "events": args.events_collection,
        "audit": args.audit_collection,
    }
    if not args.apply:
        print(f"// dry run: run these in mongosh (use {args.database}), or pass --apply")
        for command in commands(args.database, set(), **names):
            print(f"db.runCommand({json.dumps(command, indent=2)})")
        return 0
    if not args.mongodb_uri:
        print("error: --apply needs --mongodb-uri (a user allowed to manage roles)", file=sys.stderr)
        return 2
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] = MongoClient(args.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        db = client[args.database]
        info = db.command({"rolesInfo": [APP_ROLE, OPERATOR_ROLE]})
        existing = {r["role"] for r in info.get("roles", [])}
        for command in commands(args.database, existing, **names):
            db.command(command)
            verb = next(iter(command))
            print(f"{verb} {command[verb]}: ok")
    except PyMongoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
