"""Attacks on the CLI's key store on another server (``--keys-mongodb-uri``).

A second FerretDB holds the keys (fixtures of test_cli_keys_server). Faults are injected
on the network, never in the code: a loopback proxy in front of the key server goes
away when the command sends its first write there, as a key server would mid-command.
FerretDB accepts any user name and password with ``authMechanism=PLAIN``, so every URI
here carries credentials, and every output is searched for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.sealing import KeyStore, LocalKeyProvider, Sealer
from tests.admin.test_cli import chatledger
from tests.admin.test_cli_keys_server import keys_server, unreachable_uri, vault
from tests.admin.test_cli_sealed import KEK, MARKER, talk
from tests.helpers import raw_docs

__all__ = ["keys_server", "vault"]  # fixtures, re-exported so pytest finds them here

USER = "opsvault7"
PASSWORD = "Vault-Pw-8812"
#: The start of the "update" command in an OP_MSG: how a key is destroyed (replace_one).
UPDATE_COMMAND = b"\x02update\x00"


def with_credentials(uri: str, password: str = PASSWORD, **options: str) -> str:
    # mongodb://127.0.0.1:PORT/ -> mongodb://USER:PASSWORD@127.0.0.1:PORT/?authMechanism=PLAIN...
    host = uri.split("://", 1)[1].split("/", 1)[0]
    query = "&".join(f"{k}={v}" for k, v in {"authMechanism": "PLAIN", **options}.items())
    return f"mongodb://{USER}:{password}@{host}/?{query}"


def secret_free(done: Any) -> bool:
    seen = done.stdout + done.stderr
    return PASSWORD not in seen and USER not in seen


class VanishingProxy:
    """Forwards a loopback port to a server until a client sends ``cut_on``; then it is gone.

    Gone as a crashed server is: every open connection is reset and the port refuses
    new ones.
    """

    def __init__(self, target: str, cut_on: bytes) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1].strip("/")))
        self.cut_on = cut_on
        self.cut = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.uri = f"mongodb://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and self.cut_on in data:
                    self.close()
                    return
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.cut.set()
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def cli(real_backend: Any, database: Any) -> Callable[..., Any]:
    def run(*args: str, check: int | None = 0, env: dict[str, str] | None = None) -> Any:
        return chatledger(*args, uri=real_backend.uri, database=database.name, check=check, env=env)

    return run


async def sealed_pair(database: Any, vault: Any) -> None:
    # alice and bob, each sealed under their own key on the keys' server.
    ledger = Ledger(database, sealer=Sealer(KeyStore(vault), LocalKeyProvider(KEK)))
    await talk(ledger, "alice", "a1", [f"{MARKER} one"])
    await talk(ledger, "bob", "b1", ["bob's"])


async def live_keys(vault: Any) -> int:
    return sum("destroyed_at" not in k for k in await raw_docs(vault["keys"]))


async def test_erase_whose_key_server_vanishes_before_the_keys_go_is_finished_by_a_rerun(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str]
) -> None:
    await sealed_pair(database, vault)
    run = cli(real_backend, database)
    proxy = VanishingProxy(keys_server(), UPDATE_COMMAND)
    try:
        where = ["--keys-database", vault.name, "--keys-mongodb-uri"]
        cut = with_credentials(proxy.uri, serverSelectionTimeoutMS="700")
        # Pinged fine, threads removed, then the key server is gone when the key is destroyed:
        # the database failed part-way (exit 1), and no credential is printed on the way.
        broken = run("erase", "--user", "alice", "--apply", "--by", "dpo", *where, cut, check=1)
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert secret_free(broken), broken
    assert json.loads(run("stats", "--json").stdout)["threads"] == 1  # alice's thread is gone
    assert await live_keys(vault) == 2  # ... and her key still opens every backup of it

    # The key server is back: running the same erasure again destroys the key.
    again = run(
        "erase",
        "--user",
        "alice",
        "--apply",
        "--by",
        "dpo",
        "--json",
        *where,
        with_credentials(keys_server()),
    )
    assert secret_free(again), again
    assert json.loads(again.stdout)["keys"]["destroyed"] is True
    assert await live_keys(vault) == 1


async def test_erase_interrupted_at_the_key_server_says_what_it_left_undone(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str]
) -> None:
    await sealed_pair(database, vault)
    proxy = VanishingProxy(keys_server(), UPDATE_COMMAND)
    try:
        keys_uri = with_credentials(proxy.uri, serverSelectionTimeoutMS="700")
        broken = cli(real_backend, database)(
            "erase",
            "--user",
            "alice",
            "--apply",
            "--keys-database",
            vault.name,
            "--keys-mongodb-uri",
            keys_uri,
            check=1,
        )
    finally:
        proxy.close()
    said = broken.stdout + broken.stderr
    assert "key store" in broken.stderr, broken.stderr
    assert "removed" in said, said
    assert "again" in said, said


def test_a_password_with_a_space_is_never_printed(real_backend: Any) -> None:
    port = unreachable_uri().split("@", 1)[1]  # 127.0.0.1:PORT/?serverSelectionTimeoutMS=300
    spaced = f"mongodb://{USER}:Vault Pw 8812@{port}"
    done = chatledger(
        "keys", "list", "--keys-mongodb-uri", spaced, uri=real_backend.uri, database="t_space", check=2
    )
    assert "Pw 8812" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize(
    "password",
    ["Vault%40Pw%2F8812", "Vault%2540Pw", "Vault:Pw?8812#x", "Vault%20Pw%258812"],
    ids=["escaped-at-slash", "double-escaped", "colon-query-hash", "escaped-space"],
)
def test_url_encoded_passwords_never_appear_in_any_form(real_backend: Any, password: str) -> None:
    from urllib.parse import unquote

    port = unreachable_uri().split("@", 1)[1]
    keys_uri = f"mongodb://{USER}:{password}@{port}"
    for command in (["keys", "list", "--json"], ["erase", "--user", "alice", "--apply"], ["show", "a1"]):
        done = chatledger(
            *command, "--keys-mongodb-uri", keys_uri, uri=real_backend.uri, database="t_enc", check=2
        )
        seen = done.stdout + done.stderr
        # Neither as written nor decoded (PyMongo reports what it decoded).
        assert password not in seen, seen
        assert unquote(password) not in seen, seen
        assert USER not in seen, seen


def test_a_uri_given_as_the_uri_file_is_never_printed(real_backend: Any, tmp_path: Path) -> None:
    mistaken = unreachable_uri()
    outputs = [
        chatledger(
            "keys", "list", "--keys-mongodb-uri-file", mistaken, uri=real_backend.uri, database="t_f", check=2
        ),
        chatledger(
            "erase",
            "--user",
            "alice",
            uri=real_backend.uri,
            database="t_f",
            check=2,
            env={"CHATLEDGER_KEYS_MONGODB_URI_FILE": mistaken},
        ),
    ]
    for done in outputs:
        assert "not the connection string itself" in done.stderr, done.stderr
        assert "Vault-Pw-8812" not in done.stdout + done.stderr, done.stderr
    # The ledger's own --mongodb-uri-file alike.
    done = chatledger("stats", "--mongodb-uri-file", mistaken, check=2)
    assert "--mongodb-uri-file takes the path of a file" in done.stderr, done.stderr
    assert "Vault-Pw-8812" not in done.stdout + done.stderr


def test_no_keys_ignores_a_keys_uri_file_variable_naming_a_directory(
    real_backend: Any, tmp_path: Path
) -> None:
    done = chatledger(
        "erase",
        "--user",
        "alice",
        "--no-keys",
        uri=real_backend.uri,
        database="t_nokeys_dir",
        check=1,
        env={"CHATLEDGER_KEYS_MONGODB_URI_FILE": str(tmp_path)},
    )
    # Past the key-store settings (a directory would be refused, exit 2) to the missing subject.
    assert "no such subject" in done.stderr


async def test_a_keys_uri_file_is_read_from_its_first_non_blank_line(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], tmp_path: Path
) -> None:
    await sealed_pair(database, vault)
    run = cli(real_backend, database)
    uri_file = tmp_path / "keys-uri"
    # Blank lines first, spaces around it, Windows line ends, a note on a later line.
    uri_file.write_bytes(
        b"\r\n\n   " + with_credentials(keys_server()).encode() + b"  \r\n# rotated 2026-01-01\r\n"
    )
    where = ["--keys-database", vault.name, "--keys-mongodb-uri-file", str(uri_file)]
    listed = run("keys", "list", "--json", *where)
    assert json.loads(listed.stdout)["count"] == 2
    assert secret_free(listed)

    for content in (b"", b"  \n\t\r\n"):
        uri_file.write_bytes(content)
        empty = run("keys", "list", *where, check=2)
        assert "is empty" in empty.stderr, empty.stderr


async def test_a_keys_uri_file_with_a_byte_order_mark_is_read(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], tmp_path: Path
) -> None:
    await sealed_pair(database, vault)
    uri_file = tmp_path / "keys-uri"
    uri_file.write_bytes(b"\xef\xbb\xbf" + with_credentials(keys_server()).encode() + b"\r\n")
    listed = cli(real_backend, database)(
        "keys", "list", "--json", "--keys-database", vault.name, "--keys-mongodb-uri-file", str(uri_file)
    )
    assert json.loads(listed.stdout)["count"] == 2


async def test_the_ledgers_own_server_named_as_the_key_server_is_the_default_key_store(
    real_backend: Any, database: Any
) -> None:
    ledger = Ledger(database, sealer=Sealer(KeyStore(database), LocalKeyProvider(KEK)))
    await talk(ledger, "alice", "a1", [f"{MARKER} one"])
    run = cli(real_backend, database)
    same = ["--keys-mongodb-uri", real_backend.uri]
    default = json.loads(run("keys", "list", "--json").stdout)["keys"]
    assert json.loads(run("keys", "list", "--json", *same).stdout)["keys"] == default
    erased = json.loads(run("erase", "--user", "alice", "--apply", "--json", *same).stdout)
    assert erased["keys"]["destroyed"] is True
    assert [k.get("destroyed_at") is not None for k in await raw_docs(database["keys"])] == [True]


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a$b", "a/b"])
async def test_invalid_keys_database_names_on_the_key_server_change_nothing(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], name: str
) -> None:
    await sealed_pair(database, vault)
    run = cli(real_backend, database)
    keys_uri = with_credentials(keys_server())
    for command in (["erase", "--user", "alice", "--apply"], ["retention", "--older-than", "1s", "--apply"]):
        done = run(*command, "--keys-mongodb-uri", keys_uri, "--keys-database", name, check=2)
        assert "--keys-database" in done.stderr, done.stderr
        assert secret_free(done)
    assert json.loads(run("stats", "--json").stdout)["threads"] == 2


async def test_a_keys_database_name_the_key_server_refuses_stops_retention_before_any_change(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str]
) -> None:
    # No user or tenant: each conversation tree has its own key, which retention destroys.
    ledger = Ledger(database, sealer=Sealer(KeyStore(vault), LocalKeyProvider(KEK)))
    await talk(ledger, None, "t1", [f"{MARKER} one"])
    await asyncio.sleep(1.2)  # older than 1s, by the subprocess's clock
    run = cli(real_backend, database)
    run(
        "retention",
        "--older-than",
        "1s",
        "--apply",
        "--keys-mongodb-uri",
        with_credentials(keys_server()),
        "--keys-database",
        "k" * 80,
        check=2,
    )
    assert json.loads(run("stats", "--json").stdout)["threads"] == 1


async def test_json_outputs_never_carry_the_key_servers_uri(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], tmp_path: Path
) -> None:
    await sealed_pair(database, vault)
    run = cli(real_backend, database)
    keys_uri = with_credentials(keys_server())
    kek, new_kek = tmp_path / "kek", tmp_path / "new-kek"
    kek.write_bytes(KEK)
    new_kek.write_bytes(bytes(range(64, 96)))
    where = ["--json", "--keys-database", vault.name, "--keys-mongodb-uri", keys_uri]
    outputs = [
        run("keys", "list", *where),
        run("show", "a1", "--kek-file", str(kek), *where),
        run("erase", "--user", "bob", *where),
        run("retention", "--older-than", "3650d", *where),
        run("keys", "rotate", "--old-kek-file", str(kek), "--new-kek-file", str(new_kek), *where),
        run("erase", "--user", "alice", "--apply", *where),
    ]
    host = keys_uri.split("@", 1)[1].split("/", 1)[0]
    for done in outputs:
        json.loads(done.stdout)  # one JSON document each
        assert secret_free(done), done
        assert host not in done.stdout  # neither the server nor its options
    assert f"{MARKER} one" in outputs[1].stdout


async def test_rotate_with_a_wrong_old_kek_on_the_key_server_lists_failures_and_changes_nothing(
    real_backend: Any, database: Any, vault: Any, keys_server: Callable[[], str], tmp_path: Path
) -> None:
    await sealed_pair(database, vault)
    before = await raw_docs(vault["keys"])
    wrong, new_kek = tmp_path / "wrong", tmp_path / "new-kek"
    wrong_kek = bytes(range(100, 132))
    wrong.write_bytes(wrong_kek)
    new_kek.write_bytes(bytes(range(64, 96)))
    where = ["--keys-database", vault.name, "--keys-mongodb-uri", with_credentials(keys_server())]
    rotate = ["keys", "rotate", "--old-kek-file", str(wrong), "--new-kek-file", str(new_kek)]
    run = cli(real_backend, database)
    as_json = run(*rotate, "--json", *where, check=1)
    report = json.loads(as_json.stdout)
    assert (report["rewrapped"], report["already"]) == (0, 0)
    assert sorted(f["key_id"] for f in report["failed"]) == sorted(str(k["_id"]) for k in before)
    text = run(*rotate, *where, check=1)
    assert text.stdout.count("FAIL") == 2
    for done in (as_json, text):
        seen = done.stdout + done.stderr
        assert secret_free(done)
        assert wrong_kek.hex() not in seen
        assert bytes(range(64, 96)).hex() not in seen
        assert all(str(k["wrapped"]) not in seen for k in before)
    assert await raw_docs(vault["keys"]) == before
