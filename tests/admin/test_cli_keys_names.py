"""Key-store collection names are checked like the ledger's (exit 2); --no-keys takes no key-store option."""

from __future__ import annotations

import io
from typing import Any

import pytest
import typer

from chatledger import InvalidInputError
from chatledger.cli.commands import keys, removal
from chatledger.cli.connection import KeyStoreLocation
from chatledger.cli.render import Renderer
from chatledger.cli.run import run_body
from chatledger.storage import KeyStore
from tests.admin.test_cli import chatledger

BAD_NAMES = [".", "keys.", ".keys", "a..b", "system.keys", "", "a$b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_key_store_name_is_invalid_input(database: Any, name: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid collection name"):
        KeyStore(database, collection=name)


def test_good_key_store_names_are_accepted(database: Any) -> None:
    for name in ("keys", "ledger.keys", "keys-2"):
        assert KeyStore(database, collection=name).collection.name == name


@pytest.mark.parametrize("name", [".", "keys.", "a..b", "system.keys"])
@pytest.mark.parametrize("command", ["erase", "keys list"])
def test_commands_exit_2_on_a_bad_keys_collection(database: Any, name: str, command: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    ui = Renderer(out, err, as_json=False, width=200)
    where = KeyStoreLocation(collection=name)
    body = (
        removal.erase_body(database, ui, user="alice", keys=where)
        if command == "erase"
        else keys.list_body(database, ui, keys=where)
    )
    with pytest.raises(typer.Exit) as exited:
        run_body(ui, body)
    assert exited.value.exit_code == 2, err.getvalue()
    assert "invalid collection name" in err.getvalue()
    assert "database error" not in err.getvalue()


@pytest.mark.parametrize("command", ["erase --user alice", "retention --older-than 30d"])
@pytest.mark.parametrize("option", [["--keys-collection", "k2"], ["--keys-database", "vault"]])
def test_no_keys_with_a_key_store_option_is_a_usage_error(command: str, option: list[str]) -> None:
    # Refused before any connection: no server is needed to see it.
    done = chatledger(*command.split(), "--no-keys", *option, check=2)
    assert "--no-keys touches no key store" in done.stderr
    assert option[0] in done.stderr


def test_no_keys_overrides_key_store_settings_from_the_environment() -> None:
    # CHATLEDGER_KEYS_* are deployment defaults: --no-keys on the command line wins quietly
    # (the run goes on, here to the missing server).
    done = chatledger(
        "erase",
        "--user",
        "alice",
        "--no-keys",
        check=2,
        env={"CHATLEDGER_KEYS_COLLECTION": "k2", "CHATLEDGER_KEYS_DATABASE": "vault"},
    )
    assert "--no-keys touches no key store" not in done.stderr
    assert "--mongodb-uri" in done.stderr
