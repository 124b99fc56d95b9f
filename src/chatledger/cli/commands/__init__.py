"""The ``chatledger`` commands, one module per group; each module's ``register(app)`` adds its commands."""

from __future__ import annotations

from chatledger.cli.commands import (
    browse,
    demo,
    hold,
    integrity,
    keys,
    ledgerproofs,
    removal,
    roles,
    stats,
    transfer,
)

__all__ = ["GROUPS"]

#: In the order ``chatledger --help`` lists them.
GROUPS = (demo, browse, transfer, integrity, ledgerproofs, removal, hold, stats, roles, keys)
