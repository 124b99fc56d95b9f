"""``--ledger-id``: the CLI addresses the keys of a ledger the application opened with ``ledger_id=``.

Sealing key ids derive from the ledger id; an application using ``Ledger(db,
ledger_id="app-1")`` has keys the default id (``<database>/threads/events``) does not
name. The command bodies run on every tier with the :class:`Ledger` that ``run_admin``
builds from ``--ledger-id``; the real command line checks the option itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.cli.commands import removal, transfer
from chatledger.errors import InvalidInputError
from chatledger.sealing import SubjectErasedError
from tests.admin.conftest import talk
from tests.admin.test_cli import chatledger
from tests.admin.test_cli_operator import ui
from tests.admin.test_cli_sealed import sealer_on
from tests.helpers import raw_docs


async def test_erase_with_the_ledger_id_destroys_that_ledgers_keys(database: Any) -> None:
    app = Ledger(database, sealer=sealer_on(database), ledger_id="app-1")
    await talk(app, "alice-1", 2, user_id="alice")
    keys = await raw_docs(database["keys"])
    assert [d["ledger_id"] for d in keys] == ["app-1"]

    # Without --ledger-id: the default ledger id has no key of alice, and her content is
    # sealed, so the erase refuses (exit 2) and changes nothing: app-1's key stays usable.
    before = {name: await raw_docs(database[name]) for name in ("threads", "events", "audit", "keys")}
    with pytest.raises(InvalidInputError, match="no key") as refused:
        await removal.erase_body(database, ui()[0], user="alice", apply=True)
    assert "--ledger-id" in str(refused.value)
    assert {name: await raw_docs(database[name]) for name in before} == before
    assert len(await app.bind(user_id="alice").read(await app.bind(user_id="alice").head("alice-1"))) == 4

    # With --ledger-id app-1 (run_admin's Ledger): the key is destroyed, the content erased.
    run, out, _ = ui(as_json=True)
    code = await removal.erase_body(Ledger(database, ledger_id="app-1"), run, user="alice", apply=True)
    assert code == 0, out()
    assert [d.get("destroyed_at") is not None for d in await raw_docs(database["keys"])] == [True]
    assert [d for d in await raw_docs(database["threads"]) if "removed" not in d] == []
    # The application (same ledger id) can never seal new content for alice again.
    reopened = Ledger(database, sealer=sealer_on(database), ledger_id="app-1")
    with pytest.raises(SubjectErasedError):
        await talk(reopened, "alice-2", 1, user_id="alice")


@pytest.mark.parametrize("bad", ["", "x" * 201], ids=["empty", "too-long"])
def test_a_bad_ledger_id_is_one_line_and_exit_2_before_connecting(bad: str) -> None:
    # An address nothing listens on: the bad value is reported first, whatever the server.
    uri = "mongodb://127.0.0.1:9/"
    done = chatledger("erase", "--user", "alice", "--mongodb-uri", uri, "--ledger-id", bad, check=2)
    assert done.stderr.strip().count("\n") == 0
    assert "--ledger-id (CHATLEDGER_LEDGER_ID) must be a non-empty str" in done.stderr


def test_a_bad_ledger_id_in_the_environment_is_refused_too() -> None:
    # (An empty variable counts as unset, as for every CHATLEDGER_* variable.)
    env = {"CHATLEDGER_LEDGER_ID": "x" * 201}
    done = chatledger("stats", "--mongodb-uri", "mongodb://127.0.0.1:9/", env=env, check=2)
    assert "--ledger-id (CHATLEDGER_LEDGER_ID) must be a non-empty str" in done.stderr


async def test_the_option_reaches_the_ledger_on_the_command_line(real_backend: Any, database: Any) -> None:
    app = Ledger(database, sealer=sealer_on(database), ledger_id="app-1")
    await talk(app, "alice-1", 1, user_id="alice")
    uri = real_backend.uri.rstrip("/") + f"/{database.name}"
    # Without the option: refused (exit 2), the message names the option, nothing changed.
    refused = chatledger("erase", "--user", "alice", "--apply", "--mongodb-uri", uri, check=2)
    assert f"in ledger '{database.name}/threads/events'" in refused.stderr  # the default id
    assert "--ledger-id" in refused.stderr
    assert [d.get("destroyed_at") for d in await raw_docs(database["keys"])] == [None]
    erased = chatledger(
        "erase",
        "--user",
        "alice",
        "--apply",
        "--json",
        "--mongodb-uri",
        uri,
        env={"CHATLEDGER_LEDGER_ID": "app-1"},
    )
    assert json.loads(erased.stdout)["keys"]
    assert [d.get("destroyed_at") is not None for d in await raw_docs(database["keys"])] == [True]


async def test_a_ledger_moved_to_another_database_keeps_its_erasures_with_its_old_id(
    database: Any, tmp_path: Path
) -> None:
    old = Ledger(database, sealer=sealer_on(database))
    await talk(old, "alice-1", 1, user_id="alice")
    await removal.erase_body(database, ui()[0], user="alice", apply=True)
    dump = str(tmp_path / "ledger.jsonl")
    assert await transfer.export_body(database, ui()[0], path=dump, audit=True) == 0
    moved = database.client[database.name + "_moved"]
    try:
        assert await transfer.import_body(moved, ui()[0], path=dump) == 0
        # With the old id (the docs' advice): alice's erased mark still refuses new keys.
        kept = Ledger(moved, sealer=sealer_on(moved), ledger_id=old.ledger_id)
        with pytest.raises(SubjectErasedError):
            await talk(kept, "alice-2", 1, user_id="alice")
        # With the new database's default id the mark names another ledger: alice is sealed again.
        renamed = Ledger(moved, sealer=sealer_on(moved))
        await talk(renamed, "alice-3", 1, user_id="alice")
        assert [d["ledger_id"] for d in await raw_docs(moved["keys"]) if "ledger_id" in d] == [
            renamed.ledger_id
        ]
    finally:
        await database.client.drop_database(moved.name)
