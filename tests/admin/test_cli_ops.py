"""What operators of comparable tools expect (issue 22): lists, filters, pipes, completion, help.

Command bodies run on every tier (the in-process way tests/admin drives the CLI); the
real command line runs where the parser, the connection string or a process matter.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from chatledger import Ledger
from chatledger.admin.erasure import NoSuchSubjectError
from chatledger.admin.holds import set_hold
from chatledger.cli.commands import hold, keys, removal
from chatledger.cli.render import Renderer
from chatledger.cli.run import exit_code
from chatledger.errors import ChatLedgerError, InvalidInputError
from chatledger.sealing import KeyStore
from tests.admin.conftest import talk
from tests.admin.test_cli import chatledger, chatledger_process
from tests.admin.test_cli_sealed import sealer_on
from tests.admin.test_cli_sealed import talk as sealed_talk
from tests.helpers import raw_docs


def ui(*, as_json: bool = False, tsv: bool = False) -> tuple[Renderer, Callable[[], str], Callable[[], str]]:
    out, err = io.StringIO(), io.StringIO()
    return Renderer(out, err, as_json=as_json, tsv=tsv, width=200), out.getvalue, err.getvalue


async def _held(database: Any) -> None:
    ledger = Ledger(database)
    await talk(ledger, "t-acme", 1, tenant_id="acme", user_id="ann")
    await talk(ledger, "t-beta", 1, tenant_id="beta", user_id="bo")
    await talk(ledger, "t-free", 1, tenant_id="acme")
    await set_hold(database, "t-acme", reason="litigation", case="CASE-2", by="lawyer")
    await set_hold(database, "t-acme", reason="audit", case="CASE-1", by="auditor")
    await set_hold(database, "t-beta", reason="litigation", case="CASE-2", by="lawyer")


# --------------------------------------------------------------------------- hold list


async def test_hold_list_shows_every_hold_and_filters_by_case_and_tenant(database: Any) -> None:
    await _held(database)
    r, out, err = ui(as_json=True)
    assert await hold.list_body(database, r) == 0
    doc = json.loads(out())
    assert (doc["schema"], doc["command"], doc["count"]) == (1, "hold list", 3)
    assert [(h["thread_id"], h["case"]) for h in doc["holds"]] == [
        ("t-acme", "CASE-1"),
        ("t-acme", "CASE-2"),
        ("t-beta", "CASE-2"),
    ]
    first = doc["holds"][0]
    assert set(first) == {"thread_id", "tenant_id", "user_id", "case", "reason", "set_at", "set_by"}
    assert (first["tenant_id"], first["user_id"], first["reason"], first["set_by"]) == (
        "acme",
        "ann",
        "audit",
        "auditor",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["set_at"])

    r, out, err = ui()
    assert await hold.list_body(database, r, case="CASE-2") == 0
    assert "t-acme" in out()
    assert "t-beta" in out()
    assert "CASE-1" not in out()
    assert "2 holds on 2 threads" in err()
    r, out, _ = ui(as_json=True)
    assert await hold.list_body(database, r, tenant="beta") == 0
    assert [h["thread_id"] for h in json.loads(out())["holds"]] == ["t-beta"]

    r, out, _ = ui(tsv=True)
    assert await hold.list_body(database, r, case="CASE-1") == 0
    header, *rows = out().splitlines()
    assert header.split("\t") == ["thread", "tenant", "user", "case", "reason", "set at", "set by"]
    assert [row.split("\t")[:5] for row in rows] == [["t-acme", "acme", "ann", "CASE-1", "audit"]]


async def test_hold_list_says_there_are_none_and_refuses_an_empty_database(database: Any) -> None:
    r, out, _ = ui()
    with pytest.raises(ChatLedgerError, match="holds no ChatLedger data") as refused:
        await hold.list_body(database, r)
    assert exit_code(refused.value) == 1
    assert await hold.list_body(database, r, allow_empty=True) == 0
    assert out().strip() == "no legal holds"

    await _held(database)
    r, out, _ = ui()
    assert await hold.list_body(database, r, case="CASE-9", tenant="acme") == 0
    assert out().strip() == "no legal holds for case 'CASE-9' in tenant 'acme'"
    r, out, _ = ui(as_json=True)
    assert await hold.list_body(database, r, case="CASE-9") == 0
    assert json.loads(out())["holds"] == []
    with pytest.raises(InvalidInputError):
        await hold.list_body(database, r, case=" ")


async def test_hold_list_on_the_command_line(real_backend: Any, database: Any) -> None:
    await _held(database)
    run = lambda *a, check=0: chatledger(*a, uri=real_backend.uri, database=database.name, check=check)  # noqa: E731
    listed = run("hold", "list", "--tenant", "acme")
    assert "CASE-1" in listed.stdout
    assert "t-beta" not in listed.stdout
    assert "2 holds on 1 thread" in listed.stderr
    assert run("hold", "list", "--tenant", "acme", "--quiet").stderr == ""
    assert json.loads(run("hold", "list", "--json").stdout)["count"] == 3
    assert run("hold", "list", "--json", "--tsv", check=2).stdout == ""
    empty = chatledger("hold", "list", uri=real_backend.uri, database=database.name + "_typo", check=1)
    assert "holds no ChatLedger data" in empty.stderr
    # --quiet leaves out hold set's confirmation; a refusal is still said.
    assert run("hold", "set", "t-free", "--reason", "r", "--case", "C3", "-q").stdout == ""
    assert (
        "already has a hold"
        in run("hold", "set", "t-free", "--reason", "r", "--case", "C3", "-q", check=1).stderr
    )


# --------------------------------------------------------------------------- keys list --user/--tenant


async def test_keys_list_by_subject(database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await sealed_talk(ledger, "alice", "a1", ["alice's"], tenant="acme")
    await sealed_talk(ledger, "bob", "b1", ["bob's"], tenant="acme")
    await sealed_talk(ledger, "carol", "c1", ["carol's"], tenant="beta")
    every = {str(d["_id"]): d for d in await raw_docs(database["keys"])}

    def ids(text: str) -> list[str]:
        return [k["key_id"] for k in json.loads(text)["keys"]]

    r, out, _ = ui(as_json=True)
    assert await keys.list_body(database, r, user="alice") == 0
    (alice,) = ids(out())
    assert every[alice]["user_id"] == "alice"
    r, out, _ = ui(as_json=True)
    assert await keys.list_body(database, r, tenant="acme") == 0
    assert sorted(every[k]["user_id"] for k in ids(out())) == ["alice", "bob"]
    r, out, _ = ui(tsv=True)
    assert await keys.list_body(database, r, user="bob") == 0
    header, row = out().splitlines()
    assert header.split("\t") == [
        "key_id",
        "kind",
        "state",
        "created_at",
        "destroyed_at",
        "kek_id",
        "fingerprint",
        "receipt_id",
    ]
    assert row.split("\t")[2] == "active"

    # A subject with no key (a typo, or not in that tenant) is "no such subject", as for erase.
    for subject in ({"user": "alise"}, {"user": "carol", "tenant": "acme"}, {"tenant": "gamma"}):
        r, out, _ = ui(as_json=True)
        with pytest.raises(NoSuchSubjectError, match="no such subject") as refused:
            await keys.list_body(database, r, **subject)
        assert exit_code(refused.value) == 1
        assert out() == ""  # no half JSON document

    # Once erased, the subject's list is its erased mark: a destroyed key, never key material.
    r, _, _ = ui(as_json=True)
    assert await removal.erase_body(database, r, user="alice", apply=True) == 0
    r, out, _ = ui(as_json=True)
    assert await keys.list_body(database, r, user="alice") == 0
    listed = json.loads(out())["keys"]
    assert listed
    assert {k["state"] for k in listed} == {"destroyed"}
    assert all(k["receipt_id"] for k in listed)
    assert len(await raw_docs(database["keys"])) >= len(every)  # listing wrote nothing away
    assert await KeyStore(database).get(alice) is not None


async def test_keys_list_by_subject_on_the_command_line(real_backend: Any, database: Any) -> None:
    ledger = Ledger(database, sealer=sealer_on(database))
    await sealed_talk(ledger, "alice", "a1", ["alice's"], tenant="acme")
    run = lambda *a, check=0: chatledger(*a, uri=real_backend.uri, database=database.name, check=check)  # noqa: E731
    assert json.loads(run("keys", "list", "--user", "alice", "--json").stdout)["count"] == 1
    assert run("keys", "list", "--tenant", "acme").stderr.strip().endswith("1 key")
    assert run("keys", "list", "--tenant", "acme", "-q").stderr == ""
    typo = run("keys", "list", "--user", "alise", "--json", check=1)
    assert typo.stdout == ""
    assert "no such subject: user 'alise'" in typo.stderr


# --------------------------------------------------------------------------- roles create --sealed


def test_roles_cover_the_key_store_only_when_content_is_sealed() -> None:
    def grants(*args: str) -> list[dict[str, set[str]]]:
        commands = json.loads(chatledger("roles", "create", "--json", *args).stdout)["commands"]
        return [{p["resource"]["collection"]: set(p["actions"]) for p in c["privileges"]} for c in commands]

    app, operator = grants()
    assert "keys" not in app
    assert "keys" not in operator
    app, operator = grants("--sealed")
    assert app["keys"] == {"find", "insert", "createIndex"}  # a subject's first write creates its key
    assert operator["keys"] == {"find", "insert", "createIndex", "update"}  # erase, keys rotate
    app, operator = grants("--sealed", "--keys-collection", "vault_keys")
    assert "vault_keys" in app
    assert "update" in operator["vault_keys"]
    assert "keys" not in operator
    assert "remove" not in operator["vault_keys"]  # a tombstone keeps an erased subject erased
    assert "vault_keys" in chatledger("roles", "create", "--sealed", "--keys-collection", "vault_keys").stdout
    chatledger("roles", "create", "--sealed", "--keys-collection", "a$b", check=2)


# --------------------------------------------------------------------------- --help, completion


def _commands(help_text: str) -> dict[str, str]:
    """Return each listed command's summary from a --help page, wrapped lines joined."""
    listed: dict[str, str] = {}
    name = ""
    for line in help_text.split("Commands:", 1)[1].splitlines():
        if re.match(r"^  \S", line):
            name, _, text = line.strip().partition(" ")
            listed[name] = text.strip()
        elif line.strip() and name:
            listed[name] += " " + line.strip()
    return listed


@pytest.mark.parametrize("columns", ["60", "80", "200"])
def test_help_summaries_are_whole_sentences_at_any_width(columns: str) -> None:
    for group in ([], ["hold"], ["keys"], ["roles"]):
        listed = _commands(chatledger(*group, "--help", env={"COLUMNS": columns}).stdout)
        assert listed, group
        for name, summary in listed.items():
            assert not summary.endswith("..."), (group, name, summary)
            assert summary.endswith((".", ")")), (group, name, summary)
    top = _commands(chatledger("--help", env={"COLUMNS": columns}).stdout)
    assert top["demo"] == "Replay the Joker story offline: save, resume and branch a conversation."
    assert "list" in _commands(chatledger("hold", "--help").stdout)
    # The longer help text is kept on the command's own page.
    assert "--force" in " ".join(chatledger("demo", "--help", env={"COLUMNS": columns}).stdout.split())


def test_shell_completion_is_offered_and_answers() -> None:
    top = chatledger("--help").stdout
    assert "--install-completion" in top
    assert "--show-completion" in top
    script = chatledger_process("--show-completion", "bash", env={"SHELL": "/bin/bash"}).stdout
    assert "_CHATLEDGER_COMPLETE" in script
    assert "complete" in script
    # What bash asks the program on <TAB>, answered by the real entry point.
    asked = {"_CHATLEDGER_COMPLETE": "complete_bash", "COMP_WORDS": "chatledger ho", "COMP_CWORD": "1"}
    assert chatledger_process(env=asked).stdout.split() == ["hold"]
    asked = {
        "_CHATLEDGER_COMPLETE": "complete_bash",
        "COMP_WORDS": "chatledger hold list --ca",
        "COMP_CWORD": "3",
    }
    assert chatledger_process(env=asked).stdout.split() == ["--case"]


# --------------------------------------------------------------------------- output that pipes


async def test_tsv_for_threads_heads_and_stats(real_backend: Any, database: Any) -> None:
    long_id = "conversation-" + "x" * 150
    await talk(Ledger(database), long_id, 2, tenant_id="acme", user_id="ann")
    await talk(Ledger(database), "t2", 1, tenant_id="acme")
    await set_hold(database, long_id, reason="tab\there", case="C1")
    run = lambda *a, check=0: chatledger(*a, uri=real_backend.uri, database=database.name, check=check)  # noqa: E731

    header, *rows = run("threads", "--tsv").stdout.splitlines()
    assert header.split("\t")[:5] == ["thread", "kind", "parent@offset", "tenant", "user"]
    by_id = {row.split("\t")[0]: row.split("\t") for row in rows}
    assert set(by_id) == {long_id, "t2"}
    assert by_id[long_id][1] == "conversation"
    assert by_id[long_id][3:7] == ["acme", "ann", "2", "4"]
    assert by_id[long_id][-1] == "C1"
    assert all(len(row) == len(header.split("\t")) for row in by_id.values())

    header, *rows = run("heads", "--tsv").stdout.splitlines()
    assert header.split("\t") == ["thread_id", "head_seq", "head_hash"]
    assert {row.split("\t")[0]: row.split("\t")[1] for row in rows}[long_id] == "2"

    table = dict(row.split("\t") for row in run("stats", "--tsv").stdout.splitlines()[1:])
    assert table["threads"] == "2"
    (row,) = run("hold", "list", "--tsv").stdout.splitlines()[1:]
    assert row.split("\t")[:5] == [
        long_id,
        "acme",
        "ann",
        "C1",
        "tab\\x09here",
    ]  # a tab in a value is escaped
    # Piped (no terminal), the plain tables keep every id on one line as well.
    assert [line for line in run("hold", "list").stdout.splitlines() if long_id in line]
    for command in (["threads"], ["heads"], ["stats"], ["hold", "list"], ["keys", "list"]):
        refused = run(*command, "--json", "--tsv", check=2)
        assert "choose one" in refused.stderr
        assert refused.stdout == ""


# --------------------------------------------------------------------------- demo


async def test_demo_leaves_a_database_with_data_alone_unless_forced(real_backend: Any, database: Any) -> None:
    await talk(Ledger(database), "production-thread", 1, tenant_id="acme")
    before = await raw_docs(database["threads"])
    run = lambda *a, check=0: chatledger(  # noqa: E731
        "demo", *a, uri=real_backend.uri, database=database.name, check=check
    )
    refused = run(check=1)
    assert "already holds ChatLedger data" in refused.stderr
    assert "--force" in refused.stderr
    assert await raw_docs(database["threads"]) == before  # nothing written
    assert json.loads(run("--force", "--json").stdout)["command"] == "demo"
    assert len(await raw_docs(database["threads"])) > len(before)


async def test_demo_writes_into_the_database_its_uri_names(real_backend: Any, database: Any) -> None:
    # No --database: the connection string's own database, as every other command uses it.
    uri = real_backend.uri.rstrip("/") + f"/{database.name}"
    done = chatledger("demo", "--json", "--mongodb-uri", uri)
    assert json.loads(done.stdout)["command"] == "demo"
    assert await raw_docs(database["threads"])
    # And it is that database whose data the demo then refuses to write over.
    refused = chatledger("demo", "--mongodb-uri", uri, check=1)
    assert f"database {database.name!r} already holds ChatLedger data" in refused.stderr


async def test_demo_writes_into_an_empty_database(real_backend: Any, database: Any) -> None:
    done = chatledger("demo", uri=real_backend.uri, database=database.name)
    assert "BEEP BOOP" in done.stdout
    assert await raw_docs(database["threads"])
