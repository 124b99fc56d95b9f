"""Operators' tools: verify, legal holds, retention, erasure, export/import, stats.

Each function takes a :class:`~chatledger.ledger.Ledger` or a database handle; the
``chatledger`` CLI and ``scripts/`` are thin layers over them.
"""

from __future__ import annotations

from chatledger.admin.catalog import ThreadActivity, ThreadFilter, ThreadSummary, count_threads, list_threads
from chatledger.admin.erasure import count_erasure_candidates, plan_erasure, run_erasure
from chatledger.admin.export import ExportSummary, ImportSummary, export_jsonl, import_jsonl
from chatledger.admin.holds import release_hold, set_hold
from chatledger.admin.receipts import operator_identity, pending_removals
from chatledger.admin.removal import Removal, RemovalReport, Skipped, resume_pending
from chatledger.admin.retention import (
    RetentionPolicy,
    count_retention_candidates,
    parse_duration,
    plan_retention,
    run_retention,
)
from chatledger.admin.stats import Stats, collect_stats, count_events
from chatledger.admin.verify import Anchor, Problem, VerifyReport, head_anchors, verify

__all__ = [
    "Anchor",
    "ExportSummary",
    "ImportSummary",
    "Problem",
    "Removal",
    "RemovalReport",
    "RetentionPolicy",
    "Skipped",
    "Stats",
    "ThreadActivity",
    "ThreadFilter",
    "ThreadSummary",
    "VerifyReport",
    "collect_stats",
    "count_erasure_candidates",
    "count_events",
    "count_retention_candidates",
    "count_threads",
    "export_jsonl",
    "head_anchors",
    "import_jsonl",
    "list_threads",
    "operator_identity",
    "parse_duration",
    "pending_removals",
    "plan_erasure",
    "plan_retention",
    "release_hold",
    "resume_pending",
    "run_erasure",
    "run_retention",
    "set_hold",
    "verify",
]
