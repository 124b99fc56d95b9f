"""The admin CLI with the key store on another server (``--keys-mongodb-uri``).

The keys may live on another cluster, with shorter backup retention and tighter roles
(docs/sealing.md). These tests start a second FerretDB for the keys, so they run only on
the tiers with a real server: the ledger's events on the tier's server, the keys on the
other one, and the real command line in between.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from chatledger.storage.driver import close_client
from tests.admin.test_cli import chatledger
from tests.admin.test_cli_sealed import KEK, MARKER, talk
from tests.helpers import raw_docs
from tests.scripts import load_script, start_ferretdb

PASSWORD = "Vault-Pw-8812"


@pytest.fixture(scope="module")
def keys_server() -> Iterator[Callable[[], str]]:
    """The URI of a second server, for the keys: started on first use (never on mongomock)."""
    started: list[Any] = []

    def uri() -> str:
        if not started:
            server = start_ferretdb()
            if server is None:
                pytest.skip("Go is not installed, so a second FerretDB cannot be built")
            started.append(server)
        return str(started[0].uri)

    yield uri
    for server in started:
        server.close()


@pytest.fixture
async def vault(real_backend: Any, keys_server: Callable[[], str]) -> Any:
    """A fresh database on the keys' server, with the tier's driver; dropped afterwards."""
    client, db = await dataclasses.replace(real_backend, uri=keys_server()).open()
    try:
        yield db
    finally:
        await client.drop_database(db.name)
        await close_client(client)


def unreachable_uri() -> str:
    # A loopback port nothing listens on; credentials in it must never be printed.
    port = load_script("ferretdb").free_port()
    return f"mongodb://operator:{PASSWORD}@127.0.0.1:{port}/?serverSelectionTimeoutMS=300"


async def test_operator_session_with_keys_on_another_server(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], tmp_path: Path
) -> None:
    ledger = Ledger(database, sealer=Sealer(KeyStore(vault), LocalKeyProvider(KEK)))
    await talk(ledger, "alice", "a1", [f"{MARKER} one"])
    await talk(ledger, "bob", "b1", ["bob's"])
    keys_uri = keys_server()
    where = ["--keys-mongodb-uri", keys_uri, "--keys-database", vault.name]
    uri, name = real_backend.uri, database.name

    def run(*args: str, check: int = 0, env: dict[str, str] | None = None) -> Any:
        return chatledger(*args, uri=uri, database=name, check=check, env=env)

    kek_file = tmp_path / "kek"
    kek_file.write_bytes(KEK)

    listed = json.loads(run("keys", "list", "--json", *where).stdout)
    assert [k["state"] for k in listed["keys"]] == ["active", "active"]
    # Without --keys-mongodb-uri the ledger's own server is searched: it holds no key.
    assert json.loads(run("keys", "list", "--json", "--keys-database", vault.name).stdout)["count"] == 0
    assert f"{MARKER} one" in run("show", "a1", "--kek-file", str(kek_file), *where).stdout
    assert "[sealed: no key]" in run("show", "a1", "--keys-database", vault.name).stdout

    # Erasure through the file variable: the keys on the other server are destroyed there.
    uri_file = tmp_path / "keys-uri"
    uri_file.write_text(keys_uri + "\n", encoding="utf-8")
    env = {"CHATLEDGER_KEYS_MONGODB_URI_FILE": str(uri_file), "CHATLEDGER_KEYS_DATABASE": vault.name}
    dry = json.loads(run("erase", "--user", "alice", "--json", env=env).stdout)
    assert dry["dry_run"]
    assert dry["keys"]["destroyed"] is False
    erased = json.loads(run("erase", "--user", "alice", "--apply", "--by", "dpo", "--json", env=env).stdout)
    assert erased["keys"]["destroyed"] is True
    (key_id,) = erased["keys"]["key_ids"]
    assert "destroyed_at" in ((await vault["keys"].find_one({"_id": key_id})) or {})
    assert await raw_docs(database["keys"]) == []  # nothing written on the ledger's server
    states = {
        k["key_id"]: k["state"] for k in json.loads(run("keys", "list", "--json", *where).stdout)["keys"]
    }
    assert states[key_id] == "destroyed"
    assert sorted(states.values()) == ["active", "destroyed"]

    # A new process (no cached key) reads bob, and nothing of alice's can be opened again.
    fresh = Ledger(database, sealer=Sealer(KeyStore(vault), LocalKeyProvider(KEK)))
    bob = fresh.bind(user_id="bob")
    assert [m.text for m in await bob.read(await bob.head("b1"))] == ["bob's"]

    new_kek = tmp_path / "new-kek"
    new_kek.write_bytes(bytes(range(32, 64)))
    rotated = json.loads(
        run(
            "keys",
            "rotate",
            "--old-kek-file",
            str(kek_file),
            "--new-kek-file",
            str(new_kek),
            "--json",
            *where,
        ).stdout
    )
    assert (rotated["rewrapped"], rotated["failed"]) == (1, [])
    assert json.loads(run("verify", "--json").stdout)["ok"]


async def test_an_unreachable_key_server_stops_erasure_before_any_change(
    real_backend: Any, database: Any, vault: Any
) -> None:
    ledger = Ledger(database, sealer=Sealer(KeyStore(vault), LocalKeyProvider(KEK)))
    await talk(ledger, "alice", "a1", [f"{MARKER} one"])
    uri, name = real_backend.uri, database.name
    bad = unreachable_uri()
    for command in (["erase", "--user", "alice", "--apply"], ["retention", "--older-than", "1s", "--apply"]):
        done = chatledger(*command, "--keys-mongodb-uri", bad, uri=uri, database=name, check=2)
        assert "key store" in done.stderr, done.stderr
        assert "--keys-mongodb-uri" in done.stderr, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
    for command in (["keys", "list"], ["show", "a1"]):
        done = chatledger(*command, "--keys-mongodb-uri", bad, uri=uri, database=name, check=2)
        assert PASSWORD not in done.stdout + done.stderr
    # Nothing was removed, and the key is still live on the keys' server.
    assert json.loads(chatledger("stats", "--json", uri=uri, database=name).stdout)["threads"] == 1
    assert [k.get("destroyed_at") for k in await raw_docs(vault["keys"])] == [None]


def test_credentials_a_key_server_refuses_are_told_apart_from_an_unreachable_one(real_backend: Any) -> None:
    # The server answers and refuses (FerretDB: no SCRAM; MongoDB: wrong password): that is
    # bad input, said as such, never "no server answered"; the password is never shown.
    host = real_backend.uri.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    refused = (
        f"mongodb://operator:{PASSWORD}@{host}/?authMechanism=SCRAM-SHA-256&serverSelectionTimeoutMS=3000"
    )
    for args, uri in (
        (["keys", "list", "--keys-mongodb-uri", refused], real_backend.uri),
        (["stats"], refused),
    ):
        done = chatledger(*args, uri=uri, database="t_refused", check=2)
        assert "refused the connection" in done.stderr, done.stderr
        assert "no MongoDB server answered" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["erase", "--user", "alice", "--no-keys", "--keys-mongodb-uri", "URI"],
            "--no-keys touches no key store",
        ),
        (["keys", "list", "--keys-mongodb-uri", "URI", "--keys-mongodb-uri-file", "FILE"], "not both"),
        (["keys", "list", "--keys-mongodb-uri", f"mongodb://op:{PASSWORD}@[bad"], "key store"),
        (["keys", "list", "--keys-mongodb-uri-file", "MISSING"], "cannot read the connection string file"),
    ],
)
def test_key_server_options_refused_clearly(
    real_backend: Any, tmp_path: Path, args: list[str], says: str
) -> None:
    uri_file = tmp_path / "keys-uri"
    uri_file.write_text(unreachable_uri(), encoding="utf-8")
    swap = {"URI": unreachable_uri(), "FILE": str(uri_file), "MISSING": str(tmp_path / "missing")}
    done = chatledger(*[swap.get(a, a) for a in args], uri=real_backend.uri, database="t_refused", check=2)
    assert says in done.stderr, done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_no_keys_reads_no_key_server_setting(real_backend: Any, tmp_path: Path) -> None:
    # CHATLEDGER_KEYS_* are deployment defaults: with --no-keys they are not even read
    # (both set, a missing file among them, would otherwise be refused).
    env = {
        "CHATLEDGER_KEYS_MONGODB_URI": unreachable_uri(),
        "CHATLEDGER_KEYS_MONGODB_URI_FILE": str(tmp_path / "missing"),
    }
    done = chatledger(
        "erase", "--user", "alice", "--no-keys", uri=real_backend.uri, database="t_nokeys", env=env, check=1
    )
    # Past the key-store settings (refused with exit 2 if read) to the subject, which is not there.
    assert "no such subject" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
