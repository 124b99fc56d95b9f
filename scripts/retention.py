#!/usr/bin/env python3
"""Cron-ready retention: a policy file in, a report and receipts out; a dry run unless --apply.

    python scripts/retention.py --policy /etc/chatledger/retention.toml \\
        --mongodb-uri "$CHATLEDGER_MONGODB_URI" --database chatledger \\
        [--apply] [--receipts /var/log/chatledger/receipts.jsonl] [--by cron@host]

The policy (TOML or JSON)::

    default = "365d"            # lineages idle longer than this go; "forever" keeps them
    [tenants]
    acme = "30d"
    bank = "forever"

stdout: one JSON report (what was planned, removed, skipped, resumed). With
``--receipts FILE`` the receipts this run wrote to the ``audit`` collection are also
appended to FILE as JSON Lines (head hashes, never content), so they live outside the
database too. An interrupted run is finished by the next one.

Exit status: 0 done (or dry run), 1 the database failed, 2 bad arguments or policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from bson import json_util

from chatledger.admin import RetentionPolicy, run_retention
from chatledger.admin.catalog import as_ledger
from chatledger.cli.connection import DEFAULT_DATABASE, open_database
from chatledger.errors import ChatLedgerError, InvalidInputError


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--policy", required=True, help="TOML or JSON retention policy")
    parser.add_argument("--mongodb-uri", default=os.environ.get("CHATLEDGER_MONGODB_URI"))
    parser.add_argument("--database", default=os.environ.get("CHATLEDGER_DATABASE", DEFAULT_DATABASE))
    parser.add_argument("--apply", action="store_true", help="really remove (default: dry run)")
    parser.add_argument("--receipts", help="append this run's receipts to this JSON Lines file")
    parser.add_argument("--by", help="who acts, for the receipts (default user@host)")
    parser.add_argument("--reason", default="scheduled retention")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, policy: RetentionPolicy) -> dict[str, Any]:
    async with open_database(args.mongodb_uri, args.database) as db:
        ledger = as_ledger(db)
        report = await run_retention(ledger, policy, apply=args.apply, by=args.by, reason=args.reason)
        if args.receipts and (report.removed or report.resumed):
            ids = [*report.removed, *report.resumed]
            receipts = await ledger.audit.find(
                {"$or": [{"_id": {"$in": ids}}, {"receipt_id": {"$in": ids}}]}
            ).to_list(None)
            with open(args.receipts, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - nothing runs concurrently
                for receipt in receipts:
                    out.write(json_util.dumps(receipt) + "\n")
        return report.to_dict()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not args.mongodb_uri:
        print("error: pass --mongodb-uri or set CHATLEDGER_MONGODB_URI", file=sys.stderr)
        return 2
    try:
        policy = RetentionPolicy.load(args.policy)
        report = asyncio.run(_run(args, policy))
    except InvalidInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ChatLedgerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
