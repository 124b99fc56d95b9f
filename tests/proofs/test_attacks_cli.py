"""CLI attacks on the log commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatledger import IntegrityError, Ledger
from chatledger.cli.commands import ledgerproofs
from tests.admin.conftest import talk
from tests.proofs.test_cli import ui
from tests.proofs.test_log import SIGNING


async def test_a_refused_checkpoint_leaves_the_previous_copy_of_the_checkpoint_alone(
    database: Any, tmp_path: Path
) -> None:
    # The operator keeps the latest checkpoint outside the database, refreshed by cron:
    # the day tampering is found, the run must refuse without destroying that evidence.
    signing = tmp_path / "signing.pem"
    signing.write_bytes(SIGNING)
    kept = tmp_path / "checkpoint.txt"
    ledger = Ledger(database)
    await talk(ledger, "t", 2)
    assert (
        await ledgerproofs.checkpoint_body(database, ui()[0], signing_key=str(signing), output=str(kept)) == 0
    )
    evidence = kept.read_text()
    assert evidence
    await talk(ledger, "t", 2)
    await database["events"].delete_one({"_id": "t#3"})
    with pytest.raises(IntegrityError, match="vanished"):
        await ledgerproofs.checkpoint_body(database, ui()[0], signing_key=str(signing), output=str(kept))
    assert kept.read_text() == evidence
